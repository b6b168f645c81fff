//! The live feed: from NATS to every socket of this edge.
//!
//! One subscription to `auction.>` and one to `user.>` per edge, routed in process:
//! - `auction.<event>.…` goes to the event's [`room`] (only while a socket on this edge watches
//!   the event), which keeps the event's [`board`], serialises each frame once and queues the
//!   same bytes on every subscriber.
//! - `user.<id>.result` answers the bids waiting on this edge ([`Hub::place_bid`]);
//!   `outbid` and `won` go to every socket of that user.
//!
//! Each socket has a bounded queue ([`Conn`]); one that cannot take a frame is closed (1008)
//! and never slows the rest. Every edge also says every second how many sockets watch each
//! event (core NATS, [`PRESENCE_SUBJECT`]), so any edge can answer the admin monitor for all.
//!
//! Read [`board`] first (the view rules), then [`room`], then this file.

pub(crate) mod board;
pub(crate) mod room;

use crate::metrics::Metrics;
use async_nats::jetstream;
use bus::Outgoing;
use futures::StreamExt;
use room::RoomCmd;
use schemas::frames::{BidResult, BidStatus, ServerFrame};
use schemas::lot::RejectReason;
use schemas::nats::{BidCommand, NatsMessage, PlaceBid, UserMsg};
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use schemas::{EventId, LotId, UserId};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::PgPool;
use tokio::sync::{mpsc, oneshot, Notify};
use tokio_tungstenite::tungstenite::Utf8Bytes;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// A serialised server frame, shared by every socket it goes to.
pub(crate) type Frame = Utf8Bytes;

/// Most frames waiting for one socket; one more closes it (PROTOCOL.md).
pub const MAX_QUEUED_FRAMES: usize = 1_000;
/// Most bytes waiting for one socket; more closes it.
pub const MAX_QUEUED_BYTES: usize = 1 << 20;
/// Where edges say how many sockets watch each event.
pub const PRESENCE_SUBJECT: &str = "gavel.edge.presence";
/// How often an edge says it; a report older than three periods is forgotten.
const PRESENCE_EVERY: Duration = Duration::from_secs(1);
/// How long a bid waits for its answer before the edge looks it up or gives up.
const ANSWER_WAIT: Duration = Duration::from_secs(10);

/// Serialises a frame once.
pub(crate) fn encode(frame: &ServerFrame) -> Frame {
    Utf8Bytes::from(serde_json::to_string(frame).expect("frames always serialise"))
}

/// The hub's side of one socket: where its frames go and how to close it. The queue is a plain
/// deque behind a lock (empty, it holds no memory; a bounded channel would keep a block of slots
/// per idle socket) with a `Notify` to wake the socket.
///
/// Why the socket must end (it fell behind, the edge is stopping) is a flag the socket reads
/// when it wakes, not a future it polls: a socket task wakes for every frame, and polling a
/// cancellation token takes its lock (the edge's shutdown token, shared by every socket, was
/// one lock taken 10,000 times a frame by 10,000 watchers).
pub(crate) struct Conn {
    pub(crate) id: u64,
    pub(crate) user: UserId,
    queue: Mutex<Queue>,
    /// Frames wait, or the socket must end.
    ready: Notify,
    /// The socket must end: wakes a socket stuck in a write.
    alarm: Notify,
    /// [`SLOW`] and [`STOPPING`], set once each.
    ending: AtomicU8,
    metrics: Metrics,
}

/// The socket fell behind: it closes itself with 1008.
const SLOW: u8 = 1;
/// The edge is stopping: the socket closes with 1001.
const STOPPING: u8 = 2;

/// Why a socket must end; falling behind comes first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Ending {
    Slow,
    Stopping,
}

#[derive(Default)]
struct Queue {
    frames: VecDeque<Frame>,
    bytes: usize,
    /// The socket is gone: frames are dropped.
    closed: bool,
}

impl Conn {
    /// A socket's handle.
    pub(crate) fn new(id: u64, user: UserId, metrics: Metrics) -> Arc<Conn> {
        Arc::new(Conn {
            id,
            user,
            queue: Mutex::default(),
            ready: Notify::new(),
            alarm: Notify::new(),
            ending: AtomicU8::new(0),
            metrics,
        })
    }

    /// Queues a frame without ever waiting: a socket whose queue is full is marked slow (it
    /// closes itself) and the frame is dropped for it alone.
    pub(crate) fn push(&self, frame: &Frame) -> bool {
        {
            let mut q = self.queue.lock().expect("queue lock");
            if q.closed || self.is_slow() {
                return false;
            }
            if q.frames.len() >= MAX_QUEUED_FRAMES || q.bytes + frame.len() > MAX_QUEUED_BYTES {
                drop(q);
                self.fell_behind();
                return false;
            }
            q.bytes += frame.len();
            q.frames.push_back(frame.clone());
        }
        self.metrics.frames.inc();
        self.ready.notify_one();
        true
    }

    /// Waits until frames may be waiting or the socket must end ([`Conn::ending`]).
    pub(crate) async fn ready(&self) {
        self.ready.notified().await
    }

    /// Waits until the socket must end, and says why.
    pub(crate) async fn alarm(&self) -> Ending {
        loop {
            if let Some(ending) = self.ending() {
                return ending;
            }
            // A flag set since the check left a permit: this wait ends at once.
            self.alarm.notified().await;
        }
    }

    /// Why the socket must end, if it must.
    pub(crate) fn ending(&self) -> Option<Ending> {
        let flags = self.ending.load(Ordering::Acquire);
        if flags & SLOW != 0 {
            Some(Ending::Slow)
        } else if flags & STOPPING != 0 {
            Some(Ending::Stopping)
        } else {
            None
        }
    }

    pub(crate) fn is_slow(&self) -> bool {
        self.ending() == Some(Ending::Slow)
    }

    /// The waiting frames, up to `max` of them, taken with one lock. When more wait, the
    /// socket is woken again for them.
    pub(crate) fn take(&self, max: usize) -> VecDeque<Frame> {
        let (frames, more) = {
            let mut q = self.queue.lock().expect("queue lock");
            if q.frames.len() <= max {
                // The whole deque: its memory leaves with it, so an idle socket holds none.
                q.bytes = 0;
                (std::mem::take(&mut q.frames), false)
            } else {
                let frames: VecDeque<Frame> = q.frames.drain(..max).collect();
                q.bytes -= frames.iter().map(|f| f.len()).sum::<usize>();
                (frames, true)
            }
        };
        if more {
            self.ready.notify_one();
        }
        frames
    }

    /// The socket ended: nothing more is queued, what waits is freed.
    pub(crate) fn close(&self) {
        let mut q = self.queue.lock().expect("queue lock");
        q.closed = true;
        q.frames = VecDeque::new();
        q.bytes = 0;
    }

    /// The edge is stopping: the socket closes itself with 1001.
    pub(crate) fn stop(&self) {
        self.end(STOPPING);
    }

    fn fell_behind(&self) {
        if self.end(SLOW) {
            self.metrics.dropped.with_label_values(&["slow"]).inc();
        }
    }

    /// Sets `flag` and wakes the socket; whether it was newly set.
    fn end(&self, flag: u8) -> bool {
        let before = self.ending.fetch_or(flag, Ordering::AcqRel);
        if before & flag != 0 {
            return false;
        }
        self.ready.notify_one();
        self.alarm.notify_one();
        true
    }
}

/// One edge's report of the sockets watching each event.
#[derive(Debug, Serialize, Deserialize)]
struct Presence {
    edge: String,
    events: HashMap<EventId, u64>,
}

/// Bids waiting for their answer, by (user, idem): every ask of one idem gets the one answer.
type Waiters = HashMap<(UserId, String), Vec<oneshot::Sender<BidResult>>>;
/// Each edge's last presence report and when it came.
type Reports = HashMap<String, (Instant, HashMap<EventId, u64>)>;

/// Why a bid got no answer.
#[derive(Debug, thiserror::Error)]
pub(crate) enum BidError {
    /// NATS or Postgres did not answer in time: the client should retry with the same idem.
    #[error("{0}")]
    Unavailable(String),
}

/// The routing tables of one edge.
pub(crate) struct Hub {
    pub(crate) pool: PgPool,
    nats: async_nats::Client,
    js: jetstream::Context,
    partitions: u16,
    pub(crate) metrics: Metrics,
    edge_id: String,
    next_conn: AtomicU64,
    rooms: Mutex<HashMap<EventId, mpsc::UnboundedSender<RoomCmd>>>,
    users: Mutex<HashMap<UserId, Vec<Arc<Conn>>>>,
    waiters: Mutex<Waiters>,
    /// Each edge's last report (this one's included) and when it came.
    presence: Mutex<Reports>,
    /// Sockets of this edge per event.
    watching: Mutex<HashMap<EventId, u64>>,
    shutdown: CancellationToken,
}

impl Hub {
    pub(crate) fn new(
        pool: PgPool,
        nats: async_nats::Client,
        partitions: u16,
        metrics: Metrics,
        shutdown: CancellationToken,
    ) -> Arc<Hub> {
        Arc::new(Hub {
            pool,
            js: bus::jetstream(nats.clone()),
            nats,
            partitions,
            metrics,
            edge_id: uuid::Uuid::new_v4().to_string(),
            next_conn: AtomicU64::new(1),
            rooms: Mutex::default(),
            users: Mutex::default(),
            waiters: Mutex::default(),
            presence: Mutex::default(),
            watching: Mutex::default(),
            shutdown,
        })
    }

    /// Subscribes to the feeds; the returned future routes them until shutdown.
    pub(crate) async fn start(
        self: &Arc<Self>,
    ) -> anyhow::Result<impl std::future::Future<Output = ()>> {
        let auction = self.nats.subscribe(subj::AUCTION_ALL).await?;
        let users = self.nats.subscribe(subj::USERS_ALL).await?;
        let presence = self.nats.subscribe(PRESENCE_SUBJECT).await?;
        // The subscriptions exist on the server before this returns (the edge says it is ready
        // only then).
        self.nats.flush().await?;
        let hub = self.clone();
        Ok(async move {
            // Every socket closes itself (1001) once the edge stops: sockets read this flag when
            // they wake instead of each polling the shutdown token.
            let stop_sockets = async {
                hub.shutdown.cancelled().await;
                hub.stop_sockets();
            };
            tokio::join!(hub.clone().route(auction, users, presence), stop_sockets);
        })
    }

    async fn route(
        self: Arc<Self>,
        mut auction: async_nats::Subscriber,
        mut users: async_nats::Subscriber,
        mut presence: async_nats::Subscriber,
    ) {
        let mut every = tokio::time::interval(PRESENCE_EVERY);
        let mut connects = self.nats.statistics().connects.load(Ordering::Relaxed);
        loop {
            // Not biased: a busy lot's feed must not starve the answers on `user.>`.
            tokio::select! {
                _ = self.shutdown.cancelled() => break,
                Some(m) = auction.next() => self.route_auction(m),
                Some(m) = users.next() => self.route_user(m),
                Some(m) = presence.next() => self.heard_presence(&m.payload),
                _ = every.tick() => {
                    self.say_presence().await;
                    // After a reconnect, messages may have been missed: every room reloads.
                    let now = self.nats.statistics().connects.load(Ordering::Relaxed);
                    if now != connects {
                        connects = now;
                        self.reload_rooms();
                    }
                }
                else => break,
            }
        }
        // Rooms end when their subscribers have gone; tell them now.
        self.rooms.lock().expect("rooms lock").clear();
    }

    // ----- auction.> -----

    fn route_auction(&self, m: async_nats::Message) {
        // auction.<event>.<lane>.<kind>
        let Some(event) = m
            .subject
            .split('.')
            .nth(1)
            .and_then(|s| s.parse::<uuid::Uuid>().ok())
        else {
            return;
        };
        let room = self
            .rooms
            .lock()
            .expect("rooms lock")
            .get(&EventId(event))
            .cloned();
        let Some(room) = room else {
            return;
        };
        match schemas::nats::AuctionMsg::decode(&m.payload) {
            Ok(msg) => {
                let _ = room.send(RoomCmd::Msg(msg));
            }
            Err(e) => {
                tracing::warn!(subject = %m.subject, error = %e, "undecodable auction message")
            }
        }
    }

    fn reload_rooms(&self) {
        for room in self.rooms.lock().expect("rooms lock").values() {
            let _ = room.send(RoomCmd::Reload);
        }
    }

    /// Puts a socket in an event's room: it gets the snapshot, then the live frames.
    pub(crate) fn join(self: &Arc<Self>, event: EventId, conn: &Arc<Conn>) {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        let tx = rooms
            .entry(event)
            .or_insert_with(|| room::spawn(self.clone(), event));
        let _ = tx.send(RoomCmd::Join(conn.clone()));
        *self
            .watching
            .lock()
            .expect("watching lock")
            .entry(event)
            .or_default() += 1;
    }

    /// Takes a socket out of an event's room.
    pub(crate) fn leave(&self, event: EventId, conn: &Arc<Conn>) {
        if let Some(tx) = self.rooms.lock().expect("rooms lock").get(&event) {
            let _ = tx.send(RoomCmd::Leave(conn.id));
        }
        let mut watching = self.watching.lock().expect("watching lock");
        if let Some(n) = watching.get_mut(&event) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                watching.remove(&event);
            }
        }
    }

    /// A room with no subscriber left asks to end; it may only if nobody joined meanwhile
    /// (checked under the lock every join takes).
    pub(crate) fn room_may_end(&self, event: EventId, inbox_empty: impl FnOnce() -> bool) -> bool {
        let mut rooms = self.rooms.lock().expect("rooms lock");
        if inbox_empty() {
            rooms.remove(&event);
            true
        } else {
            false
        }
    }

    // ----- sockets and users -----

    /// A new socket of `user`.
    pub(crate) fn connect(&self, user: UserId) -> Arc<Conn> {
        let id = self.next_conn.fetch_add(1, Ordering::Relaxed);
        let conn = Conn::new(id, user, self.metrics.clone());
        let mut users = self.users.lock().expect("users lock");
        // Checked under the lock `stop_sockets` takes: a socket either is in the table it
        // walks or sees the edge stopping here.
        if self.shutdown.is_cancelled() {
            conn.stop();
        }
        users.entry(user).or_default().push(conn.clone());
        drop(users);
        self.metrics.connections.inc();
        conn
    }

    /// The edge is stopping: every socket closes itself (1001) after what it is writing.
    fn stop_sockets(&self) {
        for conn in self.users.lock().expect("users lock").values().flatten() {
            conn.stop();
        }
    }

    /// A socket closed.
    pub(crate) fn disconnect(&self, conn: &Arc<Conn>) {
        conn.close();
        let mut users = self.users.lock().expect("users lock");
        if let Some(list) = users.get_mut(&conn.user) {
            list.retain(|c| c.id != conn.id);
            if list.is_empty() {
                users.remove(&conn.user);
            }
        }
        self.metrics.connections.dec();
    }

    fn route_user(&self, m: async_nats::Message) {
        // user.<id>.<kind>
        let Some(user) = m
            .subject
            .split('.')
            .nth(1)
            .and_then(|s| s.parse::<uuid::Uuid>().ok())
            .map(UserId)
        else {
            return;
        };
        // Every edge hears every user's notices: one for a user with no socket here and no bid
        // waiting here is dropped before it is decoded.
        let result = m.subject.ends_with(".result");
        if !result && !self.users.lock().expect("users lock").contains_key(&user) {
            return;
        }
        let msg = match UserMsg::decode(&m.payload) {
            Ok(msg) => msg,
            Err(e) => {
                tracing::warn!(subject = %m.subject, error = %e, "undecodable user message");
                return;
            }
        };
        let frame = match msg {
            UserMsg::Result(r) => {
                let span = match bus::traceparent_of(m.headers.as_ref()) {
                    Some(tp) => {
                        let span = tracing::debug_span!(
                            target: bus::trace::TARGET,
                            "edge.bid_result",
                            lot = %r.lot_id
                        );
                        bus::trace::follow(&span, &tp);
                        span
                    }
                    None => tracing::Span::none(),
                };
                let _in_trace = span.enter();
                let waiting = self
                    .waiters
                    .lock()
                    .expect("waiters lock")
                    .remove(&(user, r.idem.clone()));
                for w in waiting.into_iter().flatten() {
                    let _ = w.send(r.clone());
                }
                return;
            }
            UserMsg::Outbid(o) => ServerFrame::Outbid(o),
            UserMsg::Won(w) => ServerFrame::Won(w),
        };
        let conns = self.users.lock().expect("users lock").get(&user).cloned();
        if let Some(conns) = conns {
            let bytes = encode(&frame);
            for c in conns {
                c.push(&bytes);
            }
        }
    }

    // ----- bids -----

    /// Places a bid and waits for its answer: publishes it on the lot's subject with
    /// `Nats-Msg-Id` = user + idem (a retry within the dedupe window is stored once), then waits
    /// for the bidder's `user.<id>.result` for that idem; a retry that JetStream dropped as a
    /// duplicate is answered from the recorded decision, or from the first one's answer when
    /// it comes.
    ///
    /// Each bid starts a trace; its span `edge.bid` is a child of the trace's root, the
    /// `traceparent` the bid carries to the bidder.
    pub(crate) async fn place_bid(
        &self,
        user: UserId,
        lot_id: LotId,
        amount: i64,
        seen_high: Option<i64>,
        idem: String,
    ) -> Result<BidResult, BidError> {
        let trace = TraceParent::new_root();
        let span = tracing::info_span!("edge.bid", lot = %lot_id, trace_id = %trace.trace_id_hex());
        bus::trace::follow(&span, &trace);
        self.bid_in_trace(user, lot_id, amount, seen_high, idem, trace)
            .instrument(span)
            .await
    }

    async fn bid_in_trace(
        &self,
        user: UserId,
        lot_id: LotId,
        amount: i64,
        seen_high: Option<i64>,
        idem: String,
        trace: TraceParent,
    ) -> Result<BidResult, BidError> {
        let started = Instant::now();
        let key = (user, idem.clone());
        let (tx, rx) = oneshot::channel();
        self.waiters
            .lock()
            .expect("waiters lock")
            .entry(key.clone())
            .or_default()
            .push(tx);
        let cmd = BidCommand::PlaceBid(PlaceBid {
            lot_id,
            user_id: user,
            amount,
            seen_high,
            idem: idem.clone(),
            sent_at: schemas::now_ms(),
        });
        let out = Outgoing::new(
            subj::bids(lot_id, self.partitions),
            &cmd,
            Some(format!("{}:{}", user.0, idem)),
            trace,
        );
        let answer = async {
            let not_taken =
                |e: String| BidError::Unavailable(format!("the bid was not taken: {e}"));
            let ack = out
                .send(&self.js)
                .await
                .map_err(|e| not_taken(e.to_string()))?
                .await
                .map_err(|e| not_taken(e.to_string()))?;
            if ack.duplicate {
                if let Some(r) = self.recorded(&key).await? {
                    return Ok(r);
                }
            }
            match tokio::time::timeout(ANSWER_WAIT, rx).await {
                Ok(Ok(r)) => Ok(r),
                _ => self.recorded(&key).await?.ok_or_else(|| {
                    BidError::Unavailable("no answer yet; retry with the same idem".into())
                }),
            }
        };
        let result = answer.await;
        self.forget_waiter(&key);
        if let Ok(r) = &result {
            self.count(r);
            self.metrics
                .roundtrip
                .observe(started.elapsed().as_secs_f64());
        }
        result
    }

    /// The decision recorded for (user, idem), if any.
    async fn recorded(&self, key: &(UserId, String)) -> Result<Option<BidResult>, BidError> {
        let found = store::bidding::bids_by_idem(&self.pool, std::slice::from_ref(key))
            .await
            .map_err(|e| BidError::Unavailable(format!("the bid's answer cannot be read: {e}")))?;
        Ok(found.first().map(store::bidding::BidRecord::result))
    }

    /// Drops this key's waiters that nobody waits on any more.
    fn forget_waiter(&self, key: &(UserId, String)) {
        let mut waiters = self.waiters.lock().expect("waiters lock");
        if let Some(list) = waiters.get_mut(key) {
            list.retain(|w| !w.is_closed());
            if list.is_empty() {
                waiters.remove(key);
            }
        }
    }

    /// Counts an answer the edge gave without asking the bidder (`rate_limited`, `invalid`).
    pub(crate) fn count(&self, r: &BidResult) {
        let outcome = match (r.status, r.reason) {
            (BidStatus::Accepted, _) => "accepted",
            (_, Some(reason)) => reason.as_str(),
            (_, None) => "rejected",
        };
        self.metrics.bids.with_label_values(&[outcome]).inc();
    }

    // ----- presence -----

    async fn say_presence(&self) {
        let events = self.watching.lock().expect("watching lock").clone();
        let report = Presence {
            edge: self.edge_id.clone(),
            events,
        };
        let bytes = rmp_serde::to_vec_named(&report).expect("presence serialises");
        if let Err(e) = self.nats.publish(PRESENCE_SUBJECT, bytes.into()).await {
            tracing::debug!(error = %e, "presence not published");
        }
        let now = Instant::now();
        self.presence
            .lock()
            .expect("presence lock")
            .retain(|_, (at, _)| now.duration_since(*at) < PRESENCE_EVERY * 3);
    }

    fn heard_presence(&self, payload: &[u8]) {
        if let Ok(p) = rmp_serde::from_slice::<Presence>(payload) {
            self.presence
                .lock()
                .expect("presence lock")
                .insert(p.edge, (Instant::now(), p.events));
        }
    }

    /// Sockets watching `event` on every edge that reported lately (this one's own count is
    /// live, not its last report).
    pub(crate) fn clients_of(&self, event: EventId) -> u64 {
        let own = self
            .watching
            .lock()
            .expect("watching lock")
            .get(&event)
            .copied()
            .unwrap_or(0);
        let others: u64 = self
            .presence
            .lock()
            .expect("presence lock")
            .iter()
            .filter(|(edge, _)| **edge != self.edge_id)
            .map(|(_, (_, events))| events.get(&event).copied().unwrap_or(0))
            .sum();
        own + others
    }
}

/// A rejection the edge gives itself, before the bidder (rate limit, unreadable bid).
pub(crate) fn refused(idem: String, lot_id: LotId, reason: RejectReason) -> BidResult {
    BidResult {
        idem,
        lot_id,
        status: BidStatus::Rejected,
        reason: Some(reason),
        high: None,
        min_next: None,
        version: None,
        retryable: reason.retryable(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Waker};

    fn conn() -> Arc<Conn> {
        Conn::new(1, UserId(uuid::Uuid::nil()), Metrics::new())
    }

    fn frame(n: usize) -> Frame {
        Utf8Bytes::from(format!("frame {n}"))
    }

    /// Whether `fut` is done at its first poll.
    fn is_ready(fut: impl Future) -> bool {
        let fut = pin!(fut);
        fut.poll(&mut Context::from_waker(Waker::noop())).is_ready()
    }

    fn slow_count(c: &Conn) -> u64 {
        c.metrics.dropped.with_label_values(&["slow"]).get()
    }

    #[test]
    fn one_take_returns_the_waiting_frames_in_order_and_wakes_again_for_the_rest() {
        let c = conn();
        assert!(c.take(64).is_empty());
        for n in 0..3 {
            assert!(c.push(&frame(n)));
        }
        assert!(is_ready(c.ready()), "a pushed frame wakes the socket");
        let got: Vec<Frame> = c.take(64).into_iter().collect();
        assert_eq!(got, vec![frame(0), frame(1), frame(2)]);
        assert!(!is_ready(c.ready()), "nothing waits: no wake");

        for n in 0..5 {
            c.push(&frame(n));
        }
        let _ = is_ready(c.ready());
        assert_eq!(c.take(2).len(), 2);
        assert!(
            is_ready(c.ready()),
            "frames still wait: the socket is woken again"
        );
        let rest: Vec<Frame> = c.take(64).into_iter().collect();
        assert_eq!(rest, vec![frame(2), frame(3), frame(4)]);
        assert!(c.ending().is_none());
    }

    #[test]
    fn a_full_queue_marks_the_socket_slow_once_and_sounds_its_alarm() {
        let c = conn();
        for n in 0..MAX_QUEUED_FRAMES {
            assert!(c.push(&frame(n)));
        }
        assert!(!is_ready(c.alarm()), "no alarm while the socket keeps up");
        assert!(!c.push(&frame(MAX_QUEUED_FRAMES)), "one more is refused");
        assert_eq!(c.ending(), Some(Ending::Slow));
        assert!(c.is_slow());
        assert!(is_ready(c.alarm()), "a socket stuck in a write hears it");
        assert!(!c.push(&frame(0)), "a slow socket takes nothing more");
        assert_eq!(slow_count(&c), 1, "counted once");
    }

    #[test]
    fn a_byte_limit_counts_too_and_taken_frames_free_their_bytes() {
        let c = conn();
        let big = Utf8Bytes::from("x".repeat(MAX_QUEUED_BYTES / 2));
        assert!(c.push(&big));
        assert!(c.push(&big));
        assert_eq!(c.take(1).len(), 1);
        assert!(c.push(&big), "the taken frame's bytes no longer count");
        assert!(!c.push(&big), "three halves are over the limit");
        assert_eq!(c.ending(), Some(Ending::Slow));
    }

    #[test]
    fn stopping_wakes_an_idle_socket_and_falling_behind_comes_first() {
        let c = conn();
        c.stop();
        assert_eq!(c.ending(), Some(Ending::Stopping));
        assert!(is_ready(c.ready()), "an idle socket wakes to close");
        assert!(c.push(&frame(0)), "a stopping socket still takes frames");
        assert!(!c.is_slow());
        c.fell_behind();
        assert_eq!(c.ending(), Some(Ending::Slow));
        assert_eq!(slow_count(&c), 1);
    }
}
