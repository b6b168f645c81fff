//! Buyers' REST routes (accounts, the event feed, lots, cohorts, won lots) and health probes.
//!
//! Each handler checks who is calling before it reads anything else, then answers with the
//! object itself (PROTOCOL.md: not wrapped). Drafts are the admins' business: a buyer asking for
//! a draft event or one of its lots gets 404, as if it did not exist.

use crate::auth::{self, Caller, Role};
use crate::error::ApiErr;
use crate::{authorization, body, json, read_json, respond, with_state, ApiResult, State};
use bytes::Bytes;
use schemas::frames::LotView;
use schemas::{EventId, LotId};
use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use utoipa::ToSchema;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// Most bids a lot's history shows.
const MAX_BID_LINES: i64 = 500;

// ----- bodies -----

#[derive(Debug, Deserialize, ToSchema)]
pub struct RegisterBody {
    pub email: String,
    /// 8 to 128 characters.
    #[schema(min_length = 8, max_length = 128)]
    pub password: String,
    /// 1 to 100 characters.
    #[schema(min_length = 1, max_length = 100)]
    pub name: String,
}

#[derive(Debug, Deserialize, ToSchema)]
pub struct LoginBody {
    pub email: String,
    pub password: String,
}

/// A user as every answer shows it.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct UserOut {
    pub id: uuid::Uuid,
    pub email: String,
    pub name: String,
    /// `buyer` or `admin`.
    pub role: String,
    pub verified: bool,
}

impl From<store::users::User> for UserOut {
    fn from(u: store::users::User) -> Self {
        Self {
            id: u.id,
            email: u.email,
            name: u.name,
            role: u.role,
            verified: u.verified,
        }
    }
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LoginOut {
    /// Send as `Authorization: Bearer <token>`.
    pub token: String,
    /// When the token stops working (ms since the epoch).
    pub expires_at: i64,
    pub user: UserOut,
}

/// An event without its lots.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventOut {
    pub id: uuid::Uuid,
    pub name: String,
    /// `draft`, `scheduled`, `live` or `closed`.
    pub status: String,
    pub starts_at: i64,
    pub lanes: i32,
    pub lot_seconds: i32,
    pub reset_seconds: i32,
}

impl From<store::views::EventRow> for EventOut {
    fn from(e: store::views::EventRow) -> Self {
        Self {
            id: e.id.uuid(),
            name: e.name,
            status: e.status,
            starts_at: e.starts_at,
            lanes: e.lanes,
            lot_seconds: e.lot_seconds,
            reset_seconds: e.reset_seconds,
        }
    }
}

/// An event with its lots, by lane then position.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: EventOut,
    #[schema(value_type = Vec<crate::openapi::LotViewDoc>)]
    pub lots: Vec<LotView>,
}

/// One accepted bid.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct BidLineOut {
    pub amount: i64,
    /// The bidder's masked alias, as in `new_bid`.
    pub bidder: String,
    pub at: i64,
}

/// A lot view with its accepted bids, newest first.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct LotDetail {
    #[serde(flatten)]
    #[schema(value_type = crate::openapi::LotViewDoc)]
    pub lot: LotView,
    pub bids: Vec<BidLineOut>,
}

#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct RegistrationOut {
    pub event_id: uuid::Uuid,
    /// Always true: registering twice is the same as once.
    pub registered: bool,
}

/// A lot the caller won.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct WonOut {
    pub lot_id: uuid::Uuid,
    pub event_id: uuid::Uuid,
    pub amount: i64,
    /// Pickup instructions.
    pub pickup: String,
    pub decided_at: i64,
    #[schema(value_type = crate::openapi::VehicleViewDoc)]
    pub vehicle: schemas::frames::VehicleView,
}

// ----- routes -----

pub(crate) fn health_routes(
    state: Arc<State>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let healthz = warp::path!("healthz")
        .and(warp::get())
        .then(healthz)
        .map(respond);
    let readyz = warp::path!("readyz")
        .and(warp::get())
        .and(with_state(state))
        .then(readyz)
        .map(respond);
    healthz.or(readyz).unify()
}

pub(crate) fn routes(
    state: Arc<State>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let s = move || with_state(state.clone());
    let register = warp::path!("api" / "auth" / "register")
        .and(warp::post())
        .and(s())
        .and(crate::server::client_addr())
        .and(body())
        .then(register)
        .map(respond);
    let login = warp::path!("api" / "auth" / "login")
        .and(warp::post())
        .and(s())
        .and(crate::server::client_addr())
        .and(body())
        .then(login)
        .map(respond);
    let me = warp::path!("api" / "me")
        .and(warp::get())
        .and(s())
        .and(authorization())
        .then(me)
        .map(respond);
    let won = warp::path!("api" / "me" / "won")
        .and(warp::get())
        .and(s())
        .and(authorization())
        .then(won)
        .map(respond);
    let events = warp::path!("api" / "events")
        .and(warp::get())
        .and(s())
        .and(warp::query::<HashMap<String, String>>())
        .then(events)
        .map(respond);
    let event = warp::path!("api" / "events" / String)
        .and(warp::get())
        .and(s())
        .and(authorization())
        .then(event)
        .map(respond);
    let join = warp::path!("api" / "events" / String / "register")
        .and(warp::post())
        .and(s())
        .and(authorization())
        .then(join_event)
        .map(respond);
    let lot = warp::path!("api" / "lots" / String)
        .and(warp::get())
        .and(s())
        .and(authorization())
        .then(lot)
        .map(respond);
    register
        .or(login)
        .unify()
        .or(me)
        .unify()
        .or(won)
        .unify()
        .or(events)
        .unify()
        .or(event)
        .unify()
        .or(join)
        .unify()
        .or(lot)
        .unify()
}

// ----- helpers -----

/// Parses an id from a path segment; a malformed one names nothing, so it is 404.
pub(crate) fn path_id<T: std::str::FromStr>(s: &str, what: &str) -> Result<T, ApiErr> {
    s.parse().map_err(|_| ApiErr::not_found(what))
}

/// Takes a login or register call from the caller's address allowance.
fn limit(state: &State, addr: Option<SocketAddr>) -> Result<(), ApiErr> {
    match (&state.limiter, addr) {
        (Some(l), Some(a)) => l.check(a.ip()),
        _ => Ok(()),
    }
}

/// An event a caller may see: drafts only to admins.
async fn visible_event(
    state: &State,
    id: EventId,
    caller: Option<Caller>,
) -> Result<store::views::EventRow, ApiErr> {
    let admin = caller.is_some_and(|c| c.role == Role::Admin);
    match store::views::event(&state.pool, id).await? {
        Some(e) if admin || e.status != "draft" => Ok(e),
        _ => Err(ApiErr::not_found("event")),
    }
}

// ----- handlers -----

/// Alive: the process answers.
#[utoipa::path(get, path = "/healthz", tag = "ops",
    responses((status = 200, description = "alive")))]
pub async fn healthz() -> ApiResult {
    json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
}

/// Ready: NATS is connected and Postgres answers.
#[utoipa::path(get, path = "/readyz", tag = "ops",
    responses((status = 200, description = "ready"),
              (status = 503, description = "NATS or Postgres unreachable", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn readyz(state: Arc<State>) -> ApiResult {
    if state.nats.connection_state() != async_nats::connection::State::Connected {
        return Err(ApiErr::Unavailable("NATS is not connected".into()));
    }
    match tokio::time::timeout(
        std::time::Duration::from_secs(2),
        store::health::ping(&state.pool),
    )
    .await
    {
        Ok(Ok(())) => json(StatusCode::OK, &serde_json::json!({"status": "ready"})),
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "postgres ping failed");
            Err(ApiErr::Unavailable("Postgres is not reachable".into()))
        }
        Err(_) => Err(ApiErr::Unavailable(
            "Postgres did not answer in time".into(),
        )),
    }
}

/// Create an account (a buyer, unverified).
#[utoipa::path(post, path = "/api/auth/register", tag = "auth", request_body = RegisterBody,
    responses((status = 201, body = UserOut),
              (status = 400, description = "malformed email, password or name", body = crate::openapi::ErrorDoc),
              (status = 409, description = "email in use", body = crate::openapi::ErrorDoc),
              (status = 429, description = "too many calls from this address", body = crate::openapi::ErrorDoc),
              (status = 503, description = "too many password checks at once on this edge; retry", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn register(
    state: Arc<State>,
    addr: Option<SocketAddr>,
    body: Bytes,
) -> ApiResult {
    limit(&state, addr)?;
    let b: RegisterBody = read_json(&body)?;
    let email = auth::check_email(&b.email)?;
    auth::check_password(&b.password)?;
    let name = auth::check_name(&b.name)?;
    let password = b.password;
    let hash = state
        .hashing
        .run(move || store::users::hash_password(&password))
        .await??;
    let user = store::users::create_user(&state.pool, &email, &hash, &name, false, false).await?;
    tracing::info!(user = %user.id, "user registered");
    json(StatusCode::CREATED, &UserOut::from(user))
}

/// Log in: a token and the user.
#[utoipa::path(post, path = "/api/auth/login", tag = "auth", request_body = LoginBody,
    responses((status = 200, body = LoginOut),
              (status = 400, body = crate::openapi::ErrorDoc),
              (status = 401, description = "`invalid_credentials`", body = crate::openapi::ErrorDoc),
              (status = 429, body = crate::openapi::ErrorDoc),
              (status = 503, description = "too many password checks at once on this edge; retry", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn login(state: Arc<State>, addr: Option<SocketAddr>, body: Bytes) -> ApiResult {
    limit(&state, addr)?;
    let b: LoginBody = read_json(&body)?;
    let found = store::users::user_by_email(&state.pool, b.email.trim()).await?;
    let (user, hash) = match found {
        Some((u, h)) => (Some(u), Some(h)),
        None => (None, None),
    };
    let password = b.password;
    // An unknown email costs a hash check too, so timing does not tell which emails exist.
    let ok = state
        .hashing
        .run(move || {
            let hash = hash.as_deref().unwrap_or_else(|| dummy_hash());
            store::users::verify_password(&password, hash)
        })
        .await?;
    let user = match user {
        Some(u) if ok => u,
        _ => return Err(ApiErr::InvalidCredentials),
    };
    let role = Role::parse(&user.role)
        .ok_or_else(|| ApiErr::Internal(anyhow::anyhow!("unknown role {:?}", user.role)))?;
    let (token, expires_at) = state.tokens.issue(schemas::UserId(user.id), role)?;
    tracing::debug!(user = %user.id, "user logged in");
    json(
        StatusCode::OK,
        &LoginOut {
            token,
            expires_at,
            user: user.into(),
        },
    )
}

/// A hash no password matches, made once.
fn dummy_hash() -> &'static str {
    static HASH: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    HASH.get_or_init(|| {
        store::users::hash_password(&uuid::Uuid::new_v4().to_string()).unwrap_or_default()
    })
}

/// The caller.
#[utoipa::path(get, path = "/api/me", tag = "buyers", security(("bearer" = [])),
    responses((status = 200, body = UserOut), (status = 401, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn me(state: Arc<State>, authz: Option<String>) -> ApiResult {
    let caller = state.tokens.caller(authz.as_deref())?;
    match store::users::user_by_id(&state.pool, caller.user).await? {
        Some(u) => json(StatusCode::OK, &UserOut::from(u)),
        // A valid token for a user that is gone.
        None => Err(ApiErr::Unauthorized("the token's user no longer exists")),
    }
}

/// Lots the caller won, newest first, with pickup instructions.
#[utoipa::path(get, path = "/api/me/won", tag = "buyers", security(("bearer" = [])),
    responses((status = 200, body = Vec<WonOut>), (status = 401, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn won(state: Arc<State>, authz: Option<String>) -> ApiResult {
    let caller = state.tokens.caller(authz.as_deref())?;
    let won: Vec<WonOut> = store::views::won_lots(&state.pool, caller.user)
        .await?
        .into_iter()
        .map(|w| WonOut {
            lot_id: w.lot_id.uuid(),
            event_id: w.event_id.uuid(),
            amount: w.amount,
            pickup: w.pickup,
            decided_at: w.decided_at,
            vehicle: w.vehicle,
        })
        .collect();
    json(StatusCode::OK, &won)
}

/// The Available Now feed: scheduled and live events (or only `status`), soonest first.
#[utoipa::path(get, path = "/api/events", tag = "buyers",
    params(("status" = Option<String>, Query, description = "`scheduled` or `live`; both when absent")),
    responses((status = 200, body = Vec<EventOut>), (status = 400, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn events(state: Arc<State>, query: HashMap<String, String>) -> ApiResult {
    let statuses: &[&str] = match query.get("status").map(String::as_str) {
        None | Some("") => &["scheduled", "live"],
        Some("scheduled") => &["scheduled"],
        Some("live") => &["live"],
        Some(_) => return Err(ApiErr::Invalid("status is `scheduled` or `live`".into())),
    };
    let events: Vec<EventOut> = store::views::events_by_status(&state.pool, statuses)
        .await?
        .into_iter()
        .map(EventOut::from)
        .collect();
    json(StatusCode::OK, &events)
}

/// An event with its lots.
#[utoipa::path(get, path = "/api/events/{id}", tag = "buyers",
    params(("id" = uuid::Uuid, Path, description = "event id")),
    responses((status = 200, body = EventDetail), (status = 404, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn event(id: String, state: Arc<State>, authz: Option<String>) -> ApiResult {
    let caller = state.tokens.optional_caller(authz.as_deref())?;
    let id: EventId = path_id(&id, "event")?;
    let event = visible_event(&state, id, caller).await?;
    let lots = store::views::event_lots(&state.pool, id).await?;
    json(
        StatusCode::OK,
        &EventDetail {
            event: event.into(),
            lots,
        },
    )
}

/// Join an event's cohort (start alerts). Registering twice is the same as once.
#[utoipa::path(post, path = "/api/events/{id}/register", tag = "buyers", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "event id")),
    responses((status = 200, body = RegistrationOut),
              (status = 401, body = crate::openapi::ErrorDoc),
              (status = 404, body = crate::openapi::ErrorDoc),
              (status = 409, description = "the event is closed", body = crate::openapi::ErrorDoc)))]
pub(crate) async fn join_event(id: String, state: Arc<State>, authz: Option<String>) -> ApiResult {
    let caller = state.tokens.caller(authz.as_deref())?;
    let id: EventId = path_id(&id, "event")?;
    let event = visible_event(&state, id, Some(caller)).await?;
    if event.status == "closed" {
        return Err(ApiErr::Conflict("the event is over".into()));
    }
    store::push::register(&state.pool, id, caller.user).await?;
    json(
        StatusCode::OK,
        &RegistrationOut {
            event_id: id.uuid(),
            registered: true,
        },
    )
}

/// A lot with its accepted bids, newest first.
#[utoipa::path(get, path = "/api/lots/{id}", tag = "buyers",
    params(("id" = uuid::Uuid, Path, description = "lot id")),
    responses((status = 200, body = LotDetail), (status = 404, body = crate::openapi::ErrorDoc)))]
pub(crate) async fn lot(id: String, state: Arc<State>, authz: Option<String>) -> ApiResult {
    let caller = state.tokens.optional_caller(authz.as_deref())?;
    let id: LotId = path_id(&id, "lot")?;
    let admin = caller.is_some_and(|c| c.role == Role::Admin);
    let lot = match store::views::lot_view(&state.pool, id).await? {
        Some(l) if admin || l.state != schemas::LotState::Draft => l,
        _ => return Err(ApiErr::not_found("lot")),
    };
    let bids = store::views::lot_bids(&state.pool, id, lot.event_id, MAX_BID_LINES)
        .await?
        .into_iter()
        .map(|b| BidLineOut {
            amount: b.amount,
            bidder: b.bidder,
            at: b.at,
        })
        .collect();
    json(StatusCode::OK, &LotDetail { lot, bids })
}
