//! Who may call what: every admin route of PROTOCOL.md, sent as anonymous, as a buyer and as an
//! admin. Anonymous is 401 and a buyer 403, also with an unreadable body, and neither changes a
//! row in Postgres nor publishes a message on NATS; an admin gets the route's success. The table
//! is checked against the OpenAPI document, so an admin route added without a row here fails.

mod common;

use common::*;
use reqwest::{Method, StatusCode};
use schemas::nats::BidCommand;
use schemas::LotState;
use serde_json::{json, Value};
use std::collections::BTreeSet;

/// What the admin routes act on, in the states that let each of them succeed.
struct Floor {
    vendor: String,
    vehicle: String,
    buyer: uuid::Uuid,
    /// A draft event (lots are added to it and it is scheduled).
    draft: String,
    /// A draft event to start now.
    to_start: String,
    /// A scheduled event whose lots the bidder has put in the states below.
    sale: String,
    open: String,
    paused: String,
    scheduled: String,
    cancelled: String,
}

/// One admin route: method, path as the document names it, the concrete path, a body, and what
/// an admin gets.
struct Route {
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    admin: StatusCode,
}

fn route(
    method: Method,
    template: &'static str,
    path: String,
    body: Option<Value>,
    admin: StatusCode,
) -> Route {
    Route {
        method,
        template,
        path,
        body,
        admin,
    }
}

fn admin_routes(f: &Floor) -> Vec<Route> {
    use Method as M;
    use StatusCode as S;
    vec![
        route(
            M::GET,
            "/api/admin/users",
            "/api/admin/users?verified=false".into(),
            None,
            S::OK,
        ),
        route(
            M::POST,
            "/api/admin/users/{id}/verify",
            format!("/api/admin/users/{}/verify", f.buyer),
            None,
            S::OK,
        ),
        route(
            M::POST,
            "/api/admin/vendors",
            "/api/admin/vendors".into(),
            Some(json!({"name": "Acme Autos", "contact": "acme@example.com"})),
            S::CREATED,
        ),
        route(
            M::POST,
            "/api/admin/vehicles",
            "/api/admin/vehicles".into(),
            Some(
                json!({"vendor_id": f.vendor, "vin": "1HGCM82633A004352", "year": 2003,
                        "make": "Honda", "model": "Accord", "mileage": 120000}),
            ),
            S::CREATED,
        ),
        route(
            M::POST,
            "/api/admin/events",
            "/api/admin/events".into(),
            Some(
                json!({"name": "Tuesday sale", "starts_at": schemas::now_ms() + 60_000,
                        "lanes": 2}),
            ),
            S::CREATED,
        ),
        route(
            M::POST,
            "/api/admin/events/{id}/lots",
            format!("/api/admin/events/{}/lots", f.draft),
            Some(json!({"vehicle_id": f.vehicle, "lane": 1, "position": 1,
                        "starting_price": 100000, "reserve": 250000})),
            S::CREATED,
        ),
        route(
            M::POST,
            "/api/admin/events/{id}/schedule",
            format!("/api/admin/events/{}/schedule", f.draft),
            None,
            S::OK,
        ),
        route(
            M::POST,
            "/api/admin/events/{id}/start",
            format!("/api/admin/events/{}/start", f.to_start),
            None,
            S::OK,
        ),
        route(
            M::POST,
            "/api/admin/lots/{id}/pause",
            format!("/api/admin/lots/{}/pause", f.open),
            None,
            S::ACCEPTED,
        ),
        route(
            M::POST,
            "/api/admin/lots/{id}/resume",
            format!("/api/admin/lots/{}/resume", f.paused),
            None,
            S::ACCEPTED,
        ),
        route(
            M::POST,
            "/api/admin/lots/{id}/cancel",
            format!("/api/admin/lots/{}/cancel", f.scheduled),
            None,
            S::ACCEPTED,
        ),
        route(
            M::GET,
            "/api/admin/events/{id}/monitor",
            format!("/api/admin/events/{}/monitor", f.sale),
            None,
            S::OK,
        ),
        route(
            M::GET,
            "/api/admin/lots",
            "/api/admin/lots?outcome=cancelled".into(),
            None,
            S::OK,
        ),
        route(
            M::POST,
            "/api/admin/lots/{id}/relist",
            format!("/api/admin/lots/{}/relist", f.cancelled),
            Some(json!({"event_id": f.sale, "lane": 2, "position": 9})),
            S::CREATED,
        ),
    ]
}

async fn created(edge: &Edge, admin: &str, path: &str, body: Value) -> String {
    let r = edge.post(path, Some(admin), body).await;
    assert_eq!(r.0, StatusCode::CREATED, "{path}: {}", r.1);
    r.1["id"]
        .as_str()
        .or(r.1["lot_id"].as_str())
        .unwrap()
        .to_owned()
}

/// Builds the floor through the admin routes, then has the bidder open, pause and cancel lots
/// of the sale (commands published as the ticker would).
async fn floor(edge: &Edge, admin: &str) -> Floor {
    let (buyer, _) = edge.user("pending@example.com", false, false).await;
    let vendor = created(
        edge,
        admin,
        "/api/admin/vendors",
        json!({"name": "Floor Motors"}),
    )
    .await;
    let mut vehicles = Vec::new();
    for i in 0..5 {
        vehicles.push(
            created(
                edge,
                admin,
                "/api/admin/vehicles",
                json!({"vendor_id": vendor, "vin": format!("FLOOR{i:012}"), "year": 2019,
                       "make": "Mazda", "model": "3", "mileage": 1000 * i}),
            )
            .await,
        );
    }
    let event =
        |name: &str| json!({"name": name, "starts_at": schemas::now_ms() + 3_600_000, "lanes": 2});
    let draft = created(edge, admin, "/api/admin/events", event("Draft")).await;
    let to_start = created(edge, admin, "/api/admin/events", event("Start me")).await;
    let sale = created(edge, admin, "/api/admin/events", event("Sale")).await;
    let mut lots = Vec::new();
    for (i, vehicle) in vehicles[1..].iter().enumerate() {
        lots.push(
            created(
                edge,
                admin,
                &format!("/api/admin/events/{sale}/lots"),
                json!({"vehicle_id": vehicle, "lane": 1, "position": i + 1,
                       "starting_price": 50_000}),
            )
            .await,
        );
    }
    let s = edge
        .post(
            &format!("/api/admin/events/{sale}/schedule"),
            Some(admin),
            Value::Null,
        )
        .await;
    assert_eq!(s.0, StatusCode::OK, "{}", s.1);
    let id = |l: &String| l.parse().unwrap();
    let ends_at = schemas::now_ms() + 600_000;
    for lot in &lots[..2] {
        edge.command(
            &BidCommand::Open {
                lot_id: id(lot),
                ends_at,
            },
            None,
        )
        .await;
    }
    edge.command(
        &BidCommand::Pause {
            lot_id: id(&lots[1]),
        },
        None,
    )
    .await;
    edge.command(
        &BidCommand::Cancel {
            lot_id: id(&lots[3]),
        },
        None,
    )
    .await;
    edge.wait_state(&lots[0], LotState::Open).await;
    edge.wait_state(&lots[1], LotState::Paused).await;
    edge.wait_state(&lots[3], LotState::Cancelled).await;
    // And announced (opened twice, paused, closed), so the streams hold still from here.
    edge.wait_stored("AUCTION", "auction.", 4).await;
    Floor {
        vendor,
        vehicle: vehicles[0].clone(),
        buyer,
        draft,
        to_start,
        sale,
        open: lots[0].clone(),
        paused: lots[1].clone(),
        scheduled: lots[2].clone(),
        cancelled: lots[3].clone(),
    }
}

#[tokio::test]
async fn every_admin_route_refuses_anonymous_and_buyers_and_serves_admins() {
    let edge = Edge::start().await;
    edge.streams().await;
    let _bidder = edge.bidder().await;
    let (_, admin) = edge.user("admin@example.com", true, true).await;
    let (_, buyer) = edge.user("buyer@example.com", false, true).await;
    let f = floor(&edge, &admin).await;
    let routes = admin_routes(&f);

    // The table covers every admin route the edge documents, and nothing else.
    let (_, doc) = edge.get("/openapi.json", None).await;
    let documented: BTreeSet<(String, String)> = doc["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(path, _)| path.starts_with("/api/admin/"))
        .flat_map(|(path, item)| {
            item.as_object()
                .unwrap()
                .keys()
                .map(|m| (m.to_uppercase(), path.clone()))
                .collect::<Vec<_>>()
        })
        .collect();
    let tested: BTreeSet<(String, String)> = routes
        .iter()
        .map(|r| (r.method.to_string(), r.template.to_owned()))
        .collect();
    assert_eq!(tested, documented);
    assert_eq!(tested.len(), 14, "PROTOCOL.md names 14 admin routes");

    let rows = dump(edge.pool()).await;
    let streams = edge.stream_positions().await;
    let junk = Some(json!(["not", "a", "body"]));
    for r in &routes {
        let what = format!("{} {}", r.method, r.path);
        let anon = edge
            .call(r.method.clone(), &r.path, None, r.body.clone())
            .await;
        assert_error(&anon, StatusCode::UNAUTHORIZED, "unauthorized");
        let forged = edge
            .call(
                r.method.clone(),
                &r.path,
                Some("not.a.token"),
                r.body.clone(),
            )
            .await;
        assert_error(&forged, StatusCode::UNAUTHORIZED, "unauthorized");
        let as_buyer = edge
            .call(r.method.clone(), &r.path, Some(&buyer), r.body.clone())
            .await;
        assert_error(&as_buyer, StatusCode::FORBIDDEN, "forbidden");
        // Who you are is answered before the body is read.
        let anon = edge
            .call(r.method.clone(), &r.path, None, junk.clone())
            .await;
        assert_eq!(anon.0, StatusCode::UNAUTHORIZED, "{what}");
        let b = edge
            .call(r.method.clone(), &r.path, Some(&buyer), junk.clone())
            .await;
        assert_eq!(b.0, StatusCode::FORBIDDEN, "{what}");
    }
    // Nothing changed: not a row, not a message (a refused pause publishes nothing).
    assert_eq!(
        dump(edge.pool()).await,
        rows,
        "refused calls changed no row"
    );
    assert_eq!(
        edge.stream_positions().await,
        streams,
        "refused calls published nothing"
    );

    for r in &routes {
        let got = edge
            .call(r.method.clone(), &r.path, Some(&admin), r.body.clone())
            .await;
        assert_eq!(got.0, r.admin, "{} {}: {}", r.method, r.path, got.1);
    }
    // The admin's calls took effect, the lot controls through the bidder.
    edge.wait_state(&f.open, LotState::Paused).await;
    edge.wait_state(&f.paused, LotState::Open).await;
    edge.wait_state(&f.scheduled, LotState::Cancelled).await;
    let started = edge
        .get(&format!("/api/events/{}", f.to_start), Some(&admin))
        .await;
    assert_eq!(started.1["status"], "live");
    let verified = sqlx::query_scalar::<_, bool>("SELECT verified FROM users WHERE id = $1")
        .bind(f.buyer)
        .fetch_one(edge.pool())
        .await
        .unwrap();
    assert!(verified);
}

/// Routes the live layer serves that may not be mounted yet while it is being built; their
/// OpenAPI entries are documentation stubs (`openapi.rs`). Only these may answer "no such route".
const NOT_MOUNTED_YET: [(&str, &str); 3] = [
    ("post", "/api/lots/{id}/bids"),
    ("get", "/ws"),
    ("get", "/metrics"),
];

#[tokio::test]
async fn every_documented_route_is_served() {
    let edge = Edge::start().await;
    // The control: a route that does not exist reads as unrouted.
    let (status, body) = edge.get("/api/admin/nothing-here", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["error"]["message"], "no such route");
    let (_, doc) = edge.get("/openapi.json", None).await;
    for (path, item) in doc["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = path.replace("{id}", &uuid::Uuid::new_v4().to_string());
            let m: Method = method.to_uppercase().parse().unwrap();
            let (status, body) = edge.call(m, &concrete, None, None).await;
            let unrouted = (status == StatusCode::NOT_FOUND
                && body["error"]["message"] == "no such route")
                || status == StatusCode::METHOD_NOT_ALLOWED;
            if unrouted && NOT_MOUNTED_YET.contains(&(method.as_str(), path.as_str())) {
                continue;
            }
            assert!(
                !unrouted,
                "{method} {path} is documented but not served: {status} {body}"
            );
        }
    }
}
