//! Masked bidder aliases: what other buyers see instead of a name. Stable within an event (so a
//! room can follow "Bidder 3F9A21" across lots) and different across events.

use crate::ids::{EventId, UserId};
use uuid::Uuid;

/// The alias of `user` in `event`.
pub fn alias(event: EventId, user: UserId) -> String {
    let h = Uuid::new_v5(&event.0, user.0.as_bytes());
    let b = h.as_bytes();
    format!("Bidder {:02X}{:02X}{:02X}", b[0], b[1], b[2])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alias_is_stable_per_event_and_differs_across_events() {
        let (e1, e2, u) = (EventId::new(), EventId::new(), UserId::new());
        assert_eq!(alias(e1, u), alias(e1, u));
        assert_ne!(alias(e1, u), alias(e2, u));
        assert!(alias(e1, u).starts_with("Bidder "));
        assert!(!alias(e1, u).contains(&u.to_string()[..8]));
    }
}
