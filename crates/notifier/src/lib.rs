//! The notifier: turns push jobs from the `NOTIFY` work queue into OneSignal notifications that
//! arrive exactly once. One durable pull consumer (`notifier`) takes `event_starting` (the
//! event's registered and verified cohort, resolved when the job is sent, in batches of at most
//! 2,000), `outbid` and `won` jobs; each batch is one `POST /notifications` carrying an
//! idempotency key derived from the job and the batch, so no retry, redelivery or second
//! instance can make OneSignal send it twice. A job is acked only after every batch has a final
//! answer; a permanent refusal goes to the dead-letter subject `notify_dead.<kind>` with its
//! reason, and the queue moves on.
//!
//! Read [`push`] first (texts, batches, idempotency keys and the request body: no I/O), then
//! [`answer`] (what each OneSignal answer means and when to retry: no I/O), then [`onesignal`]
//! (the HTTP call), then [`queue`] (the consumer loop: cohort, deliveries, dead letters, acks).
//! [`metrics`] names the counters.

pub mod answer;
pub mod metrics;
pub mod onesignal;
pub mod push;
pub mod queue;

pub use answer::RetryPolicy;
pub use metrics::Metrics;
pub use queue::DeadPush;

use anyhow::Context as _;
use std::fmt;
use std::time::Duration;
use store::PgPool;
use tokio_util::sync::CancellationToken;

/// OneSignal's API, the default of `ONESIGNAL_API_URL`.
pub const DEFAULT_API_URL: &str = "https://api.onesignal.com";

/// A secret that never prints: `Debug` shows `***`, and there is no `Display`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that sends it.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

/// The OneSignal app to send through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OneSignal {
    /// The app's id (public: apps embed it).
    pub app_id: String,
    /// The app's REST API key, sent as `Authorization: Key <key>`.
    pub api_key: Secret,
}

impl OneSignal {
    /// Credentials from `ONESIGNAL_APP_ID` and `ONESIGNAL_API_KEY`: both (sent for real),
    /// neither (`None`: pushes are logged), but never one without the other. Empty counts as
    /// unset.
    pub fn from_parts(
        app_id: Option<String>,
        api_key: Option<String>,
    ) -> anyhow::Result<Option<OneSignal>> {
        let app_id = app_id.filter(|s| !s.trim().is_empty());
        let api_key = api_key.filter(|s| !s.trim().is_empty());
        match (app_id, api_key) {
            (Some(app_id), Some(key)) => Ok(Some(OneSignal {
                app_id: app_id.trim().to_owned(),
                api_key: Secret::new(key.trim()),
            })),
            (None, None) => Ok(None),
            (Some(_), None) => {
                anyhow::bail!("ONESIGNAL_APP_ID is set but ONESIGNAL_API_KEY is not")
            }
            (None, Some(_)) => {
                anyhow::bail!("ONESIGNAL_API_KEY is set but ONESIGNAL_APP_ID is not")
            }
        }
    }
}

/// How a notifier runs. Tests build it directly, with short delays.
#[derive(Clone, Debug)]
pub struct Config {
    /// OneSignal credentials; `None` logs each push it would send instead.
    pub onesignal: Option<OneSignal>,
    /// OneSignal's base URL (`ONESIGNAL_API_URL`); the push goes to `<url>/notifications`.
    pub api_url: String,
    /// The durable consumer's name.
    pub durable: String,
    /// Jobs handled at once (also the consumer's `max_ack_pending`).
    pub concurrency: usize,
    /// How long JetStream waits for an ack before redelivering; a job in hand is kept alive
    /// with progress acks, so this is how soon a dead instance's jobs are taken over.
    pub ack_wait: Duration,
    /// One OneSignal request, connect to answer; a request that takes longer is retried.
    pub request_timeout: Duration,
    /// Backoff after failed attempts.
    pub retry: RetryPolicy,
    /// A job still failing this long after it was queued goes to the dead letters (well within
    /// OneSignal's 30 days of idempotency, and long past the point where an alert is useful).
    pub give_up_after: Duration,
    /// Recipients per request (OneSignal takes at most 2,000 per call in our contract).
    pub batch_max: usize,
    /// The counters this notifier updates.
    pub metrics: Metrics,
}

impl Default for Config {
    fn default() -> Self {
        Self::new()
    }
}

impl Config {
    /// Production defaults, without credentials (log only).
    pub fn new() -> Self {
        Self {
            onesignal: None,
            api_url: DEFAULT_API_URL.into(),
            durable: "notifier".into(),
            concurrency: 8,
            ack_wait: Duration::from_secs(30),
            request_timeout: Duration::from_secs(10),
            retry: RetryPolicy::default(),
            give_up_after: Duration::from_secs(24 * 3600),
            batch_max: push::MAX_BATCH,
            metrics: Metrics::new(),
        }
    }

    /// Refuses settings that cannot work, at start-up rather than at the first push.
    pub fn check(&self) -> anyhow::Result<()> {
        anyhow::ensure!(
            (1..=push::MAX_BATCH).contains(&self.batch_max),
            "a push batch holds 1 to {} recipients, got {}",
            push::MAX_BATCH,
            self.batch_max
        );
        anyhow::ensure!(self.concurrency >= 1, "concurrency must be at least 1");
        anyhow::ensure!(
            self.ack_wait >= Duration::from_millis(300),
            "ack wait must be at least 300 ms"
        );
        anyhow::ensure!(
            self.api_url.starts_with("https://") || self.api_url.starts_with("http://"),
            "ONESIGNAL_API_URL must be an http(s) URL, got {:?}",
            self.api_url
        );
        anyhow::ensure!(
            !self.durable.is_empty() && !self.durable.contains(['.', '*', '>', ' ']),
            "bad consumer name {:?}",
            self.durable
        );
        Ok(())
    }
}

/// Runs until `shutdown`: consumes `NOTIFY` and delivers every job. On shutdown, stops taking
/// jobs, lets requests in flight finish, and hands unfinished jobs back to the queue.
pub async fn run(
    config: Config,
    nats: async_nats::Client,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    config.check()?;
    if let Err(e) = config.metrics.register(prometheus::default_registry()) {
        // A second notifier in one process (tests) keeps its own counters unregistered.
        tracing::debug!(error = %e, "notifier metrics not registered");
    }
    let js = bus::jetstream(nats);
    queue::ensure_dead_letter_stream(&js)
        .await
        .context("the NOTIFY stream (run `gavel migrate` first)")?;
    match &config.onesignal {
        Some(os) => {
            tracing::info!(app_id = %os.app_id, url = %config.api_url, "notifier sends to OneSignal")
        }
        None => tracing::warn!("no OneSignal credentials: pushes are logged, not sent"),
    }
    queue::serve(config, js, pool, shutdown).await?;
    tracing::info!("notifier stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_never_print() {
        let os = OneSignal::from_parts(Some("app".into()), Some("hunter2".into()))
            .unwrap()
            .unwrap();
        let mut config = Config::new();
        config.onesignal = Some(os);
        let shown = format!("{config:?}");
        assert!(!shown.contains("hunter2"), "{shown}");
        assert!(shown.contains("Secret(***)"));
    }

    #[test]
    fn credentials_come_in_pairs() {
        assert_eq!(OneSignal::from_parts(None, None).unwrap(), None);
        assert_eq!(
            OneSignal::from_parts(Some(" ".into()), Some(String::new())).unwrap(),
            None
        );
        assert!(OneSignal::from_parts(Some("a".into()), None).is_err());
        assert!(OneSignal::from_parts(None, Some("k".into())).is_err());
        let os = OneSignal::from_parts(Some(" a ".into()), Some("k\n".into()))
            .unwrap()
            .unwrap();
        assert_eq!((os.app_id.as_str(), os.api_key.expose()), ("a", "k"));
    }

    #[test]
    fn config_is_checked() {
        assert!(Config::new().check().is_ok());
        let mut c = Config::new();
        c.batch_max = 2_001;
        assert!(c.check().is_err());
        let mut c = Config::new();
        c.api_url = "api.onesignal.com".into();
        assert!(c.check().is_err());
        let mut c = Config::new();
        c.concurrency = 0;
        assert!(c.check().is_err());
    }
}
