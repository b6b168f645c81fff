//! Admins' REST routes: the verification queue, vendors, vehicles, events and their lots.
//!
//! Every handler starts with [`Tokens::admin`](crate::auth::Tokens::admin): no or a bad token is
//! 401, a buyer is 403, and neither gets as far as reading the body or touching the database.
//! Bodies are checked here (parse, don't validate); Postgres constraints stay the second line and
//! their names map to answers in [`crate::error`].

use crate::error::ApiErr;
use crate::rest::{path_id, EventOut, UserOut};
use crate::{authorization, body, json, read_json, respond, with_state, ApiResult, State};
use bytes::Bytes;
use schemas::{Cents, EventId, UserId, VehicleId, VendorId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::sync::Arc;
use store::catalog::{NewEvent, NewLot, NewVehicle};
use utoipa::ToSchema;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

// ----- bodies -----

#[derive(Debug, Deserialize, ToSchema)]
pub struct VendorBody {
    pub name: String,
    #[serde(default)]
    pub contact: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VendorOut {
    pub id: uuid::Uuid,
    pub name: String,
    pub contact: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct VehicleBody {
    pub vendor_id: uuid::Uuid,
    /// 1 to 17 characters, unique.
    pub vin: String,
    pub year: i32,
    pub make: String,
    pub model: String,
    #[serde(default)]
    pub trim: String,
    pub mileage: i32,
    /// Photo URLs.
    #[serde(default)]
    pub photos: Vec<String>,
    /// Pickup instructions for the winner.
    #[serde(default)]
    pub pickup: String,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct VehicleOut {
    pub id: uuid::Uuid,
    pub vendor_id: uuid::Uuid,
    pub vin: String,
    pub year: i32,
    pub make: String,
    pub model: String,
    pub trim: String,
    pub mileage: i32,
    pub photos: Vec<String>,
    pub pickup: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct EventBody {
    pub name: String,
    /// When the ticker starts it (ms since the epoch).
    pub starts_at: i64,
    /// 1 to 64.
    pub lanes: i32,
    /// Seconds on the clock when a lot opens (1 to 3600, default 30).
    #[serde(default = "thirty")]
    pub lot_seconds: i32,
    /// Seconds an accepted bid puts back on the clock (1 to 3600, default 30).
    #[serde(default = "thirty")]
    pub reset_seconds: i32,
}

fn thirty() -> i32 {
    30
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LotBody {
    pub vehicle_id: uuid::Uuid,
    /// 1 to the event's `lanes`.
    pub lane: i32,
    /// Order within the lane, from 1; unique per lane.
    pub position: i32,
    /// Cents, positive.
    pub starting_price: i64,
    /// Cents, 0 for none.
    #[serde(default)]
    pub reserve: i64,
}

// ----- routes -----

pub(crate) fn routes(
    state: Arc<State>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let s = move || with_state(state.clone()).and(authorization());
    let users = warp::path!("api" / "admin" / "users")
        .and(warp::get())
        .and(s())
        .and(warp::query::<HashMap<String, String>>())
        .then(list_users)
        .map(respond);
    let verify = warp::path!("api" / "admin" / "users" / String / "verify")
        .and(warp::post())
        .and(s())
        .then(verify_user)
        .map(respond);
    let vendors = warp::path!("api" / "admin" / "vendors")
        .and(warp::post())
        .and(s())
        .and(body())
        .then(create_vendor)
        .map(respond);
    let vehicles = warp::path!("api" / "admin" / "vehicles")
        .and(warp::post())
        .and(s())
        .and(body())
        .then(create_vehicle)
        .map(respond);
    let events = warp::path!("api" / "admin" / "events")
        .and(warp::post())
        .and(s())
        .and(body())
        .then(create_event)
        .map(respond);
    let lots = warp::path!("api" / "admin" / "events" / String / "lots")
        .and(warp::post())
        .and(s())
        .and(body())
        .then(add_lot)
        .map(respond);
    let schedule = warp::path!("api" / "admin" / "events" / String / "schedule")
        .and(warp::post())
        .and(s())
        .then(schedule_event)
        .map(respond);
    users
        .or(verify)
        .unify()
        .or(vendors)
        .unify()
        .or(vehicles)
        .unify()
        .or(events)
        .unify()
        .or(lots)
        .unify()
        .or(schedule)
        .unify()
}

// ----- checks -----

fn text(field: &str, value: &str, min: usize, max: usize) -> Result<String, ApiErr> {
    let v = value.trim();
    let n = v.chars().count();
    if n < min || n > max {
        return Err(ApiErr::Invalid(format!(
            "{field} must be {min} to {max} characters"
        )));
    }
    Ok(v.to_owned())
}

fn within(field: &str, value: i32, lo: i32, hi: i32) -> Result<i32, ApiErr> {
    if (lo..=hi).contains(&value) {
        Ok(value)
    } else {
        Err(ApiErr::Invalid(format!("{field} must be {lo} to {hi}")))
    }
}

// ----- handlers -----

/// Users, oldest first; `verified=false` is the queue awaiting verification.
#[utoipa::path(get, path = "/api/admin/users", tag = "admin", security(("bearer" = [])),
    params(("verified" = Option<bool>, Query, description = "only users with this flag")),
    responses((status = 200, body = Vec<UserOut>),
              (status = 400, body = crate::openapi::ErrorDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn list_users(
    state: Arc<State>,
    authz: Option<String>,
    query: HashMap<String, String>,
) -> ApiResult {
    state.tokens.admin(authz.as_deref())?;
    let verified = match query.get("verified").map(String::as_str) {
        None | Some("") => None,
        Some("true") => Some(true),
        Some("false") => Some(false),
        Some(_) => return Err(ApiErr::Invalid("verified is `true` or `false`".into())),
    };
    let users: Vec<UserOut> = store::users::list_users(&state.pool, verified)
        .await?
        .into_iter()
        .map(UserOut::from)
        .collect();
    json(StatusCode::OK, &users)
}

/// Verify a buyer: the gate before their first bid.
#[utoipa::path(post, path = "/api/admin/users/{id}/verify", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "user id")),
    responses((status = 200, body = UserOut),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn verify_user(id: String, state: Arc<State>, authz: Option<String>) -> ApiResult {
    let admin = state.tokens.admin(authz.as_deref())?;
    let id: UserId = path_id(&id, "user")?;
    let user = store::users::set_verified(&state.pool, id)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound => ApiErr::not_found("user"),
            e => e.into(),
        })?;
    tracing::info!(user = %id, by = %admin.user, "user verified");
    json(StatusCode::OK, &UserOut::from(user))
}

/// Create a vendor (a consignor of vehicles).
#[utoipa::path(post, path = "/api/admin/vendors", tag = "admin", security(("bearer" = [])),
    request_body = VendorBody,
    responses((status = 201, body = VendorOut),
              (status = 400, body = crate::openapi::ErrorDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn create_vendor(
    state: Arc<State>,
    authz: Option<String>,
    body: Bytes,
) -> ApiResult {
    state.tokens.admin(authz.as_deref())?;
    let b: VendorBody = read_json(&body)?;
    let name = text("name", &b.name, 1, 200)?;
    let contact = text("contact", &b.contact, 0, 500)?;
    let id: VendorId = store::catalog::create_vendor(&state.pool, &name, &contact).await?;
    json(
        StatusCode::CREATED,
        &VendorOut {
            id: id.uuid(),
            name,
            contact,
        },
    )
}

/// Create a vehicle of a vendor.
#[utoipa::path(post, path = "/api/admin/vehicles", tag = "admin", security(("bearer" = [])),
    request_body = VehicleBody,
    responses((status = 201, body = VehicleOut),
              (status = 400, body = crate::openapi::ErrorDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, description = "no such vendor", body = crate::openapi::ErrorDoc),
              (status = 409, description = "VIN exists", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn create_vehicle(
    state: Arc<State>,
    authz: Option<String>,
    body: Bytes,
) -> ApiResult {
    state.tokens.admin(authz.as_deref())?;
    let b: VehicleBody = read_json(&body)?;
    if b.photos.len() > 50 || b.photos.iter().any(|p| p.is_empty() || p.len() > 2048) {
        return Err(ApiErr::Invalid(
            "photos are at most 50 URLs of 1 to 2048 characters".into(),
        ));
    }
    let v = NewVehicle {
        vendor_id: VendorId(b.vendor_id),
        vin: text("vin", &b.vin, 1, 17)?.to_uppercase(),
        year: within("year", b.year, 1886, 2100)?,
        make: text("make", &b.make, 1, 100)?,
        model: text("model", &b.model, 1, 100)?,
        trim: text("trim", &b.trim, 0, 100)?,
        mileage: within("mileage", b.mileage, 0, i32::MAX)?,
        photos: b.photos,
        pickup: text("pickup", &b.pickup, 0, 2000)?,
    };
    let id: VehicleId = store::catalog::create_vehicle(&state.pool, &v).await?;
    json(
        StatusCode::CREATED,
        &VehicleOut {
            id: id.uuid(),
            vendor_id: v.vendor_id.uuid(),
            vin: v.vin,
            year: v.year,
            make: v.make,
            model: v.model,
            trim: v.trim,
            mileage: v.mileage,
            photos: v.photos,
            pickup: v.pickup,
        },
    )
}

/// Create an event, as a draft.
#[utoipa::path(post, path = "/api/admin/events", tag = "admin", security(("bearer" = [])),
    request_body = EventBody,
    responses((status = 201, body = EventOut),
              (status = 400, body = crate::openapi::ErrorDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn create_event(
    state: Arc<State>,
    authz: Option<String>,
    body: Bytes,
) -> ApiResult {
    state.tokens.admin(authz.as_deref())?;
    let b: EventBody = read_json(&body)?;
    if b.starts_at <= 0 {
        return Err(ApiErr::Invalid(
            "starts_at is ms since the epoch, positive".into(),
        ));
    }
    let e = NewEvent {
        name: text("name", &b.name, 1, 200)?,
        starts_at: b.starts_at,
        lanes: within("lanes", b.lanes, 1, 64)?,
        lot_seconds: within("lot_seconds", b.lot_seconds, 1, 3600)?,
        reset_seconds: within("reset_seconds", b.reset_seconds, 1, 3600)?,
    };
    let id = store::catalog::create_event(&state.pool, &e).await?;
    let event = store::views::event(&state.pool, id)
        .await?
        .ok_or_else(|| ApiErr::Internal(anyhow::anyhow!("event {id} vanished after insert")))?;
    tracing::info!(event = %id, "event created");
    json(StatusCode::CREATED, &EventOut::from(event))
}

/// List a vehicle in an event's lane at a position.
#[utoipa::path(post, path = "/api/admin/events/{id}/lots", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "event id")),
    request_body = LotBody,
    responses((status = 201, body = crate::openapi::LotViewDoc),
              (status = 400, description = "lane outside 1..lanes, or a bad price", body = crate::openapi::ErrorDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, description = "no such event or vehicle", body = crate::openapi::ErrorDoc),
              (status = 409, description = "position taken, or the event is closed", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn add_lot(
    id: String,
    state: Arc<State>,
    authz: Option<String>,
    body: Bytes,
) -> ApiResult {
    state.tokens.admin(authz.as_deref())?;
    let event_id: EventId = path_id(&id, "event")?;
    let b: LotBody = read_json(&body)?;
    let starting_price = Cents::new(b.starting_price)
        .map_err(|_| ApiErr::Invalid("starting_price must be a positive number of cents".into()))?;
    if !(0..=Cents::MAX).contains(&b.reserve) {
        return Err(ApiErr::Invalid(
            "reserve must be zero or a positive number of cents".into(),
        ));
    }
    if b.position < 1 {
        return Err(ApiErr::Invalid("position starts at 1".into()));
    }
    let l = NewLot {
        event_id,
        vehicle_id: VehicleId(b.vehicle_id),
        lane: b.lane,
        position: b.position,
        starting_price: starting_price.get(),
        reserve: b.reserve,
    };
    let lot = store::catalog::add_lot_checked(&state.pool, &l)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound => ApiErr::not_found("event"),
            e => e.into(),
        })?;
    let view = store::views::lot_view(&state.pool, lot)
        .await?
        .ok_or_else(|| ApiErr::Internal(anyhow::anyhow!("lot {lot} vanished after insert")))?;
    tracing::info!(event = %event_id, lot = %lot, "lot added");
    json(StatusCode::CREATED, &view)
}

/// draft → scheduled: the ticker starts the event at `starts_at`.
#[utoipa::path(post, path = "/api/admin/events/{id}/schedule", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "event id")),
    responses((status = 200, body = EventOut),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, body = crate::openapi::ErrorDoc),
              (status = 409, description = "not a draft", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn schedule_event(
    id: String,
    state: Arc<State>,
    authz: Option<String>,
) -> ApiResult {
    state.tokens.admin(authz.as_deref())?;
    let id: EventId = path_id(&id, "event")?;
    if store::views::event(&state.pool, id).await?.is_none() {
        return Err(ApiErr::not_found("event"));
    }
    store::catalog::schedule_event(&state.pool, id)
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict(_) => {
                ApiErr::Conflict("only a draft event can be scheduled".into())
            }
            e => e.into(),
        })?;
    let event = store::views::event(&state.pool, id)
        .await?
        .ok_or_else(|| ApiErr::not_found("event"))?;
    tracing::info!(event = %id, "event scheduled");
    json(StatusCode::OK, &EventOut::from(event))
}
