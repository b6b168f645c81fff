//! The clock's decisions, with no I/O: given what it knows of events and lanes and the time,
//! what to do now (start an event, open a lot, tick, hammer, close an event) and when to wake up
//! next. Times are ms since the epoch; tests drive it with plain numbers.

use schemas::frames::TimerUpdate;
use schemas::nats::AuctionMsg;
use schemas::{EventId, LotId, LotState};
use std::collections::{HashMap, HashSet};
use store::clock::{BlockLot, ClockEvent};

/// Something the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// A scheduled event reached `starts_at`.
    StartEvent(EventId),
    /// Put the lane's next lot on the block.
    Open {
        event_id: EventId,
        lane: i32,
        lot_id: LotId,
        ends_at: i64,
    },
    /// The deadline passed at this version; the bidder closes the lot unless a bid got in first.
    Hammer {
        event_id: EventId,
        lane: i32,
        lot_id: LotId,
        expected_version: i64,
    },
    /// A timer update for every screen on the lane.
    Tick {
        event_id: EventId,
        update: TimerUpdate,
    },
    /// No lane has a lot left.
    CloseEvent(EventId),
}

/// How long before a command that got no effect is sent again (same message id: a command that
/// was stored is never applied twice).
const RESEND_MS: i64 = 1_000;

/// The least time between two ticks of one lot. A hot lot resets its clock many times a second;
/// one tick per reset would send every screen a frame per bid on top of the `new_bid` (which
/// already carries the deadline). A reset this soon after the last tick is ticked when the gap
/// has passed, with the newest deadline: every reset still reaches the screens within this gap
/// (PROTOCOL.md asks for 100 ms).
pub const RESET_TICK_GAP_MS: i64 = 50;

/// When the tick of a reset is due: at once, or [`RESET_TICK_GAP_MS`] after the lot's last tick
/// when that was sooner.
pub fn reset_tick_at(last_tick: Option<i64>, now: i64) -> i64 {
    last_tick.map_or(now, |t| (t + RESET_TICK_GAP_MS).max(now))
}

/// The clock's knowledge, rebuilt from Postgres on every poll and kept fresh by `AUCTION`.
#[derive(Debug, Default)]
pub struct Clock {
    tick_ms: i64,
    events: HashMap<EventId, ClockEvent>,
    lanes: HashMap<(EventId, i32), BlockLot>,
    next_tick: HashMap<LotId, i64>,
    /// When each lot last ticked.
    last_tick: HashMap<LotId, i64>,
    sent_open: HashMap<LotId, i64>,
    sent_hammer: HashMap<(LotId, i64), i64>,
    sent_start: HashMap<EventId, i64>,
    sent_close: HashMap<EventId, i64>,
    /// Lots whose close was announced: a reading of Postgres taken before the close must not
    /// put them back on the block.
    ended: HashSet<LotId>,
}

impl Clock {
    /// A clock that ticks every `tick_ms`.
    pub fn new(tick_ms: i64) -> Self {
        Self {
            tick_ms: tick_ms.max(10),
            ..Default::default()
        }
    }

    /// Takes a fresh reading of Postgres. A lane's lot that the stream already told us about at
    /// a newer version keeps the newer version.
    pub fn replace_state(&mut self, events: Vec<ClockEvent>, lots: Vec<BlockLot>) {
        self.events = events.into_iter().map(|e| (e.id, e)).collect();
        let mut lanes = HashMap::with_capacity(lots.len());
        let listed: HashSet<LotId> = lots.iter().map(|l| l.lot_id).collect();
        self.ended.retain(|l| listed.contains(l));
        for lot in lots {
            if self.ended.contains(&lot.lot_id) {
                continue;
            }
            let key = (lot.event_id, lot.lane);
            let keep = match self.lanes.get(&key) {
                Some(known) if known.lot_id == lot.lot_id && known.version > lot.version => {
                    known.clone()
                }
                _ => lot,
            };
            lanes.insert(key, keep);
        }
        self.lanes = lanes;
        let on_block: HashSet<LotId> = self.lanes.values().map(|l| l.lot_id).collect();
        self.next_tick.retain(|l, _| on_block.contains(l));
        self.last_tick.retain(|l, _| on_block.contains(l));
        self.sent_open.retain(|l, _| on_block.contains(l));
        self.sent_hammer.retain(|(l, _), _| on_block.contains(l));
    }

    /// Learns from an `AUCTION` message; a pause or resume ticks at once, a reset at once or,
    /// when the lot ticked less than [`RESET_TICK_GAP_MS`] ago, when that gap has passed. Returns
    /// whether Postgres should be read again now (a lot closed: the next one comes from there).
    pub fn on_auction(&mut self, msg: &AuctionMsg, now: i64, out: &mut Vec<Action>) -> bool {
        let (event_id, lane, lot_id, version) = match msg {
            AuctionMsg::NewBid(nb) => (nb.event_id, nb.lane, nb.lot_id, nb.version),
            AuctionMsg::LotOpened(c) | AuctionMsg::LotPaused(c) | AuctionMsg::LotResumed(c) => {
                (c.event_id, c.lane, c.lot_id, c.version)
            }
            AuctionMsg::LotClosed(c) => {
                self.ended.insert(c.lot_id);
                if let Some(l) = self.lanes.get(&(c.event_id, c.lane)) {
                    if l.lot_id == c.lot_id {
                        self.lanes.remove(&(c.event_id, c.lane));
                    }
                }
                return true;
            }
            AuctionMsg::TimerUpdate(_) => return false,
        };
        let Some(lot) = self.lanes.get_mut(&(event_id, lane)) else {
            return true;
        };
        if lot.lot_id != lot_id || version <= lot.version {
            return lot.lot_id != lot_id;
        }
        lot.version = version;
        match msg {
            AuctionMsg::NewBid(nb) => lot.ends_at = Some(nb.ends_at),
            AuctionMsg::LotOpened(c) | AuctionMsg::LotPaused(c) | AuctionMsg::LotResumed(c) => {
                lot.state = c.state;
                lot.ends_at = c.ends_at;
                lot.remaining_ms = c.remaining_ms;
            }
            _ => {}
        }
        let lot = lot.clone();
        let at = match msg {
            AuctionMsg::NewBid(_) => reset_tick_at(self.last_tick.get(&lot.lot_id).copied(), now),
            _ => now,
        };
        if at > now {
            self.next_tick
                .entry(lot.lot_id)
                .and_modify(|t| *t = (*t).min(at))
                .or_insert(at);
        } else {
            out.push(tick(&lot, now));
            self.next_tick.insert(lot.lot_id, now + self.tick_ms);
            self.last_tick.insert(lot.lot_id, now);
        }
        false
    }

    /// Everything due at `now`.
    pub fn due(&mut self, now: i64, out: &mut Vec<Action>) {
        let mut events: Vec<&ClockEvent> = self.events.values().collect();
        events.sort_by_key(|e| e.id);
        for e in events {
            if !e.live {
                if e.starts_at <= now && !recently(&self.sent_start, &e.id, now) {
                    self.sent_start.insert(e.id, now);
                    out.push(Action::StartEvent(e.id));
                }
                continue;
            }
            let mut lanes_left = 0;
            for lane in 1..=e.lanes {
                let Some(lot) = self.lanes.get(&(e.id, lane)) else {
                    continue;
                };
                lanes_left += 1;
                match lot.state {
                    LotState::Scheduled if !recently(&self.sent_open, &lot.lot_id, now) => {
                        self.sent_open.insert(lot.lot_id, now);
                        out.push(Action::Open {
                            event_id: e.id,
                            lane,
                            lot_id: lot.lot_id,
                            ends_at: now + i64::from(e.lot_seconds) * 1000,
                        });
                    }
                    LotState::Open => {
                        let ends_at = lot.ends_at.unwrap_or(now);
                        if now >= ends_at {
                            let key = (lot.lot_id, lot.version);
                            if !recently(&self.sent_hammer, &key, now) {
                                self.sent_hammer.insert(key, now);
                                out.push(Action::Hammer {
                                    event_id: e.id,
                                    lane,
                                    lot_id: lot.lot_id,
                                    expected_version: lot.version,
                                });
                            }
                        } else if self.next_tick.get(&lot.lot_id).is_none_or(|&t| t <= now) {
                            out.push(tick(lot, now));
                            self.next_tick.insert(lot.lot_id, now + self.tick_ms);
                            self.last_tick.insert(lot.lot_id, now);
                        }
                    }
                    _ => {}
                }
            }
            if lanes_left == 0 && !recently(&self.sent_close, &e.id, now) {
                self.sent_close.insert(e.id, now);
                out.push(Action::CloseEvent(e.id));
            }
        }
    }

    /// When something next falls due (a deadline, a tick, a start), if anything is pending.
    pub fn next_wakeup(&self) -> Option<i64> {
        let mut next: Option<i64> = None;
        let mut at = |t: i64| next = Some(next.map_or(t, |n| n.min(t)));
        for e in self.events.values() {
            if !e.live {
                at(e.starts_at
                    .max(self.sent_start.get(&e.id).map_or(0, |s| s + RESEND_MS)));
            }
        }
        for lot in self.lanes.values() {
            match lot.state {
                LotState::Open => {
                    let ends_at = lot.ends_at.unwrap_or(0);
                    match self.sent_hammer.get(&(lot.lot_id, lot.version)) {
                        Some(sent) => at(sent + RESEND_MS),
                        None => at(ends_at),
                    }
                    if let Some(&t) = self.next_tick.get(&lot.lot_id) {
                        at(t);
                    }
                }
                LotState::Scheduled => at(self
                    .sent_open
                    .get(&lot.lot_id)
                    .map_or(0, |s| s + RESEND_MS * 2)),
                _ => {}
            }
        }
        next
    }
}

fn recently<K: std::hash::Hash + Eq>(sent: &HashMap<K, i64>, k: &K, now: i64) -> bool {
    sent.get(k).is_some_and(|&t| now - t < RESEND_MS)
}

fn tick(lot: &BlockLot, now: i64) -> Action {
    let (ends_at, remaining_ms) = match lot.state {
        LotState::Paused => {
            let kept = lot.remaining_ms.unwrap_or(0);
            (lot.ends_at.unwrap_or(now + kept), kept)
        }
        _ => {
            let e = lot.ends_at.unwrap_or(now);
            (e, (e - now).max(0))
        }
    };
    Action::Tick {
        event_id: lot.event_id,
        update: TimerUpdate {
            lot_id: lot.lot_id,
            lane: lot.lane,
            state: lot.state,
            ends_at,
            remaining_ms,
            server_time: now,
            version: lot.version,
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::frames::NewBid;
    use schemas::nats::{LotChange, LotClosed};
    use schemas::Outcome;

    const T0: i64 = 1_700_000_000_000;

    fn event(live: bool, lanes: i32) -> ClockEvent {
        ClockEvent {
            id: EventId::new(),
            live,
            starts_at: T0,
            lanes,
            lot_seconds: 30,
        }
    }

    fn block(e: &ClockEvent, lane: i32, state: LotState, ends_at: Option<i64>) -> BlockLot {
        BlockLot {
            event_id: e.id,
            lane,
            lot_id: LotId::new(),
            position: 1,
            state,
            version: 1,
            ends_at,
            remaining_ms: None,
        }
    }

    /// An accepted bid at `at` on `l`: the clock reset to `at` + 30 s.
    fn new_bid(e: &ClockEvent, l: &BlockLot, version: i64, at: i64) -> AuctionMsg {
        AuctionMsg::NewBid(NewBid {
            lot_id: l.lot_id,
            event_id: e.id,
            lane: l.lane,
            amount: 100 * version,
            bidder: "Bidder 1".into(),
            bid_count: version as i32 - 1,
            min_next: 100 * version + 100,
            ends_at: at + 30_000,
            version,
            server_time: at,
        })
    }

    /// `l` changed to `state` at this version.
    fn change(
        e: &ClockEvent,
        l: &BlockLot,
        state: LotState,
        version: i64,
        ends_at: Option<i64>,
        remaining_ms: Option<i64>,
    ) -> LotChange {
        LotChange {
            lot_id: l.lot_id,
            event_id: e.id,
            lane: l.lane,
            position: 1,
            state,
            ends_at,
            remaining_ms,
            high: None,
            min_next: 100,
            version,
            server_time: T0,
        }
    }

    fn due(c: &mut Clock, now: i64) -> Vec<Action> {
        let mut out = Vec::new();
        c.due(now, &mut out);
        out
    }

    #[test]
    fn a_scheduled_event_starts_at_its_time_once() {
        let mut c = Clock::new(1000);
        let e = event(false, 1);
        c.replace_state(vec![e.clone()], vec![]);
        assert!(due(&mut c, T0 - 1).is_empty());
        assert_eq!(c.next_wakeup(), Some(T0));
        assert_eq!(due(&mut c, T0), vec![Action::StartEvent(e.id)]);
        assert!(
            due(&mut c, T0 + 10).is_empty(),
            "not twice while the start is under way"
        );
        assert_eq!(
            due(&mut c, T0 + RESEND_MS),
            vec![Action::StartEvent(e.id)],
            "retried if it did not take"
        );
    }

    #[test]
    fn scheduled_lots_open_with_lot_seconds_on_the_clock() {
        let mut c = Clock::new(1000);
        let e = event(true, 2);
        let l1 = block(&e, 1, LotState::Scheduled, None);
        let l2 = block(&e, 2, LotState::Scheduled, None);
        c.replace_state(vec![e.clone()], vec![l1.clone(), l2.clone()]);
        let got = due(&mut c, T0);
        assert_eq!(got.len(), 2);
        assert!(got.contains(&Action::Open {
            event_id: e.id,
            lane: 1,
            lot_id: l1.lot_id,
            ends_at: T0 + 30_000
        }));
        assert!(due(&mut c, T0 + 5).is_empty(), "an open is sent once");
    }

    #[test]
    fn an_open_lot_ticks_every_tick_ms_and_is_hammered_at_its_deadline() {
        let mut c = Clock::new(1000);
        let e = event(true, 1);
        let l = block(&e, 1, LotState::Open, Some(T0 + 2_500));
        c.replace_state(vec![e.clone()], vec![l.clone()]);
        let t = due(&mut c, T0);
        assert!(
            matches!(&t[..], [Action::Tick { update, .. }] if update.remaining_ms == 2_500 && update.server_time == T0)
        );
        assert!(due(&mut c, T0 + 999).is_empty());
        assert_eq!(c.next_wakeup(), Some(T0 + 1000));
        assert_eq!(due(&mut c, T0 + 1000).len(), 1);
        assert_eq!(due(&mut c, T0 + 2000).len(), 1);
        assert_eq!(
            c.next_wakeup(),
            Some(T0 + 2_500),
            "the deadline comes before the next tick"
        );
        let h = due(&mut c, T0 + 2_500);
        assert_eq!(
            h,
            vec![Action::Hammer {
                event_id: e.id,
                lane: 1,
                lot_id: l.lot_id,
                expected_version: 1
            }]
        );
        assert!(due(&mut c, T0 + 2_600).is_empty(), "one hammer per version");
        assert_eq!(
            due(&mut c, T0 + 2_500 + RESEND_MS).len(),
            1,
            "resent (same id) if nothing happened"
        );
    }

    #[test]
    fn a_bid_resets_the_deadline_ticks_at_once_and_makes_the_old_hammer_moot() {
        let mut c = Clock::new(1000);
        let e = event(true, 1);
        let l = block(&e, 1, LotState::Open, Some(T0 + 100));
        c.replace_state(vec![e.clone()], vec![l.clone()]);
        due(&mut c, T0);
        let nb = new_bid(&e, &l, 2, T0 + 50);
        let mut out = Vec::new();
        assert!(!c.on_auction(&nb, T0 + 52, &mut out));
        assert!(
            matches!(&out[..], [Action::Tick { update, .. }] if update.ends_at == T0 + 30_050 && update.version == 2)
        );
        assert!(
            due(&mut c, T0 + 100).is_empty(),
            "no hammer at the old deadline"
        );
        // a stale reading of Postgres does not bring the old version back
        c.replace_state(vec![e.clone()], vec![l.clone()]);
        assert!(due(&mut c, T0 + 200)
            .iter()
            .all(|a| !matches!(a, Action::Hammer { .. })));
        let h = due(&mut c, T0 + 30_050);
        assert!(h.contains(&Action::Hammer {
            event_id: e.id,
            lane: 1,
            lot_id: l.lot_id,
            expected_version: 2
        }));
    }

    #[test]
    fn resets_close_together_share_one_tick_within_the_gap_with_the_newest_deadline() {
        let mut c = Clock::new(1000);
        let e = event(true, 1);
        let l = block(&e, 1, LotState::Open, Some(T0 + 30_000));
        c.replace_state(vec![e.clone()], vec![l.clone()]);
        due(&mut c, T0);
        let bid = |version: i64, at: i64| new_bid(&e, &l, version, at);
        let ticks = |out: &[Action]| -> Vec<(i64, i64, i64)> {
            out.iter()
                .filter_map(|a| match a {
                    Action::Tick { update, .. } => {
                        Some((update.server_time, update.ends_at, update.version))
                    }
                    _ => None,
                })
                .collect()
        };
        let mut out = Vec::new();
        // Far from the last tick: at once.
        c.on_auction(&bid(2, T0 + 500), T0 + 500, &mut out);
        assert_eq!(ticks(&out), [(T0 + 500, T0 + 30_500, 2)]);
        // Two more resets within the gap: no tick yet, one when the gap has passed.
        out.clear();
        c.on_auction(&bid(3, T0 + 510), T0 + 510, &mut out);
        c.on_auction(&bid(4, T0 + 530), T0 + 530, &mut out);
        assert!(ticks(&out).is_empty());
        assert_eq!(c.next_wakeup(), Some(T0 + 500 + RESET_TICK_GAP_MS));
        assert!(due(&mut c, T0 + 549).is_empty());
        assert_eq!(
            ticks(&due(&mut c, T0 + 550)),
            [(T0 + 550, T0 + 30_530, 4)],
            "the newest deadline, within the gap of both resets"
        );
        // The regular tick follows tick_ms after that one.
        assert!(ticks(&due(&mut c, T0 + 1_549)).is_empty());
        assert_eq!(ticks(&due(&mut c, T0 + 1_550)).len(), 1);
        // A pause ticks at once, however recent the last tick.
        out.clear();
        c.on_auction(
            &AuctionMsg::LotPaused(change(
                &e,
                &l,
                LotState::Paused,
                5,
                Some(T0 + 30_530),
                Some(28_970),
            )),
            T0 + 1_560,
            &mut out,
        );
        assert_eq!(ticks(&out).len(), 1);
    }

    #[test]
    fn a_paused_lot_neither_ticks_nor_is_hammered_and_resume_ticks_once() {
        let mut c = Clock::new(1000);
        let e = event(true, 1);
        let l = block(&e, 1, LotState::Open, Some(T0 + 10_000));
        c.replace_state(vec![e.clone()], vec![l.clone()]);
        let change = |state, version, ends_at, remaining_ms| {
            change(&e, &l, state, version, ends_at, remaining_ms)
        };
        let mut out = Vec::new();
        c.on_auction(
            &AuctionMsg::LotPaused(change(LotState::Paused, 2, Some(T0 + 10_000), Some(6_000))),
            T0 + 4_000,
            &mut out,
        );
        assert!(
            matches!(&out[..], [Action::Tick { update, .. }] if update.state == LotState::Paused && update.remaining_ms == 6_000)
        );
        assert!(
            due(&mut c, T0 + 60_000).is_empty(),
            "paused: no tick, no hammer"
        );
        out.clear();
        c.on_auction(
            &AuctionMsg::LotResumed(change(LotState::Open, 3, Some(T0 + 66_000), None)),
            T0 + 60_000,
            &mut out,
        );
        assert!(
            matches!(&out[..], [Action::Tick { update, .. }] if update.ends_at == T0 + 66_000 && update.remaining_ms == 6_000)
        );
        assert!(due(&mut c, T0 + 65_999)
            .iter()
            .all(|a| !matches!(a, Action::Hammer { .. })));
    }

    #[test]
    fn a_close_asks_for_the_next_lot_and_an_empty_event_closes() {
        let mut c = Clock::new(1000);
        let e = event(true, 1);
        let l = block(&e, 1, LotState::Open, Some(T0));
        c.replace_state(vec![e.clone()], vec![l.clone()]);
        let closed = AuctionMsg::LotClosed(LotClosed {
            lot_id: l.lot_id,
            event_id: e.id,
            lane: 1,
            position: 1,
            outcome: Outcome::Unsold,
            amount: None,
            bidder: None,
            version: 2,
            server_time: T0,
        });
        let mut out = Vec::new();
        assert!(
            c.on_auction(&closed, T0, &mut out),
            "read Postgres for the next lot"
        );
        assert_eq!(due(&mut c, T0), vec![Action::CloseEvent(e.id)]);
        assert!(due(&mut c, T0 + 1).is_empty());
    }
}
