//! What the notifier reads to build a push: an event's cohort (registered and verified), the
//! event's name and a lot's vehicle for the text. Also joining a cohort.

use crate::StoreError;
use schemas::{EventId, LotId, UserId};
use sqlx::PgPool;

/// The vehicle a lot sells, as a push names it ("2019 Toyota Corolla").
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LotVehicle {
    pub year: i32,
    pub make: String,
    pub model: String,
}

/// Joins `user` to the event's cohort. True when newly registered, false when already in it.
pub async fn register(pool: &PgPool, event: EventId, user: UserId) -> Result<bool, StoreError> {
    let n = sqlx::query(
        "INSERT INTO event_registrations (event_id, user_id) VALUES ($1, $2)
         ON CONFLICT (event_id, user_id) DO NOTHING",
    )
    .bind(event.0)
    .bind(user.0)
    .execute(pool)
    .await?
    .rows_affected();
    Ok(n == 1)
}

/// The users to alert when the event starts: registered for it no later than `registered_by`
/// (ms since the epoch) and verified now, ordered by id.
///
/// The cut-off keeps the cohort of one start alert the same when its job is delivered again
/// (after a crash), so its batches, and their idempotency keys, cover the same users; someone
/// who registers after the start is in the live event already and needs no alert.
pub async fn cohort(
    pool: &PgPool,
    event: EventId,
    registered_by: i64,
) -> Result<Vec<UserId>, StoreError> {
    let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
        "SELECT r.user_id
           FROM event_registrations r
           JOIN users u ON u.id = r.user_id
          WHERE r.event_id = $1
            AND u.verified
            AND r.created_at <= to_timestamp($2::bigint / 1000.0)
          ORDER BY r.user_id",
    )
    .bind(event.0)
    .bind(registered_by)
    .fetch_all(pool)
    .await?;
    Ok(ids.into_iter().map(UserId).collect())
}

/// The event's name, if the event exists.
pub async fn event_name(pool: &PgPool, event: EventId) -> Result<Option<String>, StoreError> {
    Ok(sqlx::query_scalar("SELECT name FROM events WHERE id = $1")
        .bind(event.0)
        .fetch_optional(pool)
        .await?)
}

/// The vehicle of a lot, if the lot exists.
pub async fn lot_vehicle(pool: &PgPool, lot: LotId) -> Result<Option<LotVehicle>, StoreError> {
    let row: Option<(i32, String, String)> = sqlx::query_as(
        "SELECT v.year, v.make, v.model
           FROM lots l JOIN vehicles v ON v.id = l.vehicle_id
          WHERE l.id = $1",
    )
    .bind(lot.0)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|(year, make, model)| LotVehicle { year, make, model }))
}
