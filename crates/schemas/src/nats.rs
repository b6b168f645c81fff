//! The NATS messages: one tagged, versioned serde enum per subject family, MessagePack on the
//! wire (`rmp_serde::to_vec_named`, so fields are named and new ones can be added).
//!
//! The tag (`type`) carries the version: a change that is not additive gets a new tag
//! (`place_bid.v2`) and both are read during a rollout.

use crate::frames::{BidResult, NewBid, Outbid, TimerUpdate, Won};
use crate::ids::{EventId, LotId, UserId};
use crate::lot::{LotState, Outcome};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

/// Header names used on every Gavel message.
pub mod headers {
    /// Always `application/msgpack`.
    pub const CONTENT_TYPE: &str = "Content-Type";
    /// The message's `type` tag, so ops can filter without decoding.
    pub const GAVEL_TYPE: &str = "Gavel-Type";
    /// JetStream's de-duplication id.
    pub const NATS_MSG_ID: &str = "Nats-Msg-Id";
    /// W3C trace context.
    pub const TRACEPARENT: &str = "traceparent";
    /// The value of `Content-Type`.
    pub const MSGPACK: &str = "application/msgpack";
}

/// A message could not be decoded.
#[derive(Debug, thiserror::Error)]
#[error("undecodable {family} message: {source}")]
pub struct DecodeError {
    family: &'static str,
    #[source]
    source: rmp_serde::decode::Error,
}

/// A message of one subject family.
pub trait NatsMessage: Serialize + DeserializeOwned {
    /// The family, for errors and logs (`bids`, `auction`, `user`, `notify`).
    const FAMILY: &'static str;

    /// The `type` tag of this message, also sent as the `Gavel-Type` header.
    fn gavel_type(&self) -> &'static str;

    /// MessagePack with named fields.
    fn encode(&self) -> Vec<u8> {
        rmp_serde::to_vec_named(self).expect("Gavel messages always serialise")
    }

    /// Reads a message of this family.
    fn decode(bytes: &[u8]) -> Result<Self, DecodeError> {
        rmp_serde::from_slice(bytes).map_err(|source| DecodeError {
            family: Self::FAMILY,
            source,
        })
    }
}

/// A bid as the edge publishes it on the lot's `bids.<p>.<lot>` subject.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlaceBid {
    pub lot_id: LotId,
    pub user_id: UserId,
    /// Cents; the bidder refuses anything not positive as `invalid`.
    pub amount: i64,
    /// The high the client saw; `None` when it saw no bid.
    pub seen_high: Option<i64>,
    /// The client's idempotency key, 1 to 64 characters.
    pub idem: String,
    /// When the edge received it (ms since the epoch), for round-trip metrics only.
    pub sent_at: i64,
}

/// `BIDS`: everything that changes a lot, in one ordered subject per lot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum BidCommand {
    #[serde(rename = "place_bid.v1")]
    PlaceBid(PlaceBid),
    /// Open a scheduled lot with this deadline (from the ticker).
    #[serde(rename = "open.v1")]
    Open { lot_id: LotId, ends_at: i64 },
    /// Close the lot if it is still at `expected_version` (from the ticker).
    #[serde(rename = "hammer.v1")]
    Hammer {
        lot_id: LotId,
        expected_version: i64,
    },
    #[serde(rename = "pause.v1")]
    Pause { lot_id: LotId },
    #[serde(rename = "resume.v1")]
    Resume { lot_id: LotId },
    #[serde(rename = "cancel.v1")]
    Cancel { lot_id: LotId },
}

impl BidCommand {
    /// The lot the command is about.
    pub fn lot_id(&self) -> LotId {
        match self {
            BidCommand::PlaceBid(b) => b.lot_id,
            BidCommand::Open { lot_id, .. }
            | BidCommand::Hammer { lot_id, .. }
            | BidCommand::Pause { lot_id }
            | BidCommand::Resume { lot_id }
            | BidCommand::Cancel { lot_id } => *lot_id,
        }
    }
}

impl NatsMessage for BidCommand {
    const FAMILY: &'static str = "bids";
    fn gavel_type(&self) -> &'static str {
        match self {
            BidCommand::PlaceBid(_) => "place_bid.v1",
            BidCommand::Open { .. } => "open.v1",
            BidCommand::Hammer { .. } => "hammer.v1",
            BidCommand::Pause { .. } => "pause.v1",
            BidCommand::Resume { .. } => "resume.v1",
            BidCommand::Cancel { .. } => "cancel.v1",
        }
    }
}

/// A lot opened, paused or resumed: the clock as it now stands.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotChange {
    pub lot_id: LotId,
    pub event_id: EventId,
    pub lane: i32,
    pub position: i32,
    pub state: LotState,
    pub ends_at: Option<i64>,
    pub remaining_ms: Option<i64>,
    pub high: Option<i64>,
    pub min_next: i64,
    pub version: i64,
    pub server_time: i64,
}

/// A lot ended.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotClosed {
    pub lot_id: LotId,
    pub event_id: EventId,
    pub lane: i32,
    pub position: i32,
    pub outcome: Outcome,
    /// The hammer price when sold.
    pub amount: Option<i64>,
    /// The winner's alias when sold.
    pub bidder: Option<String>,
    pub version: i64,
    pub server_time: i64,
}

/// `AUCTION` (`auction.<event>.<lane>.bid|lot`) and the ticks (`.tick`, core NATS).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum AuctionMsg {
    #[serde(rename = "new_bid.v1")]
    NewBid(NewBid),
    #[serde(rename = "lot_opened.v1")]
    LotOpened(LotChange),
    #[serde(rename = "lot_paused.v1")]
    LotPaused(LotChange),
    #[serde(rename = "lot_resumed.v1")]
    LotResumed(LotChange),
    #[serde(rename = "lot_closed.v1")]
    LotClosed(LotClosed),
    #[serde(rename = "timer_update.v1")]
    TimerUpdate(TimerUpdate),
}

impl NatsMessage for AuctionMsg {
    const FAMILY: &'static str = "auction";
    fn gavel_type(&self) -> &'static str {
        match self {
            AuctionMsg::NewBid(_) => "new_bid.v1",
            AuctionMsg::LotOpened(_) => "lot_opened.v1",
            AuctionMsg::LotPaused(_) => "lot_paused.v1",
            AuctionMsg::LotResumed(_) => "lot_resumed.v1",
            AuctionMsg::LotClosed(_) => "lot_closed.v1",
            AuctionMsg::TimerUpdate(_) => "timer_update.v1",
        }
    }
}

/// `USERS` (`user.<id>.<kind>`): notices for every device of one user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum UserMsg {
    #[serde(rename = "bid_result.v1")]
    Result(BidResult),
    #[serde(rename = "outbid.v1")]
    Outbid(Outbid),
    #[serde(rename = "won.v1")]
    Won(Won),
}

impl NatsMessage for UserMsg {
    const FAMILY: &'static str = "user";
    fn gavel_type(&self) -> &'static str {
        match self {
            UserMsg::Result(_) => "bid_result.v1",
            UserMsg::Outbid(_) => "outbid.v1",
            UserMsg::Won(_) => "won.v1",
        }
    }
}

/// `NOTIFY` (`notify.<kind>`): push jobs for the notifier.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type")]
pub enum NotifyJob {
    /// Alert the event's verified cohort (resolved at send time).
    #[serde(rename = "event_starting.v1")]
    EventStarting { event_id: EventId },
    #[serde(rename = "outbid.v1")]
    Outbid {
        user_id: UserId,
        event_id: EventId,
        lot_id: LotId,
        your_bid: i64,
        high: i64,
        min_next: i64,
    },
    #[serde(rename = "won.v1")]
    Won {
        user_id: UserId,
        event_id: EventId,
        lot_id: LotId,
        amount: i64,
        pickup: String,
    },
}

impl NotifyJob {
    /// The `<kind>` of `notify.<kind>`.
    pub fn kind(&self) -> &'static str {
        match self {
            NotifyJob::EventStarting { .. } => "event_starting",
            NotifyJob::Outbid { .. } => "outbid",
            NotifyJob::Won { .. } => "won",
        }
    }
}

impl NatsMessage for NotifyJob {
    const FAMILY: &'static str = "notify";
    fn gavel_type(&self) -> &'static str {
        match self {
            NotifyJob::EventStarting { .. } => "event_starting.v1",
            NotifyJob::Outbid { .. } => "outbid.v1",
            NotifyJob::Won { .. } => "won.v1",
        }
    }
}

/// Decodes any Gavel message by its subject, as JSON, for `gavel tail` and debugging.
pub fn to_json(subject: &str, payload: &[u8]) -> Result<serde_json::Value, DecodeError> {
    fn j<T: NatsMessage>(p: &[u8]) -> Result<serde_json::Value, DecodeError> {
        Ok(serde_json::to_value(T::decode(p)?).expect("messages serialise as JSON"))
    }
    match subject.split('.').next() {
        Some("bids") => j::<BidCommand>(payload),
        Some("auction") => j::<AuctionMsg>(payload),
        Some("user") => j::<UserMsg>(payload),
        Some("notify") => j::<NotifyJob>(payload),
        _ => {
            // Not ours: show it as generic MessagePack.
            let v: serde_json::Value =
                rmp_serde::from_slice(payload).map_err(|source| DecodeError {
                    family: "unknown",
                    source,
                })?;
            Ok(v)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frames::BidStatus;
    use crate::lot::RejectReason;

    fn round_trip<T: NatsMessage + PartialEq + std::fmt::Debug>(m: T) {
        let bytes = m.encode();
        assert_eq!(T::decode(&bytes).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips_through_msgpack() {
        let lot_id = LotId::new();
        let event_id = EventId::new();
        let user_id = UserId::new();
        round_trip(BidCommand::PlaceBid(PlaceBid {
            lot_id,
            user_id,
            amount: 12_300,
            seen_high: None,
            idem: "k1".into(),
            sent_at: 1,
        }));
        round_trip(BidCommand::Open { lot_id, ends_at: 5 });
        round_trip(BidCommand::Hammer {
            lot_id,
            expected_version: 9,
        });
        round_trip(BidCommand::Pause { lot_id });
        round_trip(BidCommand::Resume { lot_id });
        round_trip(BidCommand::Cancel { lot_id });
        round_trip(AuctionMsg::LotClosed(LotClosed {
            lot_id,
            event_id,
            lane: 1,
            position: 2,
            outcome: Outcome::Sold,
            amount: Some(100),
            bidder: Some("Bidder 1".into()),
            version: 3,
            server_time: 4,
        }));
        round_trip(UserMsg::Result(BidResult {
            idem: "x".into(),
            lot_id,
            status: BidStatus::Rejected,
            reason: Some(RejectReason::Stale),
            high: Some(100),
            min_next: Some(200),
            version: Some(2),
            retryable: true,
        }));
        round_trip(NotifyJob::Won {
            user_id,
            event_id,
            lot_id,
            amount: 1,
            pickup: "Dock 4".into(),
        });
    }

    #[test]
    fn garbage_is_a_decode_error_not_a_panic() {
        assert!(BidCommand::decode(b"\xc1\xff").is_err());
        assert!(BidCommand::decode(&[]).is_err());
        let other = NotifyJob::EventStarting {
            event_id: EventId::new(),
        }
        .encode();
        assert!(BidCommand::decode(&other).is_err());
    }

    #[test]
    fn tail_shows_json_with_the_type_tag() {
        let lot_id = LotId::new();
        let cmd = BidCommand::Pause { lot_id };
        let v = to_json("bids.3.x", &cmd.encode()).unwrap();
        assert_eq!(v["type"], "pause.v1");
        assert_eq!(v["lot_id"], lot_id.to_string());
    }
}
