//! The wire contract of Gavel, with no I/O: what every service and client agrees on.
//!
//! Read in this order: [`subjects`] (streams, subjects, the partition of a lot), [`money`]
//! (cents and the increment table), [`lot`] (states and rejection reasons), [`nats`] (the
//! MessagePack messages between services), [`frames`] (the JSON frames apps see), then
//! [`trace`] and [`alias`].

pub mod alias;
pub mod frames;
pub mod ids;
pub mod lot;
pub mod money;
pub mod nats;
pub mod subjects;
pub mod trace;

pub use ids::{EventId, LotId, UserId, VehicleId, VendorId};
pub use lot::{LotState, Outcome, RejectReason};
pub use money::{increment, min_next, Cents};
pub use subjects::Partition;

/// Milliseconds since the Unix epoch, the only time on the wire.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
