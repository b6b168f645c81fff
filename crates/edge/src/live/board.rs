//! What one event looks like right now, lane by lane, and how each `AUCTION` message changes it:
//! the rules that keep every client's view in version order. No I/O: the room ([`super::room`])
//! loads the board from Postgres, feeds it messages and sends the frames it returns.
//!
//! A lane shows one lot (its current one): the first by position that is still `scheduled`,
//! `open` or `paused`. A message about that lot with a version the board already has (or older)
//! changes nothing and sends nothing, so a client never sees a version go backwards, whether the
//! message was late, duplicated or already in the snapshot it was given.

use schemas::frames::{ClosedLot, LaneView, LotView, NewBid, ServerFrame, TimerUpdate};
use schemas::nats::{AuctionMsg, LotChange, LotClosed};
use schemas::{EventId, LotId};
use std::collections::BTreeMap;

/// What a message asks of the room.
// Steps are made and consumed one at a time; boxing the frame would only add an allocation.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
pub(crate) enum Step {
    /// Nothing to send: an old, duplicate or foreign message.
    Nothing,
    /// Send this frame to every subscriber.
    Send(ServerFrame),
    /// The lane's lot closed: find the lane's next lot, then send `car_rotate`.
    Rotate { lane: i32, closed: ClosedLot },
    /// The message is about a lot the board does not show (the board is behind): reload the
    /// event and send everyone a fresh snapshot.
    Reload,
}

/// The lanes of one event.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Board {
    pub(crate) event: EventId,
    pub(crate) lanes: BTreeMap<i32, Option<LotView>>,
}

impl Board {
    /// The board of an event with `lanes` lanes from its lots (any order): each lane's first
    /// lot by position still on the block, or `None`.
    pub(crate) fn new(event: EventId, lanes: i32, lots: Vec<LotView>) -> Self {
        let mut board: BTreeMap<i32, Option<LotView>> = (1..=lanes).map(|l| (l, None)).collect();
        for lot in lots {
            if !lot.state.on_the_block() {
                continue;
            }
            let slot = board.entry(lot.lane).or_insert(None);
            if slot.as_ref().is_none_or(|cur| lot.position < cur.position) {
                *slot = Some(lot);
            }
        }
        Board {
            event,
            lanes: board,
        }
    }

    /// The `snapshot` frame of the board at `now`.
    pub(crate) fn snapshot(&self, now: i64) -> ServerFrame {
        ServerFrame::Snapshot {
            event_id: self.event,
            server_time: now,
            lanes: self
                .lanes
                .iter()
                .map(|(lane, lot)| LaneView {
                    lane: *lane,
                    lot: lot.clone(),
                })
                .collect(),
        }
    }

    /// The lane's current lot if it is `lot`.
    fn current(&mut self, lane: i32, lot: LotId) -> Option<&mut LotView> {
        self.lanes
            .get_mut(&lane)
            .and_then(Option::as_mut)
            .filter(|v| v.lot_id == lot)
    }

    /// Applies one message; says what to send.
    pub(crate) fn apply(&mut self, msg: AuctionMsg) -> Step {
        match msg {
            AuctionMsg::NewBid(b) => self.new_bid(b),
            AuctionMsg::LotOpened(c) | AuctionMsg::LotPaused(c) | AuctionMsg::LotResumed(c) => {
                self.clock_change(c)
            }
            AuctionMsg::LotClosed(c) => self.closed(c),
            AuctionMsg::TimerUpdate(t) => self.tick(t),
        }
    }

    fn new_bid(&mut self, b: NewBid) -> Step {
        let Some(cur) = self.current(b.lane, b.lot_id) else {
            return Step::Reload;
        };
        if b.version <= cur.version {
            return Step::Nothing;
        }
        cur.high = Some(b.amount);
        cur.bidder = Some(b.bidder.clone());
        cur.bid_count = b.bid_count;
        cur.min_next = b.min_next;
        cur.ends_at = Some(b.ends_at);
        cur.version = b.version;
        Step::Send(ServerFrame::NewBid(b))
    }

    fn clock_change(&mut self, c: LotChange) -> Step {
        let Some(cur) = self.current(c.lane, c.lot_id) else {
            return Step::Reload;
        };
        if c.version <= cur.version {
            return Step::Nothing;
        }
        let ends_at = c
            .ends_at
            .unwrap_or_else(|| c.server_time + c.remaining_ms.unwrap_or(0));
        let remaining_ms = c
            .remaining_ms
            .unwrap_or_else(|| (ends_at - c.server_time).max(0));
        cur.state = c.state;
        cur.ends_at = Some(ends_at);
        cur.version = c.version;
        cur.min_next = c.min_next;
        Step::Send(ServerFrame::TimerUpdate(TimerUpdate {
            lot_id: c.lot_id,
            lane: c.lane,
            state: c.state,
            ends_at,
            remaining_ms,
            server_time: c.server_time,
            version: c.version,
        }))
    }

    fn closed(&mut self, c: LotClosed) -> Step {
        let Some(cur) = self.current(c.lane, c.lot_id) else {
            // A lot that is not on the block closed (cancelled while waiting its turn, or a
            // close the snapshot already had): the lane is unchanged.
            return Step::Nothing;
        };
        if c.version <= cur.version {
            return Step::Nothing;
        }
        self.lanes.insert(c.lane, None);
        Step::Rotate {
            lane: c.lane,
            closed: ClosedLot {
                lot_id: c.lot_id,
                outcome: c.outcome,
                amount: c.amount,
            },
        }
    }

    /// Puts the lane's next lot on the board after a rotation.
    pub(crate) fn rotated(&mut self, lane: i32, next: Option<LotView>) {
        self.lanes.insert(lane, next);
    }

    fn tick(&mut self, t: TimerUpdate) -> Step {
        let Some(cur) = self.current(t.lane, t.lot_id) else {
            // Ticks are not stored and come every second: one about a lot the board does not
            // show yet is dropped; the message that put the lot there will reload if needed.
            return Step::Nothing;
        };
        // A tick carries the version the ticker knew: an older one is from before a bid the
        // board has, and its deadline is stale.
        if t.version < cur.version || t.state != cur.state {
            return Step::Nothing;
        }
        cur.ends_at = Some(t.ends_at);
        Step::Send(ServerFrame::TimerUpdate(t))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::frames::VehicleView;
    use schemas::lot::{LotState, Outcome};
    use schemas::UserId;

    fn lot(lane: i32, position: i32, state: LotState, version: i64) -> LotView {
        LotView {
            lot_id: LotId(uuid::Uuid::new_v4()),
            event_id: EventId(uuid::Uuid::nil()),
            lane,
            position,
            vehicle: VehicleView {
                vin: "1HGCM82633A004352".into(),
                year: 2019,
                make: "Honda".into(),
                model: "Accord".into(),
                trim: "EX".into(),
                mileage: 41_000,
                photos: vec![],
            },
            state,
            high: None,
            bidder: None,
            bid_count: 0,
            min_next: 100_000,
            ends_at: Some(1_000),
            version,
        }
    }

    fn bid(l: &LotView, amount: i64, version: i64) -> AuctionMsg {
        AuctionMsg::NewBid(NewBid {
            lot_id: l.lot_id,
            event_id: l.event_id,
            lane: l.lane,
            amount,
            bidder: schemas::alias::alias(l.event_id, UserId(uuid::Uuid::nil())),
            bid_count: 1,
            min_next: amount + 2_500,
            ends_at: 31_000,
            version,
            server_time: 1_000,
        })
    }

    fn tick(l: &LotView, version: i64, ends_at: i64) -> AuctionMsg {
        AuctionMsg::TimerUpdate(TimerUpdate {
            lot_id: l.lot_id,
            lane: l.lane,
            state: LotState::Open,
            ends_at,
            remaining_ms: 1,
            server_time: 2,
            version,
        })
    }

    #[test]
    fn each_lane_shows_its_first_lot_still_on_the_block() {
        let done = lot(1, 1, LotState::Closed, 9);
        let first = lot(1, 2, LotState::Open, 3);
        let later = lot(1, 3, LotState::Scheduled, 1);
        let cancelled = lot(2, 1, LotState::Cancelled, 2);
        let b = Board::new(
            EventId(uuid::Uuid::nil()),
            3,
            vec![later.clone(), done, first.clone(), cancelled],
        );
        assert_eq!(b.lanes[&1].as_ref().map(|l| l.lot_id), Some(first.lot_id));
        assert_eq!(b.lanes[&2], None);
        assert_eq!(b.lanes[&3], None);
    }

    #[test]
    fn bids_apply_in_version_order_and_never_go_back() {
        let l = lot(1, 1, LotState::Open, 5);
        let mut b = Board::new(l.event_id, 1, vec![l.clone()]);
        assert!(matches!(b.apply(bid(&l, 100_000, 6)), Step::Send(_)));
        assert_eq!(b.apply(bid(&l, 100_000, 6)), Step::Nothing, "duplicate");
        assert_eq!(b.apply(bid(&l, 90_000, 5)), Step::Nothing, "older");
        let cur = b.lanes[&1].as_ref().unwrap();
        assert_eq!(
            (cur.high, cur.version, cur.ends_at),
            (Some(100_000), 6, Some(31_000))
        );
    }

    #[test]
    fn a_tick_older_than_the_last_bid_is_dropped() {
        let l = lot(1, 1, LotState::Open, 5);
        let mut b = Board::new(l.event_id, 1, vec![l.clone()]);
        b.apply(bid(&l, 100_000, 6));
        assert_eq!(b.apply(tick(&l, 5, 2_000)), Step::Nothing);
        assert!(matches!(b.apply(tick(&l, 6, 31_000)), Step::Send(_)));
    }

    #[test]
    fn a_close_rotates_once_and_the_next_lot_takes_the_lane() {
        let l = lot(1, 1, LotState::Open, 5);
        let next = lot(1, 2, LotState::Scheduled, 1);
        let mut b = Board::new(l.event_id, 1, vec![l.clone(), next.clone()]);
        let close = AuctionMsg::LotClosed(LotClosed {
            lot_id: l.lot_id,
            event_id: l.event_id,
            lane: 1,
            position: 1,
            outcome: Outcome::Unsold,
            amount: None,
            bidder: None,
            version: 6,
            server_time: 3,
        });
        assert!(matches!(
            b.apply(close.clone()),
            Step::Rotate { lane: 1, .. }
        ));
        b.rotated(1, Some(next.clone()));
        assert_eq!(
            b.apply(close),
            Step::Nothing,
            "a replayed close changes nothing"
        );
        let open = AuctionMsg::LotOpened(LotChange {
            lot_id: next.lot_id,
            event_id: next.event_id,
            lane: 1,
            position: 2,
            state: LotState::Open,
            ends_at: Some(40_000),
            remaining_ms: None,
            high: None,
            min_next: 100_000,
            version: 2,
            server_time: 10_000,
        });
        match b.apply(open) {
            Step::Send(ServerFrame::TimerUpdate(t)) => {
                assert_eq!(
                    (t.state, t.ends_at, t.remaining_ms),
                    (LotState::Open, 40_000, 30_000)
                )
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_bid_on_a_lot_the_board_does_not_show_reloads() {
        let l = lot(1, 1, LotState::Open, 5);
        let other = lot(1, 2, LotState::Open, 5);
        let mut b = Board::new(l.event_id, 1, vec![l]);
        assert_eq!(b.apply(bid(&other, 100_000, 6)), Step::Reload);
    }
}
