//! Writes the seed corpus of every fuzz target from Gavel's own encoders, so the fuzzers start
//! from messages and frames as services and apps really send them:
//! `cargo run --manifest-path fuzz/seeds/Cargo.toml -- fuzz/corpus` (scripts/fuzz --seeds).

use schemas::frames::{BidResult, BidStatus, NewBid, Outbid, TimerUpdate, Won};
use schemas::nats::{
    AuctionMsg, BidCommand, LotChange, LotClosed, NatsMessage, NotifyJob, PlaceBid, UserMsg,
};
use schemas::{EventId, LotId, LotState, Outcome, RejectReason, UserId};
use serde_json::json;
use std::path::{Path, PathBuf};

fn main() {
    let root = PathBuf::from(
        std::env::args()
            .nth(1)
            .unwrap_or_else(|| "fuzz/corpus".into()),
    );
    let lot: LotId = "0b6f4a0e-7f3c-4c61-9a8e-3d2f1c0b9a87".parse().unwrap();
    let event: EventId = "5d1e2c3b-4a59-4867-8f70-a1b2c3d4e5f6".parse().unwrap();
    let user: UserId = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d".parse().unwrap();
    let t = 1_764_115_200_000_i64;

    let bids = [
        (
            "place_bid",
            BidCommand::PlaceBid(PlaceBid {
                lot_id: lot,
                user_id: user,
                amount: 1_250_000,
                seen_high: Some(1_225_000),
                idem: "c0ffee-1".into(),
                sent_at: t,
            }),
        ),
        (
            "place_bid_first",
            BidCommand::PlaceBid(PlaceBid {
                lot_id: lot,
                user_id: user,
                amount: 500_000,
                seen_high: None,
                idem: "k".into(),
                sent_at: t,
            }),
        ),
        (
            "open",
            BidCommand::Open {
                lot_id: lot,
                ends_at: t + 30_000,
            },
        ),
        (
            "hammer",
            BidCommand::Hammer {
                lot_id: lot,
                expected_version: 7,
            },
        ),
        ("pause", BidCommand::Pause { lot_id: lot }),
        ("resume", BidCommand::Resume { lot_id: lot }),
        ("cancel", BidCommand::Cancel { lot_id: lot }),
    ];
    write_all(&root.join("nats_bids"), &bids);

    let change = |state| LotChange {
        lot_id: lot,
        event_id: event,
        lane: 2,
        position: 3,
        state,
        ends_at: Some(t + 30_000),
        remaining_ms: Some(30_000),
        high: Some(1_250_000),
        min_next: 1_255_000,
        version: 4,
        server_time: t,
    };
    let auction = [
        (
            "new_bid",
            AuctionMsg::NewBid(NewBid {
                lot_id: lot,
                event_id: event,
                lane: 2,
                amount: 1_250_000,
                bidder: "Bidder 17".into(),
                bid_count: 5,
                min_next: 1_255_000,
                ends_at: t + 30_000,
                version: 9,
                server_time: t,
            }),
        ),
        (
            "lot_opened",
            AuctionMsg::LotOpened(LotChange {
                high: None,
                ..change(LotState::Open)
            }),
        ),
        (
            "lot_paused",
            AuctionMsg::LotPaused(LotChange {
                ends_at: None,
                ..change(LotState::Paused)
            }),
        ),
        (
            "lot_resumed",
            AuctionMsg::LotResumed(change(LotState::Open)),
        ),
        (
            "lot_closed_sold",
            AuctionMsg::LotClosed(LotClosed {
                lot_id: lot,
                event_id: event,
                lane: 2,
                position: 3,
                outcome: Outcome::Sold,
                amount: Some(1_250_000),
                bidder: Some("Bidder 17".into()),
                version: 10,
                server_time: t,
            }),
        ),
        (
            "lot_closed_unsold",
            AuctionMsg::LotClosed(LotClosed {
                lot_id: lot,
                event_id: event,
                lane: 1,
                position: 1,
                outcome: Outcome::Unsold,
                amount: None,
                bidder: None,
                version: 2,
                server_time: t,
            }),
        ),
        (
            "timer_update",
            AuctionMsg::TimerUpdate(TimerUpdate {
                lot_id: lot,
                lane: 2,
                state: LotState::Open,
                ends_at: t + 12_000,
                remaining_ms: 12_000,
                server_time: t,
                version: 9,
            }),
        ),
    ];
    write_all(&root.join("nats_auction"), &auction);

    let users = [
        (
            "result_accepted",
            UserMsg::Result(BidResult {
                idem: "c0ffee-1".into(),
                lot_id: lot,
                status: BidStatus::Accepted,
                reason: None,
                high: Some(1_250_000),
                min_next: Some(1_255_000),
                version: Some(9),
                retryable: false,
            }),
        ),
        (
            "result_stale",
            UserMsg::Result(BidResult {
                idem: "c0ffee-2".into(),
                lot_id: lot,
                status: BidStatus::Rejected,
                reason: Some(RejectReason::Stale),
                high: Some(1_250_000),
                min_next: Some(1_255_000),
                version: Some(9),
                retryable: true,
            }),
        ),
        (
            "result_rate_limited",
            UserMsg::Result(BidResult {
                idem: "x".into(),
                lot_id: lot,
                status: BidStatus::Rejected,
                reason: Some(RejectReason::RateLimited),
                high: None,
                min_next: None,
                version: None,
                retryable: true,
            }),
        ),
        (
            "outbid",
            UserMsg::Outbid(Outbid {
                lot_id: lot,
                your_bid: 1_225_000,
                high: 1_250_000,
                min_next: 1_255_000,
            }),
        ),
        (
            "won",
            UserMsg::Won(Won {
                lot_id: lot,
                amount: 1_250_000,
                pickup: "Dock 4, gate B, 8am-5pm".into(),
            }),
        ),
    ];
    write_all(&root.join("nats_user"), &users);

    let notify = [
        (
            "event_starting",
            NotifyJob::EventStarting { event_id: event },
        ),
        (
            "outbid",
            NotifyJob::Outbid {
                user_id: user,
                event_id: event,
                lot_id: lot,
                your_bid: 1_225_000,
                high: 1_250_000,
                min_next: 1_255_000,
            },
        ),
        (
            "won",
            NotifyJob::Won {
                user_id: user,
                event_id: event,
                lot_id: lot,
                amount: 1_250_000,
                pickup: "Dock 4".into(),
            },
        ),
    ];
    write_all(&root.join("nats_notify"), &notify);

    let frames = [
        ("subscribe", json!({"type": "subscribe", "event_id": event})),
        (
            "unsubscribe",
            json!({"type": "unsubscribe", "event_id": event}),
        ),
        ("ping_int", json!({"type": "ping", "t": t})),
        ("ping_float", json!({"type": "ping", "t": 12.5})),
        (
            "bid",
            json!({"type": "bid", "lot_id": lot, "amount": 1_250_000, "seen_high": 1_225_000, "idem": "c0ffee-1"}),
        ),
        (
            "bid_first",
            json!({"type": "bid", "lot_id": lot, "amount": 500_000, "seen_high": null, "idem": "k"}),
        ),
        (
            "bid_float_amount",
            json!({"type": "bid", "lot_id": lot, "amount": 1.5, "idem": "k"}),
        ),
        (
            "bid_string_amount",
            json!({"type": "bid", "lot_id": lot, "amount": "100", "idem": "k"}),
        ),
        (
            "bid_huge_amount",
            json!({"type": "bid", "lot_id": lot, "amount": 9_223_372_036_854_775_807_i64, "idem": "k"}),
        ),
        (
            "bid_no_idem",
            json!({"type": "bid", "lot_id": lot, "amount": 100}),
        ),
        (
            "bid_bad_lot",
            json!({"type": "bid", "lot_id": "nope", "amount": 100, "idem": "k"}),
        ),
        ("unknown_type", json!({"type": "dance"})),
        ("type_not_string", json!({"type": 3})),
    ];
    let dir = root.join("ws_frame");
    for (name, v) in &frames {
        write(&dir, name, v.to_string().as_bytes());
    }
    write(&dir, "not_json", b"{\"type\": \"bid\", ");
    write(&dir, "array", b"[1, 2]");

    let bodies = [
        (
            "bid",
            json!({"amount": 1_250_000, "seen_high": 1_225_000, "idem": "c0ffee-1"}),
        ),
        (
            "bid_first",
            json!({"amount": 500_000, "seen_high": null, "idem": "k"}),
        ),
        (
            "bid_negative",
            json!({"amount": -1, "seen_high": null, "idem": "k"}),
        ),
        (
            "bid_long_idem",
            json!({"amount": 100, "idem": "x".repeat(65)}),
        ),
        (
            "bid_lot_in_body",
            json!({"lot_id": event, "amount": 100, "idem": "k"}),
        ),
    ];
    let dir = root.join("rest_bid");
    for (name, v) in &bodies {
        write(&dir, name, v.to_string().as_bytes());
    }
    write(&dir, "not_an_object", b"\"100\"");
}

fn write_all<T: NatsMessage>(dir: &Path, messages: &[(&str, T)]) {
    for (name, m) in messages {
        write(dir, name, &m.encode());
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).expect("corpus directory");
    std::fs::write(dir.join(name), bytes).expect("corpus file");
}
