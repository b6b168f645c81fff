//! The edge's Prometheus metrics, served at `/metrics` with whatever else the process registered
//! in the default registry (the notifier's counters under `gavel dev`). Each edge has a registry
//! of its own, so several edges in one process (tests) do not collide. Labels are low-cardinality:
//! an outcome or a reason, never a user, lot or event.

use prometheus::{
    Encoder as _, Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts, Registry,
};

/// Cheap to clone: clones share the series.
#[derive(Clone)]
pub struct Metrics {
    registry: Registry,
    /// `gavel_ws_connections`: open WebSockets.
    pub connections: IntGauge,
    /// `gavel_ws_frames_total`: frames queued for clients.
    pub frames: IntCounter,
    /// `gavel_bids_total{outcome}`: answers to bids (`accepted` or the rejection reason).
    pub bids: IntCounterVec,
    /// `gavel_ws_dropped_total{reason}`: sockets closed for falling behind or bad input.
    pub dropped: IntCounterVec,
    /// `gavel_bid_roundtrip_seconds`: from the bid reaching the edge to its answer.
    pub roundtrip: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// Fresh series in a registry of their own.
    pub fn new() -> Self {
        let registry = Registry::new();
        let connections = IntGauge::new("gavel_ws_connections", "Open WebSockets on this edge.")
            .expect("valid metric");
        let frames = IntCounter::new(
            "gavel_ws_frames_total",
            "Frames queued for WebSocket clients.",
        )
        .expect("valid metric");
        let bids = IntCounterVec::new(
            Opts::new(
                "gavel_bids_total",
                "Bids answered by this edge, by outcome (accepted or the rejection reason).",
            ),
            &["outcome"],
        )
        .expect("valid metric");
        let dropped = IntCounterVec::new(
            Opts::new(
                "gavel_ws_dropped_total",
                "WebSockets closed by the edge, by reason (slow, too_large).",
            ),
            &["reason"],
        )
        .expect("valid metric");
        let roundtrip = Histogram::with_opts(
            HistogramOpts::new(
                "gavel_bid_roundtrip_seconds",
                "From a bid reaching the edge to its answer.",
            )
            .buckets(vec![
                0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0,
                2.5,
            ]),
        )
        .expect("valid metric");
        registry
            .register(Box::new(connections.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(frames.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(bids.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(dropped.clone()))
            .expect("unique metric");
        registry
            .register(Box::new(roundtrip.clone()))
            .expect("unique metric");
        Self {
            registry,
            connections,
            frames,
            bids,
            dropped,
            roundtrip,
        }
    }

    /// The text exposition of this edge's series and the process's default registry.
    pub fn render(&self) -> String {
        let mut families = self.registry.gather();
        families.extend(prometheus::default_registry().gather());
        let mut out = Vec::new();
        prometheus::TextEncoder::new()
            .encode(&families, &mut out)
            .expect("text encoding never fails");
        String::from_utf8(out).expect("the text format is UTF-8")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_the_series_the_protocol_names() {
        let m = Metrics::new();
        m.bids.with_label_values(&["accepted"]).inc();
        m.roundtrip.observe(0.002);
        m.connections.set(3);
        let text = m.render();
        assert!(
            text.contains("gavel_bids_total{outcome=\"accepted\"} 1"),
            "{text}"
        );
        assert!(text.contains("gavel_ws_connections 3"), "{text}");
        assert!(
            text.contains("gavel_bid_roundtrip_seconds_bucket"),
            "{text}"
        );
    }
}
