//! One bid is one trace: its spans at the edge (`edge.bid`, `edge.bid_result`) and in the
//! bidder (`bidder.decide`) share its trace id, carried by the `traceparent` of NATS headers,
//! and so does its `new_bid` announcement. A real NATS, Postgres, bidder and edge; the spans
//! are caught by an in-memory exporter (this test binary owns the global subscriber).

#[path = "../../bidder/tests/common/mod.rs"]
mod env;

use edge::auth::{Role, Secret, Tokens};
use env::Env;
use futures::StreamExt;
use opentelemetry::trace::{SpanId, TraceId, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};
use schemas::nats::headers;
use schemas::UserId;
use serde_json::{json, Value};
use std::net::SocketAddr;
use std::time::Duration;
use tokio_util::sync::CancellationToken;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::Layer;

const SECRET: &str = "the trace test's secret, thirty-two bytes or more";
const WAIT: Duration = Duration::from_secs(15);

/// An edge on its own port over the env's NATS and database (as in tests/live.rs).
async fn edge(env: &Env) -> (SocketAddr, CancellationToken) {
    let mut config = edge::Config::new(Secret::new(SECRET), env::PARTITIONS);
    config.auth_rate = 0;
    config.bid_rate = 0;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let stop = CancellationToken::new();
    let client = bus::connect(&env.nats.url(), "edge").await.unwrap();
    tokio::spawn(edge::serve_on(
        listener,
        config,
        client,
        env.pool().clone(),
        stop.clone(),
    ));
    (addr, stop)
}

fn token(user: UserId) -> String {
    Tokens::new(&Secret::new(SECRET), Duration::from_secs(3600))
        .issue(user, Role::Buyer)
        .unwrap()
        .0
}

/// The finished spans named `name` in `trace`.
fn named<'a>(spans: &'a [SpanData], name: &str, trace: TraceId) -> Vec<&'a SpanData> {
    spans
        .iter()
        .filter(|s| s.name == name && s.span_context.trace_id() == trace)
        .collect()
}

#[tokio::test]
async fn one_bid_is_one_trace_from_the_edge_through_the_bidder_and_back() {
    // Before Env::start, whose own subscriber then stays out.
    let spans = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(spans.clone())
        .build();
    tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-test")))
        .with(
            tracing_subscriber::fmt::layer()
                .with_test_writer()
                .with_filter(tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();

    let env = Env::start().await;
    let (_bidder, _) = env.spawn_bidder(env.bidder_config()).await;
    let (_event, lots) = env.lots(1, 0).await;
    let seq = env.open(lots[0]).await;
    env.wait_applied(lots[0], seq).await;
    let users = env.users(1, true).await;
    let (addr, _stop) = edge(&env).await;
    let mut auction = env.client.subscribe("auction.>").await.unwrap();
    env.client.flush().await.unwrap();

    let answer = reqwest::Client::new()
        .post(format!("http://{addr}/api/lots/{}/bids", lots[0]))
        .bearer_auth(token(users[0]))
        .json(&json!({"amount": 100_000, "seen_high": null, "idem": "traced"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status(), 200);
    let answer: Value = answer.json().await.unwrap();
    assert_eq!(answer["status"], "accepted", "{answer}");

    // The edge's span of the bid names the trace; the bidder's and the answer's join it (spans
    // end a moment after the answer is out: wait for them).
    let mut trace = TraceId::INVALID;
    testkit::wait_until(WAIT, "the bid's three spans", || {
        provider.force_flush().unwrap();
        let finished = spans.get_finished_spans().unwrap();
        let bid: Vec<_> = finished.iter().filter(|s| s.name == "edge.bid").collect();
        let found = match bid.as_slice() {
            [bid] => {
                trace = bid.span_context.trace_id();
                !named(&finished, "bidder.decide", trace).is_empty()
                    && !named(&finished, "edge.bid_result", trace).is_empty()
            }
            _ => false,
        };
        async move { found }
    })
    .await
    .unwrap();

    let finished = spans.get_finished_spans().unwrap();
    let bid = named(&finished, "edge.bid", trace)[0];
    let decide = named(&finished, "bidder.decide", trace);
    let result = named(&finished, "edge.bid_result", trace);
    assert_eq!((decide.len(), result.len()), (1, 1), "one of each");
    // The edge's span and the bidder's are both children of the bid's `traceparent`.
    assert_ne!(bid.parent_span_id, SpanId::INVALID);
    assert_eq!(decide[0].parent_span_id, bid.parent_span_id);
    assert_ne!(result[0].parent_span_id, SpanId::INVALID);

    // The lane's announcement of the new high carries the trace too.
    let new_bid = tokio::time::timeout(WAIT, async {
        loop {
            let m = auction.next().await.expect("subscribed");
            let kind = m.headers.as_ref().and_then(|h| h.get(headers::GAVEL_TYPE));
            if kind.map(|v| v.as_str()) == Some("new_bid.v1") {
                return m;
            }
        }
    })
    .await
    .expect("a new_bid announcement in time");
    let tp = bus::traceparent_of(new_bid.headers.as_ref()).expect("a valid traceparent");
    assert_eq!(tp.trace_id_hex(), trace.to_string());
}
