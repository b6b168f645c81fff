//! What the ticker reads and writes: events to start or close, and the lot on the block in each
//! lane of a live event.

use crate::StoreError;
use schemas::{EventId, LotId, LotState};
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// An event the clock looks after (scheduled and due soon, or live).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClockEvent {
    pub id: EventId,
    pub live: bool,
    pub starts_at: i64,
    pub lanes: i32,
    pub lot_seconds: i32,
}

/// The lot on the block in a lane: the first by position that has not ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockLot {
    pub event_id: EventId,
    pub lane: i32,
    pub lot_id: LotId,
    pub position: i32,
    pub state: LotState,
    pub version: i64,
    pub ends_at: Option<i64>,
    pub remaining_ms: Option<i64>,
}

/// Live events, and scheduled ones starting before `horizon` (ms since the epoch).
pub async fn clock_events(pool: &PgPool, horizon: i64) -> Result<Vec<ClockEvent>, StoreError> {
    let rows = sqlx::query(
        "SELECT id, status, starts_at, lanes, lot_seconds FROM events
          WHERE status = 'live' OR (status = 'scheduled' AND starts_at <= $1)",
    )
    .bind(horizon)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(ClockEvent {
                id: EventId(r.try_get("id")?),
                live: r.try_get::<String, _>("status")? == "live",
                starts_at: r.try_get("starts_at")?,
                lanes: r.try_get("lanes")?,
                lot_seconds: r.try_get("lot_seconds")?,
            })
        })
        .collect()
}

/// The lot on the block in every lane of these events (lanes with no lot left are absent).
pub async fn block_lots(pool: &PgPool, events: &[EventId]) -> Result<Vec<BlockLot>, StoreError> {
    let ids: Vec<Uuid> = events.iter().map(|e| e.0).collect();
    let rows = sqlx::query(
        "SELECT DISTINCT ON (event_id, lane)
                event_id, lane, id, position, state, version, ends_at, remaining_ms
           FROM lots
          WHERE event_id = ANY($1) AND state IN ('scheduled', 'open', 'paused')
          ORDER BY event_id, lane, position",
    )
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            let state: String = r.try_get("state")?;
            Ok(BlockLot {
                event_id: EventId(r.try_get("event_id")?),
                lane: r.try_get("lane")?,
                lot_id: LotId(r.try_get("id")?),
                position: r.try_get("position")?,
                state: state
                    .parse()
                    .map_err(|_| StoreError::Internal(format!("lot state {state:?}").into()))?,
                version: r.try_get("version")?,
                ends_at: r.try_get("ends_at")?,
                remaining_ms: r.try_get("remaining_ms")?,
            })
        })
        .collect()
}

/// scheduled → live. False when it was not scheduled (already started by another ticker).
pub async fn start_event(pool: &PgPool, id: EventId, now: i64) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE events SET status = 'live', started_at = $2 WHERE id = $1 AND status = 'scheduled'",
    )
    .bind(id.0)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// live → closed, only when no lot of the event is left to sell.
pub async fn close_event(pool: &PgPool, id: EventId, now: i64) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "UPDATE events SET status = 'closed', closed_at = $2
          WHERE id = $1 AND status = 'live'
            AND NOT EXISTS (SELECT 1 FROM lots WHERE event_id = $1
                             AND state IN ('draft', 'scheduled', 'open', 'paused'))",
    )
    .bind(id.0)
    .bind(now)
    .execute(pool)
    .await?
    .rows_affected();
    if n == 1 {
        sqlx::query("UPDATE lanes SET done = true, current_lot = NULL WHERE event_id = $1")
            .bind(id.0)
            .execute(pool)
            .await?;
    }
    Ok(n == 1)
}

/// The event's status (`draft`, `scheduled`, `live`, `closed`).
pub async fn event_status(pool: &PgPool, id: EventId) -> Result<String, StoreError> {
    Ok(
        sqlx::query_scalar("SELECT status FROM events WHERE id = $1")
            .bind(id.0)
            .fetch_one(pool)
            .await?,
    )
}
