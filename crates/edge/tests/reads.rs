//! Buyers' reads over real HTTP (the feed, an event with its lots, a lot with its bids, the
//! cohort, won lots), health probes, the OpenAPI document and a graceful stop.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use schemas::{EventId, UserId};
use serde_json::{json, Value};
use std::time::Duration;

/// A scheduled event with two lots in lane 1 and one in lane 2, and a draft event; made
/// through the admin routes. Returns (scheduled event, its lot ids by lane/position, draft).
async fn catalog(edge: &Edge, admin: &str) -> (String, Vec<String>, String) {
    let a = Some(admin);
    let vendor = edge
        .post("/api/admin/vendors", a, json!({"name": "V", "contact": ""}))
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut event_ids = Vec::new();
    for (name, starts_at) in [
        ("Later", 2_000_000_000_000i64),
        ("Draft", 1_900_000_000_000),
    ] {
        let e = edge
            .post(
                "/api/admin/events",
                a,
                json!({"name": name, "starts_at": starts_at, "lanes": 2}),
            )
            .await;
        event_ids.push(e.1["id"].as_str().unwrap().to_owned());
    }
    let mut lots = Vec::new();
    // Added out of order: the event lists them by lane then position.
    for (i, (lane, position)) in [(2, 1), (1, 2), (1, 1)].into_iter().enumerate() {
        let car = edge
            .post(
                "/api/admin/vehicles",
                a,
                json!({"vendor_id": vendor, "vin": format!("VIN{i}"), "year": 2020,
                       "make": "Mazda", "model": "3", "mileage": 10 * i, "pickup": format!("Bay {i}")}),
            )
            .await;
        let l = edge
            .post(
                &format!("/api/admin/events/{}/lots", event_ids[0]),
                a,
                json!({"vehicle_id": car.1["id"], "lane": lane, "position": position,
                       "starting_price": 10_000 * (i as i64 + 1)}),
            )
            .await;
        assert_eq!(l.0, StatusCode::CREATED, "{}", l.1);
        lots.push(l.1["lot_id"].as_str().unwrap().to_owned());
    }
    let s = edge
        .post(
            &format!("/api/admin/events/{}/schedule", event_ids[0]),
            a,
            Value::Null,
        )
        .await;
    assert_eq!(s.0, StatusCode::OK);
    // By lane/position: (1,1), (1,2), (2,1).
    let by_slot = vec![lots[2].clone(), lots[1].clone(), lots[0].clone()];
    (event_ids[0].clone(), by_slot, event_ids[1].clone())
}

#[tokio::test]
async fn the_feed_an_event_and_a_lot_read_as_the_protocol_says() {
    let edge = Edge::start().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let (ann, ann_token) = edge.user("ann@example.com", false, true).await;
    let (bob, _) = edge.user("bob@example.com", false, true).await;
    let (event, lots, draft) = catalog(&edge, &admin).await;

    // The feed: scheduled and live, never drafts.
    let feed = edge.get("/api/events", None).await;
    assert_eq!(feed.0, StatusCode::OK);
    let ids: Vec<&str> = feed
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec![event.as_str()]);
    assert_eq!(feed.1[0]["status"], "scheduled");
    assert_eq!(feed.1[0]["lanes"], 2);
    assert_eq!(
        edge.get("/api/events?status=scheduled", None)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        1
    );
    assert!(edge
        .get("/api/events?status=live", None)
        .await
        .1
        .as_array()
        .unwrap()
        .is_empty());
    assert_error(
        &edge.get("/api/events?status=draft", None).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );

    // The event with its lots, by lane then position, each a lot view.
    let ev = edge.get(&format!("/api/events/{event}"), None).await;
    assert_eq!(ev.0, StatusCode::OK, "{}", ev.1);
    for key in [
        "id",
        "name",
        "status",
        "starts_at",
        "lanes",
        "lot_seconds",
        "reset_seconds",
    ] {
        assert!(ev.1.get(key).is_some(), "{key} in {}", ev.1);
    }
    let listed: Vec<&str> = ev.1["lots"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["lot_id"].as_str().unwrap())
        .collect();
    assert_eq!(listed, lots.iter().map(String::as_str).collect::<Vec<_>>());
    let first = &ev.1["lots"][0];
    let view_keys: Vec<&str> = first
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for key in [
        "lot_id",
        "event_id",
        "lane",
        "position",
        "vehicle",
        "state",
        "high",
        "bidder",
        "bid_count",
        "min_next",
        "ends_at",
        "version",
    ] {
        assert!(view_keys.contains(&key), "{key} in {first}");
    }
    assert_eq!(first["state"], "scheduled");
    assert_eq!(first["high"], Value::Null);
    assert_eq!(
        first["min_next"], 30_000,
        "starting price while there is no bid"
    );
    assert_eq!(first["vehicle"]["make"], "Mazda");

    // Drafts are hidden from buyers and shown to admins.
    assert_error(
        &edge.get(&format!("/api/events/{draft}"), None).await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &edge
            .get(&format!("/api/events/{draft}"), Some(&ann_token))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_eq!(
        edge.get(&format!("/api/events/{draft}"), Some(&admin))
            .await
            .0,
        StatusCode::OK
    );
    assert_error(
        &edge
            .get(&format!("/api/events/{}", uuid::Uuid::new_v4()), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // A lot with accepted bids, newest first, bidders as the event's aliases; rejected bids
    // are not shown. (Bids are the bidder's to write; here they are written directly.)
    let lot = &lots[0];
    let lot_uuid: uuid::Uuid = lot.parse().unwrap();
    for (seq, (user, amount, status, reason)) in [
        (ann, 30_000i64, "accepted", None),
        (bob, 30_100, "rejected", Some("too_low")),
        (bob, 31_000, "accepted", None),
    ]
    .into_iter()
    .enumerate()
    {
        sqlx::query(
            "INSERT INTO bids (lot_id, user_id, idem, amount, status, reason, stream_seq, decided_at)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        )
        .bind(lot_uuid)
        .bind(user)
        .bind(format!("k{seq}"))
        .bind(amount)
        .bind(status)
        .bind(reason)
        .bind(seq as i64 + 1)
        .bind(1_000 + seq as i64)
        .execute(edge.pool())
        .await
        .unwrap();
    }
    sqlx::query(
        "UPDATE lots SET high = 31000, high_bidder = $2, bid_count = 2, version = 3 WHERE id = $1",
    )
    .bind(lot_uuid)
    .bind(bob)
    .execute(edge.pool())
    .await
    .unwrap();
    let ev_id = EventId(event.parse().unwrap());
    let (ann_alias, bob_alias) = (
        schemas::alias::alias(ev_id, UserId(ann)),
        schemas::alias::alias(ev_id, UserId(bob)),
    );
    let l = edge.get(&format!("/api/lots/{lot}"), None).await;
    assert_eq!(l.0, StatusCode::OK, "{}", l.1);
    assert_eq!(l.1["high"], 31_000);
    assert_eq!(l.1["bidder"], bob_alias.as_str());
    assert_eq!(l.1["bid_count"], 2);
    assert_eq!(l.1["min_next"], 31_500, "310.00 + 5.00");
    assert_eq!(l.1["version"], 3);
    assert_eq!(
        l.1["bids"],
        json!([
            {"amount": 31_000, "bidder": bob_alias, "at": 1_002},
            {"amount": 30_000, "bidder": ann_alias, "at": 1_000},
        ])
    );
    assert!(
        !l.1.to_string().contains(&bob.to_string()),
        "no user id leaks"
    );
    assert_error(
        &edge
            .get(&format!("/api/lots/{}", uuid::Uuid::new_v4()), None)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
}

#[tokio::test]
async fn joining_a_cohort_and_the_won_list() {
    let edge = Edge::start().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let (ann, ann_token) = edge.user("ann@example.com", false, true).await;
    let (event, lots, draft) = catalog(&edge, &admin).await;
    let t = Some(ann_token.as_str());

    let join = format!("/api/events/{event}/register");
    assert_error(
        &edge.post(&join, None, Value::Null).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    for _ in 0..2 {
        let r = edge.post(&join, t, Value::Null).await;
        assert_eq!(r.0, StatusCode::OK, "{}", r.1);
        assert_eq!(r.1, json!({"event_id": event, "registered": true}));
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM event_registrations")
        .fetch_one(edge.pool())
        .await
        .unwrap();
    assert_eq!(n, 1, "registering twice is once");
    assert_error(
        &edge
            .post(&format!("/api/events/{draft}/register"), t, Value::Null)
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &edge
            .post(
                &format!("/api/events/{}/register", uuid::Uuid::new_v4()),
                t,
                Value::Null,
            )
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Won: from settlements (the bidder writes them with the close; here, directly).
    assert_eq!(edge.get("/api/me/won", t).await.1, json!([]));
    assert_error(
        &edge.get("/api/me/won", None).await,
        StatusCode::UNAUTHORIZED,
        "unauthorized",
    );
    let lot: uuid::Uuid = lots[1].parse().unwrap();
    sqlx::query(
        "INSERT INTO settlements (lot_id, user_id, amount, decided_at) VALUES ($1, $2, 45000, 777)",
    )
    .bind(lot)
    .bind(ann)
    .execute(edge.pool())
    .await
    .unwrap();
    let won = edge.get("/api/me/won", t).await;
    assert_eq!(won.0, StatusCode::OK);
    let w = &won.1[0];
    assert_eq!(w["lot_id"], lots[1].as_str());
    assert_eq!(w["event_id"], event.as_str());
    assert_eq!(w["amount"], 45_000);
    assert_eq!(w["pickup"], "Bay 1");
    assert_eq!(w["vehicle"]["vin"], "VIN1");
    assert_eq!(won.1.as_array().unwrap().len(), 1);
    // Nobody else sees it.
    assert_eq!(edge.get("/api/me/won", Some(&admin)).await.1, json!([]));
}

#[tokio::test]
async fn health_and_readiness_follow_nats() {
    let mut edge = Edge::start().await;
    assert_eq!(edge.get("/healthz", None).await.0, StatusCode::OK);
    let ready = edge.get("/readyz", None).await;
    assert_eq!(ready.0, StatusCode::OK, "{}", ready.1);

    edge.nats.kill();
    let url = edge.url("/readyz");
    let http = edge.http.clone();
    testkit::wait_until(Duration::from_secs(15), "readyz reports NATS down", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(url)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::SERVICE_UNAVAILABLE)
        }
    })
    .await
    .unwrap();
    let down = edge.get("/readyz", None).await;
    assert_error(&down, StatusCode::SERVICE_UNAVAILABLE, "unavailable");
    assert_eq!(
        edge.get("/healthz", None).await.0,
        StatusCode::OK,
        "alive all the same"
    );

    edge.nats.restart().await.unwrap();
    testkit::wait_until(Duration::from_secs(30), "readyz recovers with NATS", || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            http.get(url)
                .send()
                .await
                .is_ok_and(|r| r.status() == StatusCode::OK)
        }
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn openapi_lists_every_route() {
    let edge = Edge::start().await;
    let (status, doc) = edge.get("/openapi.json", None).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    for (method, path) in [
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("post", "/api/auth/register"),
        ("post", "/api/auth/login"),
        ("get", "/api/me"),
        ("get", "/api/me/won"),
        ("get", "/api/events"),
        ("get", "/api/events/{id}"),
        ("post", "/api/events/{id}/register"),
        ("get", "/api/lots/{id}"),
        ("get", "/api/admin/users"),
        ("post", "/api/admin/users/{id}/verify"),
        ("post", "/api/admin/vendors"),
        ("post", "/api/admin/vehicles"),
        ("post", "/api/admin/events"),
        ("post", "/api/admin/events/{id}/lots"),
        ("post", "/api/admin/events/{id}/schedule"),
    ] {
        assert!(
            doc["paths"][path][method].is_object(),
            "{method} {path} missing from /openapi.json"
        );
    }
    assert!(doc["components"]["securitySchemes"]["bearer"].is_object());
    assert!(doc["components"]["schemas"]["LotView"].is_object());
}

#[tokio::test]
async fn shutdown_stops_accepting_and_returns() {
    let mut edge = Edge::start().await;
    assert_eq!(edge.get("/healthz", None).await.0, StatusCode::OK);
    edge.stop().await.expect("the edge drains and returns");
    let fresh = client_from(None);
    let refused = fresh
        .request(Method::GET, edge.url("/healthz"))
        .send()
        .await;
    assert!(refused.is_err(), "no longer listening: {refused:?}");
}
