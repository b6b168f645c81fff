//! The ticker: Gavel's only clock. The leading instance starts events at `starts_at`, opens each
//! lane's lots in position order, ticks every open lot, sends the hammer when a deadline passes
//! and closes an event when its lanes are done; other instances wait as hot standbys.
//!
//! Read [`plan`] first (the decisions, no I/O), then [`leader`] (the KV lease), then this file
//! (the driver: Postgres polls, the `AUCTION` feed, publishing).

pub mod leader;
pub mod plan;

use anyhow::Context as _;
use async_nats::jetstream;
use bus::Outgoing;
use futures::{FutureExt, StreamExt};
use plan::{Action, Clock};
use schemas::nats::{AuctionMsg, BidCommand, NatsMessage, NotifyJob};
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use std::time::Duration;
use store::PgPool;
use tokio_util::sync::CancellationToken;

/// How a ticker runs.
#[derive(Clone, Debug)]
pub struct Config {
    /// Partitions of `BIDS` (to address a lot's subject).
    pub partitions: u16,
    /// Tick period of an open lot.
    pub tick_ms: i64,
    /// How often Postgres is read again (events to start, the next lot of a lane).
    pub poll_ms: i64,
    /// Leader lease lifetime; a standby takes over after it expires.
    pub lease_ttl: Duration,
    /// The KV bucket holding the lease.
    pub bucket: String,
    /// This instance's name.
    pub name: String,
    /// Tests only: lead without a lease (to prove two leaders cannot do harm).
    pub force_leader: bool,
}

impl Config {
    pub fn new(partitions: u16) -> Self {
        Self {
            partitions,
            tick_ms: 1000,
            poll_ms: 250,
            lease_ttl: Duration::from_secs(3),
            bucket: "gavel_ticker".into(),
            name: format!(
                "ticker-{}-{}",
                std::process::id(),
                &uuid::Uuid::new_v4().simple().to_string()[..6]
            ),
            force_leader: false,
        }
    }
}

/// Runs until `shutdown`: waits for leadership, then drives the clock while it leads.
pub async fn run(
    config: Config,
    nats: async_nats::Client,
    pool: PgPool,
    shutdown: CancellationToken,
) -> anyhow::Result<()> {
    let js = bus::jetstream(nats.clone());
    let kv = leader::bucket(&js, &config.bucket, config.lease_ttl)
        .await
        .context("the ticker lease bucket")?;
    let mut lease = leader::Leader::new(kv, config.name.clone());
    tracing::info!(name = %config.name, "ticker starting");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if !config.force_leader && !lease.try_acquire().await {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = tokio::time::sleep(config.lease_ttl / 6) => continue,
            }
        }
        tracing::info!(name = %config.name, "ticker leads");
        let lost = CancellationToken::new();
        let drive = lead(&config, &nats, &js, &pool, shutdown.clone(), lost.clone());
        let keep = async {
            if config.force_leader {
                return std::future::pending::<()>().await;
            }
            let mut every = tokio::time::interval(config.lease_ttl / 3);
            every.tick().await;
            loop {
                every.tick().await;
                if !lease.renew().await {
                    lost.cancel();
                    return;
                }
            }
        };
        tokio::select! {
            r = drive => { r?; }
            _ = keep => {}
        }
        if shutdown.is_cancelled() {
            lease.release().await;
            break;
        }
        tracing::warn!(name = %config.name, "ticker no longer leads; standing by");
    }
    tracing::info!("ticker stopped");
    Ok(())
}

/// Drives the clock until shutdown or loss of leadership.
async fn lead(
    config: &Config,
    nats: &async_nats::Client,
    js: &jetstream::Context,
    pool: &PgPool,
    shutdown: CancellationToken,
    lost: CancellationToken,
) -> anyhow::Result<()> {
    // Accepted bids and lot changes, as the bidder announces them (not our own ticks).
    let mut feed = futures::stream::select(
        nats.subscribe(subj::AUCTION_STORED[0]).await?,
        nats.subscribe(subj::AUCTION_STORED[1]).await?,
    );
    let mut clock = Clock::new(config.tick_ms);
    // Postgres is read by its own task, so a slow query never delays a hammer or a tick.
    let (state_tx, mut state_rx) = tokio::sync::mpsc::channel(1);
    let poke = std::sync::Arc::new(tokio::sync::Notify::new());
    let poller = tokio::spawn(poll_state(
        pool.clone(),
        config.poll_ms,
        state_tx,
        poke.clone(),
    ));
    let _stop_poller = tokio_util::task::AbortOnDropHandle::new(poller);
    let mut actions = Vec::new();
    loop {
        let now = schemas::now_ms();
        clock.due(now, &mut actions);
        for a in actions.drain(..) {
            if let Err(e) = act(config, nats, js, pool, a, now).await {
                tracing::warn!(error = %format!("{e:#}"), "clock action failed; it will be retried");
            }
        }
        let wake = clock.next_wakeup().unwrap_or(i64::MAX);
        let sleep_ms = (wake - schemas::now_ms()).clamp(0, config.poll_ms) as u64;
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => return Ok(()),
            _ = lost.cancelled() => return Ok(()),
            Some(m) = feed.next() => {
                // Take everything already here before acting: a burst of closes is one poll.
                let mut next = Some(m);
                while let Some(m) = next {
                    if let Ok(msg) = AuctionMsg::decode(&m.payload) {
                        if clock.on_auction(&msg, schemas::now_ms(), &mut actions) {
                            poke.notify_one();
                        }
                    }
                    next = feed.next().now_or_never().flatten();
                }
            }
            Some((events, lots)) = state_rx.recv() => clock.replace_state(events, lots),
            _ = tokio::time::sleep(Duration::from_millis(sleep_ms)) => {}
        }
    }
}

/// Reads the auction state every `poll_ms`, or at once when poked (a lot closed).
async fn poll_state(
    pool: PgPool,
    poll_ms: i64,
    out: tokio::sync::mpsc::Sender<(Vec<store::clock::ClockEvent>, Vec<store::clock::BlockLot>)>,
    poke: std::sync::Arc<tokio::sync::Notify>,
) {
    loop {
        match read_state(&pool, schemas::now_ms()).await {
            Ok(state) => {
                if out.send(state).await.is_err() {
                    return;
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the auction state; retrying"),
        }
        tokio::select! {
            _ = poke.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(poll_ms as u64)) => {}
        }
    }
}

async fn read_state(
    pool: &PgPool,
    now: i64,
) -> Result<(Vec<store::clock::ClockEvent>, Vec<store::clock::BlockLot>), store::StoreError> {
    let events = store::clock::clock_events(pool, now + 1_000).await?;
    let live: Vec<_> = events.iter().filter(|e| e.live).map(|e| e.id).collect();
    let lots = if live.is_empty() {
        Vec::new()
    } else {
        store::clock::block_lots(pool, &live).await?
    };
    Ok((events, lots))
}

async fn act(
    config: &Config,
    nats: &async_nats::Client,
    js: &jetstream::Context,
    pool: &PgPool,
    action: Action,
    now: i64,
) -> anyhow::Result<()> {
    match action {
        Action::Tick { event_id, update } => {
            let lane = update.lane;
            Outgoing::new(
                subj::auction_tick(event_id, lane),
                &AuctionMsg::TimerUpdate(update),
                None,
                TraceParent::new_root(),
            )
            .send_core(nats)
            .await?;
        }
        Action::Hammer {
            lot_id,
            expected_version,
            ..
        } => {
            let cmd = BidCommand::Hammer {
                lot_id,
                expected_version,
            };
            command(
                js,
                config,
                &cmd,
                format!("hammer-{lot_id}-{expected_version}"),
            )
            .await?;
        }
        Action::Open {
            lot_id, ends_at, ..
        } => {
            let cmd = BidCommand::Open { lot_id, ends_at };
            command(js, config, &cmd, format!("open-{lot_id}")).await?;
        }
        Action::StartEvent(event_id) => {
            // The push first (deduplicated by id): a crash between the two repeats it harmlessly.
            let job = NotifyJob::EventStarting { event_id };
            Outgoing::new(
                subj::notify(job.kind()),
                &job,
                Some(format!("event_starting-{event_id}")),
                TraceParent::new_root(),
            )
            .send(js)
            .await?
            .await?;
            if store::clock::start_event(pool, event_id, now).await? {
                tracing::info!(event = %event_id, "event live");
            }
        }
        Action::CloseEvent(event_id) => {
            if store::clock::close_event(pool, event_id, now).await? {
                tracing::info!(event = %event_id, "event closed");
            }
        }
    }
    Ok(())
}

/// Publishes a lifecycle command on the lot's ordered subject without waiting for the ack in
/// the clock loop (a lost one is resent by the plan under the same id).
async fn command(
    js: &jetstream::Context,
    config: &Config,
    cmd: &BidCommand,
    id: String,
) -> anyhow::Result<()> {
    let out = Outgoing::new(
        subj::bids(cmd.lot_id(), config.partitions),
        cmd,
        Some(id),
        TraceParent::new_root(),
    );
    let ack = out.send(js).await?;
    tokio::spawn(async move {
        if let Err(e) = ack.await {
            tracing::warn!(error = %e, "lifecycle command not confirmed");
        }
    });
    Ok(())
}
