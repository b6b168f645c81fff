//! What buyers read: events, lot views (as `schemas::frames::LotView`), a lot's accepted bids and
//! a buyer's won lots. Read-only; the bidder's and the ticker's tables are written elsewhere.
//!
//! Lot views are built here, from one query shape ([`LOT_VIEW_SQL`]), so the REST answers and
//! (later) the WebSocket snapshots show a lot the same way: the high bidder as the event's masked
//! alias, `min_next` from the increment table.

use crate::StoreError;
use schemas::frames::{LotView, VehicleView};
use schemas::{EventId, LotId, LotState, UserId};
use sqlx::postgres::PgRow;
use sqlx::{PgPool, Row};
use uuid::Uuid;

/// An event as buyers and admins see it (without its lots).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EventRow {
    pub id: EventId,
    pub name: String,
    /// `draft`, `scheduled`, `live` or `closed`.
    pub status: String,
    pub starts_at: i64,
    pub lanes: i32,
    pub lot_seconds: i32,
    pub reset_seconds: i32,
}

/// One accepted bid of a lot's history.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BidLine {
    pub amount: i64,
    /// The bidder's alias in the lot's event.
    pub bidder: String,
    /// When the bidder decided it (ms).
    pub at: i64,
}

/// A lot a buyer won, from its settlement.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WonLot {
    pub lot_id: LotId,
    pub event_id: EventId,
    pub amount: i64,
    pub pickup: String,
    pub decided_at: i64,
    pub vehicle: VehicleView,
}

const EVENT_COLUMNS: &str = "id, name, status, starts_at, lanes, lot_seconds, reset_seconds";

fn event_from_row(r: PgRow) -> Result<EventRow, StoreError> {
    Ok(EventRow {
        id: EventId(r.try_get("id")?),
        name: r.try_get("name")?,
        status: r.try_get("status")?,
        starts_at: r.try_get("starts_at")?,
        lanes: r.try_get("lanes")?,
        lot_seconds: r.try_get("lot_seconds")?,
        reset_seconds: r.try_get("reset_seconds")?,
    })
}

/// The event, in any status.
pub async fn event(pool: &PgPool, id: EventId) -> Result<Option<EventRow>, StoreError> {
    let row = sqlx::query(&format!("SELECT {EVENT_COLUMNS} FROM events WHERE id = $1"))
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    row.map(event_from_row).transpose()
}

/// Events in any of `statuses`, soonest first (the Available Now feed).
pub async fn events_by_status(
    pool: &PgPool,
    statuses: &[&str],
) -> Result<Vec<EventRow>, StoreError> {
    let statuses: Vec<String> = statuses.iter().map(|s| (*s).to_owned()).collect();
    let rows = sqlx::query(&format!(
        "SELECT {EVENT_COLUMNS} FROM events WHERE status = ANY($1) ORDER BY starts_at, id"
    ))
    .bind(&statuses)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(event_from_row).collect()
}

/// The columns a lot view is built from.
pub(crate) const LOT_VIEW_SQL: &str = "SELECT l.id, l.event_id, l.lane, l.position, l.state,
        l.starting_price, l.high, l.high_bidder, l.bid_count, l.ends_at, l.version,
        v.vin, v.year, v.make, v.model, v.trim, v.mileage, v.photos
   FROM lots l JOIN vehicles v ON v.id = l.vehicle_id";

pub(crate) fn lot_view_from_row(r: PgRow) -> Result<LotView, StoreError> {
    let event_id = EventId(r.try_get("event_id")?);
    let state: String = r.try_get("state")?;
    let high: Option<i64> = r.try_get("high")?;
    let starting_price: i64 = r.try_get("starting_price")?;
    Ok(LotView {
        lot_id: LotId(r.try_get("id")?),
        event_id,
        lane: r.try_get("lane")?,
        position: r.try_get("position")?,
        vehicle: VehicleView {
            vin: r.try_get("vin")?,
            year: r.try_get("year")?,
            make: r.try_get("make")?,
            model: r.try_get("model")?,
            trim: r.try_get("trim")?,
            mileage: r.try_get("mileage")?,
            photos: r.try_get("photos")?,
        },
        state: state.parse().map_err(|_| {
            StoreError::Internal(format!("unexpected lots.state {state:?} in the database").into())
        })?,
        high,
        bidder: r
            .try_get::<Option<Uuid>, _>("high_bidder")?
            .map(|u| schemas::alias::alias(event_id, UserId(u))),
        bid_count: r.try_get("bid_count")?,
        min_next: schemas::min_next(starting_price, high),
        ends_at: r.try_get("ends_at")?,
        version: r.try_get("version")?,
    })
}

/// The view of one lot.
pub async fn lot_view(pool: &PgPool, id: LotId) -> Result<Option<LotView>, StoreError> {
    let row = sqlx::query(&format!("{LOT_VIEW_SQL} WHERE l.id = $1"))
        .bind(id.0)
        .fetch_optional(pool)
        .await?;
    row.map(lot_view_from_row).transpose()
}

/// Every lot of an event, by lane then position.
pub async fn event_lots(pool: &PgPool, event: EventId) -> Result<Vec<LotView>, StoreError> {
    let rows = sqlx::query(&format!(
        "{LOT_VIEW_SQL} WHERE l.event_id = $1 ORDER BY l.lane, l.position"
    ))
    .bind(event.0)
    .fetch_all(pool)
    .await?;
    rows.into_iter().map(lot_view_from_row).collect()
}

/// The lot that takes `lane` after `closed` leaves the block: the lane's first lot by position
/// still on the block ([`LotState::ON_THE_BLOCK`]), other than `closed`. One indexed
/// read (`lots_event_idx`), however many lots the event has: the edge asks it on every
/// rotation.
pub async fn next_lot(
    pool: &PgPool,
    event: EventId,
    lane: i32,
    closed: LotId,
) -> Result<Option<LotView>, StoreError> {
    let row = sqlx::query(&format!(
        "{LOT_VIEW_SQL} WHERE l.event_id = $1 AND l.lane = $2 AND l.id <> $3
            AND l.state = ANY($4)
          ORDER BY l.position LIMIT 1"
    ))
    .bind(event.0)
    .bind(lane)
    .bind(closed.0)
    .bind(LotState::ON_THE_BLOCK.map(LotState::as_str))
    .fetch_optional(pool)
    .await?;
    row.map(lot_view_from_row).transpose()
}

/// The latest `limit` accepted bids of a lot, newest first, bidders as the event's aliases.
pub async fn lot_bids(
    pool: &PgPool,
    lot: LotId,
    event: EventId,
    limit: i64,
) -> Result<Vec<BidLine>, StoreError> {
    let rows = sqlx::query_as::<_, (i64, Uuid, i64)>(
        "SELECT amount, user_id, decided_at FROM bids
          WHERE lot_id = $1 AND status = 'accepted'
          ORDER BY stream_seq DESC LIMIT $2",
    )
    .bind(lot.0)
    .bind(limit)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(amount, user, at)| BidLine {
            amount,
            bidder: schemas::alias::alias(event, UserId(user)),
            at,
        })
        .collect())
}

/// The lots `user` won, newest first, with the pickup instructions of each vehicle.
pub async fn won_lots(pool: &PgPool, user: UserId) -> Result<Vec<WonLot>, StoreError> {
    let rows = sqlx::query(
        "SELECT s.lot_id, l.event_id, s.amount, s.decided_at, v.pickup,
                v.vin, v.year, v.make, v.model, v.trim, v.mileage, v.photos
           FROM settlements s
           JOIN lots l ON l.id = s.lot_id
           JOIN vehicles v ON v.id = l.vehicle_id
          WHERE s.user_id = $1
          ORDER BY s.decided_at DESC, s.lot_id",
    )
    .bind(user.0)
    .fetch_all(pool)
    .await?;
    rows.into_iter()
        .map(|r| {
            Ok(WonLot {
                lot_id: LotId(r.try_get("lot_id")?),
                event_id: EventId(r.try_get("event_id")?),
                amount: r.try_get("amount")?,
                pickup: r.try_get("pickup")?,
                decided_at: r.try_get("decided_at")?,
                vehicle: VehicleView {
                    vin: r.try_get("vin")?,
                    year: r.try_get("year")?,
                    make: r.try_get("make")?,
                    model: r.try_get("model")?,
                    trim: r.try_get("trim")?,
                    mileage: r.try_get("mileage")?,
                    photos: r.try_get("photos")?,
                },
            })
        })
        .collect()
}
