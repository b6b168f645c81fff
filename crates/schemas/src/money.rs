//! Money is integer cents, and the increment table that sets the minimum next bid.

use serde::{Deserialize, Serialize};
use std::fmt;

/// An amount in cents. Always positive: a zero or negative price is not a price.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "i64", into = "i64")]
pub struct Cents(i64);

/// The amount was zero or negative.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("an amount must be a positive number of cents, got {0}")]
pub struct NotPositive(pub i64);

impl Cents {
    /// The largest amount Gavel accepts: a trillion dollars, far from `i64` overflow even after
    /// adding an increment.
    pub const MAX: i64 = 100_000_000_000_000;

    /// Parses an amount; zero, negative and absurd amounts are refused.
    pub fn new(cents: i64) -> Result<Self, NotPositive> {
        if cents > 0 && cents <= Self::MAX {
            Ok(Self(cents))
        } else {
            Err(NotPositive(cents))
        }
    }

    /// The amount in cents.
    pub fn get(self) -> i64 {
        self.0
    }
}

impl TryFrom<i64> for Cents {
    type Error = NotPositive;
    fn try_from(v: i64) -> Result<Self, Self::Error> {
        Self::new(v)
    }
}

impl From<Cents> for i64 {
    fn from(c: Cents) -> i64 {
        c.0
    }
}

impl fmt::Display for Cents {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:02}", self.0 / 100, self.0 % 100)
    }
}

/// The minimum increment over the current high bid, from PROTOCOL.md's default table.
pub fn increment(high: i64) -> i64 {
    match high {
        h if h < 10_000 => 100,
        h if h < 50_000 => 500,
        h if h < 100_000 => 1_000,
        h if h < 500_000 => 2_500,
        h if h < 2_500_000 => 5_000,
        _ => 10_000,
    }
}

/// The smallest acceptable next bid: the starting price while the lot has no bid, else the high
/// plus its increment.
pub fn min_next(starting_price: i64, high: Option<i64>) -> i64 {
    match high {
        None => starting_price,
        Some(h) => h.saturating_add(increment(h)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn increment_at_every_band_edge() {
        let table = [
            (0, 100),
            (9_999, 100),
            (10_000, 500),
            (49_999, 500),
            (50_000, 1_000),
            (99_999, 1_000),
            (100_000, 2_500),
            (499_999, 2_500),
            (500_000, 5_000),
            (2_499_999, 5_000),
            (2_500_000, 10_000),
            (Cents::MAX, 10_000),
        ];
        for (high, inc) in table {
            assert_eq!(increment(high), inc, "increment at {high}");
        }
    }

    #[test]
    fn min_next_is_starting_price_then_high_plus_increment() {
        assert_eq!(min_next(50_000, None), 50_000);
        assert_eq!(min_next(50_000, Some(50_000)), 51_000);
        assert_eq!(min_next(100, Some(9_999)), 10_099);
        assert_eq!(min_next(100, Some(10_000)), 10_500);
        assert_eq!(min_next(100, Some(2_500_000)), 2_510_000);
    }

    #[test]
    fn cents_refuses_non_positive_and_absurd_amounts() {
        assert!(Cents::new(0).is_err());
        assert!(Cents::new(-5).is_err());
        assert!(Cents::new(i64::MAX).is_err());
        assert_eq!(Cents::new(12_345).unwrap().to_string(), "123.45");
        assert!(serde_json::from_str::<Cents>("-1").is_err());
        assert_eq!(serde_json::from_str::<Cents>("100").unwrap().get(), 100);
    }
}
