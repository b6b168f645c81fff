//! Admins' REST routes: the verification queue, vendors, vehicles, events and their lots, and the
//! floor controls (start now, pause / resume / cancel a lot, the lane monitor, outcomes, re-list).
//!
//! Lot control never writes a lot: it publishes the command on the lot's ordered subject, where
//! the bidder decides it in stream order with the bids (DESIGN.md, one writer per lot). The
//! handler refuses up front what the lifecycle table already forbids (409) and otherwise answers
//! 202 with the lot as it stood; the bidder stays the judge of a command that a bid or the
//! hammer overtook.
//!
//! Every handler starts with [`Tokens::admin`](crate::auth::Tokens::admin): no or a bad token is
//! 401, a buyer is 403, and neither gets as far as reading the body or touching the database.
//! Bodies are checked here (parse, don't validate); Postgres constraints stay the second line and
//! their names map to answers in [`crate::error`].

use crate::error::ApiErr;
use crate::rest::{path_id, EventOut, UserOut};
use crate::{authorization, body, json, read_json, respond, with_state, ApiResult, State};
use bus::Outgoing;
use bytes::Bytes;
use schemas::frames::LotView;
use schemas::nats::{BidCommand, NatsMessage, NotifyJob};
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use schemas::{Cents, EventId, LotId, LotState, Outcome, UserId, VehicleId, VendorId};
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
    #[schema(min_length = 1, max_length = 17)]
    pub vin: String,
    #[schema(minimum = 1886, maximum = 2100)]
    pub year: i32,
    pub make: String,
    pub model: String,
    #[serde(default)]
    pub trim: String,
    #[schema(minimum = 0)]
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
    #[schema(minimum = 1, maximum = 64)]
    pub lanes: i32,
    /// Seconds on the clock when a lot opens (1 to 3600, default 30).
    #[serde(default = "thirty")]
    #[schema(minimum = 1, maximum = 3600)]
    pub lot_seconds: i32,
    /// Seconds an accepted bid puts back on the clock (1 to 3600, default 30).
    #[serde(default = "thirty")]
    #[schema(minimum = 1, maximum = 3600)]
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
    #[schema(minimum = 1)]
    pub position: i32,
    /// Cents, positive.
    #[schema(minimum = 1, maximum = 100_000_000_000_000_i64)]
    pub starting_price: i64,
    /// Cents, 0 for none.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100_000_000_000_000_i64)]
    pub reserve: i64,
}

/// Where a re-listed vehicle goes; the prices are the old lot's unless given.
#[derive(Debug, Deserialize, ToSchema)]
pub struct RelistBody {
    pub event_id: uuid::Uuid,
    /// 1 to the event's `lanes`.
    pub lane: i32,
    /// Order within the lane, from 1; unique per lane.
    pub position: i32,
    /// Cents, positive; the old lot's when absent.
    #[serde(default)]
    pub starting_price: Option<i64>,
    /// Cents, 0 for none; the old lot's when absent.
    #[serde(default)]
    pub reserve: Option<i64>,
}

/// One lane of the monitor.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MonitorLaneOut {
    pub lane: i32,
    /// The lot on the block (the first by position that has not ended), or null when the lane
    /// is done.
    #[schema(value_type = Option<crate::openapi::LotViewDoc>)]
    pub lot: Option<LotView>,
    /// Accepted bids on the lane's lots over the last 60 s.
    pub bids_per_minute: i64,
}

/// An event as the floor sees it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct MonitorOut {
    pub event_id: uuid::Uuid,
    /// `draft`, `scheduled`, `live` or `closed`.
    pub status: String,
    /// WebSockets subscribed to the event, summed over every edge.
    pub clients: u64,
    /// Every lane, 1 to `lanes`.
    pub lanes: Vec<MonitorLaneOut>,
}

/// The buyer of a sold lot.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WinnerOut {
    pub id: uuid::Uuid,
    pub email: String,
    pub name: String,
}

/// A lot that ended, with how: the lot view's fields, `outcome`, and for a sale the hammer
/// price and the buyer.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EndedLotOut {
    #[serde(flatten)]
    #[schema(value_type = crate::openapi::LotViewDoc)]
    pub lot: LotView,
    /// `sold`, `unsold` or `cancelled`.
    pub outcome: String,
    /// Cents, when sold; else null.
    pub amount: Option<i64>,
    /// When sold; else null.
    pub winner: Option<WinnerOut>,
}

impl From<store::admin::EndedLot> for EndedLotOut {
    fn from(e: store::admin::EndedLot) -> Self {
        Self {
            lot: e.lot,
            outcome: e.outcome.as_str().to_owned(),
            amount: e.amount,
            winner: e.winner.map(|w| WinnerOut {
                id: w.id.uuid(),
                email: w.email,
                name: w.name,
            }),
        }
    }
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
    let start = warp::path!("api" / "admin" / "events" / String / "start")
        .and(warp::post())
        .and(s())
        .then(start_event)
        .map(respond);
    let pause = warp::path!("api" / "admin" / "lots" / String / "pause")
        .and(warp::post())
        .and(s())
        .then(pause_lot)
        .map(respond);
    let resume = warp::path!("api" / "admin" / "lots" / String / "resume")
        .and(warp::post())
        .and(s())
        .then(resume_lot)
        .map(respond);
    let cancel = warp::path!("api" / "admin" / "lots" / String / "cancel")
        .and(warp::post())
        .and(s())
        .then(cancel_lot)
        .map(respond);
    let monitor = warp::path!("api" / "admin" / "events" / String / "monitor")
        .and(warp::get())
        .and(s())
        .then(monitor_event)
        .map(respond);
    let outcomes = warp::path!("api" / "admin" / "lots")
        .and(warp::get())
        .and(s())
        .and(warp::query::<HashMap<String, String>>())
        .then(lots_by_outcome)
        .map(respond);
    let relist = warp::path!("api" / "admin" / "lots" / String / "relist")
        .and(warp::post())
        .and(s())
        .and(body())
        .then(relist_lot)
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
        .or(start)
        .unify()
        .or(pause)
        .unify()
        .or(resume)
        .unify()
        .or(cancel)
        .unify()
        .or(monitor)
        .unify()
        .or(outcomes)
        .unify()
        .or(relist)
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

/// Starts an event now: draft or scheduled → live at once, its draft lots scheduled; the ticker
/// opens each lane's first lot on its next reading (within about a quarter second). The start
/// push to the cohort goes out first under the ticker's own message id, so an event the ticker
/// was starting at the same moment is announced once.
#[utoipa::path(post, path = "/api/admin/events/{id}/start", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "event id")),
    responses((status = 200, description = "the event, live", body = EventOut),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, body = crate::openapi::ErrorDoc),
              (status = 409, description = "live or closed already", body = crate::openapi::ErrorDoc),
              (status = 503, description = "NATS did not store the start push; nothing changed", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn start_event(id: String, state: Arc<State>, authz: Option<String>) -> ApiResult {
    let admin = state.tokens.admin(authz.as_deref())?;
    let id: EventId = path_id(&id, "event")?;
    let event = store::views::event(&state.pool, id)
        .await?
        .ok_or_else(|| ApiErr::not_found("event"))?;
    let started_already = || ApiErr::Conflict("the event has started already".into());
    if !matches!(event.status.as_str(), "draft" | "scheduled") {
        return Err(started_already());
    }
    let job = NotifyJob::EventStarting { event_id: id };
    publish(
        &state,
        Outgoing::new(
            subj::notify(job.kind()),
            &job,
            Some(format!("event_starting-{id}")),
            TraceParent::new_root(),
        ),
    )
    .await?;
    store::admin::start_event_now(&state.pool, id, schemas::now_ms())
        .await
        .map_err(|e| match e {
            store::StoreError::Conflict(_) => started_already(),
            e => e.into(),
        })?;
    let event = store::views::event(&state.pool, id)
        .await?
        .ok_or_else(|| ApiErr::not_found("event"))?;
    tracing::info!(event = %id, by = %admin.user, "event started by an admin");
    json(StatusCode::OK, &EventOut::from(event))
}

/// A lot control command.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Control {
    Pause,
    Resume,
    Cancel,
}

impl Control {
    fn name(self) -> &'static str {
        match self {
            Control::Pause => "pause",
            Control::Resume => "resume",
            Control::Cancel => "cancel",
        }
    }

    /// Whether the lifecycle lets a lot in `state` take this command (resume only undoes a
    /// pause: `scheduled → open` is the ticker's open, not a resume).
    fn allowed_from(self, state: LotState) -> bool {
        match self {
            Control::Pause => state.can_become(LotState::Paused),
            Control::Resume => state == LotState::Paused && state.can_become(LotState::Open),
            Control::Cancel => state.can_become(LotState::Cancelled),
        }
    }

    fn command(self, lot_id: LotId) -> BidCommand {
        match self {
            Control::Pause => BidCommand::Pause { lot_id },
            Control::Resume => BidCommand::Resume { lot_id },
            Control::Cancel => BidCommand::Cancel { lot_id },
        }
    }
}

/// Pause an open lot: the clock stops with its remaining time kept.
#[utoipa::path(post, path = "/api/admin/lots/{id}/pause", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lot id")),
    responses((status = 202, description = "sent to the lot's ordered subject; the lot as it stood", body = crate::openapi::LotViewDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, body = crate::openapi::ErrorDoc),
              (status = 409, description = "the lot is not open", body = crate::openapi::ErrorDoc),
              (status = 503, description = "NATS did not confirm; retrying is safe", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn pause_lot(id: String, state: Arc<State>, authz: Option<String>) -> ApiResult {
    control_lot(Control::Pause, id, state, authz).await
}

/// Resume a paused lot: the clock runs again with the time it kept.
#[utoipa::path(post, path = "/api/admin/lots/{id}/resume", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lot id")),
    responses((status = 202, description = "sent to the lot's ordered subject; the lot as it stood", body = crate::openapi::LotViewDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, body = crate::openapi::ErrorDoc),
              (status = 409, description = "the lot is not paused", body = crate::openapi::ErrorDoc),
              (status = 503, description = "NATS did not confirm; retrying is safe", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn resume_lot(id: String, state: Arc<State>, authz: Option<String>) -> ApiResult {
    control_lot(Control::Resume, id, state, authz).await
}

/// Cancel a lot that has not closed: it ends `cancelled` and the lane moves on.
#[utoipa::path(post, path = "/api/admin/lots/{id}/cancel", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lot id")),
    responses((status = 202, description = "sent to the lot's ordered subject; the lot as it stood", body = crate::openapi::LotViewDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, body = crate::openapi::ErrorDoc),
              (status = 409, description = "the lot has ended", body = crate::openapi::ErrorDoc),
              (status = 503, description = "NATS did not confirm; retrying is safe", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn cancel_lot(id: String, state: Arc<State>, authz: Option<String>) -> ApiResult {
    control_lot(Control::Cancel, id, state, authz).await
}

/// Publishes a control command on the lot's ordered subject and waits for JetStream to store it.
/// The message id names the command and the version it was asked at, so a double click (or a
/// retry after a 503) is stored once, and the same command asked again after the lot moved on
/// is a new one.
async fn control_lot(
    control: Control,
    id: String,
    state: Arc<State>,
    authz: Option<String>,
) -> ApiResult {
    let admin = state.tokens.admin(authz.as_deref())?;
    let lot_id: LotId = path_id(&id, "lot")?;
    let lot = store::views::lot_view(&state.pool, lot_id)
        .await?
        .ok_or_else(|| ApiErr::not_found("lot"))?;
    if !control.allowed_from(lot.state) {
        return Err(ApiErr::Conflict(format!(
            "a {} lot cannot take {}",
            lot.state,
            control.name()
        )));
    }
    let partitions = state.partitions;
    let cmd = control.command(lot_id);
    publish(
        &state,
        Outgoing::new(
            subj::bids(lot_id, partitions),
            &cmd,
            Some(format!("admin-{}-{lot_id}-{}", control.name(), lot.version)),
            TraceParent::new_root(),
        ),
    )
    .await?;
    tracing::info!(lot = %lot_id, by = %admin.user, command = cmd.gavel_type(), "lot command sent");
    json(StatusCode::ACCEPTED, &lot)
}

/// Publishes to JetStream and waits until it is stored; a NATS failure is 503 (the id makes a
/// retry safe).
async fn publish(state: &State, out: Outgoing) -> Result<(), ApiErr> {
    let js = bus::jetstream(state.nats.clone());
    let stored = async {
        out.send(&js)
            .await?
            .await
            .map_err(|e| bus::BusError::Nats(e.into()))
    };
    stored.await.map_err(|e| {
        tracing::warn!(subject = %out.subject, error = %e, "publish not confirmed");
        ApiErr::Unavailable("NATS did not confirm the command; try again".into())
    })?;
    Ok(())
}

/// The floor view of an event: its status, how many screens watch it, and per lane the lot on
/// the block and the accepted bids of the last minute.
#[utoipa::path(get, path = "/api/admin/events/{id}/monitor", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "event id")),
    responses((status = 200, body = MonitorOut),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn monitor_event(
    id: String,
    state: Arc<State>,
    authz: Option<String>,
) -> ApiResult {
    state.tokens.admin(authz.as_deref())?;
    let id: EventId = path_id(&id, "event")?;
    let event = store::views::event(&state.pool, id)
        .await?
        .ok_or_else(|| ApiErr::not_found("event"))?;
    let mut on_block: HashMap<i32, LotView> = store::admin::lane_lots(&state.pool, id)
        .await?
        .into_iter()
        .map(|l| (l.lane, l))
        .collect();
    let since = schemas::now_ms() - 60_000;
    let bids: HashMap<i32, i64> = store::admin::accepted_bids_per_lane(&state.pool, id, since)
        .await?
        .into_iter()
        .collect();
    let lanes = (1..=event.lanes)
        .map(|lane| MonitorLaneOut {
            lane,
            lot: on_block.remove(&lane),
            bids_per_minute: bids.get(&lane).copied().unwrap_or(0),
        })
        .collect();
    json(
        StatusCode::OK,
        &MonitorOut {
            event_id: id.uuid(),
            status: event.status,
            clients: state.clients_of(id),
            lanes,
        },
    )
}

/// Sold / unsold tracking: the lots that ended with `outcome`, newest event first.
#[utoipa::path(get, path = "/api/admin/lots", tag = "admin", security(("bearer" = [])),
    params(("outcome" = String, Query, description = "`sold`, `unsold` or `cancelled`")),
    responses((status = 200, body = Vec<EndedLotOut>),
              (status = 400, description = "outcome missing or another value", body = crate::openapi::ErrorDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn lots_by_outcome(
    state: Arc<State>,
    authz: Option<String>,
    query: HashMap<String, String>,
) -> ApiResult {
    state.tokens.admin(authz.as_deref())?;
    let outcome: Outcome = query
        .get("outcome")
        .and_then(|o| o.parse().ok())
        .ok_or_else(|| ApiErr::Invalid("outcome is `sold`, `unsold` or `cancelled`".into()))?;
    let lots: Vec<EndedLotOut> = store::admin::lots_by_outcome(&state.pool, outcome)
        .await?
        .into_iter()
        .map(EndedLotOut::from)
        .collect();
    json(StatusCode::OK, &lots)
}

/// Re-list the vehicle of an unsold or cancelled lot as a new lot (a closed lot never reopens).
#[utoipa::path(post, path = "/api/admin/lots/{id}/relist", tag = "admin", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "the lot that did not sell")),
    request_body = RelistBody,
    responses((status = 201, description = "the new lot", body = crate::openapi::LotViewDoc),
              (status = 400, description = "lane outside 1..lanes, or a bad price or position", body = crate::openapi::ErrorDoc),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 403, body = crate::openapi::ErrorDoc),
              (status = 404, description = "no such lot or event", body = crate::openapi::ErrorDoc),
              (status = 409, description = "the lot is not unsold or cancelled, was re-listed already, the position is taken or the event is closed", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn relist_lot(
    id: String,
    state: Arc<State>,
    authz: Option<String>,
    body: Bytes,
) -> ApiResult {
    let admin = state.tokens.admin(authz.as_deref())?;
    let from: LotId = path_id(&id, "lot")?;
    let b: RelistBody = read_json(&body)?;
    if b.position < 1 {
        return Err(ApiErr::Invalid("position starts at 1".into()));
    }
    let starting_price = b
        .starting_price
        .map(|p| Cents::new(p).map(Cents::get))
        .transpose()
        .map_err(|_| ApiErr::Invalid("starting_price must be a positive number of cents".into()))?;
    if b.reserve.is_some_and(|r| !(0..=Cents::MAX).contains(&r)) {
        return Err(ApiErr::Invalid(
            "reserve must be zero or a positive number of cents".into(),
        ));
    }
    let to = store::admin::Relist {
        event_id: EventId(b.event_id),
        lane: b.lane,
        position: b.position,
        starting_price,
        reserve: b.reserve,
    };
    let lot = store::admin::relist_lot(&state.pool, from, &to)
        .await
        .map_err(|e| match e {
            store::StoreError::NotFound => ApiErr::not_found("lot"),
            store::StoreError::Conflict(c) if c == "lots_relist_outcome" => {
                ApiErr::Conflict("only an unsold or cancelled lot can be re-listed".into())
            }
            store::StoreError::Conflict(c) if c == "lots_relisted_once" => {
                ApiErr::Conflict("this lot has been re-listed already".into())
            }
            e => e.into(),
        })?;
    let view = store::views::lot_view(&state.pool, lot)
        .await?
        .ok_or_else(|| ApiErr::Internal(anyhow::anyhow!("lot {lot} vanished after insert")))?;
    tracing::info!(from = %from, lot = %lot, event = %to.event_id, by = %admin.user, "lot re-listed");
    json(StatusCode::CREATED, &view)
}
