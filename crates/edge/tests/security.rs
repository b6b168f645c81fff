//! The edge's security review, as tests (docs/reliability/input.md lists the review):
//!
//! - every buyer-side route of the OpenAPI document, anonymous, with a forged token and as a
//!   buyer: a route the document marks `bearer` refuses anonymous and forged callers with 401,
//!   and one it does not mark serves anonymous callers (so the document says who may call);
//! - CORS is deliberately absent: the web client is served by the edge itself (same origin), so
//!   no response carries `Access-Control-Allow-*` and a preflight is refused; a foreign page
//!   cannot read any answer;
//! - no password, token or secret reaches the logs, at TRACE level for every crate, through a
//!   login, REST calls with the token, and WebSockets opened with `?token=`.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

/// Every log line of this test binary, at TRACE level, for every crate.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn logs() -> &'static Captured {
    static LOGS: OnceLock<Captured> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Captured::default();
        let writer = logs.clone();
        // Installed before any edge starts (their own try_init then does nothing).
        tracing_subscriber::fmt()
            .with_max_level(tracing::Level::TRACE)
            .with_writer(move || writer.clone())
            .with_ansi(false)
            .init();
        logs
    })
}

/// A token signed with another key, for the same user and role.
fn forged(token: &str) -> String {
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[2] = "c2lnbmVkIGJ5IHNvbWVvbmUgZWxzZQ".into();
    parts.join(".")
}

/// Fills `{id}` with something that exists where it matters (or a fresh id).
fn concrete(path: &str, event: &str, lot: &str) -> String {
    if path.starts_with("/api/events/") {
        path.replace("{id}", event)
    } else if path.starts_with("/api/lots/") {
        path.replace("{id}", lot)
    } else {
        path.replace("{id}", &uuid::Uuid::new_v4().to_string())
    }
}

#[tokio::test]
async fn buyer_routes_refuse_who_the_document_says_and_serve_the_rest() {
    let _ = logs();
    let edge = Edge::start().await;
    let (_admin, admin) = edge.user("admin@example.com", true, true).await;
    let (_buyer, buyer) = edge.user("buyer@example.com", false, true).await;
    // A scheduled event with one lot, through the admin routes.
    let vendor = edge
        .post("/api/admin/vendors", Some(&admin), json!({"name": "V"}))
        .await
        .1["id"]
        .clone();
    let vehicle = edge
        .post(
            "/api/admin/vehicles",
            Some(&admin),
            json!({"vendor_id": vendor, "vin": "SEC0001", "year": 2020, "make": "Saab",
                   "model": "900", "mileage": 1}),
        )
        .await
        .1["id"]
        .clone();
    let event = edge
        .post(
            "/api/admin/events",
            Some(&admin),
            json!({"name": "S", "starts_at": schemas::now_ms() + 3_600_000, "lanes": 1}),
        )
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let (s, lot) = edge
        .post(
            &format!("/api/admin/events/{event}/lots"),
            Some(&admin),
            json!({"vehicle_id": vehicle, "lane": 1, "position": 1, "starting_price": 100000}),
        )
        .await;
    assert_eq!(s, StatusCode::CREATED, "{lot}");
    let lot = lot["lot_id"].as_str().unwrap().to_owned();
    let (s, _) = edge
        .post(
            &format!("/api/admin/events/{event}/schedule"),
            Some(&admin),
            json!({}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);

    let doc: Value = serde_json::to_value(edge::openapi::document()).unwrap();
    let mut checked = 0;
    for (path, item) in doc["paths"].as_object().unwrap() {
        if path.starts_with("/api/admin/") || !path.starts_with("/api/") {
            continue; // admin routes: tests/authz.rs; /ws: tests/live.rs; ops routes are public
        }
        for (method, op) in item.as_object().unwrap() {
            let needs_token = op["security"][0]["bearer"].is_array();
            let method = Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            let url = concrete(path, &event, &lot);
            let body = (method == Method::POST).then(|| match path.as_str() {
                "/api/auth/register" => {
                    json!({"email": format!("n{checked}@example.com"), "password": PASSWORD, "name": "N"})
                }
                "/api/auth/login" => json!({"email": "buyer@example.com", "password": PASSWORD}),
                "/api/lots/{id}/bids" => json!({"amount": 100000, "seen_high": null, "idem": "sec"}),
                _ => json!({}),
            });
            let before = dump(edge.pool()).await;
            let anonymous = edge.call(method.clone(), &url, None, body.clone()).await;
            let with_forged = edge
                .call(method.clone(), &url, Some(&forged(&buyer)), body.clone())
                .await;
            if needs_token {
                assert_error(&anonymous, StatusCode::UNAUTHORIZED, "unauthorized");
                assert_error(&with_forged, StatusCode::UNAUTHORIZED, "unauthorized");
                assert_eq!(dump(edge.pool()).await, before, "{method} {path}");
            } else {
                assert_ne!(
                    anonymous.0,
                    StatusCode::UNAUTHORIZED,
                    "{method} {path}: {}",
                    anonymous.1
                );
                assert_ne!(anonymous.0, StatusCode::FORBIDDEN, "{method} {path}");
            }
            if needs_token && path != "/api/lots/{id}/bids" {
                // (A bid as the buyer needs a bidder; tests/live.rs places them.)
                let as_buyer = edge.call(method.clone(), &url, Some(&buyer), body).await;
                assert!(
                    as_buyer.0.is_success(),
                    "{method} {path} as a buyer: {} {}",
                    as_buyer.0,
                    as_buyer.1
                );
            }
            checked += 1;
        }
    }
    assert!(checked >= 9, "{checked} buyer routes checked");
}

#[tokio::test]
async fn no_cors_a_foreign_page_cannot_read_any_answer() {
    let _ = logs();
    let edge = Edge::start().await;
    let (_, token) = edge.user("ann@example.com", false, true).await;
    let evil = "https://evil.example";
    for (path, method) in [
        ("/api/auth/login", "POST"),
        ("/api/me", "GET"),
        (
            "/api/lots/00000000-0000-4000-8000-000000000000/bids",
            "POST",
        ),
        ("/api/admin/users", "GET"),
    ] {
        let preflight = edge
            .http
            .request(Method::OPTIONS, edge.url(path))
            .header("origin", evil)
            .header("access-control-request-method", method)
            .header(
                "access-control-request-headers",
                "authorization, content-type",
            )
            .send()
            .await
            .unwrap();
        assert_eq!(
            preflight.status(),
            StatusCode::METHOD_NOT_ALLOWED,
            "a preflight for {method} {path} is refused"
        );
        for h in preflight.headers().keys() {
            assert!(!h.as_str().starts_with("access-control-"), "{path}: {h}");
        }
    }
    // A simple cross-origin request still reaches the edge (browsers send it), but its answer
    // says nothing a browser would let the page read.
    let r = edge
        .http
        .get(edge.url("/api/me"))
        .header("origin", evil)
        .bearer_auth(&token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    for h in r.headers().keys() {
        assert!(!h.as_str().starts_with("access-control-"), "{h}");
    }
}

#[tokio::test]
async fn no_password_token_or_secret_in_the_logs() {
    let logs = logs();
    let edge = Edge::start().await;
    let (_, token) = edge.user("ann@example.com", false, true).await;
    // A wrong password and an unknown user, a token in a header and in a socket's URL, a
    // forged token in a socket's URL.
    let wrong = "a wrong password of ann's";
    let r = edge
        .post(
            "/api/auth/login",
            None,
            json!({"email": "ann@example.com", "password": wrong}),
        )
        .await;
    assert_eq!(r.0, StatusCode::UNAUTHORIZED);
    assert_eq!(edge.get("/api/me", Some(&token)).await.0, StatusCode::OK);
    let (mut ws, _) =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={token}", edge.addr))
            .await
            .expect("websocket");
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(
        json!({"type": "ping", "t": 1}).to_string(),
    ))
    .await
    .unwrap();
    ws.close(None).await.ok();
    let bad = forged(&token);
    let refused =
        tokio_tungstenite::connect_async(format!("ws://{}/ws?token={bad}", edge.addr)).await;
    assert!(refused.is_err());
    let mut edge = edge;
    edge.stop().await.unwrap();

    // The test's own WebSocket client logs its request line at TRACE; that is the client's log,
    // not the edge's.
    let text: String = String::from_utf8_lossy(&logs.0.lock().unwrap())
        .lines()
        .filter(|l| !l.contains("tungstenite::handshake::client"))
        .map(|l| format!("{l}\n"))
        .collect();
    assert!(text.lines().count() > 10, "the capture works: {text}");
    let signature = |t: &str| t.rsplit('.').next().unwrap().to_owned();
    for (what, secret) in [
        ("a password", PASSWORD.to_owned()),
        ("a wrong password", wrong.to_owned()),
        ("a token's signature", signature(&token)),
        ("a forged token's signature", signature(&bad)),
        ("the JWT secret", SECRET.to_owned()),
    ] {
        let at: Vec<&str> = text
            .lines()
            .filter(|l| l.contains(&secret))
            .take(3)
            .collect();
        assert!(at.is_empty(), "{what} is in the logs: {at:#?}");
    }
    std::io::stdout().flush().ok();
}
