//! The bidder: the only judge of bids. One durable pull consumer per partition of `BIDS`
//! (`bidder-p<N>`), held under a fenced lease, applies each lot's commands in stream order:
//! decide → commit (decisions, lot states and stream position in one transaction) → announce →
//! ack.
//!
//! Read [`decide`] first (the rules, no I/O), then [`announce`] (what each decision publishes),
//! then [`partition`] (the loop: lease, consumer, batches, replays).

pub mod announce;
pub mod decide;
pub mod partition;

use anyhow::Context as _;
use schemas::Partition;
use std::time::Duration;
use store::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// How a bidder instance runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Partitions of `BIDS` (`GAVEL_PARTITIONS`); must match the stream.
    pub partitions: u16,
    /// Serve only these partitions (default: compete for all of them).
    pub only: Option<Vec<u16>>,
    /// This instance's name in the lease table.
    pub owner: String,
    /// How long a lease lives without renewal; a standby takes over after it.
    pub lease_ttl: Duration,
    /// Most commands decided in one transaction.
    pub batch_max: usize,
    /// Fault injection for crash tests: abort the process at this point of the nth batch.
    pub crash_at: Option<CrashAt>,
}

/// Where a crash test kills the bidder: a real `abort()`, no cleanup, no ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CrashAt {
    pub point: CrashPoint,
    /// 1-based batch number within the process.
    pub batch: u32,
}

/// A point between commit and ack.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CrashPoint {
    /// Decisions committed, nothing announced or acked.
    AfterCommit,
    /// Committed and announced, not acked.
    AfterAnnounce,
}

impl std::str::FromStr for CrashAt {
    type Err = String;
    /// `after-commit:N` or `after-announce:N`.
    fn from_str(s: &str) -> Result<Self, String> {
        let (point, n) = s.split_once(':').unwrap_or((s, "1"));
        let point = match point {
            "after-commit" => CrashPoint::AfterCommit,
            "after-announce" => CrashPoint::AfterAnnounce,
            other => return Err(format!("unknown crash point {other:?}")),
        };
        let batch = n.parse().map_err(|_| format!("bad batch number {n:?}"))?;
        Ok(CrashAt { point, batch })
    }
}

impl Config {
    /// Defaults for `partitions` partitions, with a unique owner name.
    pub fn new(partitions: u16) -> Self {
        Self {
            partitions,
            only: None,
            owner: default_owner(),
            lease_ttl: Duration::from_secs(10),
            batch_max: 1000,
            crash_at: None,
        }
    }
}

/// `host-pid-random`: unique per process, readable in the lease table.
pub fn default_owner() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .unwrap_or_else(|_| "bidder".into());
    format!(
        "{host}-{}-{}",
        std::process::id(),
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    )
}

/// Runs until `shutdown`: competes for every configured partition and serves those it holds.
/// On shutdown, finishes the batch in hand, then gives its leases back.
pub async fn run(
    config: Config,
    nats: async_nats::Client,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let js = bus::jetstream(nats);
    let on_stream = bus::partitions_of(&js)
        .await
        .context("reading the BIDS stream (run `gavel migrate` first)")?;
    if on_stream != Some(config.partitions) {
        anyhow::bail!(
            "BIDS was made for {on_stream:?} partitions but GAVEL_PARTITIONS is {}",
            config.partitions
        );
    }
    let parts: Vec<Partition> = match &config.only {
        Some(list) => list
            .iter()
            .map(|&n| {
                Partition::nth(n, config.partitions)
                    .with_context(|| format!("partition {n} is out of range"))
            })
            .collect::<anyhow::Result<_>>()?,
        None => Partition::all(config.partitions).collect(),
    };
    tracing::info!(owner = %config.owner, partitions = parts.len(), "bidder starting");
    let tracker = TaskTracker::new();
    for p in parts {
        let worker = partition::Worker::new(p, config.clone(), js.clone(), pool.clone());
        tracker.spawn(worker.run(shutdown.child_token()));
    }
    tracker.close();
    tracker.wait().await;
    tracing::info!("bidder stopped");
    Ok(())
}
