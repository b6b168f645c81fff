//! Admin routes over real HTTP: every route as anonymous, buyer and admin (401 / 403 / success,
//! and a refused call changes nothing), then the documented errors of building an event.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
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

/// Every admin route: method, path, body, and the status an admin gets.
fn admin_routes(f: &Fixtures) -> Vec<(Method, String, Option<Value>, StatusCode)> {
    vec![
        (
            Method::GET,
            "/api/admin/users?verified=false".into(),
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            format!("/api/admin/users/{}/verify", f.buyer),
            None,
            StatusCode::OK,
        ),
        (
            Method::POST,
            "/api/admin/vendors".into(),
            Some(json!({"name": "Acme Autos", "contact": "acme@example.com"})),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/admin/vehicles".into(),
            Some(
                json!({"vendor_id": f.vendor, "vin": "1HGCM82633A004352", "year": 2003,
                        "make": "Honda", "model": "Accord", "trim": "EX", "mileage": 120000,
                        "photos": ["https://img.example.com/1.jpg"], "pickup": "Gate 3"}),
            ),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            "/api/admin/events".into(),
            Some(
                json!({"name": "Tuesday sale", "starts_at": schemas::now_ms() + 60_000,
                        "lanes": 2, "lot_seconds": 20, "reset_seconds": 15}),
            ),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            format!("/api/admin/events/{}/lots", f.event),
            Some(json!({"vehicle_id": f.vehicle, "lane": 1, "position": 1,
                        "starting_price": 100000, "reserve": 250000})),
            StatusCode::CREATED,
        ),
        (
            Method::POST,
            format!("/api/admin/events/{}/schedule", f.event),
            None,
            StatusCode::OK,
        ),
    ]
}

#[tokio::test]
async fn every_admin_route_is_401_anonymous_403_buyer_and_works_for_an_admin() {
    let edge = Edge::start().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let (_, buyer) = edge.user("buyer@example.com", false, true).await;
    let f = fixtures(&edge, &admin).await;
    let routes = admin_routes(&f);
    let before = counts(edge.pool()).await;
    for (method, path, body, _) in &routes {
        let anon = edge.call(method.clone(), path, None, body.clone()).await;
        assert_error(&anon, StatusCode::UNAUTHORIZED, "unauthorized");
        let as_buyer = edge
            .call(method.clone(), path, Some(&buyer), body.clone())
            .await;
        assert_error(&as_buyer, StatusCode::FORBIDDEN, "forbidden");
        // Even with an unreadable body, who you are is answered first.
        if body.is_some() {
            let junk = Some(json!("junk"));
            let anon = edge.call(method.clone(), path, None, junk.clone()).await;
            assert_eq!(anon.0, StatusCode::UNAUTHORIZED, "{path}");
            let b = edge.call(method.clone(), path, Some(&buyer), junk).await;
            assert_eq!(b.0, StatusCode::FORBIDDEN, "{path}");
        }
    }
    assert_eq!(
        counts(edge.pool()).await,
        before,
        "refused calls changed nothing"
    );

    for (method, path, body, status) in &routes {
        let r = edge
            .call(method.clone(), path, Some(&admin), body.clone())
            .await;
        assert_eq!(r.0, *status, "{method} {path}: {}", r.1);
    }
    let after = counts(edge.pool()).await;
    let delta: Vec<_> = before
        .iter()
        .zip(&after)
        .map(|((name, b), (_, a))| (*name, a - b))
        .collect();
    assert_eq!(
        delta,
        vec![
            ("users", 0),
            ("verified", 1),
            ("vendors", 1),
            ("vehicles", 1),
            ("events", 1),
            ("scheduled", 1),
            ("lots", 1),
            ("registrations", 0),
        ]
    );
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
