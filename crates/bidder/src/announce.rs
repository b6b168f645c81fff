//! What the bidder publishes after a commit, built only from recorded decisions, so a replay
//! after a crash publishes byte-for-byte the same messages under the same `Nats-Msg-Id`s and
//! JetStream drops the duplicates.
//!
//! Ids are `bids-<stream seq>.<what>`: one command, one id per announcement, on every replay.

use bus::Outgoing;
use schemas::alias::alias;
use schemas::frames::{BidStatus, NewBid, Outbid, Won};
use schemas::nats::{AuctionMsg, LotChange, LotClosed, NotifyJob, UserMsg};
use schemas::subjects::{self as subj, UserKind};
use schemas::trace::TraceParent;
use schemas::Outcome;
use store::bidding::{BidRecord, CommandKind, CommandRecord, LotRecord};

fn id(seq: i64, what: &str) -> Option<String> {
    Some(format!("bids-{seq}.{what}"))
}

fn trace(tp: &Option<String>) -> TraceParent {
    tp.as_deref()
        .and_then(TraceParent::parse)
        .unwrap_or_else(TraceParent::new_root)
}

/// The answer to a bid, for every device of its user. `seq` is the message being answered (a
/// retried bid answered from its first decision gets its own id).
pub fn bid_result(rec: &BidRecord, seq: i64, tp: TraceParent) -> Outgoing {
    let result = rec.result();
    Outgoing::new(
        subj::user(rec.user_id, UserKind::Result),
        &UserMsg::Result(result),
        id(seq, "result"),
        tp.child(),
    )
}

/// Everything a bid decision announces: the result; when accepted also the new high to the lane,
/// and the outbid notice and push to the previous high bidder.
pub fn for_bid(rec: &BidRecord, lot: Option<&LotRecord>, out: &mut Vec<Outgoing>) {
    let tp = trace(&rec.traceparent);
    let seq = rec.stream_seq;
    if rec.status == BidStatus::Accepted {
        if let Some(lot) = lot {
            let (high, min_next) = (rec.high.unwrap_or(rec.amount), rec.min_next.unwrap_or(0));
            let nb = NewBid {
                lot_id: rec.lot_id,
                event_id: lot.event_id,
                lane: lot.lane,
                amount: rec.amount,
                bidder: alias(lot.event_id, rec.user_id),
                bid_count: rec.bid_count.unwrap_or(0),
                min_next,
                ends_at: rec.ends_at.unwrap_or(rec.decided_at),
                version: rec.version.unwrap_or(0),
                server_time: rec.decided_at,
            };
            out.push(Outgoing::new(
                subj::auction_bid(lot.event_id, lot.lane),
                &AuctionMsg::NewBid(nb),
                id(seq, "new_bid"),
                tp.child(),
            ));
            out.push(bid_result(rec, seq, tp));
            if let (Some(prev), Some(your_bid)) = (rec.prev_bidder, rec.prev_high) {
                if prev != rec.user_id {
                    out.push(Outgoing::new(
                        subj::user(prev, UserKind::Outbid),
                        &UserMsg::Outbid(Outbid {
                            lot_id: rec.lot_id,
                            your_bid,
                            high,
                            min_next,
                        }),
                        id(seq, "outbid"),
                        tp.child(),
                    ));
                    let job = NotifyJob::Outbid {
                        user_id: prev,
                        event_id: lot.event_id,
                        lot_id: rec.lot_id,
                        your_bid,
                        high,
                        min_next,
                    };
                    out.push(Outgoing::new(
                        subj::notify(job.kind()),
                        &job,
                        id(seq, "push_outbid"),
                        tp.child(),
                    ));
                }
            }
            return;
        }
    }
    out.push(bid_result(rec, seq, tp));
}

/// What an applied lifecycle command announces: the lot's change to its lane; on a sale also the
/// won notice and push to the winner.
pub fn for_command(rec: &CommandRecord, lot: &LotRecord, out: &mut Vec<Outgoing>) {
    if !rec.applied {
        return;
    }
    let tp = trace(&rec.traceparent);
    let seq = rec.stream_seq;
    let subject = subj::auction_lot(lot.event_id, lot.lane);
    let change = || LotChange {
        lot_id: rec.lot_id,
        event_id: lot.event_id,
        lane: lot.lane,
        position: lot.position,
        state: rec.state.unwrap_or(lot.state),
        ends_at: rec.ends_at,
        remaining_ms: rec.remaining_ms,
        high: rec.high,
        min_next: rec.min_next.unwrap_or(0),
        version: rec.version.unwrap_or(0),
        server_time: rec.decided_at,
    };
    let msg = match rec.kind {
        CommandKind::Open => AuctionMsg::LotOpened(change()),
        CommandKind::Pause => AuctionMsg::LotPaused(change()),
        CommandKind::Resume => AuctionMsg::LotResumed(change()),
        CommandKind::Hammer | CommandKind::Cancel => {
            let outcome = rec.outcome.unwrap_or(Outcome::Cancelled);
            let sold = outcome == Outcome::Sold;
            AuctionMsg::LotClosed(LotClosed {
                lot_id: rec.lot_id,
                event_id: lot.event_id,
                lane: lot.lane,
                position: lot.position,
                outcome,
                amount: if sold { rec.high } else { None },
                bidder: match (sold, rec.high_bidder) {
                    (true, Some(w)) => Some(alias(lot.event_id, w)),
                    _ => None,
                },
                version: rec.version.unwrap_or(0),
                server_time: rec.decided_at,
            })
        }
    };
    out.push(Outgoing::new(subject, &msg, id(seq, "lot"), tp.child()));
    if rec.outcome == Some(Outcome::Sold) {
        if let (Some(winner), Some(amount)) = (rec.high_bidder, rec.high) {
            out.push(Outgoing::new(
                subj::user(winner, UserKind::Won),
                &UserMsg::Won(Won {
                    lot_id: rec.lot_id,
                    amount,
                    pickup: lot.pickup.clone(),
                }),
                id(seq, "won"),
                tp.child(),
            ));
            let job = NotifyJob::Won {
                user_id: winner,
                event_id: lot.event_id,
                lot_id: rec.lot_id,
                amount,
                pickup: lot.pickup.clone(),
            };
            out.push(Outgoing::new(
                subj::notify(job.kind()),
                &job,
                id(seq, "push_won"),
                tp.child(),
            ));
        }
    }
}
