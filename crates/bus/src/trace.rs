//! A message's `traceparent` as the OpenTelemetry parent of a `tracing` span, so the edge's and
//! the bidder's spans of one bid are one trace ([`follow`]). With no OpenTelemetry layer
//! installed it does nothing, and a span no layer wants costs nothing at all.

use opentelemetry::trace::{SpanContext, SpanId, TraceContextExt, TraceFlags, TraceId, TraceState};
use schemas::trace::TraceParent;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The target of per-message spans (one per bid in the bidder, one per answer at the edge).
/// They are at DEBUG, so the log output's usual filter (`RUST_LOG=info`) skips them and a
/// service exporting no traces pays one disabled-callsite check per message; the OpenTelemetry
/// layer lets this target through at DEBUG.
pub const TARGET: &str = "gavel::trace";

/// The OpenTelemetry context whose (remote) parent span is `tp`.
pub fn context_of(tp: &TraceParent) -> opentelemetry::Context {
    // `00-<32 hex trace id>-<16 hex span id>-<2 hex flags>`, as TraceParent prints itself.
    let s = tp.to_string();
    let trace_id = TraceId::from_hex(&s[3..35]).unwrap_or(TraceId::INVALID);
    let span_id = SpanId::from_hex(&s[36..52]).unwrap_or(SpanId::INVALID);
    let flags = u8::from_str_radix(&s[53..55], 16).unwrap_or(0);
    opentelemetry::Context::new().with_remote_span_context(SpanContext::new(
        trace_id,
        span_id,
        TraceFlags::new(flags),
        true,
        TraceState::NONE,
    ))
}

/// Makes `tp` the parent of `span`; call it before the span is first entered (OpenTelemetry
/// fixes a span's parent when it starts). Free when no layer wants the span.
pub fn follow(span: &tracing::Span, tp: &TraceParent) {
    if span.is_disabled() {
        return;
    }
    // Only the OpenTelemetry layer keeps parents; without it there is nothing to set.
    let _ = span.set_parent(context_of(tp));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_context_carries_the_header_ids() {
        let tp =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let cx = context_of(&tp);
        let span = cx.span();
        let sc = span.span_context();
        assert!(sc.is_valid() && sc.is_remote() && sc.is_sampled());
        assert_eq!(sc.trace_id().to_string(), tp.trace_id_hex());
        assert_eq!(sc.span_id().to_string(), tp.span_id_hex());
    }
}
