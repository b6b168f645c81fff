//! The WebSocket and bids end to end: a real NATS, Postgres, bidder and edge, and real
//! WebSocket clients (tokio-tungstenite) over TCP.

#[path = "../../bidder/tests/common/mod.rs"]
mod env;

use edge::auth::{Role, Secret, Tokens};
use env::Env;
use futures::{SinkExt, StreamExt};
use schemas::nats::BidCommand;
use schemas::{EventId, LotId, UserId};
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::{MaybeTlsStream, WebSocketStream};
use tokio_util::sync::CancellationToken;

const SECRET: &str = "the live tests' secret, thirty-two bytes or more";
const WAIT: Duration = Duration::from_secs(15);

type Ws = WebSocketStream<MaybeTlsStream<TcpStream>>;

/// An edge on its own port over the env's NATS and database.
struct EdgeProc {
    addr: SocketAddr,
    stop: CancellationToken,
}

impl Drop for EdgeProc {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

async fn edge(env: &Env, tweak: impl FnOnce(&mut edge::Config)) -> EdgeProc {
    let mut config = edge::Config::new(Secret::new(SECRET), env::PARTITIONS);
    config.auth_rate = 0;
    config.bid_rate = 0;
    tweak(&mut config);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let client = bus::connect(&env.nats.url(), "edge").await.unwrap();
    tokio::spawn(edge::serve_on(
        listener,
        config,
        client,
        env.pool().clone(),
        stop.clone(),
    ));
    EdgeProc { addr, stop }
}

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

async fn send(ws: &mut Ws, v: Value) {
    ws.send(Message::text(v.to_string())).await.unwrap();
}

/// The next JSON frame, or panics after `WAIT`.
async fn next(ws: &mut Ws) -> Value {
    loop {
        let msg = tokio::time::timeout(WAIT, ws.next())
            .await
            .expect("a frame in time")
            .expect("socket open")
            .expect("readable");
        if let Message::Text(t) = msg {
            return serde_json::from_str(t.as_str()).unwrap();
        }
    }
}

/// The next frame of type `ty`, skipping others (ticks, say).
async fn next_of(ws: &mut Ws, ty: &str) -> Value {
    loop {
        let v = next(ws).await;
        if v["type"] == ty {
            return v;
        }
    }
}

/// A socket of `token` subscribed to `event`, and the snapshot it got.
async fn watching(addr: SocketAddr, token: &str, event: EventId) -> (Ws, Value) {
    let mut ws = connect(addr, token).await;
    send(&mut ws, json!({"type": "subscribe", "event_id": event})).await;
    let snap = next_of(&mut ws, "snapshot").await;
    (ws, snap)
}

/// An event with `n` lots in lane 1, the first open; a bidder running.
async fn open_sale(env: &Env, n: usize) -> (EventId, Vec<LotId>, CancellationToken) {
    let (bidder, _) = env.spawn_bidder(env.bidder_config()).await;
    let (event, lots) = env.lots(n, 0).await;
    let seq = env.open(lots[0]).await;
    env.wait_applied(lots[0], seq).await;
    (event, lots, bidder)
}

#[tokio::test]
async fn snapshot_then_live_frames_and_one_answer_per_ask_of_one_idem() {
    let env = Env::start().await;
    let (event, lots, _bidder) = open_sale(&env, 2).await;
    let users = env.users(2, true).await;
    let e = edge(&env, |_| {}).await;
    let (me, rival) = (token(users[0]), token(users[1]));
    let mut phone = connect(e.addr, &me).await;
    let mut laptop = connect(e.addr, &me).await;
    let mut other = connect(e.addr, &rival).await;
    for ws in [&mut phone, &mut laptop, &mut other] {
        send(ws, json!({"type": "subscribe", "event_id": event})).await;
        let snap = next_of(ws, "snapshot").await;
        assert_eq!(snap["lanes"][0]["lot"]["lot_id"], json!(lots[0]));
        assert_eq!(snap["lanes"][0]["lot"]["state"], "open");
        assert_eq!(snap["lanes"][0]["lot"]["min_next"], 100_000);
    }

    // One bid with one idem, three times: two sockets of the user and REST.
    let bid = json!({"type": "bid", "lot_id": lots[0], "amount": 100_000, "seen_high": null, "idem": "k-1"});
    send(&mut phone, bid.clone()).await;
    send(&mut laptop, bid.clone()).await;
    let http = reqwest::Client::new();
    let rest = http
        .post(format!("http://{}/api/lots/{}/bids", e.addr, lots[0]))
        .bearer_auth(&me)
        .json(&json!({"amount": 100_000, "seen_high": null, "idem": "k-1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(rest.status(), 200);
    let rest: Value = rest.json().await.unwrap();
    let a = next_of(&mut phone, "bid_result").await;
    let b = next_of(&mut laptop, "bid_result").await;
    let mut rest_frame = rest.clone();
    rest_frame["type"] = json!("bid_result");
    assert_eq!(a, b);
    assert_eq!(a, rest_frame, "three identical answers");
    assert_eq!(a["status"], "accepted");
    let accepted = store::bidding::accepted_bids(env.pool(), lots[0])
        .await
        .unwrap();
    assert_eq!(accepted.len(), 1, "one accepted bid");

    // Every watcher sees the new high, once.
    let nb = next_of(&mut other, "new_bid").await;
    assert_eq!(
        (nb["amount"].as_i64(), nb["bid_count"].as_i64()),
        (Some(100_000), Some(1))
    );
    assert_eq!(nb["min_next"], 102_500);

    // The rival outbids: both of my devices hear it.
    send(&mut other, json!({"type": "bid", "lot_id": lots[0], "amount": 102_500, "seen_high": 100_000, "idem": "r-1"})).await;
    assert_eq!(
        next_of(&mut other, "bid_result").await["status"],
        "accepted"
    );
    for ws in [&mut phone, &mut laptop] {
        let o = next_of(ws, "outbid").await;
        assert_eq!(
            (o["your_bid"].as_i64(), o["high"].as_i64()),
            (Some(100_000), Some(102_500))
        );
    }
    // A stale bid is refused with the retry hint.
    send(&mut phone, json!({"type": "bid", "lot_id": lots[0], "amount": 102_500, "seen_high": 100_000, "idem": "k-2"})).await;
    let r = next_of(&mut phone, "bid_result").await;
    assert_eq!(
        (r["reason"].as_str(), r["retryable"].as_bool()),
        (Some("stale"), Some(true))
    );
    assert_eq!(r["min_next"], 105_000);

    // I win it back, then the hammer: both devices hear `won`; watchers see the car rotate.
    send(&mut phone, json!({"type": "bid", "lot_id": lots[0], "amount": 105_000, "seen_high": 102_500, "idem": "k-3"})).await;
    let r = next_of(&mut phone, "bid_result").await;
    assert_eq!(r["status"], "accepted");
    let version = r["version"].as_i64().unwrap();
    env.send(
        &BidCommand::Hammer {
            lot_id: lots[0],
            expected_version: version,
        },
        None,
    )
    .await;
    for ws in [&mut phone, &mut laptop] {
        let w = next_of(ws, "won").await;
        assert_eq!(w["amount"], 105_000);
        assert_eq!(w["pickup"], "Gate 3, bring ID");
    }
    let rot = next_of(&mut other, "car_rotate").await;
    assert_eq!(
        rot["closed"],
        json!({"lot_id": lots[0], "outcome": "sold", "amount": 105_000})
    );
    assert_eq!(rot["next"]["lot_id"], json!(lots[1]));
    assert_eq!(rot["next"]["state"], "scheduled");
}

#[tokio::test]
async fn two_hundred_watchers_get_every_bid_in_order_and_a_stalled_one_is_dropped() {
    let env = Env::start().await;
    let (event, lots, _bidder) = open_sale(&env, 1).await;
    let users = env.users(2, true).await;
    let e = edge(&env, |_| {}).await;
    let t = token(users[0]);

    // The stalled client: upgrades, subscribes, then never reads (with a small receive buffer,
    // so the kernel cannot hide that for long).
    let mut stalled = {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.set_recv_buffer_size(4096).unwrap();
        let tcp = sock.connect(e.addr).await.unwrap();
        let req = format!("ws://{}/ws?token={t}", e.addr)
            .into_client_request()
            .unwrap();
        let (mut ws, _) = tokio_tungstenite::client_async(req, tcp).await.unwrap();
        ws.send(Message::text(
            json!({"type": "subscribe", "event_id": event}).to_string(),
        ))
        .await
        .unwrap();
        ws
    };

    let mut watchers = Vec::new();
    for _ in 0..199 {
        let mut ws = connect(e.addr, &t).await;
        send(&mut ws, json!({"type": "subscribe", "event_id": event})).await;
        watchers.push(ws);
    }
    for ws in &mut watchers {
        next_of(ws, "snapshot").await;
    }
    // Every watcher reads on its own, as phones do; each checks it sees every bid in order.
    let bids = 2_500;
    let readers: Vec<_> = watchers
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                let mut seen = 0;
                let mut version = 0;
                while seen < bids {
                    let v = next(&mut ws).await;
                    if v["type"] == "new_bid" {
                        let got = v["version"].as_i64().unwrap();
                        assert!(got > version, "versions rise: {got} after {version}");
                        version = got;
                        seen += 1;
                    }
                }
            })
        })
        .collect();

    // 2,500 accepted bids: more than a stalled socket's 1,000-frame queue and what the kernel
    // buffers hold.
    let mut high: Option<i64> = None;
    let mut amount = 100_000;
    let mut last = 0;
    for i in 0..bids {
        let user = users[i % 2];
        last = env.bid(lots[0], user, amount, high, &format!("b{i}")).await;
        high = Some(amount);
        amount = schemas::min_next(100_000, Some(amount));
    }
    env.wait_applied(lots[0], last).await;

    for r in readers {
        r.await
            .expect("every watcher saw every bid in version order");
    }
    // The edge dropped the stalled socket as slow: its close (1008) waits behind what the
    // kernel holds, and a client that never reads never gets it; what it can read ends.
    let metrics = reqwest::get(format!("http://{}/metrics", e.addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("gavel_ws_dropped_total{reason=\"slow\"} 1"),
        "{metrics}"
    );
    // Panics unless the stalled socket ended in time.
    if let Some((code, _)) = close_of(&mut stalled).await {
        assert_eq!(code, CloseCode::Policy);
    }
}

/// How the socket ended: its close frame's code and reason.
async fn close_of<S>(ws: &mut WebSocketStream<S>) -> Option<(CloseCode, String)>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin,
{
    tokio::time::timeout(WAIT, async {
        loop {
            match ws.next().await {
                Some(Ok(Message::Close(c))) => return c.map(|c| (c.code, c.reason.to_string())),
                Some(Ok(_)) => continue,
                _ => return None,
            }
        }
    })
    .await
    .expect("the socket ended in time")
}

#[tokio::test]
async fn a_stopping_edge_closes_every_socket_with_going_away() {
    let env = Env::start().await;
    let (event, _lots, _bidder) = open_sale(&env, 1).await;
    let users = env.users(1, true).await;
    let e = edge(&env, |_| {}).await;
    let t = token(users[0]);
    let (mut watcher, _) = watching(e.addr, &t, event).await;
    // A socket that watches nothing; its pong shows the edge runs it.
    let mut idle = connect(e.addr, &t).await;
    send(&mut idle, json!({"type": "ping", "t": 1})).await;
    next_of(&mut idle, "pong").await;

    e.stop.cancel();
    let going_away = Some((CloseCode::Away, "the edge is stopping".to_string()));
    assert_eq!(close_of(&mut watcher).await, going_away);
    assert_eq!(close_of(&mut idle).await, going_away);
}

#[tokio::test]
async fn bad_frames_get_their_documented_answers_and_the_socket_stays() {
    let env = Env::start().await;
    let (event, lots, _bidder) = open_sale(&env, 1).await;
    let users = env.users(1, true).await;
    let e = edge(&env, |_| {}).await;
    let t = token(users[0]);
    let mut ws = connect(e.addr, &t).await;
    let (mut watcher, _) = watching(e.addr, &t, event).await;

    let cases: Vec<(String, &str, &str)> = vec![
        ("{not json".into(), "error", "bad_frame"),
        ("[1,2]".into(), "error", "bad_frame"),
        (json!({"type": 7}).to_string(), "error", "bad_frame"),
        (
            json!({"type": "dance"}).to_string(),
            "error",
            "unknown_type",
        ),
        (
            json!({"type": "subscribe"}).to_string(),
            "error",
            "bad_frame",
        ),
        (
            json!({"type": "subscribe", "event_id": uuid::Uuid::new_v4()}).to_string(),
            "error",
            "not_found",
        ),
        (
            json!({"type": "unsubscribe", "event_id": event}).to_string(),
            "error",
            "not_subscribed",
        ),
        (
            json!({"type": "bid", "lot_id": lots[0], "amount": 100_000}).to_string(),
            "error",
            "bad_frame",
        ),
        (
            json!({"type": "bid", "lot_id": lots[0], "amount": 1000.5, "idem": "f"}).to_string(),
            "bid_result",
            "invalid",
        ),
        (
            json!({"type": "bid", "lot_id": lots[0], "amount": "100000", "idem": "s"}).to_string(),
            "bid_result",
            "invalid",
        ),
        (
            json!({"type": "bid", "lot_id": lots[0], "amount": -5, "idem": "n"}).to_string(),
            "bid_result",
            "invalid",
        ),
        (
            format!(
                r#"{{"type":"bid","lot_id":"{}","amount":9223372036854775808,"idem":"o"}}"#,
                lots[0]
            ),
            "bid_result",
            "invalid",
        ),
        (
            json!({"type": "bid", "amount": 100_000, "idem": "m"}).to_string(),
            "bid_result",
            "invalid",
        ),
        (
            json!({"type": "bid", "lot_id": lots[0], "amount": 100_000, "idem": "x".repeat(65)})
                .to_string(),
            "error",
            "bad_frame",
        ),
    ];
    for (frame, ty, code) in cases {
        ws.send(Message::text(frame.clone())).await.unwrap();
        let v = next(&mut ws).await;
        assert_eq!(v["type"], ty, "{frame} → {v}");
        let got = if ty == "error" {
            &v["code"]
        } else {
            &v["reason"]
        };
        assert_eq!(got, code, "{frame} → {v}");
    }
    ws.send(Message::binary(vec![1u8, 2, 3])).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_frame");
    send(&mut ws, json!({"type": "ping", "t": 42})).await;
    let pong = next(&mut ws).await;
    assert_eq!(
        (pong["type"].as_str(), pong["t"].as_i64()),
        (Some("pong"), Some(42))
    );
    assert!(pong["server_time"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(
        store::bidding::accepted_bids(env.pool(), lots[0])
            .await
            .unwrap()
            .is_empty(),
        "no bad frame changed anything"
    );

    // 17 KiB closes that socket with 1009 …
    let big = json!({"type": "ping", "t": "x".repeat(17 * 1024)}).to_string();
    ws.send(Message::text(big)).await.unwrap();
    let close = loop {
        match tokio::time::timeout(WAIT, ws.next()).await.expect("answer") {
            Some(Ok(Message::Close(c))) => break c.map(|c| c.code),
            Some(Ok(_)) => continue,
            other => panic!("expected a close, got {other:?}"),
        }
    };
    assert_eq!(close, Some(CloseCode::Size));
    // … and everyone else is still served.
    env.bid(lots[0], users[0], 100_000, None, "after").await;
    assert_eq!(next_of(&mut watcher, "new_bid").await["amount"], 100_000);
}

#[tokio::test]
async fn a_client_that_moves_to_another_edge_gets_the_same_snapshot() {
    let env = Env::start().await;
    let (event, lots, _bidder) = open_sale(&env, 1).await;
    let users = env.users(1, true).await;
    let first = edge(&env, |_| {}).await;
    let second = edge(&env, |_| {}).await;
    let t = token(users[0]);
    let (mut a, _) = watching(first.addr, &t, event).await;
    let seq = env.bid(lots[0], users[0], 100_000, None, "one").await;
    env.wait_applied(lots[0], seq).await;
    let nb = next_of(&mut a, "new_bid").await;

    let (_b, snap) = watching(second.addr, &t, event).await;
    let lot = &snap["lanes"][0]["lot"];
    assert_eq!(lot["version"], nb["version"]);
    assert_eq!(lot["high"], nb["amount"]);
    assert_eq!(lot["bidder"], nb["bidder"]);
    assert_eq!(lot["ends_at"], nb["ends_at"]);
    assert_eq!(lot["min_next"], nb["min_next"]);
    // A fresh subscriber on the first edge sees the same lot.
    let (_c, snap_first) = watching(first.addr, &t, event).await;
    assert_eq!(snap_first["lanes"], snap["lanes"]);

    // The monitor's count spans both edges (each reports every second).
    testkit::wait_until(WAIT, "clients summed over edges", || async {
        // Three sockets subscribed: a and c on the first edge, b on the second.
        edge_clients(&env, first.addr, event).await == Some(3)
    })
    .await
    .expect("presence");
}

/// The monitor's `clients`, read as an admin.
async fn edge_clients(env: &Env, addr: SocketAddr, event: EventId) -> Option<i64> {
    let admin = store::users::create_user(
        env.pool(),
        &format!("admin-{}@gavel.test", uuid::Uuid::new_v4()),
        "x",
        "Admin",
        true,
        true,
    )
    .await
    .ok()?;
    let t = Tokens::new(&Secret::new(SECRET), Duration::from_secs(60))
        .issue(UserId(admin.id), Role::Admin)
        .ok()?
        .0;
    let v: Value = reqwest::Client::new()
        .get(format!("http://{addr}/api/admin/events/{event}/monitor"))
        .bearer_auth(t)
        .send()
        .await
        .ok()?
        .json()
        .await
        .ok()?;
    v["clients"].as_i64()
}

#[tokio::test]
async fn sockets_refuse_bad_tokens_and_foreign_origins() {
    let env = Env::start().await;
    let users = env.users(1, true).await;
    let e = edge(&env, |_| {}).await;
    let good = token(users[0]);
    let forged = Tokens::new(
        &Secret::new("another secret that is thirty-two bytes long"),
        Duration::from_secs(60),
    )
    .issue(users[0], Role::Buyer)
    .unwrap()
    .0;
    // alg=none: a header and claims with no signature.
    let b64 = |s: &str| {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s)
    };
    let none = format!(
        "{}.{}.",
        b64(r#"{"alg":"none","typ":"JWT"}"#),
        b64(&format!(
            r#"{{"sub":"{}","role":"buyer","iat":1,"exp":9999999999}}"#,
            users[0].0
        ))
    );
    let expired = {
        use jsonwebtoken::{encode, EncodingKey, Header};
        let claims = json!({"sub": users[0].0, "role": "buyer", "iat": 1, "exp": 2});
        encode(
            &Header::default(),
            &claims,
            &EncodingKey::from_secret(SECRET.as_bytes()),
        )
        .unwrap()
    };
    for bad in [forged, none, expired, "garbage".to_owned()] {
        let err = tokio_tungstenite::connect_async(format!("ws://{}/ws?token={bad}", e.addr))
            .await
            .expect_err("refused");
        match err {
            tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 401),
            other => panic!("{other:?}"),
        }
    }
    // The bearer header works as well as the query.
    let mut req = format!("ws://{}/ws", e.addr).into_client_request().unwrap();
    req.headers_mut()
        .insert("authorization", format!("Bearer {good}").parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("bearer header");
    // A browser from elsewhere is refused; from the edge's own origin it is let in.
    let mut req = format!("ws://{}/ws?token={good}", e.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", "https://evil.example".parse().unwrap());
    match tokio_tungstenite::connect_async(req)
        .await
        .expect_err("foreign origin")
    {
        tokio_tungstenite::tungstenite::Error::Http(r) => assert_eq!(r.status(), 403),
        other => panic!("{other:?}"),
    }
    let mut req = format!("ws://{}/ws?token={good}", e.addr)
        .into_client_request()
        .unwrap();
    req.headers_mut()
        .insert("origin", format!("http://{}", e.addr).parse().unwrap());
    tokio_tungstenite::connect_async(req)
        .await
        .expect("own origin");
}

#[tokio::test]
async fn rest_bids_and_metrics() {
    let env = Env::start().await;
    let (_event, lots, _bidder) = open_sale(&env, 1).await;
    let users = env.users(1, true).await;
    let e = edge(&env, |c| c.bid_rate = 2).await;
    let t = token(users[0]);
    let http = reqwest::Client::new();
    let post = |body: Value| {
        http.post(format!("http://{}/api/lots/{}/bids", e.addr, lots[0]))
            .bearer_auth(&t)
            .json(&body)
            .send()
    };
    let r = post(json!({"amount": 50, "seen_high": null, "idem": "low"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let v: Value = r.json().await.unwrap();
    assert_eq!(
        (v["reason"].as_str(), v["min_next"].as_i64()),
        (Some("too_low"), Some(100_000))
    );
    let r = post(json!({"amount": 100_000, "seen_high": null, "idem": "ok"}))
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = post(json!({"amount": 200_000, "seen_high": 100_000, "idem": "limited"}))
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        429,
        "the third bid within a second is over a rate of 2"
    );
    let r = http
        .post(format!("http://{}/api/lots/{}/bids", e.addr, lots[0]))
        .bearer_auth(&t)
        .body("{oops")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let anon = http
        .post(format!("http://{}/api/lots/{}/bids", e.addr, lots[0]))
        .json(&json!({"amount": 1, "seen_high": null, "idem": "a"}))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);

    let text = http
        .get(format!("http://{}/metrics", e.addr))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.contains("gavel_bids_total{outcome=\"accepted\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gavel_bids_total{outcome=\"too_low\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gavel_bids_total{outcome=\"rate_limited\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("gavel_bid_roundtrip_seconds_count 2"),
        "{text}"
    );
    assert!(text.contains("gavel_ws_connections 0"), "{text}");
}
