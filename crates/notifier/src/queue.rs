//! The consumer loop: one durable pull consumer on `NOTIFY`, jobs handled a few at a time.
//!
//! For each job: read what the text needs and, for a start alert, the cohort (registered by the
//! time the job was queued, verified now) from Postgres; build the pushes ([`crate::push`]);
//! send each batch until it has a final answer ([`crate::answer`]), sleeping between attempts
//! and repeating the same body and key; publish a refused batch to `notify_dead.<kind>`; then
//! ack. While a job is in hand it is kept alive with progress acks, so JetStream redelivers it
//! only when this instance is gone; a job in hand at shutdown is handed back (nak).
//!
//! Nothing here decides twice what reaches a phone: that is the idempotency key's job. A crash
//! between OneSignal's answer and the ack repeats requests OneSignal has already seen, and it
//! answers them with the first result.

use crate::answer::{self, Cause, Verdict};
use crate::push::{self, Details, Push, Vehicle};
use crate::{onesignal, Config};
use async_nats::jetstream::{self, consumer, AckKind, Message};
use bus::Outgoing;
use futures::StreamExt;
use schemas::nats::{NatsMessage, NotifyJob};
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use schemas::UserId;
use serde::{Deserialize, Serialize};
use std::collections::HashSet;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use store::{PgPool, StoreError};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument as _;
use uuid::Uuid;

/// How far past the job's queue time a registration still counts for a start alert: the
/// registration's time is Postgres's clock, the job's is the NATS server's.
pub const CLOCK_SLACK_MS: i64 = 5_000;

/// A push the notifier gave up on, as published on `notify_dead.<kind>` (MessagePack with
/// named fields, `Gavel-Type: dead_push.v1`, `Nats-Msg-Id: notify_dead-<key>`), for ops to read
/// with `gavel tail 'notify_dead.>'` and to replay.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename = "dead_push.v1")]
pub struct DeadPush {
    /// The job's kind, or `unknown` when the job could not be read.
    pub kind: String,
    /// Why: OneSignal's own words for a refusal, or what kept failing.
    pub reason: String,
    /// The HTTP status of a refusal.
    pub status: Option<u16>,
    /// The job, when it could be read.
    pub job: Option<NotifyJob>,
    /// Its sequence in `NOTIFY`.
    pub stream_seq: u64,
    /// The batch that failed (0-based) and how many the job has; the other batches were sent.
    pub batch: Option<u32>,
    pub batches: Option<u32>,
    pub idempotency_key: Option<Uuid>,
    /// The batch's recipients (external ids).
    pub recipients: Vec<UserId>,
    /// Requests made for the batch.
    pub attempts: u32,
    /// When it was given up (ms since the epoch).
    pub failed_at: i64,
    /// The job's bytes, when they could not be read as a job.
    pub raw: Option<Vec<u8>>,
}

impl NatsMessage for DeadPush {
    const FAMILY: &'static str = "notify_dead";
    fn gavel_type(&self) -> &'static str {
        "dead_push.v1"
    }
}

/// Creates the dead-letter stream if `gavel migrate` predates it, with the replicas of
/// `NOTIFY` (which must exist).
pub(crate) async fn ensure_dead_letter_stream(js: &jetstream::Context) -> anyhow::Result<()> {
    let mut notify = js.get_stream(subj::STREAM_NOTIFY).await?;
    let replicas = notify.info().await?.config.num_replicas;
    let config = bus::stream_configs(subj::DEFAULT_PARTITIONS, replicas)
        .into_iter()
        .find(|c| c.name == subj::STREAM_NOTIFY_DEAD)
        .expect("bus defines the dead-letter stream");
    js.get_or_create_stream(config).await?;
    Ok(())
}

/// Where pushes go.
enum Sender {
    OneSignal(onesignal::Client),
    /// No credentials: log each push instead.
    Log,
}

/// How a job ended in this process.
#[derive(Debug, PartialEq, Eq)]
enum Done {
    /// Every batch has a final answer (or is in the dead letters): ack.
    Finished,
    /// Shutting down mid-job: hand it back.
    Abandoned,
}

/// How one batch ended.
enum Delivered {
    Final,
    Dead {
        status: Option<u16>,
        reason: String,
        attempts: u32,
        why: &'static str,
    },
    Abandoned,
}

/// A shared "nobody sends before" instant: a 429 or a bad key holds back every job, not only
/// the one that heard it.
#[derive(Default)]
struct Throttle {
    until: Mutex<Option<Instant>>,
}

impl Throttle {
    fn pause(&self, d: Duration) {
        let t = Instant::now() + d;
        let mut until = self.until.lock().expect("throttle lock");
        if until.is_none_or(|u| u < t) {
            *until = Some(t);
        }
    }

    /// Waits out a pause; false on shutdown.
    async fn wait(&self, shutdown: &CancellationToken) -> bool {
        loop {
            let until = *self.until.lock().expect("throttle lock");
            match until {
                Some(t) if t > Instant::now() => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return false,
                        _ = tokio::time::sleep_until(t) => {}
                    }
                }
                _ => return true,
            }
        }
    }
}

struct Shared {
    config: Config,
    js: jetstream::Context,
    pool: PgPool,
    sender: Sender,
    throttle: Throttle,
    /// Stream sequences in hand, so a redelivery that overtakes a slow job is not run twice here.
    in_hand: Mutex<HashSet<u64>>,
}

/// Serves the queue until `shutdown`, then drains.
pub(crate) async fn serve(
    config: Config,
    js: jetstream::Context,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let sender = match &config.onesignal {
        Some(os) => Sender::OneSignal(onesignal::Client::new(
            &config.api_url,
            os,
            config.request_timeout,
        )?),
        None => Sender::Log,
    };
    let consumer = consumer(&js, &config).await?;
    let concurrency = config.concurrency;
    let drain = config.request_timeout + Duration::from_secs(5);
    let shared = Arc::new(Shared {
        config,
        js,
        pool,
        sender,
        throttle: Throttle::default(),
        in_hand: Mutex::new(HashSet::new()),
    });
    let permits = Arc::new(Semaphore::new(concurrency));
    let tracker = TaskTracker::new();
    tracing::info!(
        consumer = %shared.config.durable,
        concurrency,
        "notifier consuming push jobs"
    );
    'subscribe: loop {
        let messages = bus::pull(&consumer, concurrency).await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "cannot pull push jobs; retrying");
                tokio::select! {
                    _ = shutdown.cancelled() => break 'subscribe,
                    _ = tokio::time::sleep(Duration::from_secs(1)) => continue 'subscribe,
                }
            }
        };
        loop {
            // A permit first: a job is only taken off the queue when it can start at once.
            let permit = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'subscribe,
                p = permits.clone().acquire_owned() => p.expect("the semaphore is never closed"),
            };
            let next = tokio::select! {
                biased;
                _ = shutdown.cancelled() => break 'subscribe,
                m = messages.next() => m,
            };
            match next {
                Some(Ok(msg)) => {
                    let shared = shared.clone();
                    let shutdown = shutdown.clone();
                    tracker.spawn(async move {
                        shared.handle(msg, &shutdown).await;
                        drop(permit);
                    });
                }
                Some(Err(e)) => tracing::warn!(error = %e, "push job consumer hiccup"),
                None => {
                    tracing::warn!("push job stream ended; pulling again");
                    continue 'subscribe;
                }
            }
        }
    }
    tracker.close();
    if tokio::time::timeout(drain, tracker.wait()).await.is_err() {
        tracing::warn!("push jobs still in hand at stop; they will be redelivered");
    }
    Ok(())
}

/// The durable consumer, created or updated to this configuration.
async fn consumer(
    js: &jetstream::Context,
    config: &Config,
) -> anyhow::Result<consumer::PullConsumer> {
    let stream = js.get_stream(subj::STREAM_NOTIFY).await?;
    let consumer = stream
        .create_consumer(consumer::pull::Config {
            durable_name: Some(config.durable.clone()),
            description: Some("Gavel notifier: push jobs to OneSignal".into()),
            filter_subject: subj::NOTIFY_ALL.into(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: config.ack_wait,
            // Never more jobs out than can be worked on: none waits in a buffer while its
            // ack timer runs.
            max_ack_pending: config.concurrency as i64,
            ..Default::default()
        })
        .await?;
    Ok(consumer)
}

/// Runs `work` while telling JetStream every third of `ack_wait` that the job is in progress.
async fn kept_alive<F: Future>(msg: &Message, ack_wait: Duration, work: F) -> F::Output {
    tokio::pin!(work);
    let mut every = tokio::time::interval(ack_wait / 3);
    every.tick().await;
    loop {
        tokio::select! {
            out = &mut work => return out,
            _ = every.tick() => {
                if let Err(e) = msg.ack_with(AckKind::Progress).await {
                    tracing::debug!(error = %e, "progress ack not sent");
                }
            }
        }
    }
}

impl Shared {
    async fn handle(&self, msg: Message, shutdown: &CancellationToken) {
        let (seq, delivered, published_ms) = match msg.info() {
            Ok(i) => (
                i.stream_sequence,
                i.delivered,
                (i.published.unix_timestamp_nanos() / 1_000_000) as i64,
            ),
            Err(e) => {
                tracing::warn!(error = %e, "push job without JetStream metadata; skipped");
                return;
            }
        };
        if !self.in_hand.lock().expect("in-hand lock").insert(seq) {
            tracing::debug!(
                seq,
                "push job redelivered while in hand; the first delivery acks it"
            );
            return;
        }
        let job = NotifyJob::decode(&msg.payload);
        let kind = job.as_ref().map_or("unknown", NotifyJob::kind);
        let tp = bus::traceparent_of(msg.headers.as_ref()).unwrap_or_else(TraceParent::new_root);
        let span = tracing::info_span!(
            "push_job",
            kind,
            seq,
            delivered,
            trace_id = %tp.trace_id_hex()
        );
        let work = self
            .process(job, &msg.payload, seq, published_ms, &tp, shutdown)
            .instrument(span.clone());
        let done = kept_alive(&msg, self.config.ack_wait, work).await;
        async {
            match done {
                Done::Finished => {
                    if let Err(e) = msg.double_ack().await {
                        // Redelivered later, and every request it repeats carries a key
                        // OneSignal has seen: nothing is sent twice.
                        tracing::warn!(error = %e, "push job ack lost; it will be redelivered");
                    }
                }
                Done::Abandoned => {
                    if let Err(e) = msg.ack_with(AckKind::Nak(None)).await {
                        tracing::debug!(error = %e, "push job not handed back; it will be redelivered");
                    }
                }
            }
        }
        .instrument(span)
        .await;
        self.in_hand.lock().expect("in-hand lock").remove(&seq);
    }

    async fn process(
        &self,
        job: Result<NotifyJob, schemas::nats::DecodeError>,
        raw: &[u8],
        seq: u64,
        published_ms: i64,
        tp: &TraceParent,
        shutdown: &CancellationToken,
    ) -> Done {
        let job = match job {
            Ok(job) => job,
            Err(e) => {
                let dead = DeadPush {
                    kind: "unknown".into(),
                    reason: format!("not a push job: {e}"),
                    status: None,
                    job: None,
                    stream_seq: seq,
                    batch: None,
                    batches: None,
                    idempotency_key: None,
                    recipients: Vec::new(),
                    attempts: 0,
                    failed_at: schemas::now_ms(),
                    raw: Some(raw.to_vec()),
                };
                return self.dead_letter(dead, "undecodable", tp, shutdown).await;
            }
        };
        let mut failures = 0;
        let (details, cohort) = loop {
            match self.read(&job, published_ms).await {
                Ok(read) => break read,
                Err(e) => {
                    failures += 1;
                    let after = answer::backoff(failures, &self.config.retry, rand::random());
                    tracing::warn!(error = %e, retry_in_ms = after.as_millis() as u64, "cannot read the push's details; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Done::Abandoned,
                        _ = tokio::time::sleep(after) => {}
                    }
                }
            }
        };
        let pushes = push::pushes(&job, &details, &cohort, self.config.batch_max);
        if pushes.is_empty() {
            tracing::info!("no verified registrants to alert");
        }
        for p in &pushes {
            match self.deliver(p, published_ms, shutdown).await {
                Delivered::Final => {}
                Delivered::Abandoned => return Done::Abandoned,
                Delivered::Dead {
                    status,
                    reason,
                    attempts,
                    why,
                } => {
                    let dead = DeadPush {
                        kind: p.kind.into(),
                        reason,
                        status,
                        job: Some(job.clone()),
                        stream_seq: seq,
                        batch: Some(p.batch as u32),
                        batches: Some(p.batches as u32),
                        idempotency_key: Some(p.idempotency_key),
                        recipients: p.recipients.clone(),
                        attempts,
                        failed_at: schemas::now_ms(),
                        raw: None,
                    };
                    if self.dead_letter(dead, why, tp, shutdown).await == Done::Abandoned {
                        return Done::Abandoned;
                    }
                }
            }
        }
        Done::Finished
    }

    /// What the text needs, and the cohort of a start alert.
    async fn read(
        &self,
        job: &NotifyJob,
        published_ms: i64,
    ) -> Result<(Details, Vec<UserId>), StoreError> {
        match job {
            NotifyJob::EventStarting { event_id } => {
                let event_name = store::push::event_name(&self.pool, *event_id).await?;
                let cohort =
                    store::push::cohort(&self.pool, *event_id, published_ms + CLOCK_SLACK_MS)
                        .await?;
                Ok((
                    Details {
                        event_name,
                        vehicle: None,
                    },
                    cohort,
                ))
            }
            NotifyJob::Outbid { lot_id, .. } | NotifyJob::Won { lot_id, .. } => {
                let vehicle = store::push::lot_vehicle(&self.pool, *lot_id)
                    .await?
                    .map(|v| Vehicle {
                        year: v.year,
                        make: v.make,
                        model: v.model,
                    });
                Ok((
                    Details {
                        event_name: None,
                        vehicle,
                    },
                    Vec::new(),
                ))
            }
        }
    }

    /// Sends one batch until it has a final answer.
    async fn deliver(
        &self,
        p: &Push,
        published_ms: i64,
        shutdown: &CancellationToken,
    ) -> Delivered {
        let metrics = &self.config.metrics;
        let client = match &self.sender {
            Sender::Log => {
                tracing::info!(
                    batch = p.batch,
                    batches = p.batches,
                    recipients = p.recipients.len(),
                    key = %p.idempotency_key,
                    heading = %p.heading,
                    text = %p.text,
                    "push logged, not sent (no OneSignal credentials)"
                );
                metrics.push(p.kind, "logged");
                return Delivered::Final;
            }
            Sender::OneSignal(client) => client,
        };
        let body = p.body(client.app_id());
        let mut failures = 0u32;
        loop {
            if !self.throttle.wait(shutdown).await {
                return Delivered::Abandoned;
            }
            let reply = client.send(&body).await;
            let verdict = answer::judge(&reply, failures + 1, &self.config.retry, rand::random());
            match verdict {
                Verdict::Sent { id, errors } => {
                    if errors.is_empty() {
                        tracing::info!(batch = p.batch, recipients = p.recipients.len(), key = %p.idempotency_key, notification = %id, "push sent");
                    } else {
                        tracing::warn!(batch = p.batch, recipients = p.recipients.len(), key = %p.idempotency_key, notification = %id, errors = ?errors, "push sent; onesignal skipped some recipients");
                    }
                    metrics.push(p.kind, "sent");
                    return Delivered::Final;
                }
                Verdict::NotDelivered { errors } => {
                    tracing::warn!(batch = p.batch, recipients = p.recipients.len(), key = %p.idempotency_key, errors = ?errors, "push not delivered; not retried");
                    metrics.push(p.kind, "not_delivered");
                    return Delivered::Final;
                }
                Verdict::Refused { status, reason } => {
                    tracing::error!(batch = p.batch, key = %p.idempotency_key, status, reason = %reason, "push refused by onesignal");
                    return Delivered::Dead {
                        status: Some(status),
                        reason,
                        attempts: failures + 1,
                        why: "refused",
                    };
                }
                Verdict::Retry {
                    after,
                    cause,
                    detail,
                } => {
                    failures += 1;
                    metrics.retry(p.kind, cause.as_str());
                    let retry_in_ms = after.as_millis() as u64;
                    if cause == Cause::Misconfigured {
                        tracing::error!(key = %p.idempotency_key, detail = %detail, retry_in_ms, "onesignal refuses the key or the URL: check ONESIGNAL_API_KEY and ONESIGNAL_API_URL");
                    } else {
                        tracing::warn!(key = %p.idempotency_key, cause = cause.as_str(), detail = %detail, attempt = failures, retry_in_ms, "push attempt failed; retrying with the same key");
                    }
                    if cause.pauses_everyone() {
                        self.throttle.pause(after);
                    }
                    let age_then = schemas::now_ms() + retry_in_ms as i64 - published_ms;
                    if age_then > self.config.give_up_after.as_millis() as i64 {
                        return Delivered::Dead {
                            status: None,
                            reason: format!(
                                "gave up after {failures} attempts over {} s; last: {}: {detail}",
                                (schemas::now_ms() - published_ms).max(0) / 1000,
                                cause.as_str()
                            ),
                            attempts: failures,
                            why: "gave_up",
                        };
                    }
                    tokio::select! {
                        _ = shutdown.cancelled() => return Delivered::Abandoned,
                        _ = tokio::time::sleep(after) => {}
                    }
                }
            }
        }
    }

    /// Publishes a dead letter and waits until JetStream has it (retrying while NATS is away).
    async fn dead_letter(
        &self,
        dead: DeadPush,
        why: &'static str,
        tp: &TraceParent,
        shutdown: &CancellationToken,
    ) -> Done {
        let msg_id = match dead.idempotency_key {
            Some(key) => format!("notify_dead-{key}"),
            None => format!("notify_dead-seq-{}", dead.stream_seq),
        };
        let out = Outgoing::new(
            subj::notify_dead(&dead.kind),
            &dead,
            Some(msg_id),
            tp.child(),
        );
        let mut failures = 0;
        loop {
            let published = async { out.send(&self.js).await?.await.map_err(anyhow::Error::from) };
            match published.await {
                Ok(_) => {
                    let metrics = &self.config.metrics;
                    metrics.dead_letter(&dead.kind, why);
                    if dead.job.is_some() {
                        metrics.push(&dead.kind, "dead_letter");
                    }
                    tracing::error!(subject = %out.subject, reason = %dead.reason, "push moved to the dead letters");
                    return Done::Finished;
                }
                Err(e) => {
                    failures += 1;
                    let after = answer::backoff(failures, &self.config.retry, rand::random());
                    tracing::warn!(error = %format!("{e:#}"), "dead letter not stored; retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return Done::Abandoned,
                        _ = tokio::time::sleep(after) => {}
                    }
                }
            }
        }
    }
}
