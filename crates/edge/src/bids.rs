//! Bids over REST (`POST /api/lots/{id}/bids`) and the per-user bid limit shared with the
//! WebSocket. Both go through [`crate::live::Hub::place_bid`], so a bid sent on two sockets and
//! over REST with one idem is one bid with one answer, given to each.

use crate::error::ApiErr;
use crate::live::{self, BidError};
use crate::rest::path_id;
use crate::{authorization, body, json, respond, with_state, ApiResult, State};
use bytes::Bytes;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use schemas::frames::{parse_bid_body, BidResult, BidStatus, ClientFrame, FrameError};
use schemas::lot::RejectReason;
use schemas::{LotId, UserId};
use serde::Deserialize;
use std::num::NonZeroU32;
use std::sync::Arc;
use utoipa::ToSchema;
use warp::http::StatusCode;
use warp::reply::Response;
use warp::Filter;

/// Bids per second per user (`GAVEL_BID_RATE`), a burst of as many; `None` when off.
pub struct BidLimiter(DefaultKeyedRateLimiter<UserId>);

impl BidLimiter {
    pub fn new(per_second: u32) -> Option<Self> {
        NonZeroU32::new(per_second).map(|n| Self(RateLimiter::keyed(Quota::per_second(n))))
    }

    /// Takes one bid from `user`'s allowance.
    pub fn allow(&self, user: UserId) -> bool {
        self.0.check_key(&user).is_ok()
    }

    /// Forgets users whose allowance is full again.
    pub fn forget_idle(&self) {
        self.0.retain_recent();
        self.0.shrink_to_fit();
    }
}

/// The body of a REST bid.
#[derive(Debug, Deserialize, ToSchema)]
#[allow(dead_code)]
pub struct BidBody {
    /// Cents, a positive integer.
    pub amount: i64,
    /// The high the client saw, in cents; null if none.
    pub seen_high: Option<i64>,
    /// The client's idempotency key, 1 to 64 characters.
    pub idem: String,
}

pub(crate) fn routes(
    state: Arc<State>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "lots" / String / "bids")
        .and(warp::post())
        .and(with_state(state))
        .and(authorization())
        .and(body())
        .then(place)
        .map(respond)
}

/// Places a bid; the answer is the `bid_result` object: 200 accepted, 422 rejected, 429 over
/// the user's bid rate.
pub(crate) async fn place(
    id: String,
    state: Arc<State>,
    authz: Option<String>,
    body: Bytes,
) -> ApiResult {
    let caller = state.tokens.caller(authz.as_deref())?;
    let lot_id: LotId = path_id(&id, "lot")?;
    let hub = &state.hub;
    let result = match parse_bid_body(&body, lot_id) {
        Err(FrameError::InvalidBid { idem, .. }) => {
            live::refused(idem, lot_id, RejectReason::Invalid)
        }
        Err(FrameError::BadFrame(m)) | Err(FrameError::UnknownType(m)) => {
            return Err(ApiErr::Invalid(m))
        }
        Ok(ClientFrame::Bid {
            amount,
            seen_high,
            idem,
            ..
        }) => {
            if state
                .bid_limiter
                .as_ref()
                .is_some_and(|l| !l.allow(caller.user))
            {
                live::refused(idem, lot_id, RejectReason::RateLimited)
            } else {
                return answer(
                    hub.place_bid(caller.user, lot_id, amount.get(), seen_high, idem)
                        .await,
                );
            }
        }
        Ok(_) => unreachable!("parse_bid only reads bids"),
    };
    hub.count(&result);
    answer(Ok(result))
}

fn answer(r: Result<BidResult, BidError>) -> ApiResult {
    match r {
        Ok(r) => {
            let status = match (r.status, r.reason) {
                (BidStatus::Accepted, _) => StatusCode::OK,
                (_, Some(RejectReason::RateLimited)) => StatusCode::TOO_MANY_REQUESTS,
                _ => StatusCode::UNPROCESSABLE_ENTITY,
            };
            json(status, &r)
        }
        Err(BidError::Unavailable(m)) => Err(ApiErr::Unavailable(m)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bid_limit_allows_a_burst_then_refuses() {
        let l = BidLimiter::new(3).unwrap();
        let u = UserId(uuid::Uuid::new_v4());
        let other = UserId(uuid::Uuid::new_v4());
        assert!((0..3).all(|_| l.allow(u)));
        assert!(!l.allow(u));
        assert!(l.allow(other), "one user's flood does not limit another");
        assert!(BidLimiter::new(0).is_none());
    }
}
