//! One partition's loop: take the lease, (re)create the consumer at the last announced position,
//! then batch after batch: decide in stream order, commit, announce, ack.
//!
//! Messages at or below the committed position are replays (the previous owner died between
//! commit and ack): their recorded outcome is announced again under the same message ids, never
//! decided again. A bid whose (user, idem) already has a decision gets that first answer.

use crate::announce;
use crate::decide::{decide_bid, decide_command, Lifecycle};
use crate::Config;
use async_nats::jetstream::{self, consumer, Message};
use bus::Outgoing;
use futures::{FutureExt, StreamExt};
use schemas::frames::BidStatus;
use schemas::nats::{BidCommand, NatsMessage};
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use schemas::{LotId, Partition, UserId};
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use store::bidding::{self as db, BidRecord, CommandRecord, Lease, LotRecord};
use store::PgPool;
use store::StoreError;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Why serving a partition stopped.
#[derive(Debug, thiserror::Error)]
enum Stop {
    #[error("shutting down")]
    Shutdown,
    #[error("lease lost to another owner")]
    Fenced,
    #[error("{0}")]
    Failed(#[from] anyhow::Error),
}

impl From<StoreError> for Stop {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Fenced => Stop::Fenced,
            other => Stop::Failed(other.into()),
        }
    }
}

/// A command as read from the stream.
struct Item {
    seq: i64,
    cmd: Option<BidCommand>,
    /// The header's trace context, or a new trace for a message that came without one.
    traceparent: TraceParent,
    /// `bidder.decide`, from reading the message to its batch's commit, in the header's trace
    /// (disabled unless an OpenTelemetry layer listens, and for a message without a header).
    _span: tracing::Span,
}

/// Serves one partition while it holds the lease.
pub struct Worker {
    partition: Partition,
    config: Config,
    js: jetstream::Context,
    pool: PgPool,
    lots: HashMap<LotId, LotRecord>,
    verified: HashSet<UserId>,
    applied_seq: i64,
    /// Confirmed by the announcer stage, read by the commit and the renewal.
    announced: Arc<AtomicI64>,
    announced_in_db: i64,
    batches: u32,
}

fn ttl_ms(c: &Config) -> i64 {
    c.lease_ttl.as_millis() as i64
}

impl Worker {
    /// A worker for partition `p`.
    pub fn new(partition: Partition, config: Config, js: jetstream::Context, pool: PgPool) -> Self {
        Self {
            partition,
            config,
            js,
            pool,
            lots: HashMap::new(),
            verified: HashSet::new(),
            applied_seq: 0,
            announced: Arc::new(AtomicI64::new(0)),
            announced_in_db: 0,
            batches: 0,
        }
    }

    /// Competes for the lease until `shutdown`; serves while holding it.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let p = self.partition.get();
        let standby = self.config.lease_ttl / 4;
        loop {
            if shutdown.is_cancelled() {
                return;
            }
            let lease = match db::acquire_lease(
                &self.pool,
                i32::from(p),
                &self.config.owner,
                ttl_ms(&self.config),
            )
            .await
            {
                Ok(Some(lease)) => lease,
                Ok(None) => {
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(standby) => continue,
                    }
                }
                Err(e) => {
                    tracing::warn!(partition = p, error = %e, "cannot take lease, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    }
                }
            };
            tracing::info!(
                partition = p,
                epoch = lease.epoch,
                applied = lease.applied_seq,
                announced = lease.announced_seq,
                "partition lease taken"
            );
            match self.serve(lease, &shutdown).await {
                Stop::Shutdown => {
                    if let Err(e) = db::release_lease(&self.pool, &lease).await {
                        tracing::warn!(partition = p, error = %e, "lease not released");
                    }
                    tracing::info!(partition = p, "partition released");
                    return;
                }
                Stop::Fenced => {
                    tracing::warn!(partition = p, "partition lease lost to another owner")
                }
                Stop::Failed(e) => {
                    tracing::error!(partition = p, error = %format!("{e:#}"), "partition stopped, retrying");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    }
                }
            }
        }
    }

    async fn serve(&mut self, lease: Lease, shutdown: &CancellationToken) -> Stop {
        self.lots.clear();
        self.verified.clear();
        self.applied_seq = lease.applied_seq;
        self.announced = Arc::new(AtomicI64::new(lease.announced_seq));
        self.announced_in_db = lease.announced_seq;
        let (consumer, replicas) = match self.consumer_from(lease.announced_seq + 1).await {
            Ok(c) => c,
            Err(e) => return Stop::Failed(e),
        };
        let mut messages = match bus::pull(&consumer, self.config.batch_max).await {
            Ok(m) => m,
            Err(e) => return Stop::Failed(e.into()),
        };
        let (out, pipeline) = Pipeline::spawn(
            self.js.clone(),
            self.partition,
            self.config.crash_at,
            self.announced.clone(),
            // Replicated streams (a cluster): an ack per announcement (see bus::send_batch).
            replicas > 1,
        );
        let stop = self
            .serve_batches(&lease, &consumer, &mut messages, &out, shutdown)
            .await;
        // Committed decisions are still announced and acked, whatever stopped us.
        drop(out);
        if tokio::time::timeout(Duration::from_secs(10), pipeline)
            .await
            .is_err()
        {
            tracing::warn!(
                partition = self.partition.get(),
                "announcements still pending at stop; they will be replayed"
            );
        }
        stop
    }

    async fn serve_batches(
        &mut self,
        lease: &Lease,
        consumer: &consumer::PullConsumer,
        messages: &mut consumer::pull::Stream,
        out: &mpsc::Sender<Committed>,
        shutdown: &CancellationToken,
    ) -> Stop {
        let mut renew = tokio::time::interval(self.config.lease_ttl / 3);
        renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The consumer numbers its deliveries 1, 2, 3…; a number skipped is a message the
        // server handed out that never reached us (a leader change in a cluster that lost its
        // quorum). Acking anything after it would ack it too (AckPolicy::All), so the consumer
        // is made again from the last announced position, which delivers it again.
        // (0: nothing delivered yet; the consumer numbers from 1.)
        let delivered = AtomicU64::new(0);
        let skipped = |m: &Message| -> bool {
            let Ok(info) = m.info() else { return false };
            let last = delivered.swap(info.consumer_sequence, Ordering::Relaxed);
            last != 0 && info.consumer_sequence > last + 1
        };
        let mut repull = Repull::Settled;
        loop {
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return Stop::Shutdown,
                _ = renew.tick() => {
                    if let Err(e) = self.renew(lease).await {
                        return e;
                    }
                    if repull != Repull::Settled {
                        let ours = delivered.load(Ordering::Relaxed);
                        match delivered_elsewhere(consumer, ours).await {
                            Some(true) if repull == Repull::AheadAt(ours) => return Stop::Failed(anyhow::anyhow!(
                                "deliveries went to a dropped pull: consuming again from the last announced message"
                            )),
                            Some(true) => repull = Repull::AheadAt(ours),
                            Some(false) => repull = Repull::Settled,
                            None => {}
                        }
                    }
                }
                next = messages.next() => {
                    let first = match next {
                        Some(Ok(m)) => m,
                        Some(Err(e)) if e.kind() == consumer::pull::MessagesErrorKind::MissingHeartbeat => {
                            // The server may have lost our pull (its consumer leader moved):
                            // pull again now. A message the server still hands to the old pull
                            // never reaches us: a later delivery shows it as a skipped number,
                            // and if none comes the consumer's own count does (at the next
                            // renewal); either way the consumer is made again.
                            tracing::warn!(
                                partition = self.partition.get(),
                                "no message and no heartbeat from the consumer for {:?}: pulling again",
                                bus::PULL_HEARTBEAT * 2
                            );
                            repull = Repull::Unchecked;
                            *messages = match bus::pull(consumer, self.config.batch_max).await {
                                Ok(m) => m,
                                Err(e) => return Stop::Failed(e.into()),
                            };
                            continue;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(partition = self.partition.get(), error = %e, "consumer hiccup");
                            continue;
                        }
                        None => return Stop::Failed(anyhow::anyhow!("consumer stream ended")),
                    };
                    let mut gap = skipped(&first);
                    let mut batch = vec![first];
                    while batch.len() < self.config.batch_max && !gap {
                        match messages.next().now_or_never() {
                            Some(Some(Ok(m))) => {
                                gap = skipped(&m);
                                batch.push(m);
                            }
                            _ => break,
                        }
                    }
                    if gap {
                        return Stop::Failed(anyhow::anyhow!(
                            "a delivery never reached the bidder: consuming again from the last announced message"
                        ));
                    }
                    if let Err(stop) = self.process(lease, batch, out, shutdown).await {
                        return stop;
                    }
                }
            }
        }
    }

    /// Deletes and recreates `bidder-p<N>` so delivery restarts exactly after what was
    /// announced, whatever the previous owner left pending. Also returns the replicas of
    /// `BIDS` (the streams the bidder announces on are made alike).
    async fn consumer_from(&self, start: i64) -> anyhow::Result<(consumer::PullConsumer, usize)> {
        let mut stream = self.js.get_stream(subj::STREAM_BIDS).await?;
        let replicas = stream.info().await?.config.num_replicas;
        let name = format!("bidder-p{}", self.partition);
        if let Err(e) = stream.delete_consumer(&name).await {
            tracing::debug!(consumer = %name, error = %e, "no consumer to delete");
        }
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                durable_name: Some(name),
                description: Some(format!("Gavel bidder, partition {}", self.partition)),
                filter_subject: subj::bids_partition(self.partition),
                deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                    start_sequence: start.max(1) as u64,
                },
                ack_policy: consumer::AckPolicy::All,
                ack_wait: Duration::from_secs(30),
                max_ack_pending: 20_000,
                ..Default::default()
            })
            .await?;
        Ok((consumer, replicas))
    }

    async fn renew(&mut self, lease: &Lease) -> Result<(), Stop> {
        let ttl = ttl_ms(&self.config);
        let announced = self.announced.load(Ordering::Acquire);
        let r = if announced > self.announced_in_db {
            db::set_announced(&self.pool, lease, announced).await
        } else {
            Ok(())
        };
        match r.and(db::renew_lease(&self.pool, lease, ttl).await) {
            Ok(()) => {
                self.announced_in_db = self.announced_in_db.max(announced);
                Ok(())
            }
            Err(StoreError::Fenced) => Err(Stop::Fenced),
            Err(e) => {
                // Postgres away: keep going, the next commit or renewal will tell.
                tracing::warn!(partition = self.partition.get(), error = %e, "lease renewal failed");
                Ok(())
            }
        }
    }

    async fn process(
        &mut self,
        lease: &Lease,
        batch: Vec<Message>,
        out: &mpsc::Sender<Committed>,
        shutdown: &CancellationToken,
    ) -> Result<(), Stop> {
        let items: Vec<Item> = batch.iter().map(|m| self.read(m)).collect();
        let last_seq = items.iter().map(|i| i.seq).max().unwrap_or(0);
        let mut delay = Duration::from_millis(50);
        // Optimistic: a bid's (user, idem) is looked up only when the insert says it exists
        // (JetStream's dedupe window catches quick retries before they get here).
        let mut lookup = false;
        let started = std::time::Instant::now();
        let outgoing = loop {
            match self.decide_and_commit(lease, &items, lookup).await {
                Ok(out) => break out,
                Err(StoreError::Fenced) => return Err(Stop::Fenced),
                Err(StoreError::Conflict(c)) if c == "bids_user_idem_key" && !lookup => {
                    tracing::debug!(
                        partition = self.partition.get(),
                        "a retried bid: answering from its first decision"
                    );
                    self.lots.clear();
                    lookup = true;
                }
                Err(e) => {
                    tracing::warn!(partition = self.partition.get(), error = %e, "batch not committed, retrying");
                    // Forget what this batch decided in memory, and learn whether the commit
                    // happened after all (its answer may be what was lost).
                    self.lots.clear();
                    tokio::select! {
                        _ = shutdown.cancelled() => return Err(Stop::Shutdown),
                        _ = tokio::time::sleep(delay) => {}
                    }
                    delay = (delay * 2).min(Duration::from_secs(2));
                    match db::lease_position(&self.pool, lease).await {
                        Ok((applied, _)) => self.applied_seq = self.applied_seq.max(applied),
                        Err(StoreError::Fenced) => return Err(Stop::Fenced),
                        Err(_) => {}
                    }
                }
            }
        };
        self.batches += 1;
        tracing::debug!(
            partition = self.partition.get(),
            commands = items.len(),
            announcements = outgoing.len(),
            decide_commit_us = started.elapsed().as_micros() as u64,
            "batch committed"
        );
        if let Some(c) = self.config.crash_at {
            crash_if(c, crate::CrashPoint::AfterCommit, self.batches);
        }
        let last = batch.into_iter().last().expect("a batch has a message");
        out.send(Committed {
            outgoing,
            last,
            last_seq,
            batch_no: self.batches,
        })
        .await
        .map_err(|_| Stop::Failed(anyhow::anyhow!("announcer stopped")))?;
        Ok(())
    }

    fn read(&self, m: &Message) -> Item {
        let seq = m.info().map(|i| i.stream_sequence as i64).unwrap_or(0);
        let cmd = match BidCommand::decode(&m.payload) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(partition = self.partition.get(), seq, error = %e, "undecodable command skipped");
                None
            }
        };
        let header = bus::traceparent_of(m.headers.as_ref());
        let span = match &header {
            Some(tp) => {
                let span = tracing::debug_span!(
                    target: bus::trace::TARGET,
                    "bidder.decide",
                    partition = self.partition.get(),
                    seq
                );
                bus::trace::follow(&span, tp);
                span
            }
            None => tracing::Span::none(),
        };
        Item {
            seq,
            cmd,
            traceparent: header.unwrap_or_else(TraceParent::new_root),
            _span: span,
        }
    }

    /// Decides every new command of the batch in order and commits; returns what to announce
    /// (including the recorded outcomes of replayed messages).
    async fn decide_and_commit(
        &mut self,
        lease: &Lease,
        items: &[Item],
        lookup: bool,
    ) -> Result<Vec<Outgoing>, StoreError> {
        let applied = self.applied_seq;
        let is_new = |i: &Item| i.seq > applied;

        // Everything the decisions need, in a few queries per batch.
        let mut need_lots: Vec<LotId> = Vec::new();
        let mut need_users: Vec<UserId> = Vec::new();
        let mut keys: Vec<(UserId, String)> = Vec::new();
        let mut replay_seqs: Vec<i64> = Vec::new();
        for i in items {
            let Some(cmd) = &i.cmd else { continue };
            let lot = cmd.lot_id();
            // Only an open reads the lot again: draft → scheduled is the one change made
            // outside the bidder (by the admin), and it is what an open depends on.
            let opening = matches!(cmd, BidCommand::Open { .. });
            if !self.lots.contains_key(&lot) || (opening && is_new(i)) {
                need_lots.push(lot);
            }
            if !is_new(i) {
                replay_seqs.push(i.seq);
            }
            if let BidCommand::PlaceBid(b) = cmd {
                // An idem the database cannot hold is never looked up (see `recorded_idem`).
                if (lookup || !is_new(i)) && schemas::frames::valid_idem(&b.idem) {
                    keys.push((b.user_id, b.idem.clone()));
                }
                // (A replay may turn out never decided, and then is decided now: see below.)
                if !self.verified.contains(&b.user_id) {
                    need_users.push(b.user_id);
                }
            }
        }
        if !need_lots.is_empty() {
            need_lots.sort();
            need_lots.dedup();
            for l in db::load_lots(&self.pool, &need_lots).await? {
                self.lots.insert(l.id, l);
            }
        }
        if !need_users.is_empty() {
            need_users.sort();
            need_users.dedup();
            self.verified
                .extend(db::verified_users(&self.pool, &need_users).await?);
        }
        let mut by_key: HashMap<(UserId, String), BidRecord> = if keys.is_empty() {
            HashMap::new()
        } else {
            db::bids_by_idem(&self.pool, &keys)
                .await?
                .into_iter()
                .map(|b| ((b.user_id, b.idem.clone()), b))
                .collect()
        };
        let (replayed_bids, replayed_cmds): (HashMap<i64, BidRecord>, HashMap<i64, CommandRecord>) =
            if replay_seqs.is_empty() {
                (HashMap::new(), HashMap::new())
            } else {
                let (b, c) = db::decisions_by_seq(&self.pool, &replay_seqs).await?;
                (
                    b.into_iter().map(|r| (r.stream_seq, r)).collect(),
                    c.into_iter().map(|r| (r.stream_seq, r)).collect(),
                )
            };

        let now = schemas::now_ms();
        let mut out = Vec::with_capacity(items.len() * 2);
        let mut batch = db::Batch {
            announced_seq: self.announced.load(Ordering::Acquire),
            ..Default::default()
        };
        let mut touched: Vec<(LotId, i64)> = Vec::new();
        for i in items {
            batch.applied_seq = batch.applied_seq.max(i.seq);
            let Some(cmd) = &i.cmd else { continue };
            if !is_new(i) {
                let recorded = match cmd {
                    BidCommand::PlaceBid(b) => {
                        if let Some(rec) = replayed_bids.get(&i.seq) {
                            announce::for_bid(rec, self.lots.get(&rec.lot_id), &mut out);
                            true
                        } else if let Some(first) = by_key.get(&(b.user_id, b.idem.clone())) {
                            out.push(announce::bid_result(first, i.seq, i.traceparent));
                            true
                        } else {
                            false
                        }
                    }
                    _ => match replayed_cmds.get(&i.seq) {
                        Some(rec) => {
                            if let Some(lot) = self.lots.get(&cmd.lot_id()) {
                                announce::for_command(rec, lot, &mut out);
                            }
                            true
                        }
                        None => false,
                    },
                };
                if recorded {
                    continue;
                }
                // Below the committed position yet never decided: the consumer delivered it
                // after later messages (seen after a NATS cluster lost its quorum). Dropping it
                // would leave its client unanswered for good; it is decided now, late, against
                // the lot as it is (a hammer still checks its expected version).
                tracing::warn!(
                    partition = self.partition.get(),
                    seq = i.seq,
                    applied,
                    "a message below the applied position was never decided: deciding it now"
                );
            }
            match cmd {
                BidCommand::PlaceBid(b) => {
                    // A retry gets its first answer. The map is only filled on the lookup pass:
                    // on the optimistic pass a duplicate, even within this batch, fails the
                    // insert on `bids_user_idem_key` and the batch is decided again with it.
                    if !by_key.is_empty() {
                        if let Some(first) = by_key.get(&(b.user_id, b.idem.clone())) {
                            out.push(announce::bid_result(first, i.seq, i.traceparent));
                            continue;
                        }
                    }
                    let verified = self.verified.contains(&b.user_id);
                    let tp = Some(i.traceparent.to_string());
                    let rec = decide_bid(self.lots.get_mut(&b.lot_id), b, verified, now, i.seq, tp);
                    if rec.status == BidStatus::Accepted {
                        touched.push((b.lot_id, i.seq));
                    }
                    announce::for_bid(&rec, self.lots.get(&b.lot_id), &mut out);
                    if lookup {
                        by_key.insert((b.user_id, b.idem.clone()), rec.clone());
                    }
                    batch.bids.push(rec);
                }
                other => {
                    let lot_id = other.lot_id();
                    let lc = match *other {
                        BidCommand::Open { ends_at, .. } => Lifecycle::Open { ends_at },
                        BidCommand::Hammer {
                            expected_version, ..
                        } => Lifecycle::Hammer { expected_version },
                        BidCommand::Pause { .. } => Lifecycle::Pause,
                        BidCommand::Resume { .. } => Lifecycle::Resume,
                        BidCommand::Cancel { .. } => Lifecycle::Cancel,
                        BidCommand::PlaceBid(_) => unreachable!("handled above"),
                    };
                    let tp = Some(i.traceparent.to_string());
                    let (rec, settlement) =
                        decide_command(lot_id, self.lots.get_mut(&lot_id), lc, now, i.seq, tp);
                    if rec.applied {
                        touched.push((lot_id, i.seq));
                        if let Some(lot) = self.lots.get(&lot_id) {
                            announce::for_command(&rec, lot, &mut out);
                        }
                    } else {
                        tracing::debug!(lot = %lot_id, kind = ?rec.kind, "lifecycle command not applied");
                    }
                    batch.commands.push(rec);
                    batch.settlements.extend(settlement);
                }
            }
        }
        let mut last_touch: HashMap<LotId, i64> = HashMap::new();
        for (lot, seq) in touched {
            last_touch.insert(lot, seq);
        }
        batch.lots = last_touch
            .into_iter()
            .filter_map(|(id, seq)| {
                let lot = self.lots.get_mut(&id)?;
                lot.applied_seq = lot.applied_seq.max(seq);
                Some(lot.clone())
            })
            .collect();
        if batch.applied_seq > self.applied_seq
            || !batch.bids.is_empty()
            || !batch.commands.is_empty()
        {
            let t = std::time::Instant::now();
            db::commit_batch(&self.pool, lease, ttl_ms(&self.config), &batch).await?;
            tracing::trace!(commit_us = t.elapsed().as_micros() as u64, "committed");
            self.applied_seq = self.applied_seq.max(batch.applied_seq);
            self.announced_in_db = self.announced_in_db.max(batch.announced_seq);
        }
        Ok(out)
    }
}

/// Where a partition stands after pulling again: until the consumer says it delivered nothing
/// we did not get, the renewals ask it. A count ahead of ours while deliveries still reach us is
/// not a loss (a loss among them shows as a skipped number); ahead of ours at two renewals with
/// nothing received in between is.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Repull {
    /// No re-pull, or the consumer's count matched ours since.
    Settled,
    /// Pulled again; not asked yet.
    Unchecked,
    /// The consumer's count was ahead when ours was this.
    AheadAt(u64),
}

/// After a fresh pull, whether the consumer counts deliveries beyond the last that reached us
/// (they went to the pull we dropped); `None` when it does not answer within a second. A
/// delivery still on its way to us also counts: making the consumer again then only replays.
async fn delivered_elsewhere(consumer: &consumer::PullConsumer, ours: u64) -> Option<bool> {
    let info = tokio::time::timeout(Duration::from_secs(1), consumer.get_info())
        .await
        .ok()?
        .ok()?;
    Some(info.delivered.consumer_sequence > ours)
}

fn crash_if(c: crate::CrashAt, point: crate::CrashPoint, batch: u32) {
    if c.point == point && c.batch == batch {
        eprintln!("crash test: aborting at {point:?} of batch {batch}");
        std::process::abort();
    }
}

/// A committed batch on its way out: announce, then ack.
struct Committed {
    outgoing: Vec<Outgoing>,
    last: Message,
    last_seq: i64,
    batch_no: u32,
}

/// The announcer stages, so batch N+1 is decided and committed while batch N's messages are
/// sent (in batch order, on one connection) and N's acks are awaited.
struct Pipeline;

impl Pipeline {
    fn spawn(
        js: jetstream::Context,
        partition: Partition,
        crash_at: Option<crate::CrashAt>,
        announced: Arc<AtomicI64>,
        ack_each: bool,
    ) -> (mpsc::Sender<Committed>, tokio::task::JoinHandle<()>) {
        let (tx, mut rx) = mpsc::channel::<Committed>(2);
        let (sent_tx, mut sent_rx) = mpsc::channel::<(Option<bus::SentBatch>, Committed)>(4);
        let p = partition.get();
        let sender_js = js.clone();
        let sender = tokio::spawn(async move {
            while let Some(c) = rx.recv().await {
                let acks = match bus::send_batch(&sender_js, &c.outgoing, ack_each).await {
                    Ok(sent) => Some(sent),
                    Err(e) => {
                        // The confirm stage republishes the whole batch.
                        tracing::warn!(partition = p, error = %e, "announcements not sent");
                        None
                    }
                };
                if sent_tx.send((acks, c)).await.is_err() {
                    return;
                }
            }
        });
        let confirmer = tokio::spawn(async move {
            while let Some((acks, c)) = sent_rx.recv().await {
                let confirmed = match acks {
                    Some(sent) => sent.confirmed().await,
                    None => false,
                };
                if !confirmed {
                    let mut delay = Duration::from_millis(50);
                    while let Err(e) = bus::publish_all(&js, &c.outgoing).await {
                        tracing::warn!(partition = p, error = %e, "announcements not confirmed, retrying");
                        tokio::time::sleep(delay).await;
                        delay = (delay * 2).min(Duration::from_secs(2));
                    }
                }
                if let Some(crash) = crash_at {
                    crash_if(crash, crate::CrashPoint::AfterAnnounce, c.batch_no);
                }
                // AckPolicy::All: acking the last acks the whole batch.
                if let Err(e) = c.last.ack().await {
                    tracing::warn!(partition = p, error = %e, "ack failed; the batch will be replayed");
                }
                announced.fetch_max(c.last_seq, Ordering::AcqRel);
            }
        });
        let handle = tokio::spawn(async move {
            let _ = sender.await;
            let _ = confirmer.await;
        });
        (tx, handle)
    }
}
