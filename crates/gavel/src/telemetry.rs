//! Telemetry in one place: log lines on stderr filtered by `RUST_LOG` (default `info`) and, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`) is set, OpenTelemetry
//! traces over OTLP/HTTP (protobuf), configured by the standard `OTEL_*` variables (headers,
//! timeout, sampler, batch sizes, `OTEL_SERVICE_NAME`). Unset, no exporter exists. The guard
//! [`init`] returns flushes the traces on exit.
//!
//! Spans are written with `tracing`; `bus::trace` parents them from the `traceparent` of NATS
//! headers, so one bid is one trace across services.

use crate::Command;
use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use opentelemetry_sdk::Resource;
use tracing::Level;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

/// The OpenTelemetry `service.name` of a command (unless `OTEL_SERVICE_NAME` says otherwise).
pub fn service_name(command: &Command) -> &'static str {
    match command {
        Command::Edge { .. } => "gavel-edge",
        Command::Bidder { .. } => "gavel-bidder",
        Command::Ticker { .. } => "gavel-ticker",
        Command::Notifier { .. } => "gavel-notifier",
        Command::Bench { .. } => "gavel-bench",
        _ => "gavel",
    }
}

/// Flushes and shuts the exporter down when dropped (at the end of `main`, error or not).
#[must_use = "traces are flushed when the guard drops"]
pub struct Guard(Option<SdkTracerProvider>);

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(provider) = self.0.take() {
            // The batch processor's own thread exports what is left; bounded by its timeout.
            if let Err(e) = provider.shutdown() {
                eprintln!("traces not flushed: {e}");
            }
        }
    }
}

/// Installs the global subscriber; with an OTLP endpoint set, also the trace exporter.
pub fn init(service: &'static str) -> anyhow::Result<Guard> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    let provider = if exporting() {
        Some(provider(service)?)
    } else {
        None
    };
    // Its own filter, independent of RUST_LOG: spans and events at INFO, and the per-message
    // spans of `bus::trace::TARGET`, which are at DEBUG to stay out of the logs' way.
    let traces = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer()
            .with_tracer(p.tracer("gavel"))
            .with_filter(
                Targets::new()
                    .with_default(Level::INFO)
                    .with_target(bus::trace::TARGET, Level::DEBUG),
            )
    });
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    Ok(Guard(provider))
}

fn set(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.trim().is_empty())
}

fn exporting() -> bool {
    let disabled = std::env::var("OTEL_SDK_DISABLED").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    !disabled && (set("OTEL_EXPORTER_OTLP_ENDPOINT") || set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"))
}

fn provider(service: &'static str) -> anyhow::Result<SdkTracerProvider> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| anyhow::anyhow!("OTLP trace exporter: {e}"))?;
    let mut resource = Resource::builder();
    let named_by_env = set("OTEL_SERVICE_NAME")
        || std::env::var("OTEL_RESOURCE_ATTRIBUTES").is_ok_and(|v| v.contains("service.name="));
    if !named_by_env {
        resource = resource.with_service_name(service);
    }
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource.build())
        .build())
}
