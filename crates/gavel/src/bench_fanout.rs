//! `gavel bench fanout`: how long a `new_bid` takes to reach the last of W watchers through the
//! edge, against a bare tokio-tungstenite broadcast server measured in the same run (the floor),
//! and how much server memory an idle subscribed watcher costs.
//!
//! Both servers run as child processes of the bench, so their memory is read from
//! `/proc/<pid>/status` without the clients' mixed in:
//! - the floor: `gavel bench floor-server` (hidden), accept + handshake + one task per socket
//!   reading a broadcast channel of pre-serialised frames, several frames per socket write, a
//!   4 KiB read buffer. A line `send <n>` on its stdin broadcasts frame `n` (`tick <n>`, a
//!   `timer_update`, is for `gavel bench night`).
//! - Gavel: `gavel edge` on a private nats-server and a fresh database. Its frames come from
//!   `AuctionMsg::NewBid` messages the bench publishes on `auction.<event>.1.bid` (JetStream,
//!   as the bidder announces them) with rising versions: no bidder in the path, so the figure is
//!   the fan-out alone (NATS → room → sockets).
//!
//! Both send the same frame: a `new_bid` whose `version` is the sequence number (plus
//! [`BASE_VERSION`]). The clients are tokio-tungstenite sockets in this process, one task each;
//! each records when it read each frame, and a frame's figure is the latest receipt over all
//! watchers minus the moment the bench triggered it. Frames go out at most `--rate` a second and
//! each only after the previous one reached every watcher (or 2 s passed): the figure is
//! delivery latency, never a backlog.
//!
//! Read [`FanoutBench`], then [`bench_fanout`] and [`phase`]; the floor is at the end.

use crate::bench_kit::{
    cpu_ms, free_addr, gavel_child, loadavg, raise_nofile, rss_kib, spawn_edge, ws_config,
    Quantiles,
};
use crate::{migrate, Conn};
use clap::Args;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use schemas::frames::{NewBid, ServerFrame};
use schemas::nats::{AuctionMsg, BidCommand};
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use schemas::{EventId, LotId, UserId};
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::{broadcast, Notify, Semaphore};
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};
use tokio_util::sync::CancellationToken;

/// Frame `n` carries version `BASE_VERSION + n`: above any version the lot has in Postgres, so
/// the edge's board takes every one.
const BASE_VERSION: i64 = 1_000;
/// Most frames written per socket write on the floor (as the edge's `MAX_BATCH`).
const FLOOR_BATCH: usize = 64;
/// Handshakes in flight at once while watchers connect.
const CONNECTING: usize = 64;
/// How long a frame may take to reach everyone before the next goes anyway.
const FRAME_WAIT: Duration = Duration::from_secs(2);
/// The acceptance point: p99 within this factor of the floor's…
const MAX_RATIO: f64 = 1.25;
/// …and at most this much edge memory per idle connection.
const MAX_KIB_PER_CONN: f64 = 16.0;

#[derive(Args)]
pub struct FanoutBench {
    /// Watcher counts to measure, one run of both servers each.
    #[arg(long, value_delimiter = ',', default_value = "1000,10000")]
    watchers: Vec<usize>,
    /// Frames measured per run (after the warm-up).
    #[arg(long, default_value_t = 300)]
    frames: usize,
    /// Frames sent first and left out of the figures (buffers grow on the first write).
    #[arg(long, default_value_t = 5)]
    warmup: usize,
    /// Most frames per second; a frame also waits until the previous reached every watcher.
    #[arg(long, default_value_t = 20.0)]
    rate: f64,
    /// Runs of both servers per watcher count (the machine's load moves the figures: more
    /// rounds show how much).
    #[arg(long, default_value_t = 1)]
    rounds: usize,
    /// Partitions of BIDS in the private NATS.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

/// The floor server (hidden; started by `gavel bench fanout`).
#[derive(Args)]
pub struct FloorServer {
    /// Where to listen; the bound address is printed on stdout.
    #[arg(long, default_value = "127.0.0.1:0")]
    addr: SocketAddr,
}

/// One server's figures at one watcher count.
#[derive(Debug, serde::Serialize)]
struct ServerReport {
    /// Frames counted (after the warm-up) that reached every watcher.
    complete: usize,
    /// Frames counted that some watcher never got within the wait.
    incomplete: usize,
    last_watcher_ms: Quantiles,
    /// (RSS with W idle subscribed watchers − RSS before any connection) / W.
    kib_per_idle_conn: f64,
    /// (RSS with W watchers − RSS with the first `warm` watchers) / (W − warm).
    kib_per_idle_conn_marginal: f64,
    /// (RSS after the frames − RSS before any connection) / W: buffers grown by writing.
    kib_per_conn_after_frames: f64,
    rss_kib: Rss,
    /// The server's CPU (user + system) per frame.
    server_cpu_ms_per_frame: f64,
    /// This process's CPU (the clients) per frame.
    clients_cpu_ms_per_frame: f64,
    /// Frames per second actually sent.
    sent_per_sec: f64,
    loadavg_1m: f64,
}

#[derive(Debug, serde::Serialize)]
struct Rss {
    before: u64,
    warm: u64,
    watchers: u64,
    after_frames: u64,
    warm_watchers: usize,
}

#[derive(Debug, serde::Serialize)]
struct Run {
    watchers: usize,
    round: usize,
    floor: ServerReport,
    gavel: ServerReport,
    p99_ratio: f64,
    latency_ok: bool,
    memory_ok: bool,
}

pub async fn run(o: FanoutBench) -> anyhow::Result<()> {
    // Ctrl-C drops the bench: its children are killed on drop (and by their parent-death
    // signal if this process dies harder).
    tokio::select! {
        r = bench_fanout(o) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}

async fn bench_fanout(o: FanoutBench) -> anyhow::Result<()> {
    anyhow::ensure!(o.frames >= 1, "at least one frame");
    anyhow::ensure!(o.rate > 0.0, "--rate must be positive");
    anyhow::ensure!(!o.watchers.is_empty(), "no watcher count given");
    let limit = raise_nofile();
    let most = o.watchers.iter().copied().max().unwrap_or(0);
    anyhow::ensure!(
        most >= 1 && (most as u64) + 200 <= limit,
        "{most} watchers need {most} + about 200 open files; this process may open {limit}"
    );

    // Private servers: the bench publishes made-up bids on auction subjects.
    let nats_server = testkit::NatsServer::start_with(testkit::NatsOptions {
        dir: None,
        kill_with_parent: true,
    })
    .await?;
    let db = testkit::TestDb::new().await?;
    let conn = Conn {
        nats_url: nats_server.url(),
        database_url: db.url.clone(),
        partitions: o.partitions,
    };
    let partitions = conn.partitions()?;
    migrate(&conn, 1).await?;
    let pool = store::connect(&conn.database_url, 4).await?;
    let nats = bus::connect(&conn.nats_url, "gavel-bench-fanout").await?;
    let js = bus::jetstream(nats.clone());

    // One event, one lot, opened by a bidder here as the ticker would; then the bidder stops.
    let (event, lots) = crate::bench::setup_event(&pool, 1, 1, 3600, schemas::now_ms()).await?;
    let lot = lots[0];
    let ends_at = schemas::now_ms() + 3_600_000;
    open_lot(&conn, &pool, &js, partitions, lot, ends_at).await?;

    let gavel = Gavel {
        secret: format!("fanout-{}", uuid::Uuid::new_v4().simple()),
        conn,
        js,
        event,
        lot,
        ends_at,
    };
    let total = o.warmup + o.frames;
    let frame_bytes = encode_bid(event, lot, 0, ends_at).len();
    let mut runs = Vec::new();
    for &w in &o.watchers {
        for round in 1..=o.rounds.max(1) {
            say(&o, format!("{w} watchers, round {round}: floor"));
            let floor = phase(&o, w, total, Target::Floor).await?;
            say(&o, format!("{w} watchers, round {round}: gavel edge"));
            let edge = phase(&o, w, total, Target::Gavel(&gavel)).await?;
            let ratio = edge.last_watcher_ms.p99 / floor.last_watcher_ms.p99.max(0.001);
            runs.push(Run {
                watchers: w,
                round,
                latency_ok: ratio <= MAX_RATIO,
                memory_ok: edge.kib_per_idle_conn <= MAX_KIB_PER_CONN,
                p99_ratio: ratio,
                floor,
                gavel: edge,
            });
        }
    }
    // Clients first, then the servers they talk to.
    drop(gavel);
    drop(nats);
    pool.close().await;
    drop(nats_server);
    let _ = db.drop_now().await;

    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    let feed = "floor: `send <n>` on its stdin; gavel: AuctionMsg::NewBid published on \
                auction.<event>.1.bid (JetStream), no bidder in the path";
    if o.json {
        let report = serde_json::json!({
            "bench": "fanout",
            "cpus": cpus,
            "frames": o.frames,
            "warmup": o.warmup,
            "rate_max": o.rate,
            "rounds": o.rounds.max(1),
            "frame_bytes": frame_bytes,
            "feed": feed,
            "clients": "tokio-tungstenite in the bench process, one task per watcher, 4 KiB read buffer",
            "acceptance": {"p99_ratio_max": MAX_RATIO, "kib_per_idle_conn_max": MAX_KIB_PER_CONN},
            "runs": runs,
        });
        println!("{report}");
    } else {
        print_table(&o, cpus, frame_bytes, feed, &runs);
    }
    Ok(())
}

fn say(o: &FanoutBench, line: String) {
    if o.json {
        eprintln!("{line}");
    } else {
        eprintln!("  … {line}");
    }
}

fn print_table(o: &FanoutBench, cpus: usize, frame_bytes: usize, feed: &str, runs: &[Run]) {
    println!(
        "gavel bench fanout: a {frame_bytes}-byte new_bid to every watcher; {cpus} cpus; {} frames \
         (+{} warm-up) per run, at most {}/s, each after the previous reached everyone",
        o.frames, o.warmup, o.rate
    );
    println!("  feed: {feed}");
    println!(
        "  clients: tokio-tungstenite in the bench process (one task each); servers are child \
         processes, memory from /proc/<pid>/status VmRSS"
    );
    println!();
    println!(
        "  {:>8}  {:<6} {:>9} {:>9} {:>9} {:>9}  {:>10} {:>10} {:>10}  {:>9} {:>9} {:>7} {:>5}",
        "watchers",
        "server",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "max ms",
        "KiB/conn",
        "marginal",
        "w/ frames",
        "srv ms/f",
        "cli ms/f",
        "sent/s",
        "load"
    );
    for r in runs {
        for (name, s) in [("floor", &r.floor), ("gavel", &r.gavel)] {
            println!(
                "  {:>8}  {:<6} {:>9.2} {:>9.2} {:>9.2} {:>9.2}  {:>10.2} {:>10.2} {:>10.2}  {:>9.2} {:>9.2} {:>7.1} {:>5.2}{}",
                r.watchers,
                name,
                s.last_watcher_ms.p50,
                s.last_watcher_ms.p90,
                s.last_watcher_ms.p99,
                s.last_watcher_ms.max,
                s.kib_per_idle_conn,
                s.kib_per_idle_conn_marginal,
                s.kib_per_conn_after_frames,
                s.server_cpu_ms_per_frame,
                s.clients_cpu_ms_per_frame,
                s.sent_per_sec,
                s.loadavg_1m,
                if s.incomplete > 0 {
                    format!("  ({} frame(s) missed someone)", s.incomplete)
                } else {
                    String::new()
                }
            );
        }
        println!(
            "  {:>8}  gavel/floor p99 {:.2}x (≤ {MAX_RATIO}: {}); edge {:.2} KiB per idle connection (≤ {MAX_KIB_PER_CONN}: {})",
            "",
            r.p99_ratio,
            if r.latency_ok { "yes" } else { "NO" },
            r.gavel.kib_per_idle_conn,
            if r.memory_ok { "yes" } else { "NO" },
        );
    }
    println!();
    println!(
        "  pNN: over frames, of the time from the trigger to the last watcher's read. KiB/conn: \
         (RSS with W idle subscribed watchers − RSS before any connection) / W; marginal: from \
         the first {} watchers to W; w/ frames: after the run. ms/f: CPU per frame.",
        runs.first()
            .map(|r| r.floor.rss_kib.warm_watchers)
            .unwrap_or(0)
    );
}

// ----- one run of one server -----

/// Gavel's side: the private servers and the open lot.
struct Gavel {
    conn: Conn,
    secret: String,
    js: async_nats::jetstream::Context,
    event: EventId,
    lot: LotId,
    ends_at: i64,
}

enum Target<'a> {
    Floor,
    Gavel(&'a Gavel),
}

/// A started server: the child, where it listens, and how to make it send frame `n`.
struct Server<'a> {
    child: tokio::process::Child,
    pid: u32,
    addr: SocketAddr,
    feed: Feed<'a>,
    /// Issues the watchers' tokens (Gavel); the floor takes anyone.
    tokens: Option<edge::auth::Tokens>,
    event: EventId,
}

enum Feed<'a> {
    Floor(tokio::process::ChildStdin),
    Gavel {
        g: &'a Gavel,
        acks: Vec<async_nats::jetstream::context::PublishAckFuture>,
    },
}

impl Server<'_> {
    async fn send(&mut self, n: u64) -> anyhow::Result<()> {
        match &mut self.feed {
            Feed::Floor(stdin) => {
                stdin.write_all(format!("send {n}\n").as_bytes()).await?;
                stdin.flush().await?;
            }
            Feed::Gavel { g, acks } => {
                let msg = AuctionMsg::NewBid(bid(g.event, g.lot, n, g.ends_at));
                let out = bus::Outgoing::new(
                    subj::auction_bid(g.event, 1),
                    &msg,
                    None,
                    TraceParent::new_root(),
                );
                acks.push(out.send(&g.js).await?);
            }
        }
        Ok(())
    }

    /// A watcher's URL; on the edge with a token of a user of its own (the edge keeps the
    /// sockets of each user).
    fn url(&self) -> String {
        match &self.tokens {
            Some(t) => {
                let (token, _) = t
                    .issue(UserId(uuid::Uuid::new_v4()), edge::auth::Role::Buyer)
                    .expect("a token");
                format!("ws://{}/ws?token={token}", self.addr)
            }
            None => format!("ws://{}/ws", self.addr),
        }
    }
}

async fn start<'a>(target: &Target<'a>) -> anyhow::Result<Server<'a>> {
    match target {
        Target::Floor => {
            let (child, pid, addr, stdin) = spawn_floor().await?;
            Ok(Server {
                child,
                pid,
                addr,
                feed: Feed::Floor(stdin),
                tokens: None,
                event: EventId(uuid::Uuid::new_v4()),
            })
        }
        Target::Gavel(g) => {
            let addr = free_addr()?;
            let (child, pid) = spawn_edge(&g.conn, &g.secret, addr).await?;
            Ok(Server {
                child,
                pid,
                addr,
                feed: Feed::Gavel {
                    g,
                    acks: Vec::new(),
                },
                tokens: Some(edge::auth::Tokens::new(
                    &edge::auth::Secret::new(g.secret.clone()),
                    Duration::from_secs(3600),
                )),
                event: g.event,
            })
        }
    }
}

/// Starts the floor server (`gavel bench floor-server`): the child, its pid, where it listens
/// and its stdin (`send <n>` broadcasts a `new_bid`, `tick <n>` a `timer_update`).
pub(crate) async fn spawn_floor() -> anyhow::Result<(
    tokio::process::Child,
    u32,
    SocketAddr,
    tokio::process::ChildStdin,
)> {
    let mut cmd = gavel_child(&["bench", "floor-server", "--addr", "127.0.0.1:0"])?;
    cmd.stdin(Stdio::piped()).stdout(Stdio::piped());
    let mut child = cmd.spawn()?;
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let stdin = child.stdin.take().expect("piped stdin");
    let stdout = child.stdout.take().expect("piped stdout");
    let mut line = String::new();
    tokio::time::timeout(
        Duration::from_secs(10),
        BufReader::new(stdout).read_line(&mut line),
    )
    .await
    .map_err(|_| anyhow::anyhow!("the floor server did not say where it listens"))??;
    let addr: SocketAddr = line.trim().parse()?;
    Ok((child, pid, addr, stdin))
}

/// What the watchers saw, frame by frame; times in ns since `t0`.
struct Tally {
    t0: Instant,
    watchers: u32,
    sent: Vec<AtomicU64>,
    last: Vec<AtomicU64>,
    got: Vec<AtomicU32>,
    all_in: Notify,
}

impl Tally {
    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }

    /// A watcher read the frame of `version`.
    fn record(&self, version: i64) {
        let at = self.now();
        let Some(n) = version
            .checked_sub(BASE_VERSION)
            .and_then(|n| usize::try_from(n).ok())
            .filter(|&n| n < self.got.len())
        else {
            return;
        };
        self.last[n].fetch_max(at, Ordering::Relaxed);
        if self.got[n].fetch_add(1, Ordering::AcqRel) + 1 == self.watchers {
            self.all_in.notify_one();
        }
    }

    /// Waits until frame `n` reached every watcher, at most `wait`.
    async fn wait_all(&self, n: usize, wait: Duration) {
        let until = tokio::time::Instant::now() + wait;
        while self.got[n].load(Ordering::Acquire) < self.watchers {
            tokio::select! {
                _ = self.all_in.notified() => {}
                _ = tokio::time::sleep_until(until) => return,
            }
        }
    }
}

async fn phase(
    o: &FanoutBench,
    w: usize,
    total: usize,
    target: Target<'_>,
) -> anyhow::Result<ServerReport> {
    let mut server = start(&target).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(server.pid)?;

    let tally = Arc::new(Tally {
        t0: Instant::now(),
        watchers: w as u32,
        sent: (0..total).map(|_| AtomicU64::new(0)).collect(),
        last: (0..total).map(|_| AtomicU64::new(0)).collect(),
        got: (0..total).map(|_| AtomicU32::new(0)).collect(),
        all_in: Notify::new(),
    });
    let stop = CancellationToken::new();
    let subscribed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let mut watchers = JoinSet::new();
    let warm = (w / 10).min(100);
    let mut spawn = |from: usize, to: usize| {
        for _ in from..to {
            let url = server.url();
            let event = server.event;
            let (tally, stop, subscribed, failed, gate) = (
                tally.clone(),
                stop.clone(),
                subscribed.clone(),
                failed.clone(),
                gate.clone(),
            );
            watchers.spawn(async move {
                if let Err(e) = watch(url, event, tally, stop, subscribed, gate).await {
                    if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                        eprintln!("a watcher failed: {e:#}");
                    }
                }
            });
        }
    };
    let all_subscribed = |n: usize| {
        let (subscribed, failed) = (subscribed.clone(), failed.clone());
        async move {
            let until = Instant::now() + Duration::from_secs(30 + n as u64 / 50);
            loop {
                let (s, f) = (
                    subscribed.load(Ordering::Relaxed),
                    failed.load(Ordering::Relaxed),
                );
                anyhow::ensure!(f == 0, "{f} watcher(s) could not connect and subscribe");
                if s >= n {
                    return Ok(());
                }
                anyhow::ensure!(
                    Instant::now() < until,
                    "only {s} of {n} watchers subscribed in time"
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    spawn(0, warm);
    all_subscribed(warm).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_warm = rss_kib(server.pid)?;
    spawn(warm, w);
    all_subscribed(w).await?;
    // Let the last handshakes' temporaries go before reading the idle figure.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_kib(server.pid)?;

    let cpu_server = cpu_ms(server.pid)?;
    let cpu_self = cpu_ms(std::process::id())?;
    let load = loadavg();
    let interval = Duration::from_secs_f64(1.0 / o.rate);
    let started = Instant::now();
    let mut due = tokio::time::Instant::now();
    for n in 0..total {
        if n > 0 {
            tally.wait_all(n - 1, FRAME_WAIT).await;
        }
        tokio::time::sleep_until(due).await;
        due = tokio::time::Instant::now() + interval;
        tally.sent[n].store(tally.now(), Ordering::Relaxed);
        server.send(n as u64).await?;
    }
    tally.wait_all(total - 1, FRAME_WAIT * 2).await;
    let sending = started.elapsed().as_secs_f64();
    let cpu_server = cpu_ms(server.pid)? - cpu_server;
    let cpu_self = cpu_ms(std::process::id())? - cpu_self;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_after = rss_kib(server.pid)?;

    if let Feed::Gavel { acks, .. } = &mut server.feed {
        for ack in acks.drain(..) {
            ack.await?;
        }
    }
    // The server goes first, then the clients (their sockets end on the close).
    let _ = server.child.kill().await;
    stop.cancel();
    watchers.shutdown().await;

    let mut h = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let (mut complete, mut incomplete) = (0, 0);
    for n in o.warmup..total {
        if tally.got[n].load(Ordering::Relaxed) < w as u32 {
            incomplete += 1;
            continue;
        }
        complete += 1;
        let lat_ns = tally.last[n]
            .load(Ordering::Relaxed)
            .saturating_sub(tally.sent[n].load(Ordering::Relaxed));
        h.record((lat_ns / 1_000).max(1))?;
    }
    let ms = |v: u64| v as f64 / 1_000.0;
    let per = |from: u64, to: u64, n: usize| (to as f64 - from as f64) / n.max(1) as f64;
    Ok(ServerReport {
        complete,
        incomplete,
        last_watcher_ms: Quantiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        },
        kib_per_idle_conn: per(rss_before, rss_idle, w),
        kib_per_idle_conn_marginal: per(rss_warm, rss_idle, w - warm),
        kib_per_conn_after_frames: per(rss_before, rss_after, w),
        rss_kib: Rss {
            before: rss_before,
            warm: rss_warm,
            watchers: rss_idle,
            after_frames: rss_after,
            warm_watchers: warm,
        },
        server_cpu_ms_per_frame: cpu_server / total as f64,
        clients_cpu_ms_per_frame: cpu_self / total as f64,
        sent_per_sec: total as f64 / sending,
        loadavg_1m: load,
    })
}

/// One watcher: connects, subscribes, waits for its snapshot, then notes every frame it reads.
async fn watch(
    url: String,
    event: EventId,
    tally: Arc<Tally>,
    stop: CancellationToken,
    subscribed: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
) -> anyhow::Result<()> {
    let permit = gate.acquire_owned().await?;
    let mut attempt = 0;
    let (mut ws, _) = loop {
        match tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), true)
            .await
        {
            Ok(ok) => break ok,
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::debug!(error = %e, "watcher connect retried");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let subscribe = serde_json::json!({"type": "subscribe", "event_id": event}).to_string();
    ws.send(Message::text(subscribe)).await?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no snapshot in 30 s"))?
            .ok_or_else(|| anyhow::anyhow!("closed before the snapshot"))??;
        if let Message::Text(t) = msg {
            anyhow::ensure!(
                t.as_str().starts_with(r#"{"type":"snapshot""#),
                "the first frame is not a snapshot: {}",
                t.as_str()
            );
            break;
        }
    }
    drop(permit);
    subscribed.fetch_add(1, Ordering::Relaxed);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return Ok(()),
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    if let Some(v) = version_of(t.as_str()) {
                        tally.record(v);
                    }
                }
                Some(Ok(_)) => {}
                // The server went away at the end of the run.
                None | Some(Err(_)) => return Ok(()),
            }
        }
    }
}

/// The `version` of a `new_bid` frame, read without parsing the rest (the clients share the
/// cores with the servers; they should spend as little as possible).
fn version_of(frame: &str) -> Option<i64> {
    if !frame.starts_with(r#"{"type":"new_bid""#) {
        return None;
    }
    let at = frame.find(r#""version":"#)? + r#""version":"#.len();
    let digits = &frame[at..];
    let end = digits
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(digits.len());
    digits[..end].parse().ok()
}

/// Opens the lot through its ordered subject with a bidder running here, then stops the bidder.
async fn open_lot(
    conn: &Conn,
    pool: &store::PgPool,
    js: &async_nats::jetstream::Context,
    partitions: u16,
    lot: LotId,
    ends_at: i64,
) -> anyhow::Result<()> {
    let shutdown = CancellationToken::new();
    let bidder = tokio::spawn(bidder::run(
        bidder::Config::new(partitions),
        bus::connect(&conn.nats_url, "gavel-bench-bidder").await?,
        pool.clone(),
        shutdown.clone(),
    ));
    bus::Outgoing::new(
        subj::bids(lot, partitions),
        &BidCommand::Open {
            lot_id: lot,
            ends_at,
        },
        None,
        TraceParent::new_root(),
    )
    .send(js)
    .await?
    .await?;
    let opened = testkit::wait_until(Duration::from_secs(60), "the lot is open", || async {
        store::bidding::count_in_state(pool, &[lot], schemas::LotState::Open)
            .await
            .is_ok_and(|n| n == 1)
    })
    .await;
    shutdown.cancel();
    bidder.await??;
    opened
}

/// The `new_bid` of frame `n` (the same for both servers, so both send the same bytes).
fn bid(event: EventId, lot: LotId, n: u64, ends_at: i64) -> NewBid {
    let amount = 100_000 + 2_500 * n as i64;
    NewBid {
        lot_id: lot,
        event_id: event,
        lane: 1,
        amount,
        bidder: "Bidder 3F9A21".into(),
        bid_count: n as i32 + 1,
        min_next: amount + 2_500,
        ends_at,
        version: BASE_VERSION + n as i64,
        server_time: schemas::now_ms(),
    }
}

fn encode_bid(event: EventId, lot: LotId, n: u64, ends_at: i64) -> Utf8Bytes {
    Utf8Bytes::from(
        serde_json::to_string(&ServerFrame::NewBid(bid(event, lot, n, ends_at)))
            .expect("frames serialise"),
    )
}

/// The floor's tick `n`: a `timer_update` whose `server_time` is `n` (the bench's name for it).
fn encode_tick(lot: LotId, n: i64, ends_at: i64) -> Utf8Bytes {
    Utf8Bytes::from(
        serde_json::to_string(&ServerFrame::TimerUpdate(schemas::frames::TimerUpdate {
            lot_id: lot,
            lane: 1,
            state: schemas::LotState::Open,
            ends_at,
            remaining_ms: (ends_at - n).max(0),
            server_time: n,
            version: BASE_VERSION,
        }))
        .expect("frames serialise"),
    )
}

// ----- the floor -----

/// `gavel bench floor-server`: a bare tokio-tungstenite broadcast server. Each socket task
/// answers the first client frame with a small snapshot and from then on writes every frame
/// of the broadcast channel, as many as wait (up to [`FLOOR_BATCH`]) per socket write. Frames
/// are serialised once, when `send <n>` arrives on stdin; it stops when stdin closes (the bench
/// ended).
pub async fn floor_server(o: FloorServer) -> anyhow::Result<()> {
    raise_nofile();
    let listener = tokio::net::TcpListener::bind(o.addr).await?;
    println!("{}", listener.local_addr()?);
    let (feed, _) = broadcast::channel::<Utf8Bytes>(1024);
    let (event, lot) = (EventId(uuid::Uuid::new_v4()), LotId(uuid::Uuid::new_v4()));
    let ends_at = schemas::now_ms() + 3_600_000;
    let hello = Utf8Bytes::from(
        serde_json::to_string(&ServerFrame::Snapshot {
            event_id: event,
            server_time: schemas::now_ms(),
            lanes: vec![],
        })
        .expect("frames serialise"),
    );
    let accept = {
        let feed = feed.clone();
        async move {
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                let _ = tcp.set_nodelay(true);
                tokio::spawn(floor_socket(tcp, feed.clone(), hello.clone()));
            }
        }
    };
    let commands = async move {
        let mut lines = BufReader::new(tokio::io::stdin()).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(n) = line
                .strip_prefix("send ")
                .and_then(|n| n.trim().parse().ok())
            {
                let _ = feed.send(encode_bid(event, lot, n, ends_at));
            } else if let Some(n) = line
                .strip_prefix("tick ")
                .and_then(|n| n.trim().parse().ok())
            {
                let _ = feed.send(encode_tick(lot, n, ends_at));
            }
        }
    };
    tokio::select! {
        _ = accept => {}
        _ = commands => {}
    }
    Ok(())
}

async fn floor_socket(tcp: TcpStream, feed: broadcast::Sender<Utf8Bytes>, hello: Utf8Bytes) {
    let Ok(mut ws) = tokio_tungstenite::accept_async_with_config(tcp, Some(ws_config())).await
    else {
        return;
    };
    let mut rx: Option<broadcast::Receiver<Utf8Bytes>> = None;
    loop {
        tokio::select! {
            frame = next_frame(&mut rx) => {
                let Some(first) = frame else { return };
                if ws.feed(Message::Text(first)).await.is_err() {
                    return;
                }
                if let Some(rx) = rx.as_mut() {
                    for _ in 1..FLOOR_BATCH {
                        let Ok(more) = rx.try_recv() else { break };
                        if ws.feed(Message::Text(more)).await.is_err() {
                            return;
                        }
                    }
                }
                if ws.flush().await.is_err() {
                    return;
                }
            }
            msg = ws.next() => match msg {
                Some(Ok(Message::Text(_))) => {
                    if rx.is_none() {
                        rx = Some(feed.subscribe());
                        if ws.send(Message::Text(hello.clone())).await.is_err() {
                            return;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => return,
                Some(Ok(_)) => {}
            }
        }
    }
}

/// The next broadcast frame once subscribed; never, before.
async fn next_frame(rx: &mut Option<broadcast::Receiver<Utf8Bytes>>) -> Option<Utf8Bytes> {
    let Some(rx) = rx else {
        return std::future::pending().await;
    };
    loop {
        match rx.recv().await {
            Ok(frame) => return Some(frame),
            Err(broadcast::error::RecvError::Lagged(_)) => continue,
            Err(broadcast::error::RecvError::Closed) => return None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_a_new_bid_frame_only() {
        let (e, l) = (EventId(uuid::Uuid::new_v4()), LotId(uuid::Uuid::new_v4()));
        let frame = encode_bid(e, l, 7, 1);
        assert_eq!(version_of(frame.as_str()), Some(BASE_VERSION + 7));
        assert_eq!(version_of(r#"{"type":"snapshot","version":3}"#), None);
    }
}
