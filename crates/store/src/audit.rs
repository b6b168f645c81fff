//! The invariants of the bid path, checked after the fact against what Postgres holds.
//!
//! The fault-injection suite and `gavel bench` run this after killing, stopping and restarting
//! things: whatever happened on the way, the recorded history must still tell one consistent
//! story. [`check`] runs one query per rule and returns every [`Violation`] it finds (an empty
//! list is a clean audit). The rules, in the order they are checked:
//!
//! 1. [`Rule::AmountsNotRising`]: a lot's accepted amounts strictly increase in stream order,
//!    and the first is at least the starting price.
//! 2. [`Rule::DecidedTwice`]: one decision per (user, idempotency key), and one per stream
//!    message (a sequence recorded once, as a bid or as a lifecycle command).
//! 3. [`Rule::Settlement`]: exactly one settlement per sold lot, at its high bid to its high
//!    bidder, and none for any other lot.
//! 4. [`Rule::LotState`]: a lot's `high`, `high_bidder` and `bid_count` are those of its last
//!    accepted bid and the number of its accepted bids (no bid: no high, count 0); no accepted
//!    bid names a lot that does not exist.
//! 5. [`Rule::Reopened`]: a lot closes (hammered or cancelled) at most once, and after its
//!    close no lifecycle command is applied, no bid is accepted, and it is still closed.
//!
//! The checks read committed rows only; run them once the services are quiet (or accept that a
//! batch committing meanwhile is seen in part by one query and whole by the next).

use crate::StoreError;
use schemas::LotId;
use sqlx::{PgPool, Row};
use std::fmt;
use uuid::Uuid;

/// Which invariant a [`Violation`] breaks.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Rule {
    /// An accepted amount not above the lot's previous accepted amount (stream order), or a
    /// first accepted amount below the starting price.
    AmountsNotRising,
    /// A (user, idem) or a stream sequence with more than one recorded decision.
    DecidedTwice,
    /// A sold lot without exactly one matching settlement, or a settlement of a lot not sold.
    Settlement,
    /// A lot whose high, high bidder or bid count disagrees with its accepted bids.
    LotState,
    /// A lot closed twice, changed after its close, or no longer closed.
    Reopened,
}

impl Rule {
    /// A short stable name (for reports and JSON).
    pub fn as_str(self) -> &'static str {
        match self {
            Rule::AmountsNotRising => "amounts_not_rising",
            Rule::DecidedTwice => "decided_twice",
            Rule::Settlement => "settlement",
            Rule::LotState => "lot_state",
            Rule::Reopened => "reopened",
        }
    }
}

impl fmt::Display for Rule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One broken invariant: the rule, the lot when there is one, and what was found.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Violation {
    pub rule: Rule,
    pub lot: Option<LotId>,
    pub detail: String,
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.lot {
            Some(lot) => write!(f, "{} (lot {lot}): {}", self.rule, self.detail),
            None => write!(f, "{}: {}", self.rule, self.detail),
        }
    }
}

fn violation(rule: Rule, lot: Option<Uuid>, detail: String) -> Violation {
    Violation {
        rule,
        lot: lot.map(LotId),
        detail,
    }
}

/// Each rule's query takes the lot filter as `$1` (`NULL`: every lot) and returns `lot_id`
/// (nullable) and a human-readable `detail`.
const AMOUNTS_NOT_RISING: &str = "
SELECT b.lot_id,
       CASE WHEN b.prev IS NULL
            THEN format('first accepted bid %s (seq %s) below the starting price %s',
                        b.amount, b.stream_seq, l.starting_price)
            ELSE format('accepted %s at seq %s after %s at seq %s',
                        b.amount, b.stream_seq, b.prev, b.prev_seq)
       END AS detail
  FROM (SELECT lot_id, amount, stream_seq,
               lag(amount) OVER w AS prev, lag(stream_seq) OVER w AS prev_seq
          FROM bids
         WHERE status = 'accepted' AND ($1::uuid[] IS NULL OR lot_id = ANY($1))
        WINDOW w AS (PARTITION BY lot_id ORDER BY stream_seq)) b
  LEFT JOIN lots l ON l.id = b.lot_id
 WHERE (b.prev IS NOT NULL AND b.amount <= b.prev)
    OR (b.prev IS NULL AND b.amount < l.starting_price)
 ORDER BY b.lot_id, b.stream_seq";

const DECIDED_TWICE_BY_IDEM: &str = "
SELECT min(lot_id::text)::uuid AS lot_id,
       format('user %s idem %s decided %s times (seqs %s, statuses %s)', user_id, idem,
              count(*), string_agg(stream_seq::text, ',' ORDER BY stream_seq),
              string_agg(status, ',' ORDER BY stream_seq)) AS detail
  FROM bids
 WHERE $1::uuid[] IS NULL OR lot_id = ANY($1)
 GROUP BY user_id, idem
HAVING count(*) > 1";

const DECIDED_TWICE_BY_SEQ: &str = "
SELECT min(lot_id::text)::uuid AS lot_id,
       format('stream seq %s decided %s times', stream_seq, count(*)) AS detail
  FROM (SELECT lot_id, stream_seq FROM bids
        UNION ALL SELECT lot_id, stream_seq FROM lot_commands) d
 WHERE $1::uuid[] IS NULL OR lot_id = ANY($1)
 GROUP BY stream_seq
HAVING count(*) > 1";

const SETTLEMENTS: &str = "
WITH s AS (
    SELECT lot_id, count(*) AS n, min(amount) AS amount, min(user_id::text)::uuid AS user_id
      FROM settlements
     WHERE $1::uuid[] IS NULL OR lot_id = ANY($1)
     GROUP BY lot_id
)
SELECT coalesce(l.id, s.lot_id) AS lot_id,
       CASE WHEN l.id IS NULL THEN 'settlement of a lot that does not exist'
            WHEN l.outcome IS DISTINCT FROM 'sold' AND s.n IS NOT NULL
                THEN format('%s settlement(s) of a lot %s/%s', s.n, l.state,
                            coalesce(l.outcome, 'no outcome'))
            WHEN s.n IS NULL THEN 'sold lot without a settlement'
            WHEN s.n > 1 THEN format('sold lot with %s settlements', s.n)
            ELSE format('settlement %s to %s, lot high %s to %s', s.amount, s.user_id,
                        l.high, l.high_bidder)
       END AS detail
  FROM (SELECT * FROM lots WHERE $1::uuid[] IS NULL OR id = ANY($1)) l
  FULL JOIN s ON s.lot_id = l.id
 WHERE l.id IS NULL
    OR (l.outcome IS DISTINCT FROM 'sold' AND s.n IS NOT NULL)
    OR (l.outcome = 'sold' AND (s.n IS NULL OR s.n > 1 OR s.amount IS DISTINCT FROM l.high
                                OR s.user_id IS DISTINCT FROM l.high_bidder))
 ORDER BY 1";

const LOT_STATE: &str = "
WITH acc AS (
    SELECT lot_id, count(*) AS n,
           (array_agg(amount ORDER BY stream_seq DESC))[1] AS amount,
           (array_agg(user_id ORDER BY stream_seq DESC))[1] AS user_id
      FROM bids
     WHERE status = 'accepted' AND ($1::uuid[] IS NULL OR lot_id = ANY($1))
     GROUP BY lot_id
)
SELECT coalesce(l.id, acc.lot_id) AS lot_id,
       CASE WHEN l.id IS NULL
            THEN format('%s accepted bid(s) on a lot that does not exist', acc.n)
            ELSE format('lot high %s by %s with bid_count %s; accepted bids: %s, the last %s by %s',
                        coalesce(l.high::text, 'none'), coalesce(l.high_bidder::text, 'nobody'),
                        l.bid_count, coalesce(acc.n, 0), coalesce(acc.amount::text, 'none'),
                        coalesce(acc.user_id::text, 'nobody'))
       END AS detail
  FROM (SELECT * FROM lots WHERE $1::uuid[] IS NULL OR id = ANY($1)) l
  FULL JOIN acc ON acc.lot_id = l.id
 WHERE l.id IS NULL
    OR l.high IS DISTINCT FROM acc.amount
    OR l.high_bidder IS DISTINCT FROM acc.user_id
    OR l.bid_count <> coalesce(acc.n, 0)
 ORDER BY 1";

const REOPENED: &str = "
WITH closes AS (
    SELECT lot_id, min(stream_seq) AS seq, count(*) AS n
      FROM lot_commands
     WHERE applied AND state IN ('closed', 'cancelled')
       AND ($1::uuid[] IS NULL OR lot_id = ANY($1))
     GROUP BY lot_id
)
SELECT c.lot_id, format('closed %s times (first at seq %s)', c.n, c.seq) AS detail
  FROM closes c WHERE c.n > 1
UNION ALL
SELECT c.lot_id, format('%s applied at seq %s after the close at seq %s', k.kind,
                        k.stream_seq, c.seq)
  FROM closes c JOIN lot_commands k ON k.lot_id = c.lot_id
 WHERE k.applied AND k.stream_seq > c.seq
UNION ALL
SELECT c.lot_id, format('bid %s accepted at seq %s after the close at seq %s', b.amount,
                        b.stream_seq, c.seq)
  FROM closes c JOIN bids b ON b.lot_id = c.lot_id
 WHERE b.status = 'accepted' AND b.stream_seq > c.seq
UNION ALL
SELECT c.lot_id, format('closed at seq %s but the lot is %s', c.seq, l.state)
  FROM closes c JOIN lots l ON l.id = c.lot_id
 WHERE l.state NOT IN ('closed', 'cancelled')";

/// Checks every rule over `lots` (all lots when `None`) and returns what breaks them, empty
/// when the history is consistent.
pub async fn check(pool: &PgPool, lots: Option<&[LotId]>) -> Result<Vec<Violation>, StoreError> {
    let filter: Option<Vec<Uuid>> = lots.map(|ids| ids.iter().map(|l| l.0).collect());
    let rules = [
        (Rule::AmountsNotRising, AMOUNTS_NOT_RISING),
        (Rule::DecidedTwice, DECIDED_TWICE_BY_IDEM),
        (Rule::DecidedTwice, DECIDED_TWICE_BY_SEQ),
        (Rule::Settlement, SETTLEMENTS),
        (Rule::LotState, LOT_STATE),
        (Rule::Reopened, REOPENED),
    ];
    let mut found = Vec::new();
    for (rule, sql) in rules {
        let rows = sqlx::query(sql).bind(&filter).fetch_all(pool).await?;
        for r in rows {
            found.push(violation(
                rule,
                r.try_get::<Option<Uuid>, _>("lot_id")?,
                r.try_get("detail")?,
            ));
        }
    }
    Ok(found)
}
