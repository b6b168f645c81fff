//! `/openapi.json`: the OpenAPI document, generated from the handlers' `#[utoipa::path]`
//! attributes and the bodies' `ToSchema` derives, so it cannot drift from the routes silently
//! (a test checks every route is listed).
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
    ),
    components(schemas(VehicleViewDoc, LotViewDoc, ErrorDoc, ErrorBodyDoc)),
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
