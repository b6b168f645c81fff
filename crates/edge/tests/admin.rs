//! Admin routes over real HTTP: the documented errors of building an event, then the floor
//! controls against a real bidder (and ticker where time matters): start now, pause / resume /
//! cancel, the monitor, outcome lists and re-listing. Who may call each route is `authz.rs`.

mod common;

use common::*;
use reqwest::StatusCode;
use serde_json::{json, Value};

/// Fixtures an admin route acts on: a vendor, a vehicle, a draft event, an unverified buyer.
struct Fixtures {
    vendor: String,
    vehicle: String,
    event: String,
    buyer: uuid::Uuid,
}

async fn fixtures(edge: &Edge, admin: &str) -> Fixtures {
    let (buyer, _) = edge.user("pending@example.com", false, false).await;
    let v = edge
        .post(
            "/api/admin/vendors",
            Some(admin),
            json!({"name": "Fixture Motors", "contact": "f@example.com"}),
        )
        .await;
    assert_eq!(v.0, StatusCode::CREATED, "{}", v.1);
    let vendor = v.1["id"].as_str().unwrap().to_owned();
    let car = edge
        .post(
            "/api/admin/vehicles",
            Some(admin),
            json!({"vendor_id": vendor, "vin": "FIXTURE0000000001", "year": 2018, "make": "Honda",
                   "model": "Civic", "mileage": 52000}),
        )
        .await;
    assert_eq!(car.0, StatusCode::CREATED, "{}", car.1);
    let ev = edge
        .post(
            "/api/admin/events",
            Some(admin),
            json!({"name": "Fixture sale", "starts_at": schemas::now_ms() + 3_600_000, "lanes": 2}),
        )
        .await;
    assert_eq!(ev.0, StatusCode::CREATED, "{}", ev.1);
    Fixtures {
        vendor,
        vehicle: car.1["id"].as_str().unwrap().to_owned(),
        event: ev.1["id"].as_str().unwrap().to_owned(),
        buyer,
    }
}

#[tokio::test]
async fn building_an_event_answers_each_mistake_with_its_status() {
    let edge = Edge::start().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let a = Some(admin.as_str());
    let f = fixtures(&edge, &admin).await;

    // The verification queue lists only unverified users, and a verified one leaves it.
    let queue = edge.get("/api/admin/users?verified=false", a).await;
    let emails: Vec<&str> = queue
        .1
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["email"].as_str().unwrap())
        .collect();
    assert_eq!(emails, vec!["pending@example.com"]);
    let v = edge
        .post(
            &format!("/api/admin/users/{}/verify", f.buyer),
            a,
            Value::Null,
        )
        .await;
    assert_eq!(v.1["verified"], true);
    assert!(edge
        .get("/api/admin/users?verified=false", a)
        .await
        .1
        .as_array()
        .unwrap()
        .is_empty());
    assert_eq!(
        edge.get("/api/admin/users", a)
            .await
            .1
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert_error(
        &edge.get("/api/admin/users?verified=maybe", a).await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    assert_error(
        &edge
            .post(
                &format!("/api/admin/users/{}/verify", uuid::Uuid::new_v4()),
                a,
                Value::Null,
            )
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // Vendors and vehicles.
    assert_error(
        &edge
            .post("/api/admin/vendors", a, json!({"name": ""}))
            .await,
        StatusCode::BAD_REQUEST,
        "invalid",
    );
    let car = |vendor: &str, vin: &str, year: i32| {
        json!({"vendor_id": vendor, "vin": vin, "year": year, "make": "Ford", "model": "Focus",
               "mileage": 1000})
    };
    assert_error(
        &edge
            .post(
                "/api/admin/vehicles",
                a,
                car(&f.vendor, "FIXTURE0000000001", 2015),
            )
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        &edge
            .post(
                "/api/admin/vehicles",
                a,
                car(&uuid::Uuid::new_v4().to_string(), "NEWVIN", 2015),
            )
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for bad in [
        car(&f.vendor, "THIS VIN IS FAR TOO LONG", 2015),
        car(&f.vendor, "OKVIN", 1700),
        json!({"vendor_id": f.vendor, "vin": "X", "year": 2015, "make": "F", "model": "F", "mileage": -1}),
        json!({"vendor_id": "nope", "vin": "X", "year": 2015, "make": "F", "model": "F", "mileage": 1}),
    ] {
        assert_error(
            &edge.post("/api/admin/vehicles", a, bad).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        );
    }

    // Events.
    for bad in [
        json!({"name": "E", "starts_at": 1, "lanes": 0}),
        json!({"name": "E", "starts_at": 1, "lanes": 65}),
        json!({"name": "E", "starts_at": 1, "lanes": 1, "lot_seconds": 0}),
        json!({"name": "", "starts_at": 1, "lanes": 1}),
        json!({"name": "E", "starts_at": -5, "lanes": 1}),
    ] {
        assert_error(
            &edge.post("/api/admin/events", a, bad).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        );
    }
    let draft = edge
        .post(
            "/api/admin/events",
            a,
            json!({"name": "Defaults", "starts_at": 1, "lanes": 1}),
        )
        .await;
    assert_eq!(draft.0, StatusCode::CREATED);
    assert_eq!(draft.1["status"], "draft");
    assert_eq!(draft.1["lot_seconds"], 30);
    assert_eq!(draft.1["reset_seconds"], 30);

    // Lots: lane outside 1..lanes is 400, a taken position 409, unknown things 404.
    let lots = format!("/api/admin/events/{}/lots", f.event);
    let lot = |lane: i32, position: i32, vehicle: &str| {
        json!({"vehicle_id": vehicle, "lane": lane, "position": position,
               "starting_price": 50000, "reserve": 0})
    };
    for lane in [0, 3, -1] {
        assert_error(
            &edge.post(&lots, a, lot(lane, 1, &f.vehicle)).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        );
    }
    let first = edge.post(&lots, a, lot(2, 1, &f.vehicle)).await;
    assert_eq!(first.0, StatusCode::CREATED, "{}", first.1);
    assert_eq!(first.1["state"], "draft");
    assert_eq!(first.1["lane"], 2);
    assert_eq!(first.1["min_next"], 50000);
    assert_eq!(first.1["vehicle"]["vin"], "FIXTURE0000000001");
    assert_error(
        &edge.post(&lots, a, lot(2, 1, &f.vehicle)).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        &edge
            .post(&lots, a, lot(1, 1, &uuid::Uuid::new_v4().to_string()))
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    assert_error(
        &edge
            .post(
                &format!("/api/admin/events/{}/lots", uuid::Uuid::new_v4()),
                a,
                lot(1, 1, &f.vehicle),
            )
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    for bad in [
        json!({"vehicle_id": f.vehicle, "lane": 1, "position": 1, "starting_price": 0}),
        json!({"vehicle_id": f.vehicle, "lane": 1, "position": 1, "starting_price": 100, "reserve": -1}),
        json!({"vehicle_id": f.vehicle, "lane": 1, "position": 0, "starting_price": 100}),
        json!({"vehicle_id": f.vehicle, "lane": 1, "position": 1, "starting_price": 1.5}),
    ] {
        assert_error(
            &edge.post(&lots, a, bad).await,
            StatusCode::BAD_REQUEST,
            "invalid",
        );
    }

    // Schedule: draft → scheduled once; then 409; unknown 404. Its lots follow.
    let schedule = format!("/api/admin/events/{}/schedule", f.event);
    let s = edge.post(&schedule, a, Value::Null).await;
    assert_eq!(s.0, StatusCode::OK, "{}", s.1);
    assert_eq!(s.1["status"], "scheduled");
    assert_error(
        &edge.post(&schedule, a, Value::Null).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_error(
        &edge
            .post(
                &format!("/api/admin/events/{}/schedule", uuid::Uuid::new_v4()),
                a,
                Value::Null,
            )
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    let lot_id = first.1["lot_id"].as_str().unwrap();
    let seen = edge.get(&format!("/api/lots/{lot_id}"), None).await;
    assert_eq!(seen.1["state"], "scheduled");
    // A lot added to a scheduled event is scheduled at once.
    let late = edge.post(&lots, a, lot(1, 1, &f.vehicle)).await;
    assert_eq!(late.0, StatusCode::CREATED, "{}", late.1);
    assert_eq!(late.1["state"], "scheduled");
}

// ----- the floor controls: start now, lot control, monitor, outcomes, re-list -----

use schemas::nats::{AuctionMsg, BidCommand, NatsMessage, NotifyJob, PlaceBid};
use schemas::{LotState, Outcome, UserId};
use std::time::Duration;

/// An event made through the admin routes with lots at `(lane, position, reserve)` (starting
/// price 500.00 each, one new vehicle each), scheduled unless `draft`. Returns its id and the
/// lot ids in the order given.
async fn sale(
    edge: &Edge,
    admin: &str,
    name: &str,
    lanes: i32,
    lots: &[(i32, i32, i64)],
    draft: bool,
) -> (String, Vec<String>) {
    let a = Some(admin);
    let vendor = edge
        .post(
            "/api/admin/vendors",
            a,
            json!({"name": format!("{name} Motors")}),
        )
        .await
        .1["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let ev = edge
        .post(
            "/api/admin/events",
            a,
            json!({"name": name, "starts_at": schemas::now_ms() + 3_600_000, "lanes": lanes,
                   "lot_seconds": 300, "reset_seconds": 60}),
        )
        .await;
    assert_eq!(ev.0, StatusCode::CREATED, "{}", ev.1);
    let event = ev.1["id"].as_str().unwrap().to_owned();
    let mut ids = Vec::new();
    for (lane, position, reserve) in lots {
        let vin = uuid::Uuid::new_v4().simple().to_string()[..17].to_uppercase();
        let car = edge
            .post(
                "/api/admin/vehicles",
                a,
                json!({"vendor_id": vendor, "vin": vin, "year": 2017, "make": "Subaru",
                       "model": "Outback", "mileage": 80000}),
            )
            .await;
        assert_eq!(car.0, StatusCode::CREATED, "{}", car.1);
        let lot = edge
            .post(
                &format!("/api/admin/events/{event}/lots"),
                a,
                json!({"vehicle_id": car.1["id"], "lane": lane, "position": position,
                       "starting_price": 50_000, "reserve": reserve}),
            )
            .await;
        assert_eq!(lot.0, StatusCode::CREATED, "{}", lot.1);
        ids.push(lot.1["lot_id"].as_str().unwrap().to_owned());
    }
    if !draft {
        let s = edge
            .post(
                &format!("/api/admin/events/{event}/schedule"),
                a,
                Value::Null,
            )
            .await;
        assert_eq!(s.0, StatusCode::OK, "{}", s.1);
    }
    (event, ids)
}

fn lot_id(s: &str) -> schemas::LotId {
    s.parse().unwrap()
}

/// Opens a lot with 10 minutes on the clock, as the ticker would.
async fn open(edge: &Edge, lot: &str) {
    edge.command(
        &BidCommand::Open {
            lot_id: lot_id(lot),
            ends_at: schemas::now_ms() + 600_000,
        },
        Some(format!("open-{lot}")),
    )
    .await;
    edge.wait_state(lot, LotState::Open).await;
}

/// A bid published as the edge will publish it.
async fn bid(edge: &Edge, lot: &str, user: uuid::Uuid, amount: i64, seen: Option<i64>, idem: &str) {
    edge.command(
        &BidCommand::PlaceBid(PlaceBid {
            lot_id: lot_id(lot),
            user_id: UserId(user),
            amount,
            seen_high: seen,
            idem: idem.into(),
            sent_at: schemas::now_ms(),
        }),
        Some(format!("{user}:{idem}")),
    )
    .await;
}

/// The lifecycle messages the bidder announced for `lot`, by type and outcome.
async fn announced(edge: &Edge, event: &str, lot: &str) -> Vec<(String, Option<Outcome>)> {
    edge.stored("AUCTION", &format!("auction.{event}."))
        .await
        .into_iter()
        .filter_map(
            |(_, _, _, payload)| match AuctionMsg::decode(&payload).unwrap() {
                AuctionMsg::LotOpened(c) if c.lot_id.to_string() == lot => {
                    Some(("lot_opened".into(), None))
                }
                AuctionMsg::LotPaused(c) if c.lot_id.to_string() == lot => {
                    Some(("lot_paused".into(), None))
                }
                AuctionMsg::LotResumed(c) if c.lot_id.to_string() == lot => {
                    Some(("lot_resumed".into(), None))
                }
                AuctionMsg::LotClosed(c) if c.lot_id.to_string() == lot => {
                    Some(("lot_closed".into(), Some(c.outcome)))
                }
                _ => None,
            },
        )
        .collect()
}

#[tokio::test]
async fn start_now_makes_the_event_live_and_the_ticker_opens_its_first_lots() {
    let edge = Edge::start().await;
    edge.streams().await;
    let _bidder = edge.bidder().await;
    let _ticker = edge.ticker().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let a = Some(admin.as_str());
    let (event, lots) = sale(
        &edge,
        &admin,
        "Start now",
        2,
        &[(1, 1, 0), (1, 2, 0), (2, 1, 0)],
        true,
    )
    .await;

    let asked = schemas::now_ms();
    let start = format!("/api/admin/events/{event}/start");
    let r = edge.post(&start, a, Value::Null).await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    assert_eq!(r.1["status"], "live");
    let starts_at = r.1["starts_at"].as_i64().unwrap();
    assert!(
        (asked..=schemas::now_ms()).contains(&starts_at),
        "starts_at moved to the start: {starts_at}"
    );
    // The ticker puts each lane's first lot on the block at once; the second waits its turn.
    testkit::wait_until(Duration::from_secs(5), "both lanes open", || async {
        edge.lot_view(&lots[0]).await.state == LotState::Open
            && edge.lot_view(&lots[2]).await.state == LotState::Open
    })
    .await
    .unwrap();
    assert_eq!(edge.lot_view(&lots[1]).await.state, LotState::Scheduled);
    // The cohort's start push went out once, under the ticker's own id.
    let pushes = edge.stored("NOTIFY", "notify.event_starting").await;
    assert_eq!(pushes.len(), 1);
    assert_eq!(
        pushes[0].2.as_deref(),
        Some(format!("event_starting-{event}").as_str())
    );
    assert_eq!(
        NotifyJob::decode(&pushes[0].3).unwrap(),
        NotifyJob::EventStarting {
            event_id: event.parse().unwrap()
        }
    );

    // Live already, unknown, malformed, closed.
    assert_error(
        &edge.post(&start, a, Value::Null).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    for bad in [uuid::Uuid::new_v4().to_string(), "nope".to_owned()] {
        assert_error(
            &edge
                .post(&format!("/api/admin/events/{bad}/start"), a, Value::Null)
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }
    let (over, _) = sale(&edge, &admin, "Over", 1, &[], false).await;
    sqlx::query("UPDATE events SET status = 'closed' WHERE id = $1")
        .bind(over.parse::<uuid::Uuid>().unwrap())
        .execute(edge.pool())
        .await
        .unwrap();
    assert_error(
        &edge
            .post(&format!("/api/admin/events/{over}/start"), a, Value::Null)
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    assert_eq!(edge.stored("NOTIFY", "notify.").await.len(), 1);
}

#[tokio::test]
async fn pause_resume_cancel_an_open_lot_through_the_bidder() {
    let edge = Edge::start().await;
    edge.streams().await;
    let _bidder = edge.bidder().await;
    let _ticker = edge.ticker().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let a = Some(admin.as_str());
    let (event, lots) = sale(&edge, &admin, "Control", 1, &[(1, 1, 0), (1, 2, 0)], false).await;
    let lot = &lots[0];
    let path = |cmd: &str| format!("/api/admin/lots/{lot}/{cmd}");
    // Not open yet: nothing to pause or resume.
    for cmd in ["pause", "resume"] {
        assert_error(
            &edge.post(&path(cmd), a, Value::Null).await,
            StatusCode::CONFLICT,
            "conflict",
        );
    }
    let r = edge
        .post(&format!("/api/admin/events/{event}/start"), a, Value::Null)
        .await;
    assert_eq!(r.0, StatusCode::OK, "{}", r.1);
    let opened = edge.wait_state(lot, LotState::Open).await;

    // Pause: 202 with the lot as it stood; the bidder pauses it and announces it.
    let r = edge.post(&path("pause"), a, Value::Null).await;
    assert_eq!(r.0, StatusCode::ACCEPTED, "{}", r.1);
    assert_eq!(r.1["lot_id"], lot.as_str());
    assert_eq!(r.1["state"], "open");
    assert_eq!(r.1["version"], opened.version);
    let paused = edge.wait_state(lot, LotState::Paused).await;
    assert!(paused.version > opened.version);
    assert_error(
        &edge.post(&path("pause"), a, Value::Null).await,
        StatusCode::CONFLICT,
        "conflict",
    );

    // Resume.
    let r = edge.post(&path("resume"), a, Value::Null).await;
    assert_eq!(r.0, StatusCode::ACCEPTED, "{}", r.1);
    assert_eq!(r.1["state"], "paused");
    edge.wait_state(lot, LotState::Open).await;
    assert_error(
        &edge.post(&path("resume"), a, Value::Null).await,
        StatusCode::CONFLICT,
        "conflict",
    );

    // Cancel: the lot ends cancelled and the ticker puts the next one on the block.
    let r = edge.post(&path("cancel"), a, Value::Null).await;
    assert_eq!(r.0, StatusCode::ACCEPTED, "{}", r.1);
    edge.wait_state(lot, LotState::Cancelled).await;
    edge.wait_state(&lots[1], LotState::Open).await;
    for cmd in ["pause", "resume", "cancel"] {
        assert_error(
            &edge.post(&path(cmd), a, Value::Null).await,
            StatusCode::CONFLICT,
            "conflict",
        );
    }
    for bad in [uuid::Uuid::new_v4().to_string(), "nope".to_owned()] {
        assert_error(
            &edge
                .post(&format!("/api/admin/lots/{bad}/pause"), a, Value::Null)
                .await,
            StatusCode::NOT_FOUND,
            "not_found",
        );
    }

    // AUCTION tells every screen, in order.
    assert_eq!(
        announced(&edge, &event, lot).await,
        vec![
            ("lot_opened".into(), None),
            ("lot_paused".into(), None),
            ("lot_resumed".into(), None),
            ("lot_closed".into(), Some(Outcome::Cancelled)),
        ]
    );
    // The commands went on the lot's ordered subject with deterministic ids and a trace.
    let sent: Vec<(String, Option<String>)> = edge
        .stored("BIDS", "bids.")
        .await
        .into_iter()
        .filter(|(subject, _, id, _)| {
            subject == &schemas::subjects::bids(lot_id(lot), PARTITIONS)
                && id.as_deref().is_some_and(|i| i.starts_with("admin-"))
        })
        .map(|(_, kind, id, _)| (kind, id))
        .collect();
    let v = opened.version;
    assert_eq!(
        sent,
        vec![
            ("pause.v1".into(), Some(format!("admin-pause-{lot}-{v}"))),
            (
                "resume.v1".into(),
                Some(format!("admin-resume-{lot}-{}", v + 1))
            ),
            (
                "cancel.v1".into(),
                Some(format!("admin-cancel-{lot}-{}", v + 2))
            ),
        ]
    );
}

#[tokio::test]
async fn a_double_click_is_one_command() {
    let edge = Edge::start().await;
    edge.streams().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let a = Some(admin.as_str());
    // No bidder: the lot stays scheduled, so both clicks are asked at the same version.
    let (_, lots) = sale(&edge, &admin, "Twice", 1, &[(1, 1, 0)], false).await;
    let path = format!("/api/admin/lots/{}/cancel", lots[0]);
    for _ in 0..2 {
        let r = edge.post(&path, a, Value::Null).await;
        assert_eq!(r.0, StatusCode::ACCEPTED, "{}", r.1);
    }
    assert_eq!(edge.stored("BIDS", "bids.").await.len(), 1);
}

#[tokio::test]
async fn the_monitor_shows_each_lane_its_lot_and_bids_per_minute() {
    let edge = Edge::start().await;
    edge.streams().await;
    let _bidder = edge.bidder().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let a = Some(admin.as_str());
    let (u1, _) = edge.user("one@example.com", false, true).await;
    let (u2, _) = edge.user("two@example.com", false, true).await;
    let (event, lots) = sale(
        &edge,
        &admin,
        "Monitor",
        3,
        &[(1, 1, 0), (1, 2, 0), (2, 1, 0)],
        false,
    )
    .await;
    let monitor = format!("/api/admin/events/{event}/monitor");
    open(&edge, &lots[0]).await;
    bid(&edge, &lots[0], u1, 50_000, None, "a").await;
    bid(&edge, &lots[0], u2, 51_000, Some(50_000), "b").await;
    bid(&edge, &lots[0], u1, 52_000, Some(51_000), "c").await;
    bid(&edge, &lots[0], u1, 60_000, Some(52_000), "d").await; // already_high: refused
    testkit::wait_until(Duration::from_secs(20), "four decisions", || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM bids")
            .fetch_one(edge.pool())
            .await
            .unwrap()
            == 4
    })
    .await
    .unwrap();
    // An accepted bid from two minutes ago on lane 2 is outside the minute.
    sqlx::query(
        "INSERT INTO bids (lot_id, user_id, idem, amount, status, stream_seq, decided_at)
         VALUES ($1, $2, 'old', 50000, 'accepted', 1000000, $3)",
    )
    .bind(lots[2].parse::<uuid::Uuid>().unwrap())
    .bind(u1)
    .bind(schemas::now_ms() - 120_000)
    .execute(edge.pool())
    .await
    .unwrap();

    let (status, m) = edge.get(&monitor, a).await;
    assert_eq!(status, StatusCode::OK, "{m}");
    assert_eq!(m["event_id"], event.as_str());
    assert_eq!(m["status"], "scheduled");
    assert_eq!(m["clients"], 0);
    let lanes = m["lanes"].as_array().unwrap();
    assert_eq!(lanes.len(), 3);
    assert_eq!(lanes[0]["lane"], 1);
    assert_eq!(lanes[0]["lot"]["lot_id"], lots[0].as_str());
    assert_eq!(lanes[0]["lot"]["state"], "open");
    assert_eq!(lanes[0]["lot"]["high"], 52_000);
    assert_eq!(lanes[0]["lot"]["bid_count"], 3);
    assert_eq!(lanes[0]["bids_per_minute"], 3);
    assert_eq!(lanes[1]["lane"], 2);
    assert_eq!(lanes[1]["lot"]["lot_id"], lots[2].as_str());
    assert_eq!(lanes[1]["lot"]["state"], "scheduled");
    assert_eq!(lanes[1]["bids_per_minute"], 0);
    assert_eq!(
        lanes[2],
        json!({"lane": 3, "lot": null, "bids_per_minute": 0})
    );

    // Lane 1's lot ends: the next one is on the block; the minute's bids still count.
    edge.command(
        &BidCommand::Cancel {
            lot_id: lot_id(&lots[0]),
        },
        None,
    )
    .await;
    edge.command(
        &BidCommand::Cancel {
            lot_id: lot_id(&lots[2]),
        },
        None,
    )
    .await;
    edge.wait_state(&lots[0], LotState::Cancelled).await;
    edge.wait_state(&lots[2], LotState::Cancelled).await;
    let (_, m) = edge.get(&monitor, a).await;
    assert_eq!(m["lanes"][0]["lot"]["lot_id"], lots[1].as_str());
    assert_eq!(m["lanes"][0]["bids_per_minute"], 3);
    assert_eq!(m["lanes"][1]["lot"], Value::Null);

    assert_error(
        &edge
            .get(
                &format!("/api/admin/events/{}/monitor", uuid::Uuid::new_v4()),
                a,
            )
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );

    // `clients` counts the WebSockets subscribed to the event, and lets go of a closed one.
    let (_, watcher) = edge.user("watcher@example.com", false, true).await;
    let clients = || async { edge.get(&monitor, a).await.1["clients"].as_u64().unwrap() };
    let mut sockets = Vec::new();
    for _ in 0..2 {
        use futures::SinkExt;
        let (mut ws, _) =
            tokio_tungstenite::connect_async(format!("ws://{}/ws?token={watcher}", edge.addr))
                .await
                .expect("websocket");
        ws.send(tokio_tungstenite::tungstenite::Message::text(
            json!({"type": "subscribe", "event_id": event}).to_string(),
        ))
        .await
        .unwrap();
        sockets.push(ws);
    }
    testkit::wait_until(Duration::from_secs(10), "two clients", || async {
        clients().await == 2
    })
    .await
    .unwrap();
    drop(sockets.pop());
    testkit::wait_until(Duration::from_secs(10), "one client", || async {
        clients().await == 1
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn outcomes_list_their_own_lots_and_only_unsold_or_cancelled_relist() {
    let edge = Edge::start().await;
    edge.streams().await;
    let _bidder = edge.bidder().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let a = Some(admin.as_str());
    let (winner, _) = edge.user("winner@example.com", false, true).await;
    // sold, unsold (no bid), cancelled, still scheduled
    let (event, lots) = sale(
        &edge,
        &admin,
        "Outcomes",
        2,
        &[(1, 1, 0), (1, 2, 0), (2, 1, 0), (2, 2, 0)],
        false,
    )
    .await;
    let (sold, unsold, cancelled, waiting) = (&lots[0], &lots[1], &lots[2], &lots[3]);
    open(&edge, sold).await;
    open(&edge, unsold).await;
    bid(&edge, sold, winner, 55_000, None, "w").await;
    testkit::wait_until(Duration::from_secs(20), "the bid applied", || async {
        edge.lot_view(sold).await.bid_count == 1
    })
    .await
    .unwrap();
    for lot in [sold, unsold] {
        let version = edge.lot_view(lot).await.version;
        edge.command(
            &BidCommand::Hammer {
                lot_id: lot_id(lot),
                expected_version: version,
            },
            None,
        )
        .await;
        edge.wait_state(lot, LotState::Closed).await;
    }
    edge.command(
        &BidCommand::Cancel {
            lot_id: lot_id(cancelled),
        },
        None,
    )
    .await;
    edge.wait_state(cancelled, LotState::Cancelled).await;

    let list = |outcome: &'static str| {
        let edge = &edge;
        async move {
            let (status, body) = edge
                .get(&format!("/api/admin/lots?outcome={outcome}"), a)
                .await;
            assert_eq!(status, StatusCode::OK, "{body}");
            body.as_array().unwrap().clone()
        }
    };
    let s = list("sold").await;
    assert_eq!(s.len(), 1, "{s:?}");
    assert_eq!(s[0]["lot_id"], sold.as_str());
    assert_eq!(s[0]["state"], "closed");
    assert_eq!(s[0]["outcome"], "sold");
    assert_eq!(s[0]["amount"], 55_000);
    assert_eq!(s[0]["winner"]["id"], winner.to_string());
    assert_eq!(s[0]["winner"]["email"], "winner@example.com");
    assert_eq!(s[0]["vehicle"]["make"], "Subaru");
    let u = list("unsold").await;
    assert_eq!(u.len(), 1, "{u:?}");
    assert_eq!(u[0]["lot_id"], unsold.as_str());
    assert_eq!(u[0]["outcome"], "unsold");
    assert_eq!(u[0]["amount"], Value::Null);
    assert_eq!(u[0]["winner"], Value::Null);
    let c = list("cancelled").await;
    assert_eq!(c.len(), 1, "{c:?}");
    assert_eq!(c[0]["lot_id"], cancelled.as_str());
    assert_eq!(c[0]["state"], "cancelled");
    for bad in [
        "/api/admin/lots",
        "/api/admin/lots?outcome=open",
        "/api/admin/lots?outcome=",
    ] {
        assert_error(&edge.get(bad, a).await, StatusCode::BAD_REQUEST, "invalid");
    }

    // Re-list the unsold lot into a draft event: a new lot, same vehicle and prices.
    let (next, _) = sale(&edge, &admin, "Next week", 2, &[], true).await;
    let relist = |lot: &str| format!("/api/admin/lots/{lot}/relist");
    let r = edge
        .post(
            &relist(unsold),
            a,
            json!({"event_id": next, "lane": 2, "position": 1}),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    assert_ne!(r.1["lot_id"], unsold.as_str());
    assert_eq!(r.1["event_id"], next.as_str());
    assert_eq!(
        (r.1["lane"].clone(), r.1["position"].clone()),
        (json!(2), json!(1))
    );
    assert_eq!(r.1["state"], "draft");
    assert_eq!(r.1["min_next"], 50_000);
    assert_eq!(r.1["vehicle"], json!(edge.lot_view(unsold).await.vehicle));
    let from: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT relisted_from FROM lots WHERE id = $1")
            .bind(
                r.1["lot_id"]
                    .as_str()
                    .unwrap()
                    .parse::<uuid::Uuid>()
                    .unwrap(),
            )
            .fetch_one(edge.pool())
            .await
            .unwrap();
    assert_eq!(from, Some(unsold.parse().unwrap()));
    // The old lot stays unsold; it is not re-listed twice.
    assert_eq!(list("unsold").await.len(), 1);
    let elsewhere = json!({"event_id": next, "lane": 1, "position": 1});
    assert_error(
        &edge.post(&relist(unsold), a, elsewhere.clone()).await,
        StatusCode::CONFLICT,
        "conflict",
    );
    // Sold, open-or-waiting lots are not re-listed.
    for lot in [sold, waiting] {
        assert_error(
            &edge.post(&relist(lot), a, elsewhere.clone()).await,
            StatusCode::CONFLICT,
            "conflict",
        );
    }
    // Mistakes in the body, the lane, the slot, the ids.
    for (body, status, code) in [
        (
            json!({"event_id": next, "lane": 3, "position": 1}),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            json!({"event_id": next, "lane": 0, "position": 1}),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            json!({"event_id": next, "lane": 1, "position": 0}),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            json!({"event_id": next, "lane": 1, "position": 1, "starting_price": 0}),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            json!({"event_id": next, "lane": 1, "position": 1, "reserve": -1}),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            json!({"lane": 1, "position": 1}),
            StatusCode::BAD_REQUEST,
            "invalid",
        ),
        (
            json!({"event_id": next, "lane": 2, "position": 1}),
            StatusCode::CONFLICT,
            "conflict",
        ),
        (
            json!({"event_id": uuid::Uuid::new_v4(), "lane": 1, "position": 1}),
            StatusCode::NOT_FOUND,
            "not_found",
        ),
    ] {
        assert_error(&edge.post(&relist(cancelled), a, body).await, status, code);
    }
    assert_error(
        &edge
            .post(
                &relist(&uuid::Uuid::new_v4().to_string()),
                a,
                elsewhere.clone(),
            )
            .await,
        StatusCode::NOT_FOUND,
        "not_found",
    );
    // A closed event takes no lot.
    let (over, _) = sale(&edge, &admin, "Over", 1, &[], false).await;
    sqlx::query("UPDATE events SET status = 'closed' WHERE id = $1")
        .bind(over.parse::<uuid::Uuid>().unwrap())
        .execute(edge.pool())
        .await
        .unwrap();
    assert_error(
        &edge
            .post(
                &relist(cancelled),
                a,
                json!({"event_id": over, "lane": 1, "position": 1}),
            )
            .await,
        StatusCode::CONFLICT,
        "conflict",
    );
    // The cancelled lot, back in its own (scheduled) sale at new prices: scheduled at once.
    let r = edge
        .post(
            &relist(cancelled),
            a,
            json!({"event_id": event, "lane": 2, "position": 3, "starting_price": 70_000,
                   "reserve": 90_000}),
        )
        .await;
    assert_eq!(r.0, StatusCode::CREATED, "{}", r.1);
    assert_eq!(r.1["state"], "scheduled");
    assert_eq!(r.1["min_next"], 70_000);
    let reserve: i64 = sqlx::query_scalar("SELECT reserve FROM lots WHERE id = $1")
        .bind(
            r.1["lot_id"]
                .as_str()
                .unwrap()
                .parse::<uuid::Uuid>()
                .unwrap(),
        )
        .fetch_one(edge.pool())
        .await
        .unwrap();
    assert_eq!(reserve, 90_000);
}
