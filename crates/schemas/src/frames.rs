//! The JSON frames of the WebSocket and the REST bodies (PROTOCOL.md), and the parser of client
//! frames, which turns anything a client can send into a frame or a documented error.

use crate::ids::{EventId, LotId};
use crate::lot::{LotState, Outcome, RejectReason};
use crate::money::Cents;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Largest text frame a client may send; a bigger one closes the socket with 1009.
pub const MAX_FRAME_BYTES: usize = 16_384;
/// Longest client idempotency key.
pub const MAX_IDEM_CHARS: usize = 64;

/// `accepted` or `rejected`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BidStatus {
    Accepted,
    Rejected,
}

/// The answer to a bid, on the WebSocket (`bid_result`), over REST and on `user.<id>.result`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct BidResult {
    pub idem: String,
    pub lot_id: LotId,
    pub status: BidStatus,
    pub reason: Option<RejectReason>,
    pub high: Option<i64>,
    pub min_next: Option<i64>,
    pub version: Option<i64>,
    pub retryable: bool,
}

/// An accepted bid, as every watcher of the lane sees it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct NewBid {
    pub lot_id: LotId,
    pub event_id: EventId,
    pub lane: i32,
    pub amount: i64,
    /// The bidder's masked alias, stable per event.
    pub bidder: String,
    pub bid_count: i32,
    pub min_next: i64,
    pub ends_at: i64,
    pub version: i64,
    /// When the bidder decided it.
    pub server_time: i64,
}

/// The clock of an open or paused lot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TimerUpdate {
    pub lot_id: LotId,
    pub lane: i32,
    pub state: LotState,
    pub ends_at: i64,
    pub remaining_ms: i64,
    pub server_time: i64,
    pub version: i64,
}

/// Sent to a user whose high bid was beaten.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outbid {
    pub lot_id: LotId,
    pub your_bid: i64,
    pub high: i64,
    pub min_next: i64,
}

/// Sent to the winner of a lot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Won {
    pub lot_id: LotId,
    pub amount: i64,
    pub pickup: String,
}

/// What a buyer sees of a vehicle.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct VehicleView {
    pub vin: String,
    pub year: i32,
    pub make: String,
    pub model: String,
    pub trim: String,
    pub mileage: i32,
    pub photos: Vec<String>,
}

/// A lot as apps render it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LotView {
    pub lot_id: LotId,
    pub event_id: EventId,
    pub lane: i32,
    pub position: i32,
    pub vehicle: VehicleView,
    pub state: LotState,
    pub high: Option<i64>,
    pub bidder: Option<String>,
    pub bid_count: i32,
    pub min_next: i64,
    pub ends_at: Option<i64>,
    pub version: i64,
}

/// One lane of a snapshot.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LaneView {
    pub lane: i32,
    pub lot: Option<LotView>,
}

/// The lot that just left the block.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClosedLot {
    pub lot_id: LotId,
    pub outcome: Outcome,
    pub amount: Option<i64>,
}

/// Client → server frames.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ClientFrame {
    Subscribe {
        event_id: EventId,
    },
    Unsubscribe {
        event_id: EventId,
    },
    Bid {
        lot_id: LotId,
        amount: Cents,
        seen_high: Option<i64>,
        idem: String,
    },
    Ping {
        t: Value,
    },
}

/// Server → client frames.
// Frames are built once and serialised; their in-memory size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ServerFrame {
    Snapshot {
        event_id: EventId,
        server_time: i64,
        lanes: Vec<LaneView>,
    },
    TimerUpdate(TimerUpdate),
    NewBid(NewBid),
    CarRotate {
        event_id: EventId,
        lane: i32,
        closed: ClosedLot,
        next: Option<LotView>,
    },
    BidResult(BidResult),
    Outbid(Outbid),
    Won(Won),
    Error {
        code: ErrorCode,
        message: String,
    },
    Pong {
        t: Value,
        server_time: i64,
    },
}

/// Codes of the WebSocket `error` frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    BadFrame,
    UnknownType,
    NotFound,
    NotSubscribed,
    RateLimited,
    /// Gavel could not answer a bid in time (NATS or Postgres down): retry with the same idem.
    Unavailable,
}

/// Why a client frame was not accepted, and what PROTOCOL.md says to answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FrameError {
    /// Not a JSON object with a string `type`, or unreadable: `error` `bad_frame`.
    BadFrame(String),
    /// A `type` we do not know: `error` `unknown_type`.
    UnknownType(String),
    /// A `bid` that cannot be read but has a usable `idem`: `bid_result` `invalid`.
    InvalidBid {
        idem: String,
        lot_id: Option<LotId>,
        message: String,
    },
}

/// Parses one client text frame. Never panics, whatever the input (fuzzed).
pub fn parse_client_frame(text: &str) -> Result<ClientFrame, FrameError> {
    let value: Value =
        serde_json::from_str(text).map_err(|e| FrameError::BadFrame(format!("not JSON: {e}")))?;
    let Value::Object(obj) = &value else {
        return Err(FrameError::BadFrame("a frame is a JSON object".into()));
    };
    let Some(Value::String(ty)) = obj.get("type") else {
        return Err(FrameError::BadFrame("a frame needs a string `type`".into()));
    };
    match ty.as_str() {
        "subscribe" | "unsubscribe" | "ping" => serde_json::from_value(value.clone())
            .map_err(|e| FrameError::BadFrame(format!("unreadable {ty}: {e}"))),
        "bid" => parse_bid(obj),
        other => Err(FrameError::UnknownType(truncate(other, 64))),
    }
}

/// Reads a bid from a JSON object (a `bid` frame, or a REST bid body with the path's `lot_id`
/// put in).
pub fn parse_bid(obj: &serde_json::Map<String, Value>) -> Result<ClientFrame, FrameError> {
    let idem = match obj.get("idem") {
        Some(Value::String(s)) if valid_idem(s) => s.clone(),
        _ => {
            return Err(FrameError::BadFrame(format!(
                "a bid needs an `idem` string of 1 to {MAX_IDEM_CHARS} characters, no control characters"
            )))
        }
    };
    let lot_id = obj
        .get("lot_id")
        .and_then(Value::as_str)
        .and_then(|s| s.parse::<LotId>().ok());
    let invalid = |message: String| FrameError::InvalidBid {
        idem: idem.clone(),
        lot_id,
        message,
    };
    let Some(lot) = lot_id else {
        return Err(invalid("`lot_id` must be a lot id".into()));
    };
    let amount = match obj.get("amount") {
        Some(Value::Number(n)) => n.as_i64().and_then(|a| Cents::new(a).ok()),
        _ => None,
    }
    .ok_or_else(|| invalid("`amount` must be a positive integer number of cents".into()))?;
    let seen_high = match obj.get("seen_high") {
        None | Some(Value::Null) => None,
        Some(Value::Number(n)) => match n.as_i64() {
            Some(h) if h >= 0 => Some(h),
            _ => return Err(invalid("`seen_high` must be null or cents".into())),
        },
        Some(_) => return Err(invalid("`seen_high` must be null or cents".into())),
    };
    Ok(ClientFrame::Bid {
        lot_id: lot,
        amount,
        seen_high,
        idem,
    })
}

/// Reads the body of a REST bid (`POST /api/lots/{id}/bids`): a JSON object with `amount`,
/// `seen_high` and `idem`, for the lot the path names. Never panics, whatever the body (fuzzed).
pub fn parse_bid_body(body: &[u8], lot_id: LotId) -> Result<ClientFrame, FrameError> {
    let mut obj = match serde_json::from_slice::<Value>(body) {
        Ok(Value::Object(obj)) => obj,
        Ok(_) => return Err(FrameError::BadFrame("a bid is a JSON object".into())),
        Err(e) => return Err(FrameError::BadFrame(format!("unreadable body: {e}"))),
    };
    obj.insert("lot_id".into(), Value::String(lot_id.to_string()));
    parse_bid(&obj)
}

/// An idempotency key is 1 to 64 characters, none of them a control character (a NUL cannot
/// be stored in Postgres text, and a key is stored with every decision).
pub fn valid_idem(s: &str) -> bool {
    let n = s.chars().count();
    (1..=MAX_IDEM_CHARS).contains(&n) && !s.chars().any(char::is_control)
}

fn truncate(s: &str, max: usize) -> String {
    s.chars().take(max).collect()
}

/// The REST error body: `{"error": {"code", "message"}}`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiError {
    pub error: ApiErrorBody,
}

/// The inside of [`ApiError`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApiErrorBody {
    pub code: String,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn parse(v: Value) -> Result<ClientFrame, FrameError> {
        parse_client_frame(&v.to_string())
    }

    #[test]
    fn reads_every_client_frame() {
        let lot = LotId::new();
        let ev = EventId::new();
        assert_eq!(
            parse(json!({"type":"subscribe","event_id":ev})).unwrap(),
            ClientFrame::Subscribe { event_id: ev }
        );
        assert_eq!(
            parse(json!({"type":"unsubscribe","event_id":ev})).unwrap(),
            ClientFrame::Unsubscribe { event_id: ev }
        );
        assert_eq!(
            parse(json!({"type":"ping","t":12.5})).unwrap(),
            ClientFrame::Ping { t: json!(12.5) }
        );
        assert_eq!(
            parse(json!({"type":"bid","lot_id":lot,"amount":500,"seen_high":null,"idem":"a"}))
                .unwrap(),
            ClientFrame::Bid {
                lot_id: lot,
                amount: Cents::new(500).unwrap(),
                seen_high: None,
                idem: "a".into()
            }
        );
    }

    #[test]
    fn bad_frames_get_the_documented_answer() {
        assert!(matches!(
            parse_client_frame("{not json"),
            Err(FrameError::BadFrame(_))
        ));
        assert!(matches!(parse(json!([1, 2])), Err(FrameError::BadFrame(_))));
        assert!(matches!(
            parse(json!({"type": 3})),
            Err(FrameError::BadFrame(_))
        ));
        assert_eq!(
            parse(json!({"type":"dance"})),
            Err(FrameError::UnknownType("dance".into()))
        );
        assert!(matches!(
            parse(json!({"type":"subscribe"})),
            Err(FrameError::BadFrame(_))
        ));
    }

    #[test]
    fn unreadable_amounts_are_invalid_bids_when_idem_is_usable() {
        let lot = LotId::new();
        for amount in [
            json!(1.5),
            json!("100"),
            json!(-100),
            json!(0),
            json!(9223372036854775808u64),
            json!(null),
        ] {
            let r = parse(json!({"type":"bid","lot_id":lot,"amount":amount,"idem":"k"}));
            assert!(
                matches!(&r, Err(FrameError::InvalidBid { idem, lot_id: Some(l), .. }) if idem == "k" && *l == lot),
                "{amount}: {r:?}"
            );
        }
        let missing = parse(json!({"type":"bid","lot_id":lot,"idem":"k"}));
        assert!(matches!(missing, Err(FrameError::InvalidBid { .. })));
        for idem in ["a\u{0}b", "\n", "k\u{7f}"] {
            assert!(matches!(
                parse(json!({"type":"bid","lot_id":lot,"amount":1,"idem":idem})),
                Err(FrameError::BadFrame(_))
            ));
        }
        let long_idem = "x".repeat(65);
        assert!(matches!(
            parse(json!({"type":"bid","lot_id":lot,"amount":1,"idem":long_idem})),
            Err(FrameError::BadFrame(_))
        ));
        assert!(matches!(
            parse(json!({"type":"bid","lot_id":lot,"amount":1})),
            Err(FrameError::BadFrame(_))
        ));
    }

    #[test]
    fn a_rest_bid_body_is_for_the_path_lot() {
        let lot = LotId::new();
        let body = json!({"lot_id": LotId::new(), "amount": 100, "seen_high": null, "idem": "k"});
        assert_eq!(
            parse_bid_body(body.to_string().as_bytes(), lot).unwrap(),
            ClientFrame::Bid {
                lot_id: lot,
                amount: Cents::new(100).unwrap(),
                seen_high: None,
                idem: "k".into()
            }
        );
        assert!(matches!(
            parse_bid_body(b"[1]", lot),
            Err(FrameError::BadFrame(_))
        ));
        assert!(matches!(
            parse_bid_body(b"{", lot),
            Err(FrameError::BadFrame(_))
        ));
        assert!(matches!(
            parse_bid_body(br#"{"amount": 0, "idem": "k"}"#, lot),
            Err(FrameError::InvalidBid { lot_id: Some(l), .. }) if l == lot
        ));
    }

    #[test]
    fn server_frames_are_tagged_by_type() {
        let f = ServerFrame::Error {
            code: ErrorCode::NotSubscribed,
            message: "m".into(),
        };
        let v = serde_json::to_value(&f).unwrap();
        assert_eq!(
            v,
            json!({"type":"error","code":"not_subscribed","message":"m"})
        );
        let p = ServerFrame::Pong {
            t: json!(1),
            server_time: 2,
        };
        assert_eq!(
            serde_json::to_value(&p).unwrap(),
            json!({"type":"pong","t":1,"server_time":2})
        );
    }
}
