//! Floods: the limits hold and nobody else pays for them. A real edge, NATS, Postgres and (for
//! bids) bidder; clients over real sockets.
//!
//! - Logins from one address past `GAVEL_AUTH_RATE` get 429 `rate_limited` without a password
//!   hash being computed, and register shares the allowance and creates nothing; meanwhile
//!   another address logs in, and a token holder at the flooding address still reads its own
//!   data (the limit is per address, on login and register only).
//! - Bids by one user past `GAVEL_BID_RATE` get `bid_result` `rate_limited`; in the same moment
//!   two other users bid on another lot, closed loop, and every one of their bids is accepted
//!   and answered quickly (under 5 s even on a loaded 2-core machine; ~0.3 s when idle).
//!
//! Each test is bounded (a deadline around the whole flood) and prints its figures
//! (`cargo test -p edge --test flood -- --nocapture`); docs/reliability/input.md quotes them.

mod common;
#[path = "../../bidder/tests/common/mod.rs"]
mod env;

use common::*;
use edge::auth::{Role, Secret, Tokens};
use futures::{SinkExt, StreamExt};
use reqwest::{Method, StatusCode};
use schemas::{LotId, UserId};
use serde_json::{json, Value};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

/// The whole flood, answers included, must be over within this.
const BOUND: Duration = Duration::from_secs(60);

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

#[tokio::test]
async fn a_login_flood_from_one_address_is_limited_and_nobody_else_is() {
    const RATE: u32 = 30; // the default GAVEL_AUTH_RATE
    const FLOOD: usize = 150;
    let edge = Edge::start_with(|c| c.auth_rate = RATE).await;
    let hash = store::users::hash_password(PASSWORD).unwrap();
    store::users::create_user(edge.pool(), "ann@example.com", &hash, "Ann", false, true)
        .await
        .unwrap();
    // Ann logs in once from her own address, before the flood.
    let ann_phone = client_from(Some(ip("127.0.0.3")));
    let ann = json!({"email": "ann@example.com", "password": PASSWORD});
    let r = call_with(
        &ann_phone,
        &edge,
        Method::POST,
        "/api/auth/login",
        None,
        Some(ann.clone()),
    )
    .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let ann_token = r.1["token"].as_str().unwrap().to_owned();
    let users_before = counts(edge.pool()).await;

    let flooder = client_from(Some(ip("127.0.0.1")));
    let started = Instant::now();
    let flood = async {
        let calls = (0..FLOOD).map(|i| {
            let flooder = flooder.clone();
            let edge = &edge;
            async move {
                let t = Instant::now();
                // Password guesses against Ann, and every tenth call a register.
                let (path, body) = if i % 10 == 9 {
                    (
                        "/api/auth/register",
                        json!({"email": format!("bot{i}@example.com"), "password": PASSWORD, "name": "Bot"}),
                    )
                } else {
                    (
                        "/api/auth/login",
                        json!({"email": "ann@example.com", "password": format!("guess {i}")}),
                    )
                };
                let r = call_with(&flooder, edge, Method::POST, path, None, Some(body)).await;
                (path, r, t.elapsed())
            }
        });
        futures::future::join_all(calls).await
    };
    // In the same moment: Ann logs in from elsewhere, and reads her data from the flooding
    // address (the limit is on login and register, not on the token's holder).
    let others = async {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t = Instant::now();
        let login = call_with(
            &client_from(Some(ip("127.0.0.2"))),
            &edge,
            Method::POST,
            "/api/auth/login",
            None,
            Some(ann.clone()),
        )
        .await;
        let login_took = t.elapsed();
        let t = Instant::now();
        let me = call_with(
            &flooder,
            &edge,
            Method::GET,
            "/api/me",
            Some(&ann_token),
            None,
        )
        .await;
        (login, login_took, me, t.elapsed())
    };
    let (answers, (login, login_took, me, me_took)) =
        tokio::time::timeout(BOUND, async { tokio::join!(flood, others) })
            .await
            .expect("the flood is over in time");
    let flood_took = started.elapsed();

    let mut limited = Vec::new();
    let mut served = Vec::new();
    for (path, r, took) in &answers {
        if r.0 == StatusCode::TOO_MANY_REQUESTS {
            assert_error(r, StatusCode::TOO_MANY_REQUESTS, "rate_limited");
            limited.push(*took);
        } else {
            // Served calls are what they would be without a flood: wrong guesses are 401, and a
            // register within the allowance creates its bot.
            let want = if *path == "/api/auth/login" {
                StatusCode::UNAUTHORIZED
            } else {
                StatusCode::CREATED
            };
            assert_eq!(r.0, want, "{path}: {}", r.1);
            served.push(*took);
        }
    }
    // The allowance is a burst of RATE refilled over the minute: RATE, plus one per 2 s.
    let refill = (flood_took.as_secs_f64() * f64::from(RATE) / 60.0).ceil() as usize;
    assert!(
        served.len() >= RATE as usize && served.len() <= RATE as usize + refill,
        "{} calls served in {flood_took:?} with a burst of {RATE}",
        served.len()
    );
    assert_eq!(limited.len() + served.len(), FLOOD);

    assert_eq!(
        login.0,
        StatusCode::OK,
        "another address logs in: {}",
        login.1
    );
    assert_eq!(
        me.0,
        StatusCode::OK,
        "the token holder reads /api/me: {}",
        me.1
    );
    assert_eq!(me.1["email"], "ann@example.com");

    // Refused registers created nothing: only the served ones added a user.
    let registered: i64 =
        sqlx::query_scalar("SELECT count(*) FROM users WHERE email LIKE 'bot%@example.com'")
            .fetch_one(edge.pool())
            .await
            .unwrap();
    let served_registers = answers
        .iter()
        .filter(|(p, r, _)| *p == "/api/auth/register" && r.0 == StatusCode::CREATED)
        .count();
    assert_eq!(registered as usize, served_registers);
    assert_eq!(
        counts(edge.pool()).await[0].1,
        users_before[0].1 + registered
    );

    limited.sort();
    served.sort();
    eprintln!(
        "flood: logins: {FLOOD} calls from one address in {flood_took:.2?} at GAVEL_AUTH_RATE={RATE}: \
         {} served (p50 {:.1?}, max {:.1?}), {} refused 429 (p50 {:.1?}, p99 {:.1?}, max {:.1?}); \
         meanwhile a login from another address {:?} in {login_took:.1?}, /api/me from the flooding address {:?} in {me_took:.1?}",
        served.len(),
        percentile(&served, 0.5),
        percentile(&served, 1.0),
        limited.len(),
        percentile(&limited, 0.5),
        percentile(&limited, 0.99),
        percentile(&limited, 1.0),
        login.0,
        me.0,
    );
    // The refusals cost no hash: even the slowest is quick next to a served login.
    assert!(
        percentile(&limited, 0.5) < Duration::from_secs(1),
        "{limited:?}"
    );
}

// ----- bids -----

const SECRET: &str = "the flood tests' secret, thirty-two bytes or more";
type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

fn token(user: UserId) -> String {
    Tokens::new(&Secret::new(SECRET), Duration::from_secs(3600))
        .issue(user, Role::Buyer)
        .unwrap()
        .0
}

async fn connect(addr: SocketAddr, token: &str) -> Ws {
    let (ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/ws?token={token}"))
        .await
        .expect("websocket");
    ws
}

/// The next `bid_result`, skipping other frames.
async fn next_result(ws: &mut Ws) -> Value {
    loop {
        let msg = ws
            .next()
            .await
            .expect("socket open")
            .expect("readable frame");
        if let Message::Text(t) = msg {
            let v: Value = serde_json::from_str(t.as_str()).unwrap();
            if v["type"] == "bid_result" {
                return v;
            }
        }
    }
}

fn bid(lot: LotId, amount: i64, seen_high: Option<i64>, idem: &str) -> Message {
    Message::text(
        json!({"type": "bid", "lot_id": lot, "amount": amount, "seen_high": seen_high, "idem": idem})
            .to_string(),
    )
}

#[tokio::test]
async fn a_bid_flood_by_one_user_is_limited_while_others_bid_normally() {
    const RATE: u32 = 20; // the default GAVEL_BID_RATE
    const FLOOD: usize = 400;
    const FAIR_BIDS: usize = 20;
    let env = env::Env::start().await;
    let (bidder, _) = env.spawn_bidder(env.bidder_config()).await;
    let _bidder = bidder.drop_guard();
    // Two lanes, one lot each, both open: the flooder's and the others'.
    let (_event, lanes) = env.event(2, 1, schemas::now_ms(), 600, 30, |_, _| 0).await;
    let (hot, calm) = (lanes[0][0], lanes[1][0]);
    for lot in [hot, calm] {
        let seq = env.open(lot).await;
        env.wait_applied(lot, seq).await;
    }
    let users = env.users(3, true).await;

    let mut config = edge::Config::new(Secret::new(SECRET), env::PARTITIONS);
    config.auth_rate = 0;
    config.bid_rate = RATE;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let _stop = stop.clone().drop_guard();
    let client = bus::connect(&env.nats.url(), "edge").await.unwrap();
    tokio::spawn(edge::serve_on(
        listener,
        config,
        client,
        env.pool().clone(),
        stop,
    ));

    let mut flooder = connect(addr, &token(users[0])).await;
    let mut fair = [
        connect(addr, &token(users[1])).await,
        connect(addr, &token(users[2])).await,
    ];

    let started = Instant::now();
    let flood = async {
        // Every frame at once, rising amounts, then every answer.
        for i in 0..FLOOD {
            flooder
                .feed(bid(
                    hot,
                    100_000 + i as i64 * 10_000,
                    None,
                    &format!("f{i}"),
                ))
                .await
                .unwrap();
        }
        flooder.flush().await.unwrap();
        let sent = started.elapsed();
        let mut reasons = std::collections::BTreeMap::<String, usize>::new();
        for _ in 0..FLOOD {
            let r = next_result(&mut flooder).await;
            let key = if r["status"] == "accepted" {
                "accepted".to_owned()
            } else {
                r["reason"].as_str().unwrap_or("?").to_owned()
            };
            *reasons.entry(key).or_default() += 1;
        }
        (sent, started.elapsed(), reasons)
    };
    // Two users take turns on the calm lot, each bid the minimum next over the high they saw,
    // one every 50 ms: all accepted, each answered quickly.
    let others = async {
        let mut high: Option<i64> = None;
        let mut min_next = 100_000;
        let mut took = Vec::new();
        let mut outcomes = Vec::new();
        for i in 0..FAIR_BIDS {
            let ws = &mut fair[i % 2];
            let t = Instant::now();
            ws.send(bid(calm, min_next, high, &format!("calm{i}")))
                .await
                .unwrap();
            let r = next_result(ws).await;
            took.push(t.elapsed());
            outcomes.push(r.clone());
            if let (Some(h), Some(m)) = (r["high"].as_i64(), r["min_next"].as_i64()) {
                high = Some(h);
                min_next = m;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        (took, outcomes)
    };
    let ((sent, flood_took, reasons), (mut took, outcomes)) =
        tokio::time::timeout(BOUND, async { tokio::join!(flood, others) })
            .await
            .expect("the floods are answered in time");

    let limited = reasons.get("rate_limited").copied().unwrap_or(0);
    let passed = FLOOD - limited;
    // A burst of RATE, refilled at RATE a second while the edge read the frames: at most until
    // the last answer (the client writes them all in a few ms; the edge reads them later).
    let allowance =
        RATE as usize + (flood_took.as_secs_f64() * f64::from(RATE)).ceil() as usize + 1;
    assert!(
        passed >= RATE as usize && passed <= allowance,
        "{passed} of the flood's bids passed the limit ({reasons:?}; answered in {flood_took:?})"
    );
    for r in &outcomes {
        assert_eq!(r["status"], "accepted", "a calm bid: {r}");
    }
    took.sort();
    eprintln!(
        "flood: bids: {FLOOD} bid frames by one user written in {sent:.1?}, all answered in {flood_took:.1?} \
         at GAVEL_BID_RATE={RATE}: {reasons:?}; meanwhile {FAIR_BIDS} closed-loop bids by two other users \
         on another lot: all accepted, answered p50 {:.1?}, p90 {:.1?}, max {:.1?}",
        percentile(&took, 0.5),
        percentile(&took, 0.9),
        percentile(&took, 1.0),
    );
    assert!(
        percentile(&took, 1.0) < Duration::from_secs(5),
        "the other users' bids were slowed: {took:?}"
    );
    // The bidder saw only what passed the limit: one stored bid per passed frame.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM bids WHERE lot_id = $1")
        .bind(hot.uuid())
        .fetch_one(env.pool())
        .await
        .unwrap();
    assert_eq!(stored as usize, passed, "{reasons:?}");
}
