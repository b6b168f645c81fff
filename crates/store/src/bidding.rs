//! The bidder's tables: lot state, bid decisions, lifecycle outcomes, settlements and the
//! partition leases that fence them.
//!
//! A bidder commits a whole batch in [`commit_batch`]: the lease check, every decision, the new
//! state of every lot it touched and the stream position, in one transaction. Replays read the
//! recorded decisions back with [`decisions_by_seq`] and [`bids_by_idem`].

use crate::StoreError;
use schemas::frames::BidStatus;
use schemas::{EventId, LotId, LotState, Outcome, RejectReason, UserId};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// What the bidder needs of a lot to decide its commands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotRecord {
    pub id: LotId,
    pub event_id: EventId,
    pub lane: i32,
    pub position: i32,
    pub state: LotState,
    pub outcome: Option<Outcome>,
    pub starting_price: i64,
    pub reserve: i64,
    pub high: Option<i64>,
    pub high_bidder: Option<UserId>,
    pub bid_count: i32,
    pub version: i64,
    pub ends_at: Option<i64>,
    pub remaining_ms: Option<i64>,
    pub applied_seq: i64,
    /// From the event: what an accepted bid puts back on the clock.
    pub reset_seconds: i32,
    /// From the vehicle: told to the winner.
    pub pickup: String,
}

/// One bid decision, accepted or rejected, with the lot as the decision left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BidRecord {
    pub lot_id: LotId,
    pub user_id: UserId,
    pub idem: String,
    pub amount: i64,
    pub seen_high: Option<i64>,
    pub status: BidStatus,
    pub reason: Option<RejectReason>,
    pub high: Option<i64>,
    pub min_next: Option<i64>,
    pub version: Option<i64>,
    pub bid_count: Option<i32>,
    pub ends_at: Option<i64>,
    pub prev_bidder: Option<UserId>,
    pub prev_high: Option<i64>,
    pub stream_seq: i64,
    pub decided_at: i64,
    pub traceparent: Option<String>,
}

impl BidRecord {
    /// The answer the bidder gave: the same on every retry of the (user, idem), however late.
    pub fn result(&self) -> schemas::frames::BidResult {
        schemas::frames::BidResult {
            idem: self.idem.clone(),
            lot_id: self.lot_id,
            status: self.status,
            reason: self.reason,
            high: self.high,
            min_next: self.min_next,
            version: self.version,
            retryable: self.reason.is_some_and(|r| r.retryable()),
        }
    }
}

/// The kind of a lifecycle command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CommandKind {
    Open,
    Hammer,
    Pause,
    Resume,
    Cancel,
}

impl CommandKind {
    fn as_str(self) -> &'static str {
        match self {
            CommandKind::Open => "open",
            CommandKind::Hammer => "hammer",
            CommandKind::Pause => "pause",
            CommandKind::Resume => "resume",
            CommandKind::Cancel => "cancel",
        }
    }

    fn parse(s: &str) -> Result<Self, StoreError> {
        Ok(match s {
            "open" => CommandKind::Open,
            "hammer" => CommandKind::Hammer,
            "pause" => CommandKind::Pause,
            "resume" => CommandKind::Resume,
            "cancel" => CommandKind::Cancel,
            other => return Err(bad_value("lot_commands.kind", other)),
        })
    }
}

/// The outcome of one lifecycle command, with the lot as it left it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CommandRecord {
    pub stream_seq: i64,
    pub lot_id: LotId,
    pub kind: CommandKind,
    /// False when refused or stale: nothing was changed or announced.
    pub applied: bool,
    pub state: Option<LotState>,
    pub outcome: Option<Outcome>,
    pub high: Option<i64>,
    pub high_bidder: Option<UserId>,
    pub min_next: Option<i64>,
    pub version: Option<i64>,
    pub ends_at: Option<i64>,
    pub remaining_ms: Option<i64>,
    pub decided_at: i64,
    pub traceparent: Option<String>,
}

/// The sale of a lot, written with its close.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settlement {
    pub lot_id: LotId,
    pub user_id: UserId,
    pub amount: i64,
    pub decided_at: i64,
}

/// A held partition lease.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Lease {
    pub partition: i32,
    pub epoch: i64,
    /// Decisions are committed up to this stream sequence.
    pub applied_seq: i64,
    /// Their announcements are confirmed up to this one.
    pub announced_seq: i64,
}

/// Everything one batch changes, committed together or not at all.
#[derive(Clone, Debug, Default)]
pub struct Batch {
    pub applied_seq: i64,
    pub announced_seq: i64,
    pub bids: Vec<BidRecord>,
    pub commands: Vec<CommandRecord>,
    /// Lots as the batch left them (their `applied_seq` set to the last command applied).
    pub lots: Vec<LotRecord>,
    pub settlements: Vec<Settlement>,
}

fn bad_value(what: &str, v: &str) -> StoreError {
    StoreError::Internal(format!("unexpected {what} {v:?} in the database").into())
}

fn parse_opt<T: std::str::FromStr>(what: &str, v: Option<String>) -> Result<Option<T>, StoreError> {
    v.map(|s| s.parse::<T>().map_err(|_| bad_value(what, &s)))
        .transpose()
}

const LOT_COLUMNS: &str = "l.id, l.event_id, l.lane, l.position, l.state, l.outcome,
    l.starting_price, l.reserve, l.high, l.high_bidder, l.bid_count, l.version, l.ends_at,
    l.remaining_ms, l.applied_seq, e.reset_seconds, v.pickup";

fn lot_from_row(r: PgRow) -> Result<LotRecord, StoreError> {
    let state: String = r.try_get("state")?;
    Ok(LotRecord {
        id: LotId(r.try_get("id")?),
        event_id: EventId(r.try_get("event_id")?),
        lane: r.try_get("lane")?,
        position: r.try_get("position")?,
        state: state.parse().map_err(|_| bad_value("lots.state", &state))?,
        outcome: parse_opt("lots.outcome", r.try_get("outcome")?)?,
        starting_price: r.try_get("starting_price")?,
        reserve: r.try_get("reserve")?,
        high: r.try_get("high")?,
        high_bidder: r.try_get::<Option<Uuid>, _>("high_bidder")?.map(UserId),
        bid_count: r.try_get("bid_count")?,
        version: r.try_get("version")?,
        ends_at: r.try_get("ends_at")?,
        remaining_ms: r.try_get("remaining_ms")?,
        applied_seq: r.try_get("applied_seq")?,
        reset_seconds: r.try_get("reset_seconds")?,
        pickup: r.try_get("pickup")?,
    })
}

/// The lots with these ids (unknown ids are simply absent).
pub async fn load_lots(pool: &PgPool, ids: &[LotId]) -> Result<Vec<LotRecord>, StoreError> {
    let ids: Vec<Uuid> = ids.iter().map(|l| l.0).collect();
    let rows = sqlx::query(&format!(
        "SELECT {LOT_COLUMNS} FROM lots l JOIN events e ON e.id = l.event_id
         JOIN vehicles v ON v.id = l.vehicle_id WHERE l.id = ANY($1)"
    ))
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(lot_from_row).collect()
}

/// Which of these users are verified buyers (or admins marked verified). Unknown users are
/// absent, which the bidder treats as not verified.
pub async fn verified_users(pool: &PgPool, ids: &[UserId]) -> Result<Vec<UserId>, StoreError> {
    let ids: Vec<Uuid> = ids.iter().map(|u| u.0).collect();
    let rows: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE id = ANY($1) AND verified")
            .bind(&ids)
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(UserId).collect())
}

/// Takes the lease of `partition` for `owner` if it is free, expired or already ours, bumping
/// the fencing epoch when the owner changes hands. `None` while someone else holds it.
pub async fn acquire_lease(
    pool: &PgPool,
    partition: i32,
    owner: &str,
    ttl_ms: i64,
) -> Result<Option<Lease>, StoreError> {
    sqlx::query("INSERT INTO partition_leases (partition) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(partition)
        .execute(pool)
        .await?;
    let row = sqlx::query(
        "UPDATE partition_leases
            SET epoch = epoch + 1, owner = $2,
                expires_at = now() + $3 * interval '1 millisecond'
          WHERE partition = $1 AND (expires_at < now() OR owner IS NULL OR owner = $2)
          RETURNING epoch, applied_seq, announced_seq",
    )
    .bind(partition)
    .bind(owner)
    .bind(ttl_ms as f64)
    .fetch_optional(pool)
    .await?;
    row.map(|r| {
        Ok(Lease {
            partition,
            epoch: r.try_get("epoch")?,
            applied_seq: r.try_get("applied_seq")?,
            announced_seq: r.try_get("announced_seq")?,
        })
    })
    .transpose()
}

/// Extends a held lease. `Fenced` when another owner took it over.
pub async fn renew_lease(pool: &PgPool, lease: &Lease, ttl_ms: i64) -> Result<(), StoreError> {
    let n = sqlx::query(
        "UPDATE partition_leases SET expires_at = now() + $3 * interval '1 millisecond'
          WHERE partition = $1 AND epoch = $2",
    )
    .bind(lease.partition)
    .bind(lease.epoch)
    .bind(ttl_ms as f64)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Fenced)
    }
}

/// Gives a lease back on a clean shutdown so a standby takes over at once.
pub async fn release_lease(pool: &PgPool, lease: &Lease) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE partition_leases SET owner = NULL, expires_at = '-infinity'
          WHERE partition = $1 AND epoch = $2",
    )
    .bind(lease.partition)
    .bind(lease.epoch)
    .execute(pool)
    .await?;
    Ok(())
}

/// Records that announcements are confirmed up to `seq` (when no batch follows to carry it).
pub async fn set_announced(pool: &PgPool, lease: &Lease, seq: i64) -> Result<(), StoreError> {
    let n = sqlx::query(
        "UPDATE partition_leases SET announced_seq = GREATEST(announced_seq, $3)
          WHERE partition = $1 AND epoch = $2",
    )
    .bind(lease.partition)
    .bind(lease.epoch)
    .bind(seq)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 1 {
        Ok(())
    } else {
        Err(StoreError::Fenced)
    }
}

/// The whole batch as one statement (one round trip, atomic on its own): the lease CTE checks
/// the fencing epoch and locks the lease row, and every other change happens only if it matched.
const COMMIT_BATCH: &str = "
WITH lease AS (
    UPDATE partition_leases
       SET applied_seq = GREATEST(applied_seq, $3),
           announced_seq = GREATEST(announced_seq, LEAST($4, GREATEST(applied_seq, $3))),
           expires_at = now() + $5 * interval '1 millisecond'
     WHERE partition = $1 AND epoch = $2
 RETURNING 1
), new_bids AS (
    INSERT INTO bids (lot_id, user_id, idem, amount, seen_high, status, reason, high, min_next,
                      version, bid_count, ends_at, prev_bidder, prev_high, stream_seq,
                      decided_at, traceparent)
    SELECT * FROM UNNEST($6::uuid[], $7::uuid[], $8::text[], $9::int8[], $10::int8[],
                         $11::text[], $12::text[], $13::int8[], $14::int8[], $15::int8[],
                         $16::int4[], $17::int8[], $18::uuid[], $19::int8[], $20::int8[],
                         $21::int8[], $22::text[])
     WHERE EXISTS (SELECT 1 FROM lease)
 RETURNING 1
), new_commands AS (
    INSERT INTO lot_commands (stream_seq, lot_id, kind, applied, state, outcome, high,
                              high_bidder, min_next, version, ends_at, remaining_ms,
                              decided_at, traceparent)
    SELECT * FROM UNNEST($23::int8[], $24::uuid[], $25::text[], $26::bool[], $27::text[],
                         $28::text[], $29::int8[], $30::uuid[], $31::int8[], $32::int8[],
                         $33::int8[], $34::int8[], $35::int8[], $36::text[])
     WHERE EXISTS (SELECT 1 FROM lease)
 RETURNING 1
), lot_updates AS (
    UPDATE lots AS l
       SET state = u.state, outcome = u.outcome, high = u.high, high_bidder = u.high_bidder,
           bid_count = u.bid_count, version = u.version, ends_at = u.ends_at,
           remaining_ms = u.remaining_ms, applied_seq = u.applied_seq
      FROM UNNEST($37::uuid[], $38::text[], $39::text[], $40::int8[], $41::uuid[], $42::int4[],
                  $43::int8[], $44::int8[], $45::int8[], $46::int8[])
           AS u(id, state, outcome, high, high_bidder, bid_count, version, ends_at,
                remaining_ms, applied_seq)
     WHERE l.id = u.id AND EXISTS (SELECT 1 FROM lease)
 RETURNING 1
), new_settlements AS (
    INSERT INTO settlements (lot_id, user_id, amount, decided_at)
    SELECT * FROM UNNEST($47::uuid[], $48::uuid[], $49::int8[], $50::int8[])
     WHERE EXISTS (SELECT 1 FROM lease)
 RETURNING 1
)
SELECT (SELECT count(*) FROM lease) AS leases,
       (SELECT count(*) FROM lot_updates) AS lots,
       (SELECT count(*) FROM new_bids) + (SELECT count(*) FROM new_commands)
           + (SELECT count(*) FROM new_settlements) AS rows,
       -- a lot that is not there aborts the whole statement (division by zero at run time; a
       -- constant 1 / 0 would be folded at plan time) rather than
       -- committing decisions without their lot state
       CASE WHEN EXISTS (SELECT 1 FROM lease)
                 AND (SELECT count(*) FROM lot_updates) <> cardinality($37::uuid[])
            THEN 1 / (SELECT count(*) - count(*) FROM lease) ELSE 0 END AS guard";

/// Commits one batch in one statement: the fencing check (which also locks the lease row, so a
/// takeover waits for us or we fail), decisions, lot states, settlements and the stream position.
pub async fn commit_batch(
    pool: &PgPool,
    lease: &Lease,
    ttl_ms: i64,
    batch: &Batch,
) -> Result<(), StoreError> {
    let bids = &batch.bids;
    let cmds = &batch.commands;
    let lots = &batch.lots;
    let sets = &batch.settlements;
    let bcol = |f: fn(&BidRecord) -> Option<i64>| bids.iter().map(f).collect::<Vec<_>>();
    let ccol = |f: fn(&CommandRecord) -> Option<i64>| cmds.iter().map(f).collect::<Vec<_>>();
    let lcol = |f: fn(&LotRecord) -> Option<i64>| lots.iter().map(f).collect::<Vec<_>>();
    let row = sqlx::query(COMMIT_BATCH)
        .bind(lease.partition)
        .bind(lease.epoch)
        .bind(batch.applied_seq)
        .bind(batch.announced_seq)
        .bind(ttl_ms as f64)
        // bids
        .bind(bids.iter().map(|b| b.lot_id.0).collect::<Vec<_>>())
        .bind(bids.iter().map(|b| b.user_id.0).collect::<Vec<_>>())
        .bind(bids.iter().map(|b| b.idem.as_str()).collect::<Vec<_>>())
        .bind(bids.iter().map(|b| b.amount).collect::<Vec<_>>())
        .bind(bcol(|b| b.seen_high))
        .bind(
            bids.iter()
                .map(|b| match b.status {
                    BidStatus::Accepted => "accepted",
                    BidStatus::Rejected => "rejected",
                })
                .collect::<Vec<_>>(),
        )
        .bind(
            bids.iter()
                .map(|b| b.reason.map(|r| r.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(bcol(|b| b.high))
        .bind(bcol(|b| b.min_next))
        .bind(bcol(|b| b.version))
        .bind(bids.iter().map(|b| b.bid_count).collect::<Vec<_>>())
        .bind(bcol(|b| b.ends_at))
        .bind(
            bids.iter()
                .map(|b| b.prev_bidder.map(|u| u.0))
                .collect::<Vec<_>>(),
        )
        .bind(bcol(|b| b.prev_high))
        .bind(bids.iter().map(|b| b.stream_seq).collect::<Vec<_>>())
        .bind(bids.iter().map(|b| b.decided_at).collect::<Vec<_>>())
        .bind(
            bids.iter()
                .map(|b| b.traceparent.as_deref())
                .collect::<Vec<_>>(),
        )
        // lifecycle commands
        .bind(cmds.iter().map(|c| c.stream_seq).collect::<Vec<_>>())
        .bind(cmds.iter().map(|c| c.lot_id.0).collect::<Vec<_>>())
        .bind(cmds.iter().map(|c| c.kind.as_str()).collect::<Vec<_>>())
        .bind(cmds.iter().map(|c| c.applied).collect::<Vec<_>>())
        .bind(
            cmds.iter()
                .map(|c| c.state.map(|s| s.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(
            cmds.iter()
                .map(|c| c.outcome.map(|o| o.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(ccol(|c| c.high))
        .bind(
            cmds.iter()
                .map(|c| c.high_bidder.map(|u| u.0))
                .collect::<Vec<_>>(),
        )
        .bind(ccol(|c| c.min_next))
        .bind(ccol(|c| c.version))
        .bind(ccol(|c| c.ends_at))
        .bind(ccol(|c| c.remaining_ms))
        .bind(cmds.iter().map(|c| c.decided_at).collect::<Vec<_>>())
        .bind(
            cmds.iter()
                .map(|c| c.traceparent.as_deref())
                .collect::<Vec<_>>(),
        )
        // lots
        .bind(lots.iter().map(|l| l.id.0).collect::<Vec<_>>())
        .bind(lots.iter().map(|l| l.state.as_str()).collect::<Vec<_>>())
        .bind(
            lots.iter()
                .map(|l| l.outcome.map(|o| o.as_str()))
                .collect::<Vec<_>>(),
        )
        .bind(lcol(|l| l.high))
        .bind(
            lots.iter()
                .map(|l| l.high_bidder.map(|u| u.0))
                .collect::<Vec<_>>(),
        )
        .bind(lots.iter().map(|l| l.bid_count).collect::<Vec<_>>())
        .bind(lots.iter().map(|l| l.version).collect::<Vec<_>>())
        .bind(lcol(|l| l.ends_at))
        .bind(lcol(|l| l.remaining_ms))
        .bind(lots.iter().map(|l| l.applied_seq).collect::<Vec<_>>())
        // settlements
        .bind(sets.iter().map(|s| s.lot_id.0).collect::<Vec<_>>())
        .bind(sets.iter().map(|s| s.user_id.0).collect::<Vec<_>>())
        .bind(sets.iter().map(|s| s.amount).collect::<Vec<_>>())
        .bind(sets.iter().map(|s| s.decided_at).collect::<Vec<_>>())
        .fetch_one(pool)
        .await?;
    let leases: i64 = row.try_get("leases")?;
    if leases != 1 {
        return Err(StoreError::Fenced);
    }
    Ok(())
}

const BID_COLUMNS: &str = "lot_id, user_id, idem, amount, seen_high, status, reason, high,
    min_next, version, bid_count, ends_at, prev_bidder, prev_high, stream_seq, decided_at,
    traceparent";

fn bid_from_row(r: PgRow) -> Result<BidRecord, StoreError> {
    let status: String = r.try_get("status")?;
    Ok(BidRecord {
        lot_id: LotId(r.try_get("lot_id")?),
        user_id: UserId(r.try_get("user_id")?),
        idem: r.try_get("idem")?,
        amount: r.try_get("amount")?,
        seen_high: r.try_get("seen_high")?,
        status: match status.as_str() {
            "accepted" => BidStatus::Accepted,
            "rejected" => BidStatus::Rejected,
            other => return Err(bad_value("bids.status", other)),
        },
        reason: parse_opt("bids.reason", r.try_get("reason")?)?,
        high: r.try_get("high")?,
        min_next: r.try_get("min_next")?,
        version: r.try_get("version")?,
        bid_count: r.try_get("bid_count")?,
        ends_at: r.try_get("ends_at")?,
        prev_bidder: r.try_get::<Option<Uuid>, _>("prev_bidder")?.map(UserId),
        prev_high: r.try_get("prev_high")?,
        stream_seq: r.try_get("stream_seq")?,
        decided_at: r.try_get("decided_at")?,
        traceparent: r.try_get("traceparent")?,
    })
}

fn command_from_row(r: PgRow) -> Result<CommandRecord, StoreError> {
    let kind: String = r.try_get("kind")?;
    Ok(CommandRecord {
        stream_seq: r.try_get("stream_seq")?,
        lot_id: LotId(r.try_get("lot_id")?),
        kind: CommandKind::parse(&kind)?,
        applied: r.try_get("applied")?,
        state: parse_opt("lot_commands.state", r.try_get("state")?)?,
        outcome: parse_opt("lot_commands.outcome", r.try_get("outcome")?)?,
        high: r.try_get("high")?,
        high_bidder: r.try_get::<Option<Uuid>, _>("high_bidder")?.map(UserId),
        min_next: r.try_get("min_next")?,
        version: r.try_get("version")?,
        ends_at: r.try_get("ends_at")?,
        remaining_ms: r.try_get("remaining_ms")?,
        decided_at: r.try_get("decided_at")?,
        traceparent: r.try_get("traceparent")?,
    })
}

/// The recorded decisions of these stream sequences (bids and lifecycle commands).
pub async fn decisions_by_seq(
    pool: &PgPool,
    seqs: &[i64],
) -> Result<(Vec<BidRecord>, Vec<CommandRecord>), StoreError> {
    let bids = sqlx::query(&format!(
        "SELECT {BID_COLUMNS} FROM bids WHERE stream_seq = ANY($1)"
    ))
    .bind(seqs)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(bid_from_row)
    .collect::<Result<Vec<_>, _>>()?;
    let cmds = sqlx::query(
        "SELECT stream_seq, lot_id, kind, applied, state, outcome, high, high_bidder, min_next,
                version, ends_at, remaining_ms, decided_at, traceparent
           FROM lot_commands WHERE stream_seq = ANY($1)",
    )
    .bind(seqs)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(command_from_row)
    .collect::<Result<Vec<_>, _>>()?;
    Ok((bids, cmds))
}

/// The recorded decisions for these (user, idempotency key) pairs: a retried bid gets its first
/// answer, however long after.
pub async fn bids_by_idem(
    pool: &PgPool,
    keys: &[(UserId, String)],
) -> Result<Vec<BidRecord>, StoreError> {
    let users: Vec<Uuid> = keys.iter().map(|k| k.0 .0).collect();
    let idems: Vec<&str> = keys.iter().map(|k| k.1.as_str()).collect();
    sqlx::query(&format!(
        "SELECT {BID_COLUMNS} FROM bids
          WHERE (user_id, idem) IN (SELECT * FROM UNNEST($1::uuid[], $2::text[]))"
    ))
    .bind(&users)
    .bind(&idems)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(bid_from_row)
    .collect()
}

/// The accepted bids of a lot, in decision order (for checks and the lot page).
pub async fn accepted_bids(pool: &PgPool, lot: LotId) -> Result<Vec<BidRecord>, StoreError> {
    sqlx::query(&format!(
        "SELECT {BID_COLUMNS} FROM bids WHERE lot_id = $1 AND status = 'accepted'
          ORDER BY stream_seq"
    ))
    .bind(lot.0)
    .fetch_all(pool)
    .await?
    .into_iter()
    .map(bid_from_row)
    .collect()
}

/// The committed position of a held lease: `(applied_seq, announced_seq)`. `Fenced` when the
/// lease changed hands. Used after a failed commit whose outcome is unknown.
pub async fn lease_position(pool: &PgPool, lease: &Lease) -> Result<(i64, i64), StoreError> {
    let row = sqlx::query(
        "SELECT applied_seq, announced_seq FROM partition_leases WHERE partition = $1 AND epoch = $2",
    )
    .bind(lease.partition)
    .bind(lease.epoch)
    .fetch_optional(pool)
    .await?;
    match row {
        Some(r) => Ok((r.try_get("applied_seq")?, r.try_get("announced_seq")?)),
        None => Err(StoreError::Fenced),
    }
}

/// How many of these lots are in `state` (waiting for a lifecycle command to land).
pub async fn count_in_state(
    pool: &PgPool,
    ids: &[LotId],
    state: LotState,
) -> Result<i64, StoreError> {
    let ids: Vec<Uuid> = ids.iter().map(|l| l.0).collect();
    Ok(
        sqlx::query_scalar("SELECT count(*) FROM lots WHERE id = ANY($1) AND state = $2")
            .bind(&ids)
            .bind(state.as_str())
            .fetch_one(pool)
            .await?,
    )
}
