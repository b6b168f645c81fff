//! Stream and subject names, and the stable partition of a lot.
//!
//! Every service computes a lot's partition with [`Partition::of`], so the edge, the ticker and
//! the bidder always agree on which ordered subject carries a lot's commands.

use crate::ids::{EventId, LotId, UserId};
use std::fmt;

/// Bid and lot lifecycle commands, one ordered subject per lot.
pub const STREAM_BIDS: &str = "BIDS";
/// What apps see, in lane order.
pub const STREAM_AUCTION: &str = "AUCTION";
/// Per-user notices, for every device of the user.
pub const STREAM_USERS: &str = "USERS";
/// Push jobs for the notifier (work queue).
pub const STREAM_NOTIFY: &str = "NOTIFY";
/// Push jobs the notifier could not deliver (a permanent refusal), with the reason, for ops.
pub const STREAM_NOTIFY_DEAD: &str = "NOTIFY_DEAD";

/// Default number of partitions of `BIDS` (`GAVEL_PARTITIONS`).
pub const DEFAULT_PARTITIONS: u16 = 16;

/// A partition of the `BIDS` stream. It can only be computed from a lot id (or enumerated for a
/// consumer), never typed in by hand, so two services cannot disagree about it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Partition(u16);

/// The partition count was zero or too large for subjects we want to keep readable.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("the partition count must be between 1 and 1024, got {0}")]
pub struct BadPartitionCount(pub u32);

/// Checks a configured partition count.
pub fn check_partitions(count: u32) -> Result<u16, BadPartitionCount> {
    if (1..=1024).contains(&count) {
        Ok(count as u16)
    } else {
        Err(BadPartitionCount(count))
    }
}

impl Partition {
    /// The partition of a lot: FNV-1a (64 bit) over the lot id's 16 bytes, modulo the count.
    /// FNV is fixed by its definition, so the result never changes between builds or languages.
    pub fn of(lot: LotId, count: u16) -> Partition {
        assert!(count > 0, "partition count must be positive");
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in lot.0.as_bytes() {
            h ^= u64::from(*b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Partition((h % u64::from(count)) as u16)
    }

    /// All partitions `0..count`, for starting one consumer each.
    pub fn all(count: u16) -> impl Iterator<Item = Partition> {
        (0..count).map(Partition)
    }

    /// The `n`th partition of `count`, for a configured subset (`--partitions 0,3`).
    pub fn nth(n: u16, count: u16) -> Option<Partition> {
        (n < count).then_some(Partition(n))
    }

    /// The partition number.
    pub fn get(self) -> u16 {
        self.0
    }
}

impl fmt::Display for Partition {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// `bids.<partition>.<lot_id>`: the ordered subject of one lot.
pub fn bids(lot: LotId, partitions: u16) -> String {
    format!("bids.{}.{}", Partition::of(lot, partitions), lot)
}

/// `bids.<partition>.*`: everything a partition's bidder consumes.
pub fn bids_partition(p: Partition) -> String {
    format!("bids.{p}.*")
}

/// `bids.>`: the subjects of the `BIDS` stream.
pub const BIDS_ALL: &str = "bids.>";
/// `auction.>`: the subjects of the `AUCTION` stream (ticks are not stored, see [`auction_tick`]).
pub const AUCTION_ALL: &str = "auction.>";
/// `user.>`: the subjects of the `USERS` stream.
pub const USERS_ALL: &str = "user.>";
/// `notify.>`: the subjects of the `NOTIFY` stream.
pub const NOTIFY_ALL: &str = "notify.>";
/// `notify_dead.>`: the subjects of the `NOTIFY_DEAD` stream.
pub const NOTIFY_DEAD_ALL: &str = "notify_dead.>";

/// `auction.<event>.<lane>.bid`: accepted bids of a lane.
pub fn auction_bid(event: EventId, lane: i32) -> String {
    format!("auction.{event}.{lane}.bid")
}

/// `auction.<event>.<lane>.lot`: lot lifecycle of a lane (opened, paused, resumed, closed).
pub fn auction_lot(event: EventId, lane: i32) -> String {
    format!("auction.{event}.{lane}.lot")
}

/// `auction.<event>.<lane>.tick`: the ticker's timer updates, core NATS only.
pub fn auction_tick(event: EventId, lane: i32) -> String {
    format!("auction.{event}.{lane}.tick")
}

/// The subjects stored in `AUCTION`: everything but ticks.
pub const AUCTION_STORED: [&str; 2] = ["auction.*.*.bid", "auction.*.*.lot"];

/// The kinds of per-user notices.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserKind {
    /// The answer to one of the user's bids.
    Result,
    /// Someone bid over the user.
    Outbid,
    /// The user won a lot.
    Won,
}

impl UserKind {
    fn as_str(self) -> &'static str {
        match self {
            UserKind::Result => "result",
            UserKind::Outbid => "outbid",
            UserKind::Won => "won",
        }
    }
}

/// `user.<user_id>.<kind>`.
pub fn user(user: UserId, kind: UserKind) -> String {
    format!("user.{user}.{}", kind.as_str())
}

/// `notify.<kind>`: a push job (`event_starting`, `outbid`, `won`).
pub fn notify(kind: &str) -> String {
    format!("notify.{kind}")
}

/// `notify_dead.<kind>`: a push job of that kind the notifier gave up on (dead letter).
pub fn notify_dead(kind: &str) -> String {
    format!("notify_dead.{kind}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use uuid::Uuid;

    #[test]
    fn partition_is_stable_across_builds() {
        // Fixed vectors: if these change, every deployed service disagrees about partitions.
        let lot = LotId(Uuid::parse_str("00000000-0000-0000-0000-000000000000").unwrap());
        let lot2 = LotId(Uuid::parse_str("6f9619ff-8b86-d011-b42d-00c04fc964ff").unwrap());
        let p1 = Partition::of(lot, 16).get();
        let p2 = Partition::of(lot2, 16).get();
        assert_eq!((p1, p2), (fnv_reference(lot, 16), fnv_reference(lot2, 16)));
        assert_eq!((p1, p2), (5, 0)); // computed independently (Python)
        assert_eq!(Partition::of(lot, 1).get(), 0);
    }

    fn fnv_reference(lot: LotId, n: u16) -> u16 {
        let mut h: u64 = 14695981039346656037;
        for b in lot.0.as_bytes() {
            h ^= *b as u64;
            h = h.wrapping_mul(1099511628211);
        }
        (h % n as u64) as u16
    }

    #[test]
    fn partitions_spread_lots() {
        let mut counts = [0u32; 16];
        for _ in 0..16_000 {
            counts[Partition::of(LotId::new(), 16).get() as usize] += 1;
        }
        assert!(counts.iter().all(|&c| c > 700 && c < 1300), "{counts:?}");
    }

    #[test]
    fn subjects_are_as_documented() {
        let lot = LotId::new();
        let s = bids(lot, 16);
        assert!(s.starts_with("bids.") && s.ends_with(&lot.to_string()));
        let e = EventId::new();
        assert_eq!(auction_bid(e, 2), format!("auction.{e}.2.bid"));
        assert_eq!(auction_tick(e, 1), format!("auction.{e}.1.tick"));
        let u = UserId::new();
        assert_eq!(user(u, UserKind::Outbid), format!("user.{u}.outbid"));
        assert_eq!(notify("won"), "notify.won");
        assert_eq!(check_partitions(0), Err(BadPartitionCount(0)));
        assert_eq!(check_partitions(16), Ok(16));
    }
}
