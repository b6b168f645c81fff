//! The notifier's counters, in the Prometheus registry that `/metrics` serves. Labels are
//! low-cardinality: the job kind, an outcome or a cause, never a user, lot or event.
//!
//! - `gavel_pushes_total{kind, outcome}`: notification requests finished, by outcome: `sent`,
//!   `not_delivered` (a final answer that sent nothing, such as nobody subscribed), `logged`
//!   (no credentials), `dead_letter`.
//! - `gavel_push_retries_total{kind, cause}`: attempts repeated, by [`crate::answer::Cause`].
//! - `gavel_push_dead_letters_total{kind, reason}`: dead letters published: `refused` (a 4xx),
//!   `gave_up` (still failing after `give_up_after`), `undecodable` (not a push job).

use prometheus::{IntCounterVec, Opts, Registry};
use std::fmt;

/// Cheap to clone: clones share the counters.
#[derive(Clone)]
pub struct Metrics {
    pub pushes: IntCounterVec,
    pub retries: IntCounterVec,
    pub dead_letters: IntCounterVec,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh counters, not registered anywhere yet.
    pub fn new() -> Self {
        let vec = |name: &str, help: &str, labels: &[&str]| {
            IntCounterVec::new(Opts::new(name, help), labels).expect("valid metric definition")
        };
        Self {
            pushes: vec(
                "gavel_pushes_total",
                "Push notification requests finished, by job kind and outcome.",
                &["kind", "outcome"],
            ),
            retries: vec(
                "gavel_push_retries_total",
                "Push notification attempts repeated, by job kind and cause.",
                &["kind", "cause"],
            ),
            dead_letters: vec(
                "gavel_push_dead_letters_total",
                "Push jobs or batches moved to the dead-letter subject, by kind and reason.",
                &["kind", "reason"],
            ),
        }
    }

    /// Adds the counters to `registry`.
    pub fn register(&self, registry: &Registry) -> prometheus::Result<()> {
        registry.register(Box::new(self.pushes.clone()))?;
        registry.register(Box::new(self.retries.clone()))?;
        registry.register(Box::new(self.dead_letters.clone()))?;
        Ok(())
    }

    pub(crate) fn push(&self, kind: &str, outcome: &str) {
        self.pushes.with_label_values(&[kind, outcome]).inc();
    }

    pub(crate) fn retry(&self, kind: &str, cause: &str) {
        self.retries.with_label_values(&[kind, cause]).inc();
    }

    pub(crate) fn dead_letter(&self, kind: &str, reason: &str) {
        self.dead_letters.with_label_values(&[kind, reason]).inc();
    }

    /// `gavel_pushes_total{kind, outcome}` now.
    pub fn pushes(&self, kind: &str, outcome: &str) -> u64 {
        self.pushes.with_label_values(&[kind, outcome]).get()
    }

    /// `gavel_push_retries_total{kind, cause}` now.
    pub fn retries(&self, kind: &str, cause: &str) -> u64 {
        self.retries.with_label_values(&[kind, cause]).get()
    }

    /// `gavel_push_dead_letters_total{kind, reason}` now.
    pub fn dead_letters(&self, kind: &str, reason: &str) -> u64 {
        self.dead_letters.with_label_values(&[kind, reason]).get()
    }
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Metrics")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_register_once_and_render_with_their_labels() {
        let m = Metrics::new();
        let registry = Registry::new();
        m.register(&registry).unwrap();
        assert!(
            m.register(&registry).is_err(),
            "names are unique in a registry"
        );
        m.push("outbid", "sent");
        m.retry("outbid", "rate_limited");
        m.dead_letter("won", "refused");
        assert_eq!(m.pushes("outbid", "sent"), 1);
        let mut text = String::new();
        prometheus::TextEncoder::new()
            .encode_utf8(&registry.gather(), &mut text)
            .unwrap();
        assert!(
            text.contains(r#"gavel_pushes_total{kind="outbid",outcome="sent"} 1"#),
            "{text}"
        );
        assert!(text.contains(r#"gavel_push_retries_total{cause="rate_limited",kind="outbid"} 1"#));
        assert!(text.contains(r#"gavel_push_dead_letters_total{kind="won",reason="refused"} 1"#));
    }
}
