//! Every REST error, and the one place they become responses.
//!
//! Handlers return [`ApiErr`]; [`ApiErr::into_response`] turns it into PROTOCOL.md's
//! `{"error": {"code", "message"}}` with its status and logs it (once, here). Warp's own
//! rejections (no such route, wrong method, oversized body) go through [`recover`] into the same
//! shape. An internal error's detail is logged and never sent: the client reads "internal error".

use schemas::frames::{ApiError, ApiErrorBody};
use store::StoreError;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Reply as _;

/// An answer that is not a success.
#[derive(Debug, thiserror::Error)]
pub enum ApiErr {
    /// 400 `invalid`: the request cannot be read or breaks a rule (the message says which).
    #[error("{0}")]
    Invalid(String),
    /// 401 `unauthorized`: no token, or one that is forged, expired or unreadable.
    #[error("{0}")]
    Unauthorized(&'static str),
    /// 401 `invalid_credentials`: a wrong email or password (never says which).
    #[error("wrong email or password")]
    InvalidCredentials,
    /// 403 `forbidden`: a valid token without the right.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404 `not_found`.
    #[error("{0}")]
    NotFound(String),
    /// 409 `conflict`: exists already, or the thing is not in a state that allows this.
    #[error("{0}")]
    Conflict(String),
    /// 429 `rate_limited`.
    #[error("too many requests; slow down")]
    RateLimited,
    /// 503 `unavailable`: a dependency is down (readiness).
    #[error("{0}")]
    Unavailable(String),
    /// 500 `internal`: logged with its source, never shown.
    #[error("internal error")]
    Internal(#[source] anyhow::Error),
}

impl ApiErr {
    pub(crate) fn not_found(what: &str) -> Self {
        ApiErr::NotFound(format!("no such {what}"))
    }

    /// The status and the protocol's code.
    pub fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiErr::Invalid(_) => (StatusCode::BAD_REQUEST, "invalid"),
            ApiErr::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiErr::InvalidCredentials => (StatusCode::UNAUTHORIZED, "invalid_credentials"),
            ApiErr::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiErr::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiErr::Conflict(_) => (StatusCode::CONFLICT, "conflict"),
            ApiErr::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ApiErr::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiErr::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }

    /// The response, logged here and only here.
    pub fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        match &self {
            ApiErr::Internal(e) => tracing::error!(error = %format!("{e:#}"), "request failed"),
            ApiErr::Unavailable(m) => tracing::warn!(reason = %m, "not ready"),
            other => tracing::debug!(%status, code, message = %other, "request refused"),
        }
        error_response(status, code, self.to_string())
    }
}

/// The protocol's error body with `status`.
pub(crate) fn error_response(status: StatusCode, code: &str, message: String) -> Response {
    let body = ApiError {
        error: ApiErrorBody {
            code: code.to_owned(),
            message,
        },
    };
    warp::reply::with_status(warp::reply::json(&body), status).into_response()
}

/// A constraint violation by name becomes the answer a client can act on; anything unknown is
/// still a client answer (the database refused the input), never a 500.
impl From<StoreError> for ApiErr {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::NotFound => ApiErr::NotFound("not found".into()),
            StoreError::Conflict(c) => ApiErr::Conflict(
                match c.as_str() {
                    "users_email_key" => "that email is already registered",
                    "vehicles_vin_key" => "a vehicle with that VIN exists already",
                    "lots_slot_key" => "that lane position is taken",
                    "events_status" => "the event is not in a status that allows this",
                    _ => "that exists already",
                }
                .into(),
            ),
            StoreError::Constraint(c) => match c.as_str() {
                "vehicles_vendor_id_fkey" => ApiErr::not_found("vendor"),
                "lots_vehicle_id_fkey" => ApiErr::not_found("vehicle"),
                "lots_event_id_fkey" | "event_registrations_event_id_fkey" => {
                    ApiErr::not_found("event")
                }
                "lots_lane_in_event" => ApiErr::Invalid("lane is outside the event's lanes".into()),
                other => ApiErr::Invalid(format!("refused by the rule {other}")),
            },
            e @ (StoreError::Fenced | StoreError::Internal(_)) => ApiErr::Internal(e.into()),
        }
    }
}

/// Warp's rejections in the protocol's shape: no route is 404, a known path with another method
/// is 405, a body over the limit is 413, an unreadable query 400.
pub(crate) async fn recover(r: warp::Rejection) -> Result<Response, std::convert::Infallible> {
    use warp::reject::{InvalidQuery, LengthRequired, MethodNotAllowed, PayloadTooLarge};
    let (status, code, message) = if r.is_not_found() {
        (
            StatusCode::NOT_FOUND,
            "not_found",
            "no such route".to_owned(),
        )
    } else if r.find::<MethodNotAllowed>().is_some() {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "this route does not take that method".to_owned(),
        )
    } else if r.find::<PayloadTooLarge>().is_some() {
        (
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("a body is at most {} bytes", crate::MAX_BODY_BYTES),
        )
    } else if r.find::<LengthRequired>().is_some() {
        (
            StatusCode::LENGTH_REQUIRED,
            "length_required",
            "a body needs a Content-Length".to_owned(),
        )
    } else if r.find::<InvalidQuery>().is_some() {
        (
            StatusCode::BAD_REQUEST,
            "invalid",
            "unreadable query string".to_owned(),
        )
    } else {
        tracing::error!(rejection = ?r, "unhandled rejection");
        (
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "internal error".to_owned(),
        )
    };
    tracing::debug!(%status, code, "request rejected by routing");
    Ok(error_response(status, code, message))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn constraint_names_become_client_answers() {
        let e: ApiErr = StoreError::Conflict("users_email_key".into()).into();
        assert_eq!(e.status_code().0, StatusCode::CONFLICT);
        let e: ApiErr = StoreError::Constraint("lots_lane_in_event".into()).into();
        assert_eq!(e.status_code().0, StatusCode::BAD_REQUEST);
        let e: ApiErr = StoreError::Constraint("lots_vehicle_id_fkey".into()).into();
        assert_eq!(e.status_code().0, StatusCode::NOT_FOUND);
        let e: ApiErr = StoreError::Constraint("mystery".into()).into();
        assert_eq!(e.status_code().0, StatusCode::BAD_REQUEST);
        let e: ApiErr = StoreError::Fenced.into();
        assert_eq!(e.status_code().0, StatusCode::INTERNAL_SERVER_ERROR);
    }

    #[test]
    fn internal_details_never_reach_the_body() {
        let e = ApiErr::Internal(anyhow::anyhow!("password=hunter2 connection refused"));
        assert_eq!(e.to_string(), "internal error");
    }
}
