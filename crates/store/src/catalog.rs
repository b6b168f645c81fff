//! Vendors, vehicles, events and the lots that list vehicles in them (the admin's side).

use crate::StoreError;
use schemas::{EventId, LotId, VehicleId, VendorId};
use sqlx::PgPool;

/// A new vehicle from a vendor.
#[derive(Clone, Debug)]
pub struct NewVehicle {
    pub vendor_id: VendorId,
    pub vin: String,
    pub year: i32,
    pub make: String,
    pub model: String,
    pub trim: String,
    pub mileage: i32,
    pub photos: Vec<String>,
    pub pickup: String,
}

/// A new event (draft).
#[derive(Clone, Debug)]
pub struct NewEvent {
    pub name: String,
    pub starts_at: i64,
    pub lanes: i32,
    pub lot_seconds: i32,
    pub reset_seconds: i32,
}

/// A vehicle listed in an event's lane at a position.
#[derive(Clone, Debug)]
pub struct NewLot {
    pub event_id: EventId,
    pub vehicle_id: VehicleId,
    pub lane: i32,
    pub position: i32,
    pub starting_price: i64,
    pub reserve: i64,
}

/// Creates a vendor.
pub async fn create_vendor(
    pool: &PgPool,
    name: &str,
    contact: &str,
) -> Result<VendorId, StoreError> {
    let id = VendorId::new();
    sqlx::query("INSERT INTO vendors (id, name, contact) VALUES ($1, $2, $3)")
        .bind(id.0)
        .bind(name)
        .bind(contact)
        .execute(pool)
        .await?;
    Ok(id)
}

/// Creates a vehicle.
pub async fn create_vehicle(pool: &PgPool, v: &NewVehicle) -> Result<VehicleId, StoreError> {
    let id = VehicleId::new();
    sqlx::query(
        "INSERT INTO vehicles (id, vendor_id, vin, year, make, model, trim, mileage, photos, pickup)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
    )
    .bind(id.0)
    .bind(v.vendor_id.0)
    .bind(&v.vin)
    .bind(v.year)
    .bind(&v.make)
    .bind(&v.model)
    .bind(&v.trim)
    .bind(v.mileage)
    .bind(&v.photos)
    .bind(&v.pickup)
    .execute(pool)
    .await?;
    Ok(id)
}

/// Creates a draft event with its lanes.
pub async fn create_event(pool: &PgPool, e: &NewEvent) -> Result<EventId, StoreError> {
    let id = EventId::new();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO events (id, name, starts_at, lanes, lot_seconds, reset_seconds)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(id.0)
    .bind(&e.name)
    .bind(e.starts_at)
    .bind(e.lanes)
    .bind(e.lot_seconds)
    .bind(e.reset_seconds)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO lanes (event_id, lane) SELECT $1, generate_series(1, $2)")
        .bind(id.0)
        .bind(e.lanes)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(id)
}

/// Lists a vehicle in an event. The lot starts as `draft`, or `scheduled` when the event is
/// scheduled or live already.
pub async fn add_lot(pool: &PgPool, l: &NewLot) -> Result<LotId, StoreError> {
    let id = LotId::new();
    sqlx::query(
        "INSERT INTO lots (id, event_id, vehicle_id, lane, position, starting_price, reserve, state)
         SELECT $1, $2, $3, $4, $5, $6, $7,
                CASE WHEN e.status IN ('scheduled', 'live') THEN 'scheduled' ELSE 'draft' END
           FROM events e WHERE e.id = $2",
    )
    .bind(id.0)
    .bind(l.event_id.0)
    .bind(l.vehicle_id.0)
    .bind(l.lane)
    .bind(l.position)
    .bind(l.starting_price)
    .bind(l.reserve)
    .execute(pool)
    .await?;
    Ok(id)
}

/// draft → scheduled, for the event and its draft lots.
pub async fn schedule_event(pool: &PgPool, id: EventId) -> Result<(), StoreError> {
    let mut tx = pool.begin().await?;
    let n =
        sqlx::query("UPDATE events SET status = 'scheduled' WHERE id = $1 AND status = 'draft'")
            .bind(id.0)
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

/// Lists a vehicle in an event, checked against the event first (the admin's door; [`add_lot`]
/// trusts its caller). An unknown event is `NotFound`; a lane outside `1..=lanes` is
/// `Constraint("lots_lane_in_event")`; a closed event is `Conflict("events_status")`; a taken
/// slot is `Conflict("lots_slot_key")`; an unknown vehicle is `Constraint("lots_vehicle_id_fkey")`.
/// The event row is locked meanwhile, so a concurrent schedule cannot leave the new lot in
/// `draft` under a scheduled event.
pub async fn add_lot_checked(pool: &PgPool, l: &NewLot) -> Result<LotId, StoreError> {
    let mut tx = pool.begin().await?;
    let event: Option<(String, i32)> =
        sqlx::query_as("SELECT status, lanes FROM events WHERE id = $1 FOR UPDATE")
            .bind(l.event_id.0)
            .fetch_optional(&mut *tx)
            .await?;
    let Some((status, lanes)) = event else {
        return Err(StoreError::NotFound);
    };
    if !(1..=lanes).contains(&l.lane) {
        return Err(StoreError::Constraint("lots_lane_in_event".into()));
    }
    if status == "closed" {
        return Err(StoreError::Conflict("events_status".into()));
    }
    let id = LotId::new();
    sqlx::query(
        "INSERT INTO lots (id, event_id, vehicle_id, lane, position, starting_price, reserve, state)
         VALUES ($1, $2, $3, $4, $5, $6, $7,
                 CASE WHEN $8 IN ('scheduled', 'live') THEN 'scheduled' ELSE 'draft' END)",
    )
    .bind(id.0)
    .bind(l.event_id.0)
    .bind(l.vehicle_id.0)
    .bind(l.lane)
    .bind(l.position)
    .bind(l.starting_price)
    .bind(l.reserve)
    .bind(&status)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(id)
}
