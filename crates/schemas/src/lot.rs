//! Lot states, outcomes and rejection reasons, as named on the wire and in Postgres.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

/// `draft → scheduled → open ⇄ paused → closed`, and `cancelled` from any state before `closed`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LotState {
    Draft,
    Scheduled,
    Open,
    Paused,
    Closed,
    Cancelled,
}

impl LotState {
    /// Every state, for exhaustive tests.
    pub const ALL: [LotState; 6] = [
        LotState::Draft,
        LotState::Scheduled,
        LotState::Open,
        LotState::Paused,
        LotState::Closed,
        LotState::Cancelled,
    ];

    /// Whether the lifecycle allows going from `self` to `to`. The same table is enforced by a
    /// trigger in Postgres, as the second line of defence.
    pub fn can_become(self, to: LotState) -> bool {
        use LotState::*;
        matches!(
            (self, to),
            (Draft, Scheduled)
                | (Scheduled, Draft)
                | (Scheduled, Open)
                | (Open, Paused)
                | (Paused, Open)
                | (Open, Closed)
                | (Draft | Scheduled | Open | Paused, Cancelled)
        )
    }

    /// The states in which a lot can be its lane's current lot (the lane's first such lot by
    /// position is the one on the block).
    pub const ON_THE_BLOCK: [LotState; 3] = [LotState::Scheduled, LotState::Open, LotState::Paused];

    /// Whether a lot in this state can be its lane's current lot.
    pub fn on_the_block(self) -> bool {
        Self::ON_THE_BLOCK.contains(&self)
    }

    /// A lot that has ended: it never changes again.
    pub fn is_final(self) -> bool {
        matches!(self, LotState::Closed | LotState::Cancelled)
    }

    /// The name used on the wire and in Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            LotState::Draft => "draft",
            LotState::Scheduled => "scheduled",
            LotState::Open => "open",
            LotState::Paused => "paused",
            LotState::Closed => "closed",
            LotState::Cancelled => "cancelled",
        }
    }
}

impl fmt::Display for LotState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The name is not a lot state.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown value {0:?}")]
pub struct UnknownName(pub String);

impl FromStr for LotState {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        LotState::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

/// How a lot ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Sold,
    Unsold,
    Cancelled,
}

impl Outcome {
    /// The name used on the wire and in Postgres.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Sold => "sold",
            Outcome::Unsold => "unsold",
            Outcome::Cancelled => "cancelled",
        }
    }
}

impl FromStr for Outcome {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "sold" => Ok(Outcome::Sold),
            "unsold" => Ok(Outcome::Unsold),
            "cancelled" => Ok(Outcome::Cancelled),
            _ => Err(UnknownName(s.to_owned())),
        }
    }
}

/// Why a bid was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RejectReason {
    /// The high moved past the `seen_high` the client sent.
    Stale,
    /// Below the minimum next bid.
    TooLow,
    /// The bidder already holds the high bid.
    AlreadyHigh,
    /// The lot is not open: hammered, not yet open, or cancelled.
    Closed,
    /// The lot is paused.
    Paused,
    /// The buyer is not verified yet.
    NotVerified,
    /// No such lot.
    NotFound,
    /// Too many bids from this user.
    RateLimited,
    /// The bid itself is malformed (amount not a positive integer, bad idem).
    Invalid,
}

impl RejectReason {
    /// Every reason, for exhaustive tests and metrics.
    pub const ALL: [RejectReason; 9] = [
        RejectReason::Stale,
        RejectReason::TooLow,
        RejectReason::AlreadyHigh,
        RejectReason::Closed,
        RejectReason::Paused,
        RejectReason::NotVerified,
        RejectReason::NotFound,
        RejectReason::RateLimited,
        RejectReason::Invalid,
    ];

    /// Whether the client may retry with a new amount or after a moment.
    pub fn retryable(self) -> bool {
        matches!(
            self,
            RejectReason::Stale | RejectReason::TooLow | RejectReason::RateLimited
        )
    }

    /// The name used on the wire, in Postgres and as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectReason::Stale => "stale",
            RejectReason::TooLow => "too_low",
            RejectReason::AlreadyHigh => "already_high",
            RejectReason::Closed => "closed",
            RejectReason::Paused => "paused",
            RejectReason::NotVerified => "not_verified",
            RejectReason::NotFound => "not_found",
            RejectReason::RateLimited => "rate_limited",
            RejectReason::Invalid => "invalid",
        }
    }
}

impl FromStr for RejectReason {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        RejectReason::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| UnknownName(s.to_owned()))
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use LotState::*;

    #[test]
    fn only_scheduled_open_and_paused_lots_can_be_on_the_block() {
        let on: Vec<_> = LotState::ALL
            .into_iter()
            .filter(|s| s.on_the_block())
            .collect();
        assert_eq!(on, vec![Scheduled, Open, Paused]);
    }

    #[test]
    fn every_transition_allowed_or_forbidden() {
        let allowed = [
            (Draft, Scheduled),
            (Scheduled, Draft),
            (Scheduled, Open),
            (Open, Paused),
            (Paused, Open),
            (Open, Closed),
            (Draft, Cancelled),
            (Scheduled, Cancelled),
            (Open, Cancelled),
            (Paused, Cancelled),
        ];
        for from in LotState::ALL {
            for to in LotState::ALL {
                assert_eq!(
                    from.can_become(to),
                    allowed.contains(&(from, to)),
                    "{from} -> {to}"
                );
            }
        }
    }

    #[test]
    fn final_states_never_change() {
        for s in [Closed, Cancelled] {
            assert!(s.is_final());
            assert!(LotState::ALL.iter().all(|&to| !s.can_become(to)));
        }
    }

    #[test]
    fn names_round_trip() {
        for s in LotState::ALL {
            assert_eq!(s.as_str().parse::<LotState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for r in RejectReason::ALL {
            assert_eq!(r.as_str().parse::<RejectReason>().unwrap(), r);
            assert_eq!(serde_json::to_string(&r).unwrap(), format!("\"{r}\""));
        }
        assert!("reopened".parse::<LotState>().is_err());
    }

    #[test]
    fn retryable_reasons_are_the_documented_ones() {
        let retryable: Vec<_> = RejectReason::ALL
            .into_iter()
            .filter(|r| r.retryable())
            .collect();
        assert_eq!(
            retryable,
            vec![
                RejectReason::Stale,
                RejectReason::TooLow,
                RejectReason::RateLimited
            ]
        );
    }
}
