//! The edge: Gavel's door to clients. It bridges NATS to the apps' WebSockets (the live feed,
//! bids, per-user notices), serves REST for buyers and admins, issues and checks access tokens,
//! limits logins per address and bids per user, and answers health probes and `/metrics`. It is
//! stateless: any edge serves any client, and a client that reconnects anywhere gets a fresh
//! snapshot.
//!
//! Read [`error`] first (every error and the one place it becomes a response), then [`auth`]
//! (tokens, account rules, the limiter), then [`live`] (NATS to sockets: the board rules, rooms,
//! the hub, bids) and [`ws`] (one socket), then [`rest`], [`bids`] and [`admin`] (the routes),
//! then [`server`] (hyper, with warp for everything but `/ws`). This file holds the
//! configuration and the route table. All SQL is in the `store` crate.

pub mod admin;
pub mod auth;
pub mod bids;
pub mod error;
pub mod live;
pub mod metrics;
pub mod openapi;
pub mod rest;
pub(crate) mod server;
pub mod web;
pub mod ws;

use anyhow::Context as _;
use auth::{AuthLimiter, Secret, Tokens};
use bytes::Bytes;
use error::ApiErr;
use serde::de::DeserializeOwned;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use store::PgPool;
use tokio_util::sync::CancellationToken;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::{Filter, Reply};

/// Largest request body the edge reads.
pub const MAX_BODY_BYTES: u64 = 64 * 1024;

/// How an edge runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Where it listens (`GAVEL_HTTP_ADDR`).
    pub http_addr: SocketAddr,
    /// Signs access tokens (`GAVEL_JWT_SECRET`); at least 32 bytes.
    pub jwt_secret: Secret,
    /// How long a token lets its holder in.
    pub token_ttl: Duration,
    /// Login and register calls per minute per client address (`GAVEL_AUTH_RATE`); 0 is off.
    pub auth_rate: u32,
    /// Partitions of `BIDS` (`GAVEL_PARTITIONS`), to address a lot's subject.
    pub partitions: u16,
    /// Bids per second per user (`GAVEL_BID_RATE`), a burst of as many; 0 is off.
    pub bid_rate: u32,
    /// Origins allowed to open a WebSocket from a browser (`GAVEL_ALLOWED_ORIGINS`); empty means
    /// `http://` + the listening address (and `http://localhost:<port>` on loopback).
    pub allowed_origins: Vec<String>,
    /// How long a shutdown waits for requests in flight before it gives up on them.
    pub drain: Duration,
}

impl Config {
    /// Defaults: `127.0.0.1:8080`, tokens for 12 hours, 30 auth calls a minute, 20 bids a second,
    /// 10 s drain.
    pub fn new(jwt_secret: Secret, partitions: u16) -> Self {
        Self {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            jwt_secret,
            token_ttl: Duration::from_secs(12 * 3600),
            auth_rate: 30,
            partitions,
            bid_rate: 20,
            allowed_origins: Vec::new(),
            drain: Duration::from_secs(10),
        }
    }

    /// Refuses a configuration that cannot work, at start-up rather than at the first request.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.jwt_secret.expose().len() >= 32,
            "GAVEL_JWT_SECRET must be at least 32 bytes"
        );
        anyhow::ensure!(
            self.token_ttl >= Duration::from_secs(60),
            "the token lifetime must be at least a minute"
        );
        anyhow::ensure!(self.partitions > 0, "GAVEL_PARTITIONS must be at least 1");
        Ok(())
    }
}

/// What every handler shares.
pub(crate) struct State {
    pub(crate) pool: PgPool,
    pub(crate) nats: async_nats::Client,
    pub(crate) tokens: Tokens,
    pub(crate) limiter: Option<AuthLimiter>,
    pub(crate) bid_limiter: Option<bids::BidLimiter>,
    pub(crate) hashing: auth::HashGate,
    pub(crate) hub: Arc<live::Hub>,
    pub(crate) allowed_origins: Vec<String>,
    /// Partitions of `BIDS`, to address a lot's subject as the bidder consumes it.
    pub(crate) partitions: u16,
}

impl State {
    /// WebSockets subscribed to `event`, summed over every edge (the admin monitor's `clients`).
    pub(crate) fn clients_of(&self, event: schemas::EventId) -> u64 {
        self.hub.clients_of(event)
    }
}

/// A handler's answer: the response, or an error that [`ApiErr::into_response`] turns into one.
pub(crate) type ApiResult = Result<Response, ApiErr>;

/// `value` as JSON with `status`.
pub(crate) fn json<T: serde::Serialize>(status: StatusCode, value: &T) -> ApiResult {
    Ok(warp::reply::with_status(warp::reply::json(value), status).into_response())
}

/// Reads a JSON body; anything unreadable is 400 `invalid` with serde's reason. A NUL character
/// in any string is refused here too: Postgres text cannot hold one, and every body's strings
/// end up in Postgres (found by schemathesis: a NUL in a login's email was a 500).
pub(crate) fn read_json<T: DeserializeOwned>(body: &Bytes) -> Result<T, ApiErr> {
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|e| ApiErr::Invalid(format!("unreadable body: {e}")))?;
    if has_nul(&value) {
        return Err(ApiErr::Invalid(
            "unreadable body: text may not contain NUL characters".into(),
        ));
    }
    serde_json::from_value(value).map_err(|e| ApiErr::Invalid(format!("unreadable body: {e}")))
}

/// Whether any string or key in `v` holds a NUL.
fn has_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}

/// Runs the edge on `config.http_addr` until `shutdown`, then drains.
pub async fn run(
    config: Config,
    nats: async_nats::Client,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let listener = tokio::net::TcpListener::bind(config.http_addr)
        .await
        .with_context(|| format!("listening on {}", config.http_addr))?;
    serve_on(listener, config, nats, pool, shutdown).await
}

/// Serves on a listener the caller bound (tests bind port 0 and read the port first) until
/// `shutdown`: stops accepting, lets requests in flight finish for up to `config.drain`.
pub async fn serve_on(
    listener: tokio::net::TcpListener,
    config: Config,
    nats: async_nats::Client,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.check()?;
    let addr = listener.local_addr().context("the listener's address")?;
    let allowed_origins = if config.allowed_origins.is_empty() {
        // The page this edge serves; on loopback, `localhost` names the same page.
        let mut own = vec![format!("http://{addr}")];
        if addr.ip().is_loopback() {
            own.push(format!("http://localhost:{}", addr.port()));
        }
        own
    } else {
        config.allowed_origins.clone()
    };
    let hub = live::Hub::new(
        pool.clone(),
        nats.clone(),
        config.partitions,
        metrics::Metrics::new(),
        shutdown.clone(),
    );
    let router = hub.start().await.context("subscribing to the live feed")?;
    let state = Arc::new(State {
        pool,
        nats,
        tokens: Tokens::new(&config.jwt_secret, config.token_ttl),
        limiter: AuthLimiter::new(config.auth_rate),
        bid_limiter: bids::BidLimiter::new(config.bid_rate),
        hashing: auth::HashGate::for_this_machine(),
        hub,
        allowed_origins,
        partitions: config.partitions,
    });
    tracing::info!(%addr, auth_rate = config.auth_rate, bid_rate = config.bid_rate, "edge listening");
    let server = server::serve(
        listener,
        routes(state.clone()),
        state.clone(),
        shutdown.clone(),
        config.drain,
    );
    let housekeeping = async {
        let mut every = tokio::time::interval(Duration::from_secs(60));
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = every.tick() => {
                    if let Some(l) = &state.limiter {
                        l.forget_idle();
                    }
                    if let Some(l) = &state.bid_limiter {
                        l.forget_idle();
                    }
                }
            }
        }
    };
    tokio::join!(server, housekeeping, router);
    tracing::info!(%addr, "edge stopped");
    Ok(())
}

/// Every route, then the protocol's errors for everything else. (No per-request log line: warp's
/// trace filter logs every 4xx as a warning; refusals are logged once, at debug, in [`error`].)
pub(crate) fn routes(
    state: Arc<State>,
) -> impl Filter<Extract = (Response,), Error = std::convert::Infallible> + Clone {
    let health = rest::health_routes(state.clone());
    let api = rest::routes(state.clone())
        .or(admin::routes(state.clone()))
        .unify();
    let docs = warp::path!("openapi.json")
        .and(warp::get())
        .map(|| warp::reply::json(&openapi::document()).into_response());
    let metrics = {
        let state = state.clone();
        warp::path!("metrics").and(warp::get()).map(move || {
            warp::reply::with_header(
                state.hub.metrics.render(),
                "content-type",
                "text/plain; version=0.0.4",
            )
            .into_response()
        })
    };
    let api = api.or(bids::routes(state)).unify();
    health
        .or(api)
        .unify()
        .or(docs)
        .unify()
        .or(metrics)
        .unify()
        .or(web::routes())
        .unify()
        .recover(error::recover)
        .unify()
}

// ----- filters shared by the route modules -----

/// The shared state.
pub(crate) fn with_state(
    state: Arc<State>,
) -> impl Filter<Extract = (Arc<State>,), Error = std::convert::Infallible> + Clone {
    warp::any().map(move || state.clone())
}

/// The `Authorization` header, if any and readable (never rejects: handlers decide 401/403
/// before they read anything else, so an anonymous caller learns nothing from the body checks).
pub(crate) fn authorization(
) -> impl Filter<Extract = (Option<String>,), Error = std::convert::Infallible> + Clone {
    warp::header::headers_cloned().map(|h: warp::http::HeaderMap| {
        h.get(warp::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    })
}

/// A body of at most [`MAX_BODY_BYTES`], unparsed.
pub(crate) fn body() -> impl Filter<Extract = (Bytes,), Error = warp::Rejection> + Clone {
    warp::body::content_length_limit(MAX_BODY_BYTES).and(warp::body::bytes())
}

/// Turns a handler's answer into the response.
pub(crate) fn respond(r: ApiResult) -> Response {
    r.unwrap_or_else(ApiErr::into_response)
}
