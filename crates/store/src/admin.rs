//! The admin's floor controls: start an event now, watch its lanes, track outcomes and re-list
//! what did not sell. Lot views come from [`crate::views`]' one query shape, so the admin sees a
//! lot exactly as buyers do.

use crate::views::{lot_view_from_row, LOT_VIEW_SQL};
use crate::StoreError;
use schemas::frames::LotView;
use schemas::{EventId, LotId, Outcome, UserId};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// draft or scheduled → live at `now`, with its draft lots scheduled, in one transaction.
/// `starts_at` is brought forward to `now` when it was later. Any other status (live, closed or
/// a concurrent start that got there first) is `Conflict("events_status")`. The caller sends the
/// start push first, as the ticker does.
pub async fn start_event_now(pool: &PgPool, id: EventId, now: i64) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let n = sqlx::query(
        "UPDATE events SET status = 'live', started_at = $2, starts_at = LEAST(starts_at, $2)
          WHERE id = $1 AND status IN ('draft', 'scheduled')",
    )
    .bind(id.0)
    .bind(now)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    if n == 0 {
        return Err(StoreError::Conflict("events_status".into()));
    }
    sqlx::query("UPDATE lots SET state = 'scheduled' WHERE event_id = $1 AND state = 'draft'")
        .bind(id.0)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

/// The lot on the block in each lane of an event: the first by position that has not ended
/// (the ticker's choice, drafts included so a draft event shows its first lots). Lanes with no
/// lot left are absent.
pub async fn lane_lots(pool: &PgPool, event: EventId) -> Result<Vec<LotView>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT DISTINCT ON (l.lane) * FROM ({LOT_VIEW_SQL}
           WHERE l.event_id = $1 AND l.state IN ('draft', 'scheduled', 'open', 'paused')) l
          ORDER BY l.lane, l.position"
    ))
    .bind(event.0)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(lot_view_from_row).collect()
}

/// Accepted bids per lane of an event decided at or after `since` (ms); lanes without any are
/// absent.
pub async fn accepted_bids_per_lane(
    pool: &PgPool,
    event: EventId,
    since: i64,
) -> Result<Vec<(i32, i64)>, StoreError> {
    Ok(sqlx::query_as::<_, (i32, i64)>(
        "SELECT l.lane, count(*) FROM bids b JOIN lots l ON l.id = b.lot_id
          WHERE l.event_id = $1 AND b.status = 'accepted' AND b.decided_at >= $2
          GROUP BY l.lane",
    )
    .bind(event.0)
    .bind(since)
    .fetch_all(pool)
    .await?)
}

/// The winner of a sold lot, as the admin needs to reach them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Winner {
    pub id: UserId,
    pub email: String,
    pub name: String,
}

/// A lot that has ended, with how.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EndedLot {
    pub lot: LotView,
    pub outcome: Outcome,
    /// The hammer price (from the settlement) when sold.
    pub amount: Option<i64>,
    /// The buyer when sold.
    pub winner: Option<Winner>,
}

/// Every lot that ended with `outcome`, the newest event first, then by lane and position.
pub async fn lots_by_outcome(pool: &PgPool, outcome: Outcome) -> Result<Vec<EndedLot>, StoreError> {
    let rows = sqlx::query(&format!(
        "SELECT x.*, e.starts_at AS event_starts_at, s.amount AS sold_amount,
                u.id AS winner_id, u.email AS winner_email, u.name AS winner_name
           FROM ({LOT_VIEW_SQL} WHERE l.outcome = $1) x
           JOIN events e ON e.id = x.event_id
           LEFT JOIN settlements s ON s.lot_id = x.id
           LEFT JOIN users u ON u.id = s.user_id
          ORDER BY e.starts_at DESC, x.event_id, x.lane, x.position"
    ))
    .bind(outcome.as_str())
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let amount: Option<i64> = r.try_get("sold_amount")?;
            let winner = match r.try_get::<Option<Uuid>, _>("winner_id")? {
                Some(id) => Some(Winner {
                    id: UserId(id),
                    email: r.try_get("winner_email")?,
                    name: r.try_get("winner_name")?,
                }),
                None => None,
            };
            Ok(EndedLot {
                lot: lot_view_from_row(r)?,
                outcome,
                amount,
                winner,
            })
        })
        .collect()
}

/// Where a re-listed vehicle goes, and at what prices (the old lot's when `None`).
#[derive(Clone, Debug)]
pub struct Relist {
    pub event_id: EventId,
    pub lane: i32,
    pub position: i32,
    pub starting_price: Option<i64>,
    pub reserve: Option<i64>,
}

/// A new lot for the vehicle of `from`, which must have ended `unsold` or `cancelled` and not
/// have been re-listed already. Answers, in the order checked: unknown lot `NotFound`; another
/// outcome (or none yet) `Conflict("lots_relist_outcome")`; re-listed before
/// `Conflict("lots_relisted_once")`; unknown event `Constraint("lots_event_id_fkey")`; a lane
/// outside `1..=lanes` `Constraint("lots_lane_in_event")`; a closed event
/// `Conflict("events_status")`; a taken slot `Conflict("lots_slot_key")`. Both rows are locked
/// meanwhile, so two re-lists of one lot cannot both succeed.
pub async fn relist_lot(pool: &PgPool, from: LotId, to: &Relist) -> Result<LotId, StoreError> {
    let mut tx = pool.begin().await?;
    let old: Option<(Uuid, Option<String>, i64, i64)> = sqlx::query_as(
        "SELECT vehicle_id, outcome, starting_price, reserve FROM lots WHERE id = $1 FOR UPDATE",
    )
    .bind(from.0)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((vehicle, outcome, starting_price, reserve)) = old else {
        return Err(StoreError::NotFound);
    };
    if !matches!(outcome.as_deref(), Some("unsold" | "cancelled")) {
        return Err(StoreError::Conflict("lots_relist_outcome".into()));
    }
    let again: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM lots WHERE relisted_from = $1)")
            .bind(from.0)
            .fetch_one(&mut *tx)
            .await?;
    if again {
        return Err(StoreError::Conflict("lots_relisted_once".into()));
    }
    let event: Option<(String, i32)> =
        sqlx::query_as("SELECT status, lanes FROM events WHERE id = $1 FOR UPDATE")
            .bind(to.event_id.0)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((status, lanes)) = event else {
        return Err(StoreError::Constraint("lots_event_id_fkey".into()));
    };
    if !(1..=lanes).contains(&to.lane) {
        return Err(StoreError::Constraint("lots_lane_in_event".into()));
    }
    if status == "closed" {
        return Err(StoreError::Conflict("events_status".into()));
    }
    let id = LotId::new();
    sqlx::query(
        "INSERT INTO lots (id, event_id, vehicle_id, lane, position, starting_price, reserve,
                           state, relisted_from)
         VALUES ($1, $2, $3, $4, $5, $6, $7,
                 CASE WHEN $8 IN ('scheduled', 'live') THEN 'scheduled' ELSE 'draft' END, $9)",
    )
    .bind(id.0)
    .bind(to.event_id.0)
    .bind(vehicle)
    .bind(to.lane)
    .bind(to.position)
    .bind(to.starting_price.unwrap_or(starting_price))
    .bind(to.reserve.unwrap_or(reserve))
    .bind(&status)
    .bind(from.0)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}
