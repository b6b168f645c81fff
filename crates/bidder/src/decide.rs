//! The bid decision and the lot lifecycle: pure functions, no I/O. Start here.
//!
//! [`decide_bid`] and [`decide_command`] take a lot as it stands (or `None` when unknown), one
//! command and the decision time, change the lot in place and return the record that Postgres
//! stores and every announcement is built from. The same inputs always give the same record.

use schemas::frames::{valid_idem, BidStatus};
use schemas::nats::PlaceBid;
use schemas::{min_next, Cents, LotId, LotState, Outcome, RejectReason};
use store::bidding::{BidRecord, CommandKind, CommandRecord, LotRecord, Settlement};

/// The smallest acceptable next bid on `lot`.
pub fn lot_min_next(lot: &LotRecord) -> i64 {
    min_next(lot.starting_price, lot.high)
}

/// The key a decision is recorded under. An idem the contract refuses (empty, too long, a
/// control or NUL character: the edge never sends one, but anything can be published on `BIDS`)
/// cannot be stored, and a row the database refuses would fail its whole batch again on every
/// retry, stalling the partition; such a bid is recorded as `invalid` under a key made from its
/// stream sequence instead, the same on every replay.
pub fn recorded_idem(idem: &str, stream_seq: i64) -> String {
    if valid_idem(idem) {
        idem.to_owned()
    } else {
        format!("invalid-idem-{stream_seq}")
    }
}

/// Decides one bid. An accepted bid raises the high, counts, bumps the version and puts at
/// least `reset_seconds` back on the clock (never shortening it).
pub fn decide_bid(
    lot: Option<&mut LotRecord>,
    bid: &PlaceBid,
    verified: bool,
    now: i64,
    stream_seq: i64,
    traceparent: Option<String>,
) -> BidRecord {
    let mut rec = BidRecord {
        lot_id: bid.lot_id,
        user_id: bid.user_id,
        idem: recorded_idem(&bid.idem, stream_seq),
        amount: bid.amount,
        seen_high: bid.seen_high,
        status: BidStatus::Rejected,
        reason: Some(RejectReason::NotFound),
        high: None,
        min_next: None,
        version: None,
        bid_count: None,
        ends_at: None,
        prev_bidder: None,
        prev_high: None,
        stream_seq,
        decided_at: now,
        traceparent,
    };
    let Some(lot) = lot else {
        return rec;
    };
    let reason = if !valid_idem(&bid.idem) || Cents::new(bid.amount).is_err() {
        Some(RejectReason::Invalid)
    } else if !verified {
        Some(RejectReason::NotVerified)
    } else if lot.state == LotState::Paused {
        Some(RejectReason::Paused)
    } else if lot.state != LotState::Open {
        Some(RejectReason::Closed)
    } else if lot.high_bidder == Some(bid.user_id) {
        Some(RejectReason::AlreadyHigh)
    } else if bid.seen_high != lot.high {
        Some(RejectReason::Stale)
    } else if bid.amount < lot_min_next(lot) {
        Some(RejectReason::TooLow)
    } else {
        None
    };
    if reason.is_none() {
        rec.prev_bidder = lot.high_bidder;
        rec.prev_high = lot.high;
        lot.high = Some(bid.amount);
        lot.high_bidder = Some(bid.user_id);
        lot.bid_count += 1;
        lot.version += 1;
        let reset = now + i64::from(lot.reset_seconds) * 1000;
        lot.ends_at = Some(lot.ends_at.map_or(reset, |e| e.max(reset)));
        rec.status = BidStatus::Accepted;
    }
    rec.reason = reason;
    rec.high = lot.high;
    rec.min_next = Some(lot_min_next(lot));
    rec.version = Some(lot.version);
    rec.bid_count = Some(lot.bid_count);
    rec.ends_at = lot.ends_at;
    rec
}

/// A lifecycle command, without its lot id.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lifecycle {
    Open { ends_at: i64 },
    Hammer { expected_version: i64 },
    Pause,
    Resume,
    Cancel,
}

impl Lifecycle {
    fn kind(self) -> CommandKind {
        match self {
            Lifecycle::Open { .. } => CommandKind::Open,
            Lifecycle::Hammer { .. } => CommandKind::Hammer,
            Lifecycle::Pause => CommandKind::Pause,
            Lifecycle::Resume => CommandKind::Resume,
            Lifecycle::Cancel => CommandKind::Cancel,
        }
    }
}

/// Decides a lifecycle command. A refused command (wrong state, stale hammer, unknown lot)
/// changes nothing and is recorded with `applied = false`. A hammer that closes a sold lot also
/// returns its settlement, to be written in the same transaction.
pub fn decide_command(
    lot_id: LotId,
    lot: Option<&mut LotRecord>,
    cmd: Lifecycle,
    now: i64,
    stream_seq: i64,
    traceparent: Option<String>,
) -> (CommandRecord, Option<Settlement>) {
    let mut rec = CommandRecord {
        stream_seq,
        lot_id,
        kind: cmd.kind(),
        applied: false,
        state: None,
        outcome: None,
        high: None,
        high_bidder: None,
        min_next: None,
        version: None,
        ends_at: None,
        remaining_ms: None,
        decided_at: now,
        traceparent,
    };
    let Some(lot) = lot else {
        return (rec, None);
    };
    let mut settlement = None;
    let applied = match cmd {
        Lifecycle::Open { ends_at } if lot.state == LotState::Scheduled => {
            lot.state = LotState::Open;
            lot.ends_at = Some(ends_at);
            lot.remaining_ms = None;
            true
        }
        Lifecycle::Hammer { expected_version }
            if lot.state == LotState::Open && lot.version == expected_version =>
        {
            lot.state = LotState::Closed;
            let sold = match (lot.high, lot.high_bidder) {
                (Some(high), Some(winner)) if high >= lot.reserve => {
                    settlement = Some(Settlement {
                        lot_id,
                        user_id: winner,
                        amount: high,
                        decided_at: now,
                    });
                    true
                }
                _ => false,
            };
            lot.outcome = Some(if sold { Outcome::Sold } else { Outcome::Unsold });
            true
        }
        Lifecycle::Pause if lot.state == LotState::Open => {
            lot.state = LotState::Paused;
            lot.remaining_ms = Some(lot.ends_at.map_or(0, |e| (e - now).max(0)));
            true
        }
        Lifecycle::Resume if lot.state == LotState::Paused => {
            lot.state = LotState::Open;
            lot.ends_at = Some(now + lot.remaining_ms.unwrap_or(0));
            lot.remaining_ms = None;
            true
        }
        Lifecycle::Cancel if !lot.state.is_final() => {
            lot.state = LotState::Cancelled;
            lot.outcome = Some(Outcome::Cancelled);
            true
        }
        _ => false,
    };
    if applied {
        lot.version += 1;
    }
    rec.applied = applied;
    rec.state = Some(lot.state);
    rec.outcome = lot.outcome;
    rec.high = lot.high;
    rec.high_bidder = lot.high_bidder;
    rec.min_next = Some(lot_min_next(lot));
    rec.version = Some(lot.version);
    rec.ends_at = lot.ends_at;
    rec.remaining_ms = lot.remaining_ms;
    (rec, settlement)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::{EventId, UserId};

    const NOW: i64 = 1_700_000_000_000;

    fn lot(state: LotState) -> LotRecord {
        LotRecord {
            id: LotId::new(),
            event_id: EventId::new(),
            lane: 1,
            position: 1,
            state,
            outcome: None,
            starting_price: 100_000,
            reserve: 150_000,
            high: None,
            high_bidder: None,
            bid_count: 0,
            version: 3,
            ends_at: Some(NOW + 10_000),
            remaining_ms: None,
            applied_seq: 0,
            reset_seconds: 30,
            pickup: "Dock 4".into(),
        }
    }

    fn bid(lot_id: LotId, user: UserId, amount: i64, seen: Option<i64>) -> PlaceBid {
        PlaceBid {
            lot_id,
            user_id: user,
            amount,
            seen_high: seen,
            idem: format!("k{amount}"),
            sent_at: NOW,
        }
    }

    fn reason(r: &BidRecord) -> Option<RejectReason> {
        r.reason
    }

    #[test]
    fn a_first_bid_at_the_starting_price_is_accepted_and_resets_the_clock() {
        let mut l = lot(LotState::Open);
        let lid = l.id;
        let u = UserId::new();
        let r = decide_bid(
            Some(&mut l),
            &bid(lid, u, 100_000, None),
            true,
            NOW,
            7,
            None,
        );
        assert_eq!(r.status, BidStatus::Accepted);
        assert_eq!(r.reason, None);
        assert_eq!(
            (l.high, l.high_bidder, l.bid_count, l.version),
            (Some(100_000), Some(u), 1, 4)
        );
        assert_eq!(l.ends_at, Some(NOW + 30_000));
        assert_eq!(r.min_next, Some(102_500));
        assert_eq!(
            (r.version, r.bid_count, r.ends_at),
            (Some(4), Some(1), Some(NOW + 30_000))
        );
        assert_eq!(r.prev_bidder, None);
    }

    #[test]
    fn an_idem_the_database_cannot_hold_is_recorded_under_its_stream_sequence() {
        for idem in [
            String::new(),
            "x".repeat(65),
            "a\0b".into(),
            "tab\there".into(),
        ] {
            let mut l = lot(LotState::Open);
            let mut b = bid(l.id, UserId::new(), 100_000, None);
            b.idem = idem.clone();
            let rec = decide_bid(Some(&mut l), &b, true, NOW, 42, None);
            assert_eq!(rec.reason, Some(RejectReason::Invalid), "{idem:?}");
            assert_eq!(rec.idem, "invalid-idem-42", "{idem:?}");
            assert!(valid_idem(&rec.idem));
            // Unknown lot: refused as not_found, stored under the same safe key.
            let rec = decide_bid(None, &b, true, NOW, 43, None);
            assert_eq!(rec.idem, "invalid-idem-43");
        }
        let ok = bid(LotId::new(), UserId::new(), 100_000, None);
        assert_eq!(recorded_idem(&ok.idem, 7), ok.idem);
    }

    #[test]
    fn a_bid_never_shortens_the_clock() {
        let mut l = lot(LotState::Open);
        let lid = l.id;
        l.ends_at = Some(NOW + 45_000);
        decide_bid(
            Some(&mut l),
            &bid(lid, UserId::new(), 100_000, None),
            true,
            NOW,
            1,
            None,
        );
        assert_eq!(l.ends_at, Some(NOW + 45_000));
    }

    #[test]
    fn every_rejection_reason() {
        let u = UserId::new();
        let other = UserId::new();
        let cases: Vec<(LotRecord, PlaceBid, bool, RejectReason)> = {
            let open = lot(LotState::Open);
            let mut led = lot(LotState::Open);
            led.high = Some(120_000);
            led.high_bidder = Some(u);
            let mut bad_idem = bid(open.id, u, 100_000, None);
            bad_idem.idem = String::new();
            vec![
                (
                    open.clone(),
                    bid(open.id, u, 0, None),
                    true,
                    RejectReason::Invalid,
                ),
                (
                    open.clone(),
                    bid(open.id, u, -5, None),
                    true,
                    RejectReason::Invalid,
                ),
                (open.clone(), bad_idem, true, RejectReason::Invalid),
                (
                    open.clone(),
                    bid(open.id, u, 100_000, None),
                    false,
                    RejectReason::NotVerified,
                ),
                (
                    lot(LotState::Paused),
                    bid(open.id, u, 100_000, None),
                    true,
                    RejectReason::Paused,
                ),
                (
                    lot(LotState::Scheduled),
                    bid(open.id, u, 100_000, None),
                    true,
                    RejectReason::Closed,
                ),
                (
                    lot(LotState::Draft),
                    bid(open.id, u, 100_000, None),
                    true,
                    RejectReason::Closed,
                ),
                (
                    lot(LotState::Closed),
                    bid(open.id, u, 100_000, None),
                    true,
                    RejectReason::Closed,
                ),
                (
                    lot(LotState::Cancelled),
                    bid(open.id, u, 100_000, None),
                    true,
                    RejectReason::Closed,
                ),
                (
                    led.clone(),
                    bid(led.id, u, 130_000, Some(120_000)),
                    true,
                    RejectReason::AlreadyHigh,
                ),
                (
                    led.clone(),
                    bid(led.id, other, 130_000, None),
                    true,
                    RejectReason::Stale,
                ),
                (
                    led.clone(),
                    bid(led.id, other, 130_000, Some(110_000)),
                    true,
                    RejectReason::Stale,
                ),
                (
                    led.clone(),
                    bid(led.id, other, 122_499, Some(120_000)),
                    true,
                    RejectReason::TooLow,
                ),
                (
                    open.clone(),
                    bid(open.id, u, 99_999, None),
                    true,
                    RejectReason::TooLow,
                ),
            ]
        };
        for (mut l, b, verified, want) in cases {
            let before = l.clone();
            let r = decide_bid(Some(&mut l), &b, verified, NOW, 1, None);
            assert_eq!(r.status, BidStatus::Rejected, "{want:?}");
            assert_eq!(reason(&r), Some(want));
            assert_eq!(l, before, "a rejected bid changes nothing ({want:?})");
            assert_eq!(r.high, before.high, "retry hint carries the current high");
            assert_eq!(r.min_next, Some(lot_min_next(&before)));
            assert_eq!(r.version, Some(before.version));
        }
        let b = PlaceBid {
            lot_id: LotId::new(),
            user_id: u,
            amount: 1,
            seen_high: None,
            idem: "x".into(),
            sent_at: 0,
        };
        let r = decide_bid(None, &b, true, NOW, 1, None);
        assert_eq!(
            (r.reason, r.high, r.min_next, r.version),
            (Some(RejectReason::NotFound), None, None, None)
        );
    }

    #[test]
    fn outbid_records_the_previous_high() {
        let mut l = lot(LotState::Open);
        let lid = l.id;
        let (a, b) = (UserId::new(), UserId::new());
        decide_bid(
            Some(&mut l),
            &bid(lid, a, 100_000, None),
            true,
            NOW,
            1,
            None,
        );
        let r = decide_bid(
            Some(&mut l),
            &bid(lid, b, 102_500, Some(100_000)),
            true,
            NOW,
            2,
            None,
        );
        assert_eq!(r.status, BidStatus::Accepted);
        assert_eq!((r.prev_bidder, r.prev_high), (Some(a), Some(100_000)));
    }

    #[test]
    fn hammer_closes_only_at_the_expected_version() {
        let mut l = lot(LotState::Open);
        let (r, s) = decide_command(
            l.id,
            Some(&mut l),
            Lifecycle::Hammer {
                expected_version: 2,
            },
            NOW,
            1,
            None,
        );
        assert!(!r.applied && s.is_none());
        assert_eq!(l.state, LotState::Open);
        let (r, s) = decide_command(
            l.id,
            Some(&mut l),
            Lifecycle::Hammer {
                expected_version: 3,
            },
            NOW,
            2,
            None,
        );
        assert!(r.applied && s.is_none());
        assert_eq!(
            (l.state, l.outcome, l.version),
            (LotState::Closed, Some(Outcome::Unsold), 4)
        );
        // a second hammer does nothing
        let (r, _) = decide_command(
            l.id,
            Some(&mut l),
            Lifecycle::Hammer {
                expected_version: 4,
            },
            NOW,
            3,
            None,
        );
        assert!(!r.applied);
    }

    #[test]
    fn sold_at_or_above_reserve_with_a_settlement_unsold_below() {
        for (high, sold) in [(150_000, true), (149_999, false), (200_000, true)] {
            let mut l = lot(LotState::Open);
            let w = UserId::new();
            l.high = Some(high);
            l.high_bidder = Some(w);
            let (r, s) = decide_command(
                l.id,
                Some(&mut l),
                Lifecycle::Hammer {
                    expected_version: 3,
                },
                NOW,
                1,
                None,
            );
            assert!(r.applied);
            assert_eq!(
                r.outcome,
                Some(if sold { Outcome::Sold } else { Outcome::Unsold })
            );
            assert_eq!(s.map(|s| (s.user_id, s.amount)), sold.then_some((w, high)));
        }
    }

    #[test]
    fn pause_keeps_the_remaining_time_and_resume_restores_it() {
        let mut l = lot(LotState::Open);
        let (r, _) = decide_command(l.id, Some(&mut l), Lifecycle::Pause, NOW + 4_000, 1, None);
        assert!(r.applied);
        assert_eq!(
            (l.state, l.remaining_ms, l.ends_at),
            (LotState::Paused, Some(6_000), Some(NOW + 10_000))
        );
        let (r, _) = decide_command(
            l.id,
            Some(&mut l),
            Lifecycle::Hammer {
                expected_version: 4,
            },
            NOW + 20_000,
            2,
            None,
        );
        assert!(!r.applied, "a paused lot is never hammered");
        let (r, _) = decide_command(l.id, Some(&mut l), Lifecycle::Resume, NOW + 60_000, 3, None);
        assert!(r.applied);
        assert_eq!(
            (l.state, l.ends_at, l.remaining_ms, l.version),
            (LotState::Open, Some(NOW + 66_000), None, 5)
        );
    }

    #[test]
    fn every_lifecycle_command_in_every_state() {
        use LotState::*;
        let table: [(Lifecycle, &[LotState], Option<LotState>); 5] = [
            (Lifecycle::Open { ends_at: NOW }, &[Scheduled], Some(Open)),
            (
                Lifecycle::Hammer {
                    expected_version: 3,
                },
                &[Open],
                Some(Closed),
            ),
            (Lifecycle::Pause, &[Open], Some(Paused)),
            (Lifecycle::Resume, &[Paused], Some(Open)),
            (
                Lifecycle::Cancel,
                &[Draft, Scheduled, Open, Paused],
                Some(Cancelled),
            ),
        ];
        for (cmd, from, to) in table {
            for s in LotState::ALL {
                let mut l = lot(s);
                let before = l.clone();
                let (r, _) = decide_command(l.id, Some(&mut l), cmd, NOW, 1, None);
                let allowed = from.contains(&s);
                assert_eq!(r.applied, allowed, "{cmd:?} from {s}");
                if allowed {
                    assert_eq!(Some(l.state), to);
                    assert!(
                        s.can_become(l.state),
                        "decision agrees with the state machine"
                    );
                    assert_eq!(l.version, before.version + 1);
                } else {
                    assert_eq!(l, before, "{cmd:?} from {s} changes nothing");
                }
            }
        }
        let (r, _) = decide_command(LotId::new(), None, Lifecycle::Cancel, NOW, 1, None);
        assert!(!r.applied);
    }
}
