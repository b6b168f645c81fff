//! `/openapi.json`: the OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the bodies' `ToSchema` derives, so it cannot drift from the routes silently
//! (a test checks it lists exactly PROTOCOL.md's routes). Routes served outside warp's table (the
//! WebSocket, metrics, bids) are documented by stubs here until their handlers carry their own.
//!
//! The shared frames (`LotView`, `VehicleView`, `ApiError`) live in `schemas`, which depends on
//! nothing web-shaped; their schemas are mirrored here, and a test checks the mirror has
//! exactly the fields the real type serialises.

use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};

/// A vehicle as buyers see it (`schemas::frames::VehicleView`).
#[derive(ToSchema)]
#[schema(as = VehicleView)]
#[allow(dead_code)]
pub struct VehicleViewDoc {
    vin: String,
    year: i32,
    make: String,
    model: String,
    trim: String,
    mileage: i32,
    photos: Vec<String>,
}

/// A lot as apps render it (`schemas::frames::LotView`).
#[derive(ToSchema)]
#[schema(as = LotView)]
#[allow(dead_code)]
pub struct LotViewDoc {
    lot_id: uuid::Uuid,
    event_id: uuid::Uuid,
    lane: i32,
    position: i32,
    vehicle: VehicleViewDoc,
    /// `draft`, `scheduled`, `open`, `paused`, `closed` or `cancelled`.
    state: String,
    /// Cents; null before the first bid.
    high: Option<i64>,
    /// The high bidder's masked alias.
    bidder: Option<String>,
    bid_count: i32,
    /// Cents.
    min_next: i64,
    /// ms since the epoch, while open or paused.
    ends_at: Option<i64>,
    version: i64,
}

/// The inside of every error.
#[derive(ToSchema)]
#[allow(dead_code)]
pub struct ErrorBodyDoc {
    /// `invalid`, `unauthorized`, `invalid_credentials`, `forbidden`, `not_found`, `conflict`,
    /// `rate_limited`, `method_not_allowed`, `too_large`, `unavailable`, `internal`.
    code: String,
    message: String,
}

/// Every error: `{"error": {"code", "message"}}`.
#[derive(ToSchema)]
#[schema(as = ApiError)]
#[allow(dead_code)]
pub struct ErrorDoc {
    error: ErrorBodyDoc,
}

/// A bid over REST (`POST /api/lots/{id}/bids`).
#[derive(ToSchema)]
#[schema(as = BidBody)]
#[allow(dead_code)]
pub struct BidBodyDoc {
    /// Cents, a positive integer.
    #[schema(minimum = 1, maximum = 100_000_000_000_000_i64)]
    amount: i64,
    /// The high the client saw (cents); null when it saw no bid.
    #[schema(minimum = 0)]
    seen_high: Option<i64>,
    /// The client's idempotency key, 1 to 64 characters: a retry with the same key gets the
    /// first answer.
    #[schema(min_length = 1, max_length = 64)]
    idem: String,
}

/// The answer to a bid (`schemas::frames::BidResult`), over REST and as the `bid_result` frame.
#[derive(ToSchema)]
#[schema(as = BidResult)]
#[allow(dead_code)]
pub struct BidResultDoc {
    idem: String,
    lot_id: uuid::Uuid,
    /// `accepted` or `rejected`.
    status: String,
    /// When rejected: `stale`, `too_low`, `already_high`, `closed`, `paused`, `not_verified`,
    /// `not_found`, `rate_limited` or `invalid`.
    reason: Option<String>,
    /// Cents; null for `rate_limited`, `not_found` and `invalid`.
    high: Option<i64>,
    /// Cents; null for `rate_limited`, `not_found` and `invalid`.
    min_next: Option<i64>,
    version: Option<i64>,
    /// True for `stale`, `too_low` and `rate_limited`.
    retryable: bool,
}

// Documentation-only entries for routes the live layer serves (bids over REST, the WebSocket,
// metrics). Their handlers live elsewhere; when one gets its own `#[utoipa::path]`, its stub here
// goes.

/// Place a bid. Decided by the lot's bidder in stream order; the answer waits for the decision.
#[utoipa::path(post, path = "/api/lots/{id}/bids", tag = "buyers", security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "lot id")),
    request_body = BidBodyDoc,
    responses((status = 200, description = "accepted", body = BidResultDoc),
              (status = 422, description = "rejected (`reason` says why)", body = BidResultDoc),
              (status = 400, description = "unreadable body: `invalid`", body = ErrorDoc),
              (status = 401, body = ErrorDoc),
              (status = 404, description = "the path's id is not a lot id", body = ErrorDoc),
              (status = 429, description = "too many bids from this user (`rate_limited`)", body = BidResultDoc),
              (status = 503, description = "the bid was not answered in 10 s (NATS or Postgres down): retry with the same idem", body = ErrorDoc)))]
#[allow(dead_code)]
fn place_bid_doc() {}

/// The live feed and bids over a WebSocket (PROTOCOL.md: one JSON object per text frame,
/// tagged by `type`).
#[utoipa::path(get, path = "/ws", tag = "live",
    params(("token" = Option<String>, Query, description = "the access token, for browsers that cannot set `Authorization`")),
    security(("bearer" = [])),
    responses((status = 101, description = "switching to the WebSocket protocol"),
              (status = 400, description = "not a WebSocket upgrade (GET, `Upgrade: websocket`, version 13, a key)", body = ErrorDoc),
              (status = 401, description = "no or a bad token", body = ErrorDoc),
              (status = 403, description = "an `Origin` not in `GAVEL_ALLOWED_ORIGINS`", body = ErrorDoc)))]
#[allow(dead_code)]
fn ws_doc() {}

/// Prometheus metrics (text exposition format); Gavel's names start with `gavel_`.
#[utoipa::path(get, path = "/metrics", tag = "ops",
    responses((status = 200, description = "Prometheus text", content_type = "text/plain; version=0.0.4", body = String)))]
#[allow(dead_code)]
fn metrics_doc() {}

#[derive(OpenApi)]
#[openapi(
    info(title = "Gavel edge", description = "REST for buyers and admins (PROTOCOL.md)."),
    paths(
        crate::rest::healthz,
        crate::rest::readyz,
        crate::rest::register,
        crate::rest::login,
        crate::rest::me,
        crate::rest::won,
        crate::rest::events,
        crate::rest::event,
        crate::rest::join_event,
        crate::rest::lot,
        crate::admin::list_users,
        crate::admin::verify_user,
        crate::admin::create_vendor,
        crate::admin::create_vehicle,
        crate::admin::create_event,
        crate::admin::add_lot,
        crate::admin::schedule_event,
        crate::admin::start_event,
        crate::admin::pause_lot,
        crate::admin::resume_lot,
        crate::admin::cancel_lot,
        crate::admin::monitor_event,
        crate::admin::lots_by_outcome,
        crate::admin::relist_lot,
        place_bid_doc,
        ws_doc,
        metrics_doc,
    ),
    components(schemas(VehicleViewDoc, LotViewDoc, ErrorDoc, ErrorBodyDoc, BidBodyDoc, BidResultDoc)),
    modifiers(&BearerAuth),
)]
struct ApiDoc;

/// Declares the `bearer` scheme the routes' `security` names.
struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .build(),
            ),
        );
    }
}

/// The document, built once.
pub fn document() -> &'static utoipa::openapi::OpenApi {
    static DOC: std::sync::OnceLock<utoipa::openapi::OpenApi> = std::sync::OnceLock::new();
    DOC.get_or_init(ApiDoc::openapi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::frames::{LotView, VehicleView};
    use std::collections::BTreeSet;

    fn schema_fields(name: &str) -> BTreeSet<String> {
        let doc = serde_json::to_value(document()).unwrap();
        doc["components"]["schemas"][name]["properties"]
            .as_object()
            .unwrap_or_else(|| panic!("schema {name} in {doc}"))
            .keys()
            .cloned()
            .collect()
    }

    /// Every route of PROTOCOL.md, by method and path (the REST tables, `/ws`, health, metrics).
    /// A route added to the protocol goes here and into the document together.
    const PROTOCOL_ROUTES: &[(&str, &str)] = &[
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/metrics"),
        ("get", "/ws"),
        ("post", "/api/auth/register"),
        ("post", "/api/auth/login"),
        ("get", "/api/me"),
        ("get", "/api/me/won"),
        ("get", "/api/events"),
        ("get", "/api/events/{id}"),
        ("post", "/api/events/{id}/register"),
        ("get", "/api/lots/{id}"),
        ("post", "/api/lots/{id}/bids"),
        ("get", "/api/admin/users"),
        ("post", "/api/admin/users/{id}/verify"),
        ("post", "/api/admin/vendors"),
        ("post", "/api/admin/vehicles"),
        ("post", "/api/admin/events"),
        ("post", "/api/admin/events/{id}/lots"),
        ("post", "/api/admin/events/{id}/schedule"),
        ("post", "/api/admin/events/{id}/start"),
        ("post", "/api/admin/lots/{id}/pause"),
        ("post", "/api/admin/lots/{id}/resume"),
        ("post", "/api/admin/lots/{id}/cancel"),
        ("get", "/api/admin/events/{id}/monitor"),
        ("get", "/api/admin/lots"),
        ("post", "/api/admin/lots/{id}/relist"),
    ];

    #[test]
    fn the_document_lists_exactly_the_protocol_routes() {
        let doc = serde_json::to_value(document()).unwrap();
        let mut listed = BTreeSet::new();
        for (path, item) in doc["paths"].as_object().unwrap() {
            for method in item.as_object().unwrap().keys() {
                listed.insert((method.clone(), path.clone()));
            }
        }
        let expected: BTreeSet<(String, String)> = PROTOCOL_ROUTES
            .iter()
            .map(|(m, p)| ((*m).to_owned(), (*p).to_owned()))
            .collect();
        assert_eq!(listed, expected);
        // Every admin route says it needs the bearer token and documents 401 and 403.
        for (method, path) in &listed {
            if !path.starts_with("/api/admin/") {
                continue;
            }
            let op = &doc["paths"][path][method];
            assert!(op["security"][0]["bearer"].is_array(), "{method} {path}");
            for status in ["401", "403"] {
                assert!(
                    op["responses"][status].is_object(),
                    "{method} {path} {status}"
                );
            }
        }
        assert!(doc["components"]["schemas"]["BidResult"].is_object());
        assert!(doc["components"]["schemas"]["BidBody"].is_object());
    }

    #[test]
    fn the_bid_result_mirror_matches_the_real_frame() {
        let r = schemas::frames::BidResult {
            idem: "k".into(),
            lot_id: schemas::LotId::new(),
            status: schemas::frames::BidStatus::Accepted,
            reason: None,
            high: Some(1),
            min_next: Some(2),
            version: Some(3),
            retryable: false,
        };
        let keys: BTreeSet<String> = serde_json::to_value(&r)
            .unwrap()
            .as_object()
            .unwrap()
            .keys()
            .cloned()
            .collect();
        assert_eq!(keys, schema_fields("BidResult"));
    }

    #[test]
    fn mirrored_schemas_match_the_real_frames() {
        let vehicle = VehicleView {
            vin: "V".into(),
            year: 2020,
            make: "M".into(),
            model: "m".into(),
            trim: String::new(),
            mileage: 1,
            photos: vec![],
        };
        let lot = LotView {
            lot_id: schemas::LotId::new(),
            event_id: schemas::EventId::new(),
            lane: 1,
            position: 1,
            vehicle: vehicle.clone(),
            state: schemas::LotState::Open,
            high: None,
            bidder: None,
            bid_count: 0,
            min_next: 100,
            ends_at: None,
            version: 0,
        };
        let keys = |v: serde_json::Value| -> BTreeSet<String> {
            v.as_object().unwrap().keys().cloned().collect()
        };
        assert_eq!(
            keys(serde_json::to_value(&lot).unwrap()),
            schema_fields("LotView")
        );
        assert_eq!(
            keys(serde_json::to_value(&vehicle).unwrap()),
            schema_fields("VehicleView")
        );
        let err = schemas::frames::ApiError {
            error: schemas::frames::ApiErrorBody {
                code: "c".into(),
                message: "m".into(),
            },
        };
        assert_eq!(
            keys(serde_json::to_value(&err).unwrap()),
            schema_fields("ApiError")
        );
    }
}
