//! A real edge on a port of its own, with a real NATS and a fresh Postgres database, and a
//! reqwest client that talks to it over HTTP.
#![allow(dead_code)]

use edge::auth::Secret;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use store::PgPool;
use testkit::{NatsServer, TestDb};
use tokio_util::sync::CancellationToken;

pub const SECRET: &str = "the edge tests' secret, thirty-two bytes or more";
pub const PASSWORD: &str = "correct horse battery";

pub struct Edge {
    pub nats: NatsServer,
    pub db: TestDb,
    pub addr: SocketAddr,
    pub http: reqwest::Client,
    pub shutdown: CancellationToken,
    pub handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl Edge {
    /// An edge with the auth limit off (tests log in many times from 127.0.0.1).
    pub async fn start() -> Edge {
        Edge::start_with(|c| c.auth_rate = 0).await
    }

    pub async fn start_with(tweak: impl FnOnce(&mut edge::Config)) -> Edge {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let nats = NatsServer::start().await.expect("nats-server");
        let db = TestDb::new().await.expect("test database");
        store::migrate(&db.pool).await.expect("migrations");
        let client = bus::connect(&nats.url(), "edge-test")
            .await
            .expect("connect");
        let mut config = edge::Config::new(Secret::new(SECRET), 4);
        tweak(&mut config);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = CancellationToken::new();
        let handle = tokio::spawn(edge::serve_on(
            listener,
            config,
            client,
            db.pool.clone(),
            shutdown.clone(),
        ));
        Edge {
            nats,
            db,
            addr,
            http: client_from(None),
            shutdown,
            handle: Some(handle),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }

    /// Sends a request; the status and the JSON body (`Null` when empty or not JSON).
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (StatusCode, Value) {
        call_with(&self.http, self, method, path, token, body).await
    }

    pub async fn get(&self, path: &str, token: Option<&str>) -> (StatusCode, Value) {
        self.call(Method::GET, path, token, None).await
    }

    pub async fn post(&self, path: &str, token: Option<&str>, body: Value) -> (StatusCode, Value) {
        self.call(Method::POST, path, token, Some(body)).await
    }

    /// A user made directly in the store, then logged in over HTTP: its id and token.
    pub async fn user(&self, email: &str, admin: bool, verified: bool) -> (uuid::Uuid, String) {
        let hash = store::users::hash_password(PASSWORD).unwrap();
        let u = store::users::create_user(self.pool(), email, &hash, "Test User", admin, verified)
            .await
            .unwrap();
        let (status, body) = self
            .post(
                "/api/auth/login",
                None,
                serde_json::json!({"email": email, "password": PASSWORD}),
            )
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (u.id, body["token"].as_str().unwrap().to_owned())
    }

    /// Stops the edge and waits for it to drain.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        if let Some(h) = self.handle.take() {
            tokio::time::timeout(Duration::from_secs(15), h).await???;
        }
        Ok(())
    }
}

impl Drop for Edge {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A client that connects from `from` (any 127.0.0.0/8 address works on Linux loopback).
pub fn client_from(from: Option<IpAddr>) -> reqwest::Client {
    let mut b = reqwest::Client::builder()
        .no_proxy()
        .timeout(Duration::from_secs(30));
    if let Some(ip) = from {
        b = b.local_address(ip);
    }
    b.build().unwrap()
}

pub async fn call_with(
    http: &reqwest::Client,
    edge: &Edge,
    method: Method,
    path: &str,
    token: Option<&str>,
    body: Option<Value>,
) -> (StatusCode, Value) {
    let mut req = http.request(method, edge.url(path));
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let bytes = resp.bytes().await.expect("body");
    let value = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    (status, value)
}

/// Asserts a protocol error: the status and `{"error": {"code", "message"}}` with this code.
#[track_caller]
pub fn assert_error(got: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(got.0, status, "body: {}", got.1);
    assert_eq!(got.1["error"]["code"], code, "body: {}", got.1);
    assert!(
        got.1["error"]["message"]
            .as_str()
            .is_some_and(|m| !m.is_empty()),
        "body: {}",
        got.1
    );
}

/// Rows in each table an admin route can change, and how many are verified / scheduled.
pub async fn counts(pool: &PgPool) -> Vec<(&'static str, i64)> {
    let mut out = Vec::new();
    for (name, sql) in [
        ("users", "SELECT count(*) FROM users"),
        ("verified", "SELECT count(*) FROM users WHERE verified"),
        ("vendors", "SELECT count(*) FROM vendors"),
        ("vehicles", "SELECT count(*) FROM vehicles"),
        ("events", "SELECT count(*) FROM events"),
        (
            "scheduled",
            "SELECT count(*) FROM events WHERE status <> 'draft'",
        ),
        ("lots", "SELECT count(*) FROM lots"),
        ("registrations", "SELECT count(*) FROM event_registrations"),
    ] {
        let n: i64 = sqlx::query_scalar(sql).fetch_one(pool).await.unwrap();
        out.push((name, n));
    }
    out
}

// ----- the live side: streams, a bidder, a ticker, commands and what they announce -----

/// Partitions of `BIDS` in these tests (the edge's config says the same).
pub const PARTITIONS: u16 = 4;

/// A service running in this process until dropped (or stopped).
pub struct Service {
    pub token: CancellationToken,
    pub handle: Option<tokio::task::JoinHandle<()>>,
}

impl Service {
    /// Stops the service and waits for it to give its leases back.
    pub async fn stop(mut self) {
        self.token.cancel();
        if let Some(h) = self.handle.take() {
            let _ = tokio::time::timeout(Duration::from_secs(15), h).await;
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.token.cancel();
    }
}

impl Edge {
    /// Creates the streams of PROTOCOL.md (as `gavel migrate` does) for [`PARTITIONS`].
    pub async fn streams(&self) -> async_nats::jetstream::Context {
        let client = bus::connect(&self.nats.url(), "edge-test-streams")
            .await
            .expect("connect");
        let js = bus::jetstream(client);
        bus::ensure_streams(&js, PARTITIONS, 1)
            .await
            .expect("streams");
        js
    }

    /// A bidder over every partition, in this process.
    pub async fn bidder(&self) -> Service {
        let mut config = bidder::Config::new(PARTITIONS);
        config.lease_ttl = Duration::from_secs(2);
        let client = bus::connect(&self.nats.url(), "edge-test-bidder")
            .await
            .expect("connect");
        let pool = self.db.pool.clone();
        let token = CancellationToken::new();
        let t = token.clone();
        let handle = tokio::spawn(async move {
            bidder::run(config, client, pool, t).await.expect("bidder");
        });
        Service {
            token,
            handle: Some(handle),
        }
    }

    /// The ticker (leading at once: it is alone), in this process.
    pub async fn ticker(&self) -> Service {
        let mut config = ticker::Config::new(PARTITIONS);
        config.poll_ms = 100;
        config.force_leader = true;
        let client = bus::connect(&self.nats.url(), "edge-test-ticker")
            .await
            .expect("connect");
        let pool = self.db.pool.clone();
        let token = CancellationToken::new();
        let t = token.clone();
        let handle = tokio::spawn(async move {
            ticker::run(config, client, pool, t).await.expect("ticker");
        });
        Service {
            token,
            handle: Some(handle),
        }
    }

    /// Publishes a command on the lot's ordered subject, as the ticker or the edge would; waits
    /// for JetStream to store it.
    pub async fn command(&self, cmd: &schemas::nats::BidCommand, msg_id: Option<String>) {
        let js = self.streams().await;
        bus::Outgoing::new(
            schemas::subjects::bids(cmd.lot_id(), PARTITIONS),
            cmd,
            msg_id,
            schemas::trace::TraceParent::new_root(),
        )
        .send(&js)
        .await
        .expect("publish")
        .await
        .expect("stored");
    }

    /// The lot view as Postgres has it now.
    pub async fn lot_view(&self, lot: &str) -> schemas::frames::LotView {
        store::views::lot_view(self.pool(), lot.parse().expect("a lot id"))
            .await
            .unwrap()
            .expect("the lot exists")
    }

    /// Waits (up to 20 s) until the bidder has put the lot in `state`.
    pub async fn wait_state(
        &self,
        lot: &str,
        state: schemas::LotState,
    ) -> schemas::frames::LotView {
        testkit::wait_until(
            Duration::from_secs(20),
            &format!("lot {lot} is {state}"),
            || async { self.lot_view(lot).await.state == state },
        )
        .await
        .unwrap();
        self.lot_view(lot).await
    }

    /// Every message `stream` holds whose subject starts with `prefix`, in stream order:
    /// `(subject, Gavel-Type header, Nats-Msg-Id header, payload)`.
    pub async fn stored(
        &self,
        stream: &str,
        prefix: &str,
    ) -> Vec<(String, String, Option<String>, bytes::Bytes)> {
        let js = self.streams().await;
        let mut s = js.get_stream(stream).await.expect("stream");
        let info = s.info().await.expect("stream info");
        let mut out = Vec::new();
        if info.state.messages == 0 {
            return out;
        }
        for seq in info.state.first_sequence..=info.state.last_sequence {
            let Ok(m) = s.get_raw_message(seq).await else {
                continue;
            };
            if !m.subject.starts_with(prefix) {
                continue;
            }
            let header = |name: &str| m.headers.get(name).map(|v| v.as_str().to_owned());
            out.push((
                m.subject.to_string(),
                header(schemas::nats::headers::GAVEL_TYPE).unwrap_or_default(),
                header(schemas::nats::headers::NATS_MSG_ID),
                m.payload.clone(),
            ));
        }
        out
    }

    /// Waits (up to 20 s) until `stream` holds `n` messages under `prefix`; returns them.
    pub async fn wait_stored(
        &self,
        stream: &str,
        prefix: &str,
        n: usize,
    ) -> Vec<(String, String, Option<String>, bytes::Bytes)> {
        testkit::wait_until(
            Duration::from_secs(20),
            &format!("{stream} holds {n} messages on {prefix}"),
            || async { self.stored(stream, prefix).await.len() >= n },
        )
        .await
        .unwrap();
        self.stored(stream, prefix).await
    }

    /// The last sequence of each stream (a refused call must publish nothing).
    pub async fn stream_positions(&self) -> Vec<(String, u64)> {
        let js = self.streams().await;
        let mut out = Vec::new();
        for name in ["BIDS", "AUCTION", "USERS", "NOTIFY"] {
            let mut s = js.get_stream(name).await.expect("stream");
            out.push((name.to_owned(), s.info().await.unwrap().state.last_sequence));
        }
        out
    }
}

/// Every row of every table an admin route (or the bidder acting on one) can change, as text,
/// in a stable order: equal dumps mean nothing changed.
pub async fn dump(pool: &PgPool) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    for table in [
        "users",
        "vendors",
        "vehicles",
        "events",
        "lanes",
        "lots",
        "bids",
        "lot_commands",
        "settlements",
        "event_registrations",
    ] {
        let rows: String = sqlx::query_scalar(&format!(
            "SELECT coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), '') FROM {table} t"
        ))
        .fetch_one(pool)
        .await
        .unwrap();
        out.push((table, rows));
    }
    out
}
