//! `gavel bench night`: rehearse an auction night over WebSockets and measure it.
//!
//! The whole stack runs on private servers (a nats-server and a fresh database), each service a
//! child process so its CPU (and the edge's memory) is read from `/proc` apart from the clients':
//! `gavel edge`, `gavel bidder`, `gavel ticker`. The bench sets up an admin, its bidders, its
//! watchers' accounts, an event of L lanes and its lots through the REST API, connects W watcher
//! WebSockets (idle first: the edge's memory per connection) and B bidders, starts the event and
//! lets the bidders bid for D seconds. A bidder is closed-loop: it bids the `min_next` of what it
//! last saw (a frame or its last `bid_result`), with the high it saw and a fresh idempotency key,
//! waits for the answer, and bids again (paced to `--rate` overall when one is given); while it
//! holds the high bid it waits to be outbid. Bidder `i` bids on lane `i mod L`.
//!
//! What is measured (see [`Report`]): decided bids/s by outcome and the round trip (bid sent →
//! `bid_result`); a `new_bid` to the last watcher (from the moment the bench's own NATS
//! subscription hears the announcement, which is when the edge can first have it); the spread of
//! each tick over watchers; hammer lateness (the close's `server_time` against the lot's last
//! deadline); the clients' clock-offset estimate from `ping`/`pong` (every process shares one
//! clock, so any estimate other than 0 is error); the edge's memory per idle connection; the CPU
//! of every process.
//!
//! Then the invariants (any violation fails the run): the database audit
//! ([`store::audit::check`]: amounts rise per lot, one decision per bid, one settlement per sold
//! lot, lot rows agree with their bids), one `bid_result` per bid sent, every watcher's final
//! picture equal to the database (the ticker is stopped first so the picture holds still), and
//! no frame seen out of version order by any client.
//!
//! `--floor` then runs the bare broadcast of `bench fanout` with the same W watchers, fed the
//! same rate of `new_bid`s and ticks, and prints Gavel's fan-out figures as ratios to it.
//! `--scenario 1|2|3` are the three rehearsals; any flag given overrides the preset.
//!
//! Read [`NightBench`] and [`Plan`], then [`night`] top to bottom; the clients are in
//! [`client`], what they see in [`View`].

use crate::bench_kit::{
    cpu_ms, free_addr, gavel_child, loadavg, machine_jiffies, postgres_processes, raise_nofile,
    rss_kib, spawn_edge, with_conn, ws_config, Quantiles,
};
use crate::{migrate, Conn};
use clap::Args;
use futures::{SinkExt, StreamExt};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use schemas::frames::{LotView, ServerFrame};
use schemas::nats::{AuctionMsg, NatsMessage};
use schemas::{EventId, LotId, LotState, Outcome};
use serde_json::json;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;
use tokio::sync::Semaphore;
use tokio::task::JoinSet;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

/// Handshakes in flight at once while clients connect.
const CONNECTING: usize = 64;
/// A bid not answered in this long counts as unanswered (and fails the run).
const ANSWER_WAIT: Duration = Duration::from_secs(10);
/// Starting price of every lot, in cents.
const STARTING_PRICE: i64 = 1_000;
/// Watchers that ping the edge every [`PING_EVERY`] for the clock-offset figure.
const PINGERS: usize = 50;
const PING_EVERY: Duration = Duration::from_secs(2);
const FANOUT_RATIO_MAX: f64 = 1.25;
const KIB_PER_CONN_MAX: f64 = 16.0;

#[derive(Args, Debug, Clone)]
pub struct NightBench {
    /// The rehearsals: 1 = one hot lot, 50 bidders, 100 watchers, 20 s (throughput and
    /// round trip); 2 = 10,000 watchers, 100 bidders at 500 bids/s, with the floor (fan-out);
    /// 3 = three lanes of 2-second lots for 5 minutes (the clock and every invariant). Flags
    /// given as well override the preset.
    #[arg(long, value_parser = clap::value_parser!(u8).range(1..=3))]
    scenario: Option<u8>,
    /// Watcher WebSockets (subscribed, never bidding).
    #[arg(long)]
    watchers: Option<usize>,
    /// Closed-loop bidders, each a verified user with its own WebSocket.
    #[arg(long)]
    bidders: Option<usize>,
    /// Lanes of the event (bidder i bids on lane i mod L).
    #[arg(long)]
    lanes: Option<i32>,
    /// Lots per lane (default: enough for the run at --lot-seconds each).
    #[arg(long)]
    lots_per_lane: Option<usize>,
    /// Seconds of bidding.
    #[arg(long)]
    duration: Option<f64>,
    /// Bids per second over all bidders (each bidder paced to rate / B); 0 = as fast as the
    /// answers come.
    #[arg(long)]
    rate: Option<f64>,
    /// Seconds on the clock when a lot opens.
    #[arg(long)]
    lot_seconds: Option<i32>,
    /// Seconds an accepted bid puts back on the clock.
    #[arg(long)]
    reset_seconds: Option<i32>,
    /// Bidders stop bidding on a lot once it has this many bids (so lots run out and close);
    /// unset: no limit.
    #[arg(long)]
    bids_per_lot: Option<i32>,
    /// Every n-th lot gets a reserve no bid reaches (so it closes unsold); 0 = none.
    #[arg(long)]
    unsold_every: Option<usize>,
    /// The ticker's tick period, in ms.
    #[arg(long)]
    tick_ms: Option<i64>,
    /// Also run the bare tokio-tungstenite broadcast (the floor) with the same watchers, fed
    /// the same frames, and print the fan-out figures as ratios to it.
    #[arg(long)]
    floor: bool,
    /// Seconds the floor runs (default: the run's duration, at most 20).
    #[arg(long)]
    floor_seconds: Option<f64>,
    /// When the floor sends its `new_bid`s: `replay` at the moments Gavel's run announced its
    /// own (the same gaps and bursts), or `even`, evenly spaced at the same rate.
    #[arg(long, value_enum, default_value_t = FloorPace::Replay)]
    floor_pace: FloorPace,
    /// Watchers share this many accounts (a user's many devices; registering 10,000 users
    /// would be a bench of argon2).
    #[arg(long, default_value_t = 20)]
    watcher_accounts: usize,
    /// Partitions of BIDS in the private NATS.
    #[arg(long, default_value_t = 16)]
    partitions: u32,
    /// Print the report as JSON (progress goes to stderr either way).
    #[arg(long)]
    json: bool,
}

/// The run, with every preset and default applied.
#[derive(Debug, Clone, serde::Serialize)]
struct Plan {
    scenario: Option<u8>,
    watchers: usize,
    bidders: usize,
    lanes: i32,
    lots_per_lane: usize,
    duration_s: f64,
    rate: f64,
    lot_seconds: i32,
    reset_seconds: i32,
    bids_per_lot: Option<i32>,
    unsold_every: usize,
    tick_ms: i64,
    floor: bool,
    floor_seconds: f64,
    floor_pace: FloorPace,
    watcher_accounts: usize,
}

/// How the floor paces its `new_bid`s.
#[derive(clap::ValueEnum, Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
enum FloorPace {
    /// At the offsets Gavel's run announced them.
    Replay,
    /// Evenly spaced at Gavel's rate.
    Even,
}

impl Plan {
    fn of(o: &NightBench) -> anyhow::Result<Plan> {
        // (watchers, bidders, lanes, duration, rate, lot_seconds, reset_seconds, bids_per_lot,
        //  unsold_every, floor)
        type Preset = (
            usize,
            usize,
            i32,
            f64,
            f64,
            i32,
            i32,
            Option<i32>,
            usize,
            bool,
        );
        let p: Preset = match o.scenario {
            Some(1) => (100, 50, 1, 20.0, 0.0, 120, 30, None, 0, false),
            Some(2) => (10_000, 100, 1, 30.0, 500.0, 120, 30, None, 0, true),
            Some(3) => (100, 30, 3, 300.0, 60.0, 2, 2, Some(5), 5, false),
            _ => (100, 10, 1, 10.0, 0.0, 120, 30, None, 0, false),
        };
        let duration_s = o.duration.unwrap_or(p.3);
        let lot_seconds = o.lot_seconds.unwrap_or(p.5);
        let plan = Plan {
            scenario: o.scenario,
            watchers: o.watchers.unwrap_or(p.0),
            bidders: o.bidders.unwrap_or(p.1),
            lanes: o.lanes.unwrap_or(p.2),
            lots_per_lane: o
                .lots_per_lane
                .unwrap_or((duration_s / lot_seconds.max(1) as f64).ceil() as usize + 2),
            duration_s,
            rate: o.rate.unwrap_or(p.4),
            lot_seconds,
            reset_seconds: o.reset_seconds.unwrap_or(p.6),
            bids_per_lot: o.bids_per_lot.or(p.7),
            unsold_every: o.unsold_every.unwrap_or(p.8),
            tick_ms: o.tick_ms.unwrap_or(1000),
            floor: o.floor || p.9,
            floor_seconds: o.floor_seconds.unwrap_or(duration_s.min(20.0)),
            floor_pace: o.floor_pace,
            watcher_accounts: 0,
        };
        let plan = Plan {
            watcher_accounts: o.watcher_accounts.clamp(1, plan.watchers.max(1)),
            ..plan
        };
        anyhow::ensure!(plan.lanes >= 1 && plan.lanes <= 64, "1 to 64 lanes");
        anyhow::ensure!(
            plan.bidders >= 2 * plan.lanes as usize,
            "at least two bidders per lane (a bidder cannot outbid itself)"
        );
        anyhow::ensure!(plan.watchers >= 1, "at least one watcher");
        anyhow::ensure!(plan.duration_s > 0.0, "--duration must be positive");
        anyhow::ensure!(plan.rate >= 0.0, "--rate must not be negative");
        anyhow::ensure!(plan.lots_per_lane >= 1, "at least one lot per lane");
        Ok(plan)
    }
}

pub async fn run(o: NightBench) -> anyhow::Result<()> {
    // Ctrl-C drops the bench: its children are killed on drop (and by their parent-death
    // signal if this process dies harder).
    tokio::select! {
        r = night(o) => r,
        _ = tokio::signal::ctrl_c() => anyhow::bail!("interrupted"),
    }
}

// ----- the run -----

async fn night(o: NightBench) -> anyhow::Result<()> {
    let plan = Plan::of(&o)?;
    let limit = raise_nofile();
    let sockets = (plan.watchers + plan.bidders) as u64;
    anyhow::ensure!(
        sockets + 300 <= limit,
        "{sockets} WebSockets need {sockets} + about 300 open files; this process may open \
         {limit} (raise the hard limit: ulimit -Hn)"
    );
    let bars = Bars::new(o.json);

    // Private servers, and the services as children.
    let step = bars.step("starting nats-server, a database, edge, bidder and ticker");
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
    conn.partitions()?;
    migrate(&conn, 1).await?;
    let pool = store::connect(&conn.database_url, 4).await?;
    let secret = format!("night-{}", uuid::Uuid::new_v4().simple());
    let addr = free_addr()?;
    let (edge, _) = spawn_edge(&conn, &secret, addr).await?;
    let mut bidder = {
        let mut cmd = gavel_child(&["bidder"])?;
        with_conn(&mut cmd, &conn);
        cmd.spawn()?
    };
    let bidder_pid = bidder.id().unwrap_or(0);
    let mut ticker = {
        let mut cmd = gavel_child(&["ticker"])?;
        with_conn(&mut cmd, &conn);
        cmd.env("GAVEL_TICK_MS", plan.tick_ms.to_string());
        cmd.spawn()?
    };
    let ticker_pid = ticker.id().unwrap_or(0);
    let nats_pid = nats_server.pid().unwrap_or(0);
    step.finish();

    // Users, the event and its lots through the REST API.
    let rest = Rest::new(addr);
    let setup = setup(&rest, &pool, &plan, &bars).await?;
    let nats = bus::connect(&conn.nats_url, "gavel-bench-night").await?;
    // The setup's password hashes grew the edge by tens of MB that its allocator gives back
    // only slowly: the watchers get a fresh edge (edges are stateless), so its memory before
    // and after them is the connections' alone.
    drop(edge);
    let addr = free_addr()?;
    let (mut edge, edge_pid) = spawn_edge(&conn, &secret, addr).await?;
    let rest = Rest::new(addr);

    // Watchers, idle and subscribed: the edge's memory per connection.
    let t0 = Instant::now();
    let epoch0_us = now_us();
    let shared = Arc::new(Shared::new(t0));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss_before = rss_kib(edge_pid)?;
    let stop_clients = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients: JoinSet<anyhow::Result<BidderStats>> = JoinSet::new();
    let mut views = Vec::with_capacity(plan.watchers);
    let connecting = bars.bar(plan.watchers as u64, "watchers subscribed");
    for i in 0..plan.watchers {
        let view = Arc::new(Mutex::new(View::default()));
        views.push(view.clone());
        let url = format!(
            "ws://{addr}/ws?token={}",
            setup.watcher_tokens[i % setup.watcher_tokens.len()]
        );
        let role = Role::Watcher { ping: i < PINGERS };
        let c = ClientCtx {
            event: setup.event,
            shared: shared.clone(),
            view,
            stop: stop_clients.clone(),
            subscribed: subscribed.clone(),
            gate: gate.clone(),
        };
        let failed = failed.clone();
        clients.spawn(async move {
            let r = client(url, role, c).await;
            if let Err(e) = &r {
                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("a client failed: {e:#}");
                }
            }
            r
        });
    }
    wait_subscribed(&subscribed, &failed, plan.watchers, &connecting).await?;
    connecting.finish();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_kib(edge_pid)?;
    let kib_per_conn = (rss_idle as f64 - rss_before as f64) / plan.watchers as f64;

    // Bidders: connected and subscribed; they bid once the run starts.
    let go = CancellationToken::new();
    let stop_bidding = CancellationToken::new();
    let connecting = bars.bar(plan.bidders as u64, "bidders subscribed");
    for (i, token) in setup.bidder_tokens.iter().enumerate() {
        let url = format!("ws://{addr}/ws?token={token}");
        let pace = if plan.rate > 0.0 {
            Some(Duration::from_secs_f64(plan.bidders as f64 / plan.rate))
        } else {
            None
        };
        let role = Role::Bidder(BidderCfg {
            n: i,
            lane: (i % plan.lanes as usize) as i32 + 1,
            pace,
            cap: plan.bids_per_lot,
            go: go.clone(),
            stop: stop_bidding.clone(),
        });
        let c = ClientCtx {
            event: setup.event,
            shared: shared.clone(),
            view: Arc::new(Mutex::new(View::default())),
            stop: stop_clients.clone(),
            subscribed: subscribed.clone(),
            gate: gate.clone(),
        };
        let failed = failed.clone();
        clients.spawn(async move {
            let r = client(url, role, c).await;
            if let Err(e) = &r {
                if failed.fetch_add(1, Ordering::Relaxed) == 0 {
                    eprintln!("a client failed: {e:#}");
                }
            }
            r
        });
    }
    {
        let base = plan.watchers;
        let sub = subscribed.clone();
        let fail = failed.clone();
        let until = Instant::now() + Duration::from_secs(60);
        loop {
            let s = sub.load(Ordering::Relaxed);
            connecting.set_position(s.saturating_sub(base) as u64);
            anyhow::ensure!(
                fail.load(Ordering::Relaxed) == 0,
                "a client could not connect"
            );
            if s >= base + plan.bidders {
                break;
            }
            anyhow::ensure!(Instant::now() < until, "bidders did not subscribe in 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        connecting.finish();
    }

    // The auction's own announcements: when the edge can first have each new_bid, and each
    // lot's deadline and close.
    let monitor = Monitor::start(&nats, setup.event, shared.clone()).await?;

    // Start the event; the run begins once every lane's first lot is open.
    let step = bars.step("starting the event");
    rest.post(
        &format!("/api/admin/events/{}/start", setup.event),
        Some(&setup.admin_token),
        json!({}),
    )
    .await?;
    testkit::wait_until(
        Duration::from_secs(30),
        "every lane's first lot opens",
        || {
            let m = monitor.state.clone();
            let lanes = plan.lanes as usize;
            async move { m.lock().expect("monitor").opened >= lanes }
        },
    )
    .await?;
    step.finish();

    let (pg_backends, pg_background) = postgres_processes(&db.name);
    let cpu = CpuWindow::start(&[
        ("edge", vec![edge_pid]),
        ("bidder", vec![bidder_pid]),
        ("ticker", vec![ticker_pid]),
        ("nats-server", vec![nats_pid]),
        ("postgres", pg_backends),
        ("postgres background (shared)", pg_background),
        ("bench clients", vec![std::process::id()]),
    ]);
    let load_start = loadavg();
    let started = Instant::now();
    go.cancel();
    let running = bars.bar((plan.duration_s * 10.0) as u64, "bidding");
    let end = started + Duration::from_secs_f64(plan.duration_s);
    while Instant::now() < end {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let secs = started.elapsed().as_secs_f64();
        let decided = shared.decided.load(Ordering::Relaxed);
        running.set_position((secs * 10.0) as u64);
        running.set_message(format!(
            "{decided} decided ({:.0}/s), {} accepted",
            decided as f64 / secs,
            shared.accepted.load(Ordering::Relaxed)
        ));
    }
    stop_bidding.cancel();
    let window = started.elapsed();
    let cpu = cpu.finish(window);
    let load_end = loadavg();
    let decided_in_window = shared.decided.load(Ordering::Relaxed);
    running.finish();

    // The bidders finish their last bid; then the clock stops, so every picture can settle.
    let step = bars.step("bidders finishing, stopping the ticker");
    let mut bidder_stats = BidderStats::default();
    let bidders_done = Instant::now() + ANSWER_WAIT + Duration::from_secs(5);
    while shared.bidders_done.load(Ordering::Relaxed) < plan.bidders
        && Instant::now() < bidders_done
    {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop_service(&mut ticker, ticker_pid).await;
    step.finish();

    let step = bars.step("checking the invariants");
    let lots = setup.lots.clone();
    let mut invariants = Invariants::default();
    // Every watcher's picture against the database, until they agree (frames in flight) or
    // five seconds pass.
    let until = Instant::now() + Duration::from_secs(5);
    tokio::time::sleep(Duration::from_millis(500)).await;
    loop {
        let truth = Truth::read(&pool, setup.event, plan.lanes).await?;
        let found = compare(&views, &truth);
        if found.is_empty() || Instant::now() >= until {
            invariants.watchers_vs_db = found;
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    stop_clients.cancel();
    while let Some(r) = clients.join_next().await {
        if let Ok(Ok(s)) = r {
            bidder_stats.merge(s);
        }
    }
    let mut dropped: BTreeMap<String, usize> = BTreeMap::new();
    for v in &views {
        let v = v.lock().expect("view");
        if let Some(why) = &v.dropped {
            *dropped.entry(why.clone()).or_default() += 1;
        }
        invariants.out_of_order += v.out_of_order;
        invariants
            .out_of_order_examples
            .extend(v.out_of_order_examples.iter().cloned());
    }
    invariants.out_of_order += bidder_stats.out_of_order;
    invariants
        .out_of_order_examples
        .extend(bidder_stats.out_of_order_examples.iter().cloned());
    invariants.out_of_order_examples.truncate(10);
    invariants.unanswered = bidder_stats.unanswered;
    invariants.answered_twice = bidder_stats.answered_twice;
    invariants.audit = store::audit::check(&pool, Some(&lots))
        .await?
        .iter()
        .map(|v| v.to_string())
        .collect();
    step.finish();

    // The figures of Gavel's run, then its servers go (the floor gets the machine).
    let gavel = Figures::of(&shared, &monitor, plan.watchers, epoch0_us, kib_per_conn);
    let announced_ns: Vec<u64> = monitor
        .state
        .lock()
        .expect("monitor")
        .announced
        .values()
        .copied()
        .collect();
    let monitor_summary = monitor.summary();
    drop(monitor);
    let _ = edge.kill().await;
    let _ = bidder.kill().await;
    drop(nats);
    pool.close().await;
    drop(nats_server);
    let _ = db.drop_now().await;

    let floor = if plan.floor {
        let clock = match plan.floor_pace {
            FloorPace::Replay => FloorClock::replay(&announced_ns, plan.tick_ms),
            FloorPace::Even => {
                let rate = (gavel.new_bids as f64 / window.as_secs_f64()).max(1.0);
                FloorClock::even(rate, plan.floor_seconds, plan.tick_ms)
            }
        };
        Some(run_floor(&plan, clock, &bars).await?)
    } else {
        None
    };

    let report = Report::new(
        &plan,
        window,
        decided_in_window,
        bidder_stats,
        gavel,
        floor,
        monitor_summary,
        cpu,
        (load_start, load_end),
        invariants,
        dropped,
    );
    if o.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        report.print();
    }
    let n = report.invariants.count();
    anyhow::ensure!(n == 0, "{n} invariant violation(s)");
    Ok(())
}

/// SIGTERM (the service drains), then SIGKILL after 10 s.
async fn stop_service(child: &mut tokio::process::Child, pid: u32) {
    let _ = tokio::process::Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .await;
    if tokio::time::timeout(Duration::from_secs(10), child.wait())
        .await
        .is_err()
    {
        let _ = child.kill().await;
    }
}

async fn wait_subscribed(
    subscribed: &AtomicUsize,
    failed: &AtomicUsize,
    n: usize,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let until = Instant::now() + Duration::from_secs(30 + n as u64 / 50);
    loop {
        let (s, f) = (
            subscribed.load(Ordering::Relaxed),
            failed.load(Ordering::Relaxed),
        );
        bar.set_position(s as u64);
        anyhow::ensure!(f == 0, "{f} client(s) could not connect and subscribe");
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

fn now_us() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_micros() as u64)
        .unwrap_or(0)
}

// ----- progress -----

/// Progress bars on stderr (hidden when stderr is not a terminal: indicatif draws nothing).
struct Bars {
    json: bool,
}

impl Bars {
    fn new(json: bool) -> Self {
        Bars { json }
    }

    fn step(&self, what: &str) -> ProgressBar {
        let b = ProgressBar::new_spinner();
        b.set_style(
            ProgressStyle::with_template("  {spinner} {msg} ({elapsed})")
                .expect("a valid template"),
        );
        b.enable_steady_tick(Duration::from_millis(120));
        b.set_message(what.to_owned());
        if !self.json && b.is_hidden() {
            eprintln!("  … {what}");
        }
        b
    }

    fn bar(&self, len: u64, what: &str) -> ProgressBar {
        let b = ProgressBar::new(len);
        b.set_style(
            ProgressStyle::with_template(&format!(
                "  {what:<20} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}})"
            ))
            .expect("a valid template")
            .progress_chars("=> "),
        );
        if !self.json && b.is_hidden() {
            eprintln!("  … {what} ({len})");
        }
        b
    }
}

// ----- setup through REST -----

struct Rest {
    http: reqwest::Client,
    base: String,
}

impl Rest {
    fn new(addr: std::net::SocketAddr) -> Self {
        Rest {
            http: reqwest::Client::new(),
            base: format!("http://{addr}"),
        }
    }

    async fn post(
        &self,
        path: &str,
        token: Option<&str>,
        body: serde_json::Value,
    ) -> anyhow::Result<serde_json::Value> {
        let mut req = self.http.post(format!("{}{path}", self.base)).json(&body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let resp = req.send().await?;
        let status = resp.status();
        let text = resp.text().await?;
        anyhow::ensure!(status.is_success(), "POST {path}: {status} {text}");
        Ok(serde_json::from_str(&text).unwrap_or(serde_json::Value::Null))
    }
}

struct Setup {
    admin_token: String,
    bidder_tokens: Vec<String>,
    watcher_tokens: Vec<String>,
    event: EventId,
    lots: Vec<LotId>,
}

fn field(v: &serde_json::Value, name: &str) -> anyhow::Result<String> {
    v.get(name)
        .and_then(|x| x.as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no `{name}` in {v}"))
}

async fn setup(
    rest: &Rest,
    pool: &store::PgPool,
    plan: &Plan,
    bars: &Bars,
) -> anyhow::Result<Setup> {
    const PASSWORD: &str = "night-bench-password";
    let run = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    // The first admin is made as `gavel user add` makes it; everything else goes through REST.
    let admin_email = format!("admin-{run}@gavel.test");
    let hash = tokio::task::spawn_blocking(|| store::users::hash_password(PASSWORD)).await??;
    store::users::create_user(pool, &admin_email, &hash, "Bench admin", true, true).await?;
    let login = |email: String| async move {
        let r = rest
            .post(
                "/api/auth/login",
                None,
                json!({"email": email, "password": PASSWORD}),
            )
            .await?;
        field(&r, "token")
    };
    let admin = login(admin_email).await?;
    let admin = admin.as_str();

    let accounts = plan.watcher_accounts;
    let bar = bars.bar((plan.bidders + accounts) as u64, "users (register, login)");
    let people: Vec<(usize, bool)> = (0..plan.bidders)
        .map(|i| (i, true))
        .chain((0..accounts).map(|i| (i, false)))
        .collect();
    let tokens: Vec<(bool, String)> = futures::stream::iter(people)
        .map(|(i, bidder)| {
            let bar = bar.clone();
            let run = run.clone();
            let login = &login;
            async move {
                let kind = if bidder { "bidder" } else { "watcher" };
                let email = format!("{kind}-{i}-{run}@gavel.test");
                let user = rest
                    .post(
                        "/api/auth/register",
                        None,
                        json!({"email": email, "password": PASSWORD, "name": format!("Night {kind} {i}")}),
                    )
                    .await?;
                if bidder {
                    let id = field(&user, "id")?;
                    rest.post(&format!("/api/admin/users/{id}/verify"), Some(admin), json!({}))
                        .await?;
                }
                let token = login(email).await?;
                bar.inc(1);
                anyhow::Ok((bidder, token))
            }
        })
        .buffer_unordered(4)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    bar.finish();
    let bidder_tokens: Vec<String> = tokens
        .iter()
        .filter(|(b, _)| *b)
        .map(|(_, t)| t.clone())
        .collect();
    let watcher_tokens: Vec<String> = tokens
        .into_iter()
        .filter(|(b, _)| !*b)
        .map(|(_, t)| t)
        .collect();

    let vendor = rest
        .post(
            "/api/admin/vendors",
            Some(admin),
            json!({"name": "Night Motors", "contact": "night@gavel.test"}),
        )
        .await?;
    let vendor = field(&vendor, "id")?;
    let event = rest
        .post(
            "/api/admin/events",
            Some(admin),
            json!({
                "name": format!("bench night {run}"),
                "starts_at": schemas::now_ms() + 3_600_000,
                "lanes": plan.lanes,
                "lot_seconds": plan.lot_seconds,
                "reset_seconds": plan.reset_seconds,
            }),
        )
        .await?;
    let event: EventId = field(&event, "id")?.parse()?;
    let slots: Vec<(i32, usize)> = (1..=plan.lanes)
        .flat_map(|lane| (1..=plan.lots_per_lane).map(move |p| (lane, p)))
        .collect();
    let bar = bars.bar(slots.len() as u64, "lots (vehicle, lot)");
    let lots: Vec<LotId> = futures::stream::iter(slots)
        .map(|(lane, position)| {
            let (bar, vendor, run) = (bar.clone(), vendor.clone(), run.clone());
            let reserve = if plan.unsold_every > 0 && position % plan.unsold_every == 0 {
                // Above anything the capped bidders reach.
                1_000_000_000
            } else {
                0
            };
            async move {
                let v = rest
                    .post(
                        "/api/admin/vehicles",
                        Some(admin),
                        json!({
                            "vendor_id": vendor, "vin": format!("N{}{lane:02}{position:04}", &run[..6]),
                            "year": 2021, "make": "Night", "model": "Bench", "mileage": 10_000,
                            "pickup": "Bench yard, gate 3",
                        }),
                    )
                    .await?;
                let lot = rest
                    .post(
                        &format!("/api/admin/events/{event}/lots"),
                        Some(admin),
                        json!({
                            "vehicle_id": field(&v, "id")?, "lane": lane, "position": position,
                            "starting_price": STARTING_PRICE, "reserve": reserve,
                        }),
                    )
                    .await?;
                bar.inc(1);
                anyhow::Ok(field(&lot, "lot_id")?.parse::<LotId>()?)
            }
        })
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    bar.finish();
    // Scheduled (an hour ahead: the bench starts it by hand), so buyers can subscribe.
    rest.post(
        &format!("/api/admin/events/{event}/schedule"),
        Some(admin),
        json!({}),
    )
    .await?;
    Ok(Setup {
        admin_token: admin.to_owned(),
        bidder_tokens,
        watcher_tokens,
        event,
        lots,
    })
}

// ----- what the clients saw, together -----

/// Receipts of one kind of frame, keyed by (lot, key): how many clients read it, the first
/// and the last read (ns since the run's t0). Sharded so that two cores of clients rarely
/// meet on a lock.
struct Receipts {
    shards: Vec<Mutex<HashMap<(u128, i64), Agg>>>,
}

#[derive(Clone, Copy, Debug)]
struct Agg {
    n: u32,
    first: u64,
    last: u64,
}

impl Receipts {
    fn new() -> Self {
        Receipts {
            shards: (0..64).map(|_| Mutex::new(HashMap::new())).collect(),
        }
    }

    fn record(&self, lot: u128, key: i64, at: u64) {
        let shard = ((lot as u64) ^ (key as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) as usize % 64;
        let mut m = self.shards[shard].lock().expect("receipts");
        let a = m.entry((lot, key)).or_insert(Agg {
            n: 0,
            first: at,
            last: at,
        });
        a.n += 1;
        a.first = a.first.min(at);
        a.last = a.last.max(at);
    }

    fn all(&self) -> Vec<((u128, i64), Agg)> {
        self.shards
            .iter()
            .flat_map(|s| {
                s.lock()
                    .expect("receipts")
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect::<Vec<_>>()
            })
            .collect()
    }
}

/// Everything the clients of a run write to.
struct Shared {
    t0: Instant,
    /// new_bid frames, by (lot, version).
    new_bids: Receipts,
    /// timer_update frames, by (lot, server_time).
    ticks: Receipts,
    /// car_rotate frames, by (closed lot, 0).
    rotates: Receipts,
    /// |clock-offset estimate| per pong, µs.
    offset_us: Mutex<Histogram<u64>>,
    decided: AtomicU64,
    accepted: AtomicU64,
    bidders_done: AtomicUsize,
}

impl Shared {
    fn new(t0: Instant) -> Self {
        Shared {
            t0,
            new_bids: Receipts::new(),
            ticks: Receipts::new(),
            rotates: Receipts::new(),
            offset_us: Mutex::new(Histogram::new_with_bounds(1, 60_000_000, 3).expect("bounds")),
            decided: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            bidders_done: AtomicUsize::new(0),
        }
    }

    fn now(&self) -> u64 {
        self.t0.elapsed().as_nanos() as u64
    }
}

// ----- one client's picture -----

/// A lot as one client last saw it.
#[derive(Clone, Debug, PartialEq)]
struct LotSeen {
    lot_id: LotId,
    state: LotState,
    high: Option<i64>,
    bid_count: i32,
    min_next: i64,
    version: i64,
}

impl From<&LotView> for LotSeen {
    fn from(v: &LotView) -> Self {
        LotSeen {
            lot_id: v.lot_id,
            state: v.state,
            high: v.high,
            bid_count: v.bid_count,
            min_next: v.min_next,
            version: v.version,
        }
    }
}

/// One client's picture of the event, built from its frames only; and the frames it saw out of
/// version order.
#[derive(Default)]
struct View {
    lanes: BTreeMap<i32, Option<LotSeen>>,
    /// The highest version seen per lot (any frame).
    seen: HashMap<LotId, i64>,
    /// Lots seen leaving the block: outcome and hammer price.
    closed: HashMap<LotId, (Outcome, Option<i64>)>,
    out_of_order: u64,
    out_of_order_examples: Vec<String>,
    /// The server closed the socket (a slow client is dropped, PROTOCOL.md): the close code.
    dropped: Option<String>,
}

impl View {
    /// A frame about `lot` at `version`: `strict` for a change (a new bid), else a version
    /// equal to the last is fine (a tick, a snapshot).
    fn order(&mut self, what: &str, lot: LotId, version: i64, strict: bool) {
        let last = self.seen.entry(lot).or_insert(i64::MIN);
        let bad = if strict {
            version <= *last
        } else {
            version < *last
        };
        if bad {
            self.out_of_order += 1;
            if self.out_of_order_examples.len() < 5 {
                self.out_of_order_examples.push(format!(
                    "{what} of lot {lot} at version {version} after {last}"
                ));
            }
        } else {
            *last = version;
        }
    }

    fn lot_mut(&mut self, lane: i32, lot: LotId) -> Option<&mut LotSeen> {
        self.lanes
            .get_mut(&lane)
            .and_then(Option::as_mut)
            .filter(|l| l.lot_id == lot)
    }

    fn snapshot(&mut self, lanes: &[schemas::frames::LaneView]) {
        self.lanes.clear();
        for l in lanes {
            if let Some(v) = &l.lot {
                self.order("snapshot", v.lot_id, v.version, false);
            }
            self.lanes.insert(l.lane, l.lot.as_ref().map(LotSeen::from));
        }
    }
}

/// The light reading of a frame: the fields the clients use, borrowed, nothing else parsed
/// into values. Snapshots, rotations and pongs are read in full.
#[derive(serde::Deserialize)]
struct Light<'a> {
    #[serde(rename = "type", borrow)]
    ty: &'a str,
    lot_id: Option<LotId>,
    lane: Option<i32>,
    version: Option<i64>,
    amount: Option<i64>,
    bid_count: Option<i32>,
    min_next: Option<i64>,
    server_time: Option<i64>,
    state: Option<LotState>,
    high: Option<i64>,
    #[serde(borrow)]
    idem: Option<&'a str>,
    #[serde(borrow)]
    status: Option<&'a str>,
    #[serde(borrow)]
    reason: Option<&'a str>,
}

// ----- the clients -----

enum Role {
    Watcher { ping: bool },
    Bidder(BidderCfg),
}

struct BidderCfg {
    n: usize,
    lane: i32,
    /// Time between bids (rate / B), or as fast as the answers come.
    pace: Option<Duration>,
    cap: Option<i32>,
    go: CancellationToken,
    stop: CancellationToken,
}

struct ClientCtx {
    event: EventId,
    shared: Arc<Shared>,
    view: Arc<Mutex<View>>,
    stop: CancellationToken,
    subscribed: Arc<AtomicUsize>,
    gate: Arc<Semaphore>,
}

/// A bidder's tally.
#[derive(Default)]
struct BidderStats {
    sent: u64,
    outcomes: BTreeMap<String, u64>,
    round_trip_us: Option<Histogram<u64>>,
    unanswered: u64,
    answered_twice: u64,
    out_of_order: u64,
    out_of_order_examples: Vec<String>,
}

impl BidderStats {
    fn merge(&mut self, o: BidderStats) {
        self.sent += o.sent;
        for (k, v) in o.outcomes {
            *self.outcomes.entry(k).or_default() += v;
        }
        if let Some(h) = o.round_trip_us {
            match &mut self.round_trip_us {
                Some(mine) => {
                    let _ = mine.add(&h);
                }
                None => self.round_trip_us = Some(h),
            }
        }
        self.unanswered += o.unanswered;
        self.answered_twice += o.answered_twice;
        self.out_of_order += o.out_of_order;
        self.out_of_order_examples.extend(o.out_of_order_examples);
    }
}

struct InFlight {
    idem: String,
    lot: LotId,
    amount: i64,
    sent: Instant,
}

/// One WebSocket client: connects, subscribes, reads its snapshot, then reads every frame into
/// its [`View`] and the shared receipts; a bidder also bids. Returns a bidder's tally (empty
/// for a watcher).
async fn client(url: String, role: Role, c: ClientCtx) -> anyhow::Result<BidderStats> {
    let permit = c.gate.clone().acquire_owned().await?;
    let mut attempt = 0;
    let (mut ws, _) = loop {
        match tokio_tungstenite::connect_async_with_config(url.as_str(), Some(ws_config()), true)
            .await
        {
            Ok(ok) => break ok,
            Err(e) if attempt < 3 => {
                attempt += 1;
                tracing::debug!(error = %e, "client connect retried");
                tokio::time::sleep(Duration::from_millis(100 * attempt)).await;
            }
            Err(e) => return Err(e.into()),
        }
    };
    let subscribe = json!({"type": "subscribe", "event_id": c.event}).to_string();
    ws.send(Message::text(subscribe)).await?;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(30), ws.next())
            .await
            .map_err(|_| anyhow::anyhow!("no snapshot in 30 s"))?
            .ok_or_else(|| anyhow::anyhow!("closed before the snapshot"))??;
        if let Message::Text(t) = msg {
            match serde_json::from_str::<ServerFrame>(t.as_str())? {
                ServerFrame::Snapshot { lanes, .. } => {
                    c.view.lock().expect("view").snapshot(&lanes);
                    break;
                }
                other => anyhow::bail!("the first frame is not a snapshot: {other:?}"),
            }
        }
    }
    drop(permit);
    c.subscribed.fetch_add(1, Ordering::Relaxed);

    let mut stats = BidderStats::default();
    let mut rt = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut in_flight: Option<InFlight> = None;
    // The lot and amount this bidder leads with, by its last accepted answer.
    let mut leading: Option<(LotId, i64)> = None;
    let mut due = tokio::time::Instant::now();
    let mut started = false;
    let mut next_ping = tokio::time::Instant::now() + PING_EVERY;
    let (ping, bidder) = match &role {
        Role::Watcher { ping } => (*ping, None),
        Role::Bidder(b) => (false, Some(b)),
    };
    let mut bid_seq = 0u64;
    // Bidders' reads are not a watcher's: they stay out of the fan-out figures.
    let record = bidder.is_none();
    let mut done = false;
    loop {
        // A bidder bids when it may: the run is on, no bid is out, its lane has an open lot it
        // does not lead, the lot is below the cap, and its pace allows.
        let mut wake: Option<tokio::time::Instant> = None;
        if let Some(b) = bidder {
            if !started && b.go.is_cancelled() {
                started = true;
                // Spread the first bids over one pace interval.
                due = tokio::time::Instant::now()
                    + b.pace
                        .map(|p| p.mul_f64(b.n as f64 / 97.0 % 1.0))
                        .unwrap_or_default();
            }
            let stopping = b.stop.is_cancelled();
            if stopping && in_flight.is_none() && !done {
                done = true;
                c.shared.bidders_done.fetch_add(1, Ordering::Relaxed);
            }
            if started && !stopping && in_flight.is_none() {
                let target = {
                    let v = c.view.lock().expect("view");
                    v.lanes
                        .get(&b.lane)
                        .and_then(Option::as_ref)
                        .filter(|l| l.state == LotState::Open)
                        .filter(|l| b.cap.is_none_or(|cap| l.bid_count < cap))
                        .filter(|l| {
                            leading.is_none_or(|(lot, amount)| {
                                lot != l.lot_id || l.high.is_some_and(|h| h > amount)
                            })
                        })
                        .map(|l| (l.lot_id, l.min_next, l.high))
                };
                if let Some((lot, amount, seen_high)) = target {
                    let now = tokio::time::Instant::now();
                    if now >= due {
                        bid_seq += 1;
                        let idem = format!("n{}-{bid_seq}", b.n);
                        let frame = json!({
                            "type": "bid", "lot_id": lot, "amount": amount,
                            "seen_high": seen_high, "idem": idem,
                        })
                        .to_string();
                        in_flight = Some(InFlight {
                            idem,
                            lot,
                            amount,
                            sent: Instant::now(),
                        });
                        stats.sent += 1;
                        ws.send(Message::text(frame)).await?;
                        if let Some(p) = b.pace {
                            due += p;
                            if due + p < now {
                                due = now;
                            }
                        }
                    } else {
                        wake = Some(due);
                    }
                }
            }
        }
        let answer_by = in_flight
            .as_ref()
            .map(|f| tokio::time::Instant::from_std(f.sent + ANSWER_WAIT));
        tokio::select! {
            _ = c.stop.cancelled() => break,
            _ = async { tokio::time::sleep_until(wake.expect("set")).await }, if wake.is_some() => {}
            _ = async { tokio::time::sleep_until(answer_by.expect("set")).await }, if answer_by.is_some() => {
                stats.unanswered += 1;
                in_flight = None;
            }
            _ = async {
                match bidder {
                    Some(b) if !started => b.go.cancelled().await,
                    Some(b) if !b.stop.is_cancelled() => b.stop.cancelled().await,
                    _ => std::future::pending().await,
                }
            } => {}
            _ = tokio::time::sleep_until(next_ping), if ping => {
                next_ping += PING_EVERY;
                let t = now_us();
                ws.send(Message::text(json!({"type": "ping", "t": t}).to_string())).await?;
            }
            msg = ws.next() => {
                let t = match msg {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(Message::Close(f))) => {
                        c.view.lock().expect("view").dropped =
                            Some(f.map(|f| format!("{} {}", u16::from(f.code), f.reason)).unwrap_or_default());
                        break;
                    }
                    Some(Ok(_)) => continue,
                    None => {
                        c.view.lock().expect("view").dropped = Some("closed".into());
                        break;
                    }
                    Some(Err(e)) => {
                        c.view.lock().expect("view").dropped = Some(e.to_string());
                        break;
                    }
                };
                let at = c.shared.now();
                let text = t.as_str();
                let Ok(f) = serde_json::from_str::<Light>(text) else { continue };
                match f.ty {
                    "new_bid" => {
                        let (Some(lot), Some(lane), Some(version)) = (f.lot_id, f.lane, f.version) else { continue };
                        if record {
                            c.shared.new_bids.record(lot.0.as_u128(), version, at);
                        }
                        let mut v = c.view.lock().expect("view");
                        v.order("new_bid", lot, version, true);
                        if let Some(l) = v.lot_mut(lane, lot) {
                            if version > l.version {
                                l.version = version;
                                l.high = f.amount;
                                l.bid_count = f.bid_count.unwrap_or(l.bid_count);
                                l.min_next = f.min_next.unwrap_or(l.min_next);
                            }
                        }
                    }
                    "timer_update" => {
                        let (Some(lot), Some(lane), Some(version), Some(st)) = (f.lot_id, f.lane, f.version, f.server_time) else { continue };
                        if record {
                            c.shared.ticks.record(lot.0.as_u128(), st, at);
                        }
                        let mut v = c.view.lock().expect("view");
                        v.order("timer_update", lot, version, false);
                        if let Some(l) = v.lot_mut(lane, lot) {
                            if version >= l.version {
                                l.version = version;
                                if let Some(s) = f.state {
                                    l.state = s;
                                }
                                l.min_next = f.min_next.unwrap_or(l.min_next);
                            }
                        }
                    }
                    "bid_result" => {
                        let mine = in_flight.as_ref().is_some_and(|x| Some(x.idem.as_str()) == f.idem);
                        if !mine {
                            stats.answered_twice += 1;
                            continue;
                        }
                        let fl = in_flight.take().expect("in flight");
                        let _ = rt.record((fl.sent.elapsed().as_micros() as u64).max(1));
                        let accepted = f.status == Some("accepted");
                        let key = if accepted { "accepted" } else { f.reason.unwrap_or("rejected") };
                        *stats.outcomes.entry(key.to_owned()).or_default() += 1;
                        c.shared.decided.fetch_add(1, Ordering::Relaxed);
                        if accepted {
                            c.shared.accepted.fetch_add(1, Ordering::Relaxed);
                            leading = Some((fl.lot, fl.amount));
                        }
                        // The answer's high and min_next are the freshest this bidder knows,
                        // but its picture's version stays that of its frames (the new_bid of
                        // this very answer is still to come).
                        let mut v = c.view.lock().expect("view");
                        for l in v.lanes.values_mut().flatten() {
                            if l.lot_id == fl.lot {
                                if let (Some(h), Some(m)) = (f.high, f.min_next) {
                                    if l.high.is_none_or(|x| h > x) {
                                        l.high = Some(h);
                                        l.min_next = m;
                                    }
                                }
                                if f.reason == Some("closed") {
                                    l.state = LotState::Closed;
                                }
                            }
                        }
                    }
                    "snapshot" | "car_rotate" | "pong" => {
                        let Ok(full) = serde_json::from_str::<ServerFrame>(text) else { continue };
                        match full {
                            ServerFrame::Snapshot { lanes, .. } => {
                                c.view.lock().expect("view").snapshot(&lanes);
                            }
                            ServerFrame::CarRotate { lane, closed, next, .. } => {
                                if record {
                                    c.shared.rotates.record(closed.lot_id.0.as_u128(), 0, at);
                                }
                                let mut v = c.view.lock().expect("view");
                                v.closed.insert(closed.lot_id, (closed.outcome, closed.amount));
                                if let Some(n) = &next {
                                    v.order("car_rotate", n.lot_id, n.version, false);
                                }
                                v.lanes.insert(lane, next.as_ref().map(LotSeen::from));
                            }
                            ServerFrame::Pong { t, server_time } => {
                                let back = now_us() as f64;
                                if let Some(sent) = t.as_f64() {
                                    // Offset estimate: server time − the middle of the round trip.
                                    let est_us = server_time as f64 * 1_000.0 - (sent + back) / 2.0;
                                    let _ = c.shared.offset_us.lock().expect("offsets")
                                        .record((est_us.abs() as u64).max(1));
                                }
                            }
                            _ => {}
                        }
                    }
                    _ => {}
                }
            }
        }
    }
    if bidder.is_some() {
        if !done {
            c.shared.bidders_done.fetch_add(1, Ordering::Relaxed);
        }
        stats.round_trip_us = Some(rt);
        let v = c.view.lock().expect("view");
        stats.out_of_order = v.out_of_order;
        stats.out_of_order_examples = v.out_of_order_examples.clone();
    }
    Ok(stats)
}

// ----- the auction's own announcements -----

/// Listens on `auction.<event>.*.bid|lot` as any service would: when each `new_bid` was
/// announced (the edge hears it at the same moment), each lot's last deadline, and how late
/// each close was decided.
struct Monitor {
    state: Arc<Mutex<MonitorState>>,
    _task: tokio_util::task::AbortOnDropHandle<()>,
}

#[derive(Default)]
struct MonitorState {
    /// ns since t0 when the announcement of (lot, version) arrived.
    announced: HashMap<(u128, i64), u64>,
    /// The decision time (ms since the epoch) of (lot, version).
    decided_ms: HashMap<(u128, i64), i64>,
    deadline: HashMap<LotId, i64>,
    opened: usize,
    closed: usize,
    sold: usize,
    unsold: usize,
    /// Close decided − deadline, ms.
    lateness_ms: Vec<i64>,
    /// (closed lot, deadline ms since the epoch)
    close_deadlines: Vec<(LotId, i64)>,
}

#[derive(Debug, Clone, serde::Serialize)]
struct MonitorSummary {
    lots_opened: usize,
    lots_closed: usize,
    sold: usize,
    unsold: usize,
}

impl Monitor {
    async fn start(
        nats: &async_nats::Client,
        event: EventId,
        shared: Arc<Shared>,
    ) -> anyhow::Result<Monitor> {
        let mut bids = nats.subscribe(format!("auction.{event}.*.bid")).await?;
        let mut lots = nats.subscribe(format!("auction.{event}.*.lot")).await?;
        nats.flush().await?;
        let state = Arc::new(Mutex::new(MonitorState::default()));
        let s = state.clone();
        let task = tokio::spawn(async move {
            loop {
                let m = tokio::select! {
                    Some(m) = bids.next() => m,
                    Some(m) = lots.next() => m,
                    else => return,
                };
                let at = shared.now();
                let Ok(msg) = AuctionMsg::decode(&m.payload) else {
                    continue;
                };
                let mut st = s.lock().expect("monitor");
                match msg {
                    AuctionMsg::NewBid(b) => {
                        let key = (b.lot_id.0.as_u128(), b.version);
                        st.announced.entry(key).or_insert(at);
                        st.decided_ms.insert(key, b.server_time);
                        st.deadline.insert(b.lot_id, b.ends_at);
                    }
                    AuctionMsg::LotOpened(c) => {
                        st.opened += 1;
                        if let Some(e) = c.ends_at {
                            st.deadline.insert(c.lot_id, e);
                        }
                    }
                    AuctionMsg::LotClosed(c) => {
                        st.closed += 1;
                        match c.outcome {
                            Outcome::Sold => st.sold += 1,
                            Outcome::Unsold => st.unsold += 1,
                            Outcome::Cancelled => {}
                        }
                        if let Some(&e) = st.deadline.get(&c.lot_id) {
                            st.lateness_ms.push(c.server_time - e);
                            st.close_deadlines.push((c.lot_id, e));
                        }
                    }
                    _ => {}
                }
            }
        });
        Ok(Monitor {
            state,
            _task: tokio_util::task::AbortOnDropHandle::new(task),
        })
    }

    fn summary(&self) -> MonitorSummary {
        let s = self.state.lock().expect("monitor");
        MonitorSummary {
            lots_opened: s.opened,
            lots_closed: s.closed,
            sold: s.sold,
            unsold: s.unsold,
        }
    }
}

// ----- the figures -----

#[derive(Debug, Clone, Default, serde::Serialize)]
struct Figures {
    /// new_bid frames announced during the run.
    new_bids: usize,
    /// ...that reached every watcher.
    new_bids_complete: usize,
    /// Announcement (or the floor's trigger) → the last watcher's read.
    new_bid_last_watcher_ms: Quantiles,
    /// The decision (its server_time, ms resolution) → the last watcher's read.
    new_bid_decision_to_last_watcher_ms: Option<Quantiles>,
    ticks: usize,
    ticks_complete: usize,
    /// Last watcher's read − first watcher's read, per tick.
    tick_spread_ms: Quantiles,
    /// The close's decision − the lot's deadline.
    hammer_lateness_ms: Option<Quantiles>,
    /// The lot's deadline → the last watcher's car_rotate.
    rotate_last_watcher_after_deadline_ms: Option<Quantiles>,
    /// |offset estimate| from ping/pong (one machine: the true offset is 0).
    clock_offset_error_ms: Option<Quantiles>,
    kib_per_idle_conn: f64,
}

impl Figures {
    fn of(
        shared: &Shared,
        monitor: &Monitor,
        watchers: usize,
        epoch0_us: u64,
        kib_per_idle_conn: f64,
    ) -> Figures {
        let m = monitor.state.lock().expect("monitor");
        let mut fig = Figures {
            kib_per_idle_conn,
            ..Default::default()
        };
        let mut nb = hist();
        let mut nb_dec = hist();
        for (key, agg) in shared.new_bids.all() {
            let Some(&announced) = m.announced.get(&key) else {
                continue;
            };
            fig.new_bids += 1;
            if agg.n as usize >= watchers {
                fig.new_bids_complete += 1;
                let _ = nb.record((agg.last.saturating_sub(announced) / 1_000).max(1));
                if let Some(&dec) = m.decided_ms.get(&key) {
                    let last_epoch_us = epoch0_us + agg.last / 1_000;
                    let _ = nb_dec.record(last_epoch_us.saturating_sub(dec as u64 * 1_000).max(1));
                }
            }
        }
        fig.new_bids = fig.new_bids.max(m.announced.len());
        fig.new_bid_last_watcher_ms = Quantiles::of_us(&nb);
        fig.new_bid_decision_to_last_watcher_ms = Some(Quantiles::of_us(&nb_dec));
        let (n, complete, spread) = spreads(&shared.ticks, watchers);
        fig.ticks = n;
        fig.ticks_complete = complete;
        fig.tick_spread_ms = spread;
        if !m.lateness_ms.is_empty() {
            let mut h = hist();
            for &l in &m.lateness_ms {
                let _ = h.record((l.max(0) as u64 * 1_000).max(1));
            }
            fig.hammer_lateness_ms = Some(Quantiles::of_us(&h));
            let rot: HashMap<(u128, i64), Agg> = shared.rotates.all().into_iter().collect();
            let mut h = hist();
            for (lot, deadline) in &m.close_deadlines {
                if let Some(a) = rot.get(&(lot.0.as_u128(), 0)) {
                    if a.n as usize >= watchers {
                        let last_epoch_us = epoch0_us + a.last / 1_000;
                        let _ = h.record(
                            last_epoch_us
                                .saturating_sub(*deadline as u64 * 1_000)
                                .max(1),
                        );
                    }
                }
            }
            fig.rotate_last_watcher_after_deadline_ms = Some(Quantiles::of_us(&h));
        }
        let off = shared.offset_us.lock().expect("offsets");
        if !off.is_empty() {
            fig.clock_offset_error_ms = Some(Quantiles::of_us(&off));
        }
        fig
    }
}

fn hist() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 600_000_000, 3).expect("bounds")
}

/// (ticks, ticks every watcher read, spread quantiles over those).
fn spreads(r: &Receipts, watchers: usize) -> (usize, usize, Quantiles) {
    let mut h = hist();
    let (mut n, mut complete) = (0, 0);
    for (_, a) in r.all() {
        n += 1;
        if a.n as usize >= watchers {
            complete += 1;
            let _ = h.record((a.last.saturating_sub(a.first) / 1_000).max(1));
        }
    }
    (n, complete, Quantiles::of_us(&h))
}

// ----- CPU per process -----

struct CpuWindow {
    procs: Vec<(&'static str, Vec<u32>, f64)>,
    machine: (u64, u64),
}

#[derive(Debug, Clone, serde::Serialize)]
struct CpuUse {
    process: String,
    /// Cores used on average over the run (1.0 = one core busy all the time).
    cores: f64,
}

#[derive(Debug, Clone, serde::Serialize)]
struct CpuReport {
    cpus: usize,
    by_process: Vec<CpuUse>,
    /// Every process on the machine, from /proc/stat.
    machine_busy_cores: f64,
    /// The machine's busy time not in the processes above (other work on the machine, and
    /// Postgres's own background processes).
    others_cores: f64,
}

impl CpuWindow {
    fn start(procs: &[(&'static str, Vec<u32>)]) -> Self {
        CpuWindow {
            procs: procs
                .iter()
                .map(|(n, pids)| {
                    (
                        *n,
                        pids.clone(),
                        pids.iter().filter_map(|p| cpu_ms(*p).ok()).sum(),
                    )
                })
                .collect(),
            machine: machine_jiffies(),
        }
    }

    fn finish(self, window: Duration) -> CpuReport {
        let ms = window.as_secs_f64() * 1_000.0;
        let by_process: Vec<CpuUse> = self
            .procs
            .iter()
            .map(|(name, pids, before)| {
                let now: f64 = pids.iter().filter_map(|p| cpu_ms(*p).ok()).sum();
                CpuUse {
                    process: (*name).to_owned(),
                    cores: (now - before) / ms,
                }
            })
            .collect();
        let (busy, total) = machine_jiffies();
        let cpus = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let machine_busy_cores = if total > self.machine.1 {
            (busy - self.machine.0) as f64 / (total - self.machine.1) as f64 * cpus as f64
        } else {
            0.0
        };
        let ours: f64 = by_process.iter().map(|c| c.cores).sum();
        CpuReport {
            cpus,
            by_process,
            machine_busy_cores,
            others_cores: (machine_busy_cores - ours).max(0.0),
        }
    }
}

impl CpuReport {
    /// What ran out, in words: the cores (and who used them), or not the CPU.
    fn verdict(&self) -> String {
        let mut by = self.by_process.clone();
        by.push(CpuUse {
            process: "other work on the machine".into(),
            cores: self.others_cores,
        });
        by.sort_by(|a, b| b.cores.total_cmp(&a.cores));
        let list = by
            .iter()
            .map(|c| format!("{} {:.2}", c.process, c.cores))
            .collect::<Vec<_>>()
            .join(", ");
        let busy = self.machine_busy_cores / self.cpus as f64;
        if busy >= 0.85 {
            format!(
                "CPU: the machine's {} cores were {:.0}% busy ({list} cores); the largest \
                 user was {}",
                self.cpus,
                busy * 100.0,
                by.first().map(|c| c.process.as_str()).unwrap_or("?")
            )
        } else {
            format!(
                "not CPU-bound: the {} cores were {:.0}% busy ({list} cores): the time is \
                 waiting in the path (commit, NATS round trips, batching)",
                self.cpus,
                busy * 100.0
            )
        }
    }
}

// ----- the invariants -----

#[derive(Debug, Default, serde::Serialize)]
struct Invariants {
    /// store::audit::check over the run's lots.
    audit: Vec<String>,
    /// Bids that got no bid_result within the wait.
    unanswered: u64,
    /// bid_results for no bid in flight (a second answer).
    answered_twice: u64,
    /// Watchers whose final picture differs from the database (examples).
    watchers_vs_db: Vec<String>,
    out_of_order: u64,
    out_of_order_examples: Vec<String>,
}

impl Invariants {
    fn count(&self) -> usize {
        self.audit.len()
            + self.unanswered as usize
            + self.answered_twice as usize
            + self.watchers_vs_db.len()
            + self.out_of_order as usize
    }
}

/// The database's picture: each lane's lot on the block, and how each ended lot ended (its
/// outcome and, when sold, the settlement's amount).
struct Truth {
    lanes: BTreeMap<i32, Option<LotSeen>>,
    ended: HashMap<LotId, (Outcome, Option<i64>)>,
}

impl Truth {
    async fn read(pool: &store::PgPool, event: EventId, lanes: i32) -> anyhow::Result<Truth> {
        let lots = store::views::event_lots(pool, event).await?;
        let mut t = Truth {
            lanes: (1..=lanes).map(|l| (l, None)).collect(),
            ended: HashMap::new(),
        };
        let mut best: BTreeMap<i32, &LotView> = BTreeMap::new();
        for l in &lots {
            if l.state.on_the_block() && best.get(&l.lane).is_none_or(|b| l.position < b.position) {
                best.insert(l.lane, l);
            }
        }
        for (lane, l) in best {
            t.lanes.insert(lane, Some(LotSeen::from(l)));
        }
        // The bench's database holds this event only.
        for outcome in [Outcome::Sold, Outcome::Unsold, Outcome::Cancelled] {
            for e in store::admin::lots_by_outcome(pool, outcome).await? {
                if e.lot.event_id == event {
                    t.ended.insert(e.lot.lot_id, (e.outcome, e.amount));
                }
            }
        }
        Ok(t)
    }
}

/// Each watcher's picture against the database: the lot on each lane's block (state, high,
/// bid count, version, min_next), and every close it saw (outcome and hammer price). Returns up
/// to ten differences, and a count line when there are more.
fn compare(views: &[Arc<Mutex<View>>], truth: &Truth) -> Vec<String> {
    let mut out = Vec::new();
    let mut n = 0usize;
    for (i, v) in views.iter().enumerate() {
        let v = v.lock().expect("view");
        if v.dropped.is_some() {
            // Its picture stopped when the edge dropped it; a real client reconnects and
            // gets a snapshot. Counted apart.
            continue;
        }
        for (lane, want) in &truth.lanes {
            let got = v.lanes.get(lane).cloned().flatten();
            if &got != want {
                n += 1;
                if out.len() < 10 {
                    out.push(format!(
                        "watcher {i} lane {lane}: saw {got:?}, the database has {want:?}"
                    ));
                }
            }
        }
        for (lot, (outcome, amount)) in &v.closed {
            let ok = truth.ended.get(lot) == Some(&(*outcome, *amount));
            if !ok {
                n += 1;
                if out.len() < 10 {
                    out.push(format!(
                        "watcher {i}: lot {lot} closed {outcome:?} at {amount:?}, the database has {:?}",
                        truth.ended.get(lot)
                    ));
                }
            }
        }
    }
    if n > out.len() {
        out.push(format!("… {n} differences in all"));
    }
    out
}

// ----- the floor -----

#[derive(Debug, Clone, serde::Serialize)]
struct FloorFigures {
    seconds: f64,
    new_bid_rate: f64,
    figures: Figures,
    server_cores: f64,
    clients_cores: f64,
    loadavg_1m: f64,
}

/// When the floor sends its frames, in ms since it started: `new_bid`s at the offsets Gavel's run
/// announced them ([`FloorPace::Replay`]: the same gaps and bursts) or evenly at its rate, and
/// ticks when Gavel's ticker would send them ([`ticker::plan::reset_tick_at`] after each
/// `new_bid`, `tick_ms` after the last tick otherwise), so both carry the same frames to the
/// watchers.
struct FloorClock {
    /// When each `new_bid` is due, ascending.
    bid_at: Vec<i64>,
    tick_ms: i64,
    bids: usize,
    next_tick: i64,
    last_tick: Option<i64>,
}

impl FloorClock {
    fn new(bid_at: Vec<i64>, tick_ms: i64) -> Self {
        Self {
            bid_at,
            tick_ms: tick_ms.max(10),
            bids: 0,
            next_tick: 0,
            last_tick: None,
        }
    }

    /// `new_bid`s at Gavel's moments: `announced_ns` (any order) shifted so the first is at 0.
    fn replay(announced_ns: &[u64], tick_ms: i64) -> Self {
        let mut at: Vec<i64> = announced_ns
            .iter()
            .map(|&ns| (ns / 1_000_000) as i64)
            .collect();
        at.sort_unstable();
        let first = at.first().copied().unwrap_or(0);
        Self::new(at.into_iter().map(|t| t - first).collect(), tick_ms)
    }

    /// `rate` `new_bid`s a second, evenly, for `seconds`.
    fn even(rate: f64, seconds: f64, tick_ms: i64) -> Self {
        let n = if rate > 0.0 {
            (rate * seconds).ceil() as usize
        } else {
            0
        };
        let at = (0..n).map(|i| (i as f64 * 1_000.0 / rate) as i64).collect();
        Self::new(at, tick_ms)
    }

    fn next_bid(&self) -> i64 {
        self.bid_at.get(self.bids).copied().unwrap_or(i64::MAX)
    }

    /// Whether a `new_bid`, then a tick, is due at `now` (one `new_bid` per call: call again
    /// when [`FloorClock::next`] is not after `now`).
    fn due(&mut self, now: i64) -> (bool, bool) {
        let bid = now >= self.next_bid();
        if bid {
            self.bids += 1;
            let reset = ticker::plan::reset_tick_at(self.last_tick, now);
            self.next_tick = self.next_tick.min(reset);
        }
        let tick = now >= self.next_tick;
        if tick {
            self.last_tick = Some(now);
            self.next_tick = now + self.tick_ms;
        }
        (bid, tick)
    }

    /// When something is next due.
    fn next(&self) -> i64 {
        self.next_bid().min(self.next_tick)
    }
}

/// The bare broadcast with the same W watchers, sent the frames [`FloorClock`] says; the same
/// clients, the same receipts.
async fn run_floor(
    plan: &Plan,
    mut clock: FloorClock,
    bars: &Bars,
) -> anyhow::Result<FloorFigures> {
    let (mut child, pid, addr, mut stdin) = crate::bench_fanout::spawn_floor().await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let rss_before = rss_kib(pid)?;
    let t0 = Instant::now();
    let shared = Arc::new(Shared::new(t0));
    let stop = CancellationToken::new();
    let gate = Arc::new(Semaphore::new(CONNECTING));
    let subscribed = Arc::new(AtomicUsize::new(0));
    let failed = Arc::new(AtomicUsize::new(0));
    let mut clients = JoinSet::new();
    let bar = bars.bar(plan.watchers as u64, "floor watchers");
    for _ in 0..plan.watchers {
        let c = ClientCtx {
            event: EventId(uuid::Uuid::nil()),
            shared: shared.clone(),
            view: Arc::new(Mutex::new(View::default())),
            stop: stop.clone(),
            subscribed: subscribed.clone(),
            gate: gate.clone(),
        };
        let url = format!("ws://{addr}/ws");
        clients.spawn(async move { client(url, Role::Watcher { ping: false }, c).await });
    }
    wait_subscribed(&subscribed, &failed, plan.watchers, &bar).await?;
    bar.finish();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let rss_idle = rss_kib(pid)?;

    let load = loadavg();
    let cpu_server = cpu_ms(pid)?;
    let cpu_self = cpu_ms(std::process::id())?;
    let run = bars.bar((plan.floor_seconds * 10.0) as u64, "floor broadcasting");
    let started = Instant::now();
    let end = started + Duration::from_secs_f64(plan.floor_seconds);
    let mut triggers: HashMap<i64, u64> = HashMap::new();
    let mut n = 0i64;
    while Instant::now() < end {
        let (bid, tick) = clock.due(started.elapsed().as_millis() as i64);
        if bid {
            triggers.insert(n, shared.now());
            stdin.write_all(format!("send {n}\n").as_bytes()).await?;
            stdin.flush().await?;
            n += 1;
        }
        if tick {
            let key = schemas::now_ms();
            stdin.write_all(format!("tick {key}\n").as_bytes()).await?;
            stdin.flush().await?;
        }
        run.set_position((started.elapsed().as_secs_f64() * 10.0) as u64);
        tokio::time::sleep_until((started + Duration::from_millis(clock.next() as u64)).into())
            .await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let window = started.elapsed().as_secs_f64();
    let server_cores = (cpu_ms(pid)? - cpu_server) / (window * 1_000.0);
    let clients_cores = (cpu_ms(std::process::id())? - cpu_self) / (window * 1_000.0);
    run.finish();
    let _ = child.kill().await;
    stop.cancel();
    while clients.join_next().await.is_some() {}

    let mut fig = Figures {
        kib_per_idle_conn: (rss_idle as f64 - rss_before as f64) / plan.watchers as f64,
        ..Default::default()
    };
    let mut h = hist();
    // The floor's frame n carries version 1,000 + n (bench fanout's BASE_VERSION).
    for ((_, version), a) in shared.new_bids.all() {
        let Some(&sent) = triggers.get(&(version - 1_000)) else {
            continue;
        };
        fig.new_bids += 1;
        if a.n as usize >= plan.watchers {
            fig.new_bids_complete += 1;
            let _ = h.record((a.last.saturating_sub(sent) / 1_000).max(1));
        }
    }
    fig.new_bid_last_watcher_ms = Quantiles::of_us(&h);
    let (nt, complete, spread) = spreads(&shared.ticks, plan.watchers);
    fig.ticks = nt;
    fig.ticks_complete = complete;
    fig.tick_spread_ms = spread;
    Ok(FloorFigures {
        seconds: window,
        new_bid_rate: n as f64 / plan.floor_seconds,
        figures: fig,
        server_cores,
        clients_cores,
        loadavg_1m: load,
    })
}

// ----- the report -----

#[derive(Debug, serde::Serialize)]
struct Goal {
    goal: String,
    measured: String,
    met: bool,
}

#[derive(Debug, serde::Serialize)]
struct Report {
    bench: &'static str,
    plan: Plan,
    seconds: f64,
    bids_sent: u64,
    decided: u64,
    decided_per_sec: f64,
    outcomes_per_sec: BTreeMap<String, f64>,
    outcomes: BTreeMap<String, u64>,
    round_trip_ms: Quantiles,
    lots: MonitorSummary,
    gavel: Figures,
    floor: Option<FloorFigures>,
    new_bid_p99_ratio: Option<f64>,
    tick_spread_p99_ratio: Option<f64>,
    cpu: CpuReport,
    loadavg_1m: (f64, f64),
    /// Watchers the edge closed during the run (a slow client is dropped), by close reason.
    watchers_dropped: BTreeMap<String, usize>,
    goals: Vec<Goal>,
    /// CPU time per decided bid, by process, in µs: what a bid costs, so what 2 free cores
    /// would hold.
    cpu_us_per_decided_bid: BTreeMap<String, f64>,
    /// When a goal is missed: the resource that ran out.
    bottleneck: Option<String>,
    invariants: Invariants,
    invariant_violations: usize,
}

impl Report {
    #[allow(clippy::too_many_arguments)]
    fn new(
        plan: &Plan,
        window: Duration,
        decided_in_window: u64,
        bidders: BidderStats,
        gavel: Figures,
        floor: Option<FloorFigures>,
        lots: MonitorSummary,
        cpu: CpuReport,
        loadavg_1m: (f64, f64),
        invariants: Invariants,
        watchers_dropped: BTreeMap<String, usize>,
    ) -> Report {
        let secs = window.as_secs_f64();
        let rt = bidders
            .round_trip_us
            .as_ref()
            .map(Quantiles::of_us)
            .unwrap_or_default();
        let decided: u64 = bidders.outcomes.values().sum();
        let ratio = |g: f64, f: f64| if f > 0.0 { g / f } else { f64::INFINITY };
        let new_bid_p99_ratio = floor.as_ref().map(|f| {
            ratio(
                gavel.new_bid_last_watcher_ms.p99,
                f.figures.new_bid_last_watcher_ms.p99,
            )
        });
        let tick_spread_p99_ratio = floor
            .as_ref()
            .map(|f| ratio(gavel.tick_spread_ms.p99, f.figures.tick_spread_ms.p99));
        let per_sec = decided_in_window as f64 / secs;
        let mut goals = Vec::new();
        match plan.scenario {
            Some(1) => {
                goals.push(Goal {
                    goal: "≥ 20,000 decided bids/s".into(),
                    measured: format!("{per_sec:.0}/s"),
                    met: per_sec >= 20_000.0,
                });
                goals.push(Goal {
                    goal: "round trip p50 ≤ 2 ms".into(),
                    measured: format!("{:.2} ms", rt.p50),
                    met: rt.p50 <= 2.0,
                });
                goals.push(Goal {
                    goal: "round trip p99 ≤ 10 ms".into(),
                    measured: format!("{:.2} ms", rt.p99),
                    met: rt.p99 <= 10.0,
                });
            }
            Some(2) => {
                if let Some(r) = new_bid_p99_ratio {
                    goals.push(Goal {
                        goal: "new_bid to the last watcher p99 ≤ 1.25× the floor".into(),
                        measured: format!("{r:.2}×"),
                        met: r <= FANOUT_RATIO_MAX,
                    });
                }
                if let Some(r) = tick_spread_p99_ratio {
                    goals.push(Goal {
                        goal: "tick spread p99 ≤ 1.25× the floor".into(),
                        measured: format!("{r:.2}×"),
                        met: r <= FANOUT_RATIO_MAX,
                    });
                }
                goals.push(Goal {
                    goal: "≤ 16 KiB edge memory per connection".into(),
                    measured: format!("{:.1} KiB", gavel.kib_per_idle_conn),
                    met: gavel.kib_per_idle_conn <= KIB_PER_CONN_MAX,
                });
            }
            Some(3) => {
                let p99 = gavel.hammer_lateness_ms.map(|q| q.p99);
                goals.push(Goal {
                    goal: "hammer lateness p99 ≤ 50 ms".into(),
                    measured: p99
                        .map(|p| format!("{p:.0} ms"))
                        .unwrap_or("no close".into()),
                    met: p99.is_some_and(|p| p <= 50.0),
                });
            }
            _ => {}
        }
        let n = invariants.count();
        goals.push(Goal {
            goal: "every invariant holds".into(),
            measured: format!("{n} violation(s)"),
            met: n == 0,
        });
        let ours: f64 = cpu.by_process.iter().map(|c| c.cores).sum();
        let cpu_us_per_decided_bid = if per_sec > 0.0 {
            cpu.by_process
                .iter()
                .map(|c| (c.process.clone(), c.cores / per_sec * 1e6))
                .chain(std::iter::once((
                    "all of these".to_owned(),
                    ours / per_sec * 1e6,
                )))
                .collect()
        } else {
            BTreeMap::new()
        };
        let bottleneck = goals.iter().any(|g| !g.met).then(|| cpu.verdict());
        let outcomes_per_sec = bidders
            .outcomes
            .iter()
            .map(|(k, v)| (k.clone(), *v as f64 / secs))
            .collect();
        Report {
            bench: "night",
            plan: plan.clone(),
            seconds: secs,
            bids_sent: bidders.sent,
            decided,
            decided_per_sec: per_sec,
            outcomes_per_sec,
            outcomes: bidders.outcomes,
            round_trip_ms: rt,
            lots,
            gavel,
            floor,
            new_bid_p99_ratio,
            tick_spread_p99_ratio,
            cpu,
            loadavg_1m,
            goals,
            cpu_us_per_decided_bid,
            bottleneck,
            invariant_violations: n,
            invariants,
            watchers_dropped,
        }
    }

    fn print(&self) {
        let p = &self.plan;
        let q = |q: &Quantiles| {
            format!(
                "p50 {:.2}  p90 {:.2}  p99 {:.2}  max {:.2} ms",
                q.p50, q.p90, q.p99, q.max
            )
        };
        let q2 = |q: &Quantiles| format!("p50 {:.2}  p99 {:.2} ms", q.p50, q.p99);
        println!(
            "gavel bench night{}: {} watchers, {} bidders ({}), {} lane(s) × {} lots of {} s \
             (+{} s per bid){}, ticks every {} ms, {:.1} s",
            p.scenario
                .map(|s| format!(" --scenario {s}"))
                .unwrap_or_default(),
            p.watchers,
            p.bidders,
            if p.rate > 0.0 {
                format!("{} bids/s in all", p.rate)
            } else {
                "closed loop, unpaced".into()
            },
            p.lanes,
            p.lots_per_lane,
            p.lot_seconds,
            p.reset_seconds,
            p.bids_per_lot
                .map(|c| format!(", bidding stops at {c} bids a lot"))
                .unwrap_or_default(),
            p.tick_ms,
            self.seconds
        );
        println!(
            "  {} cpus; load average (1 min) {:.2} at the start, {:.2} at the end",
            self.cpu.cpus, self.loadavg_1m.0, self.loadavg_1m.1
        );
        println!();
        println!(
            "  decided              {:.0} bids/s ({} in {:.1} s; {} sent)",
            self.decided_per_sec, self.decided, self.seconds, self.bids_sent
        );
        println!(
            "  by outcome           {}",
            self.outcomes_per_sec
                .iter()
                .map(|(k, v)| format!("{k} {v:.0}/s"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!("  bid round trip       {}", q(&self.round_trip_ms));
        let g = &self.gavel;
        println!(
            "  new_bid → last watcher  {}   ({} of {} reached every watcher)",
            q2(&g.new_bid_last_watcher_ms),
            g.new_bids_complete,
            g.new_bids
        );
        if let Some(d) = &g.new_bid_decision_to_last_watcher_ms {
            println!("    from the decision    {}", q2(d));
        }
        println!(
            "  tick spread          {}   ({} of {} ticks reached every watcher)",
            q2(&g.tick_spread_ms),
            g.ticks_complete,
            g.ticks
        );
        if let Some(h) = &g.hammer_lateness_ms {
            println!(
                "  hammer lateness      {}   ({} lots closed: {} sold, {} unsold)",
                q2(h),
                self.lots.lots_closed,
                self.lots.sold,
                self.lots.unsold
            );
        }
        if let Some(r) = &g.rotate_last_watcher_after_deadline_ms {
            println!(
                "    car_rotate at the last watcher after the deadline  {}",
                q2(r)
            );
        }
        if let Some(c) = &g.clock_offset_error_ms {
            println!("  clock-offset error   {}", q2(c));
        }
        println!(
            "  edge memory          {:.2} KiB per idle connection",
            g.kib_per_idle_conn
        );
        if !self.watchers_dropped.is_empty() {
            println!(
                "  watchers dropped     {}",
                self.watchers_dropped
                    .iter()
                    .map(|(k, v)| format!("{v} ({k})"))
                    .collect::<Vec<_>>()
                    .join(", ")
            );
        }
        println!(
            "  cpu (cores)          {}, other {:.2}; machine {:.2} of {}",
            self.cpu
                .by_process
                .iter()
                .map(|c| format!("{} {:.2}", c.process, c.cores))
                .collect::<Vec<_>>()
                .join(", "),
            self.cpu.others_cores,
            self.cpu.machine_busy_cores,
            self.cpu.cpus
        );
        if let Some(all) = self.cpu_us_per_decided_bid.get("all of these") {
            println!(
                "  cpu per decided bid  {all:.0} µs in all ({}): {} cores would decide about {:.0}/s",
                self.cpu_us_per_decided_bid
                    .iter()
                    .filter(|(k, v)| k.as_str() != "all of these" && **v >= 1.0)
                    .map(|(k, v)| format!("{k} {v:.0}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                self.cpu.cpus,
                self.cpu.cpus as f64 * 1e6 / all
            );
        }
        if let Some(f) = &self.floor {
            println!();
            println!(
                "  floor (bare tokio-tungstenite broadcast, same {} watchers, {:.1} new_bid/s {}, \
                 {:.1} s, load {:.2})",
                p.watchers,
                f.new_bid_rate,
                match p.floor_pace {
                    FloorPace::Replay => "at Gavel's moments",
                    FloorPace::Even => "evenly spaced",
                },
                f.seconds,
                f.loadavg_1m
            );
            println!(
                "  new_bid → last watcher  {}   ({} of {})",
                q2(&f.figures.new_bid_last_watcher_ms),
                f.figures.new_bids_complete,
                f.figures.new_bids
            );
            println!(
                "  tick spread          {}   ({} of {})",
                q2(&f.figures.tick_spread_ms),
                f.figures.ticks_complete,
                f.figures.ticks
            );
            println!(
                "  memory               {:.2} KiB per idle connection; cpu server {:.2}, clients {:.2} cores",
                f.figures.kib_per_idle_conn, f.server_cores, f.clients_cores
            );
            println!(
                "  gavel / floor        new_bid p99 {:.2}×, tick spread p99 {:.2}×, memory {:.2}×",
                self.new_bid_p99_ratio.unwrap_or(0.0),
                self.tick_spread_p99_ratio.unwrap_or(0.0),
                g.kib_per_idle_conn / f.figures.kib_per_idle_conn.max(0.001)
            );
        }
        println!();
        println!("  goals");
        for goal in &self.goals {
            println!(
                "    {:<52} {:>16}  {}",
                goal.goal,
                goal.measured,
                if goal.met { "yes" } else { "NO" }
            );
        }
        if let Some(b) = &self.bottleneck {
            println!("  what ran out: {b}");
        }
        let i = &self.invariants;
        println!();
        println!(
            "  invariants           audit {} · unanswered {} · answered twice {} · watchers ≠ database {} · out of version order {}",
            i.audit.len(),
            i.unanswered,
            i.answered_twice,
            i.watchers_vs_db.len(),
            i.out_of_order
        );
        for line in i
            .audit
            .iter()
            .chain(&i.watchers_vs_db)
            .chain(&i.out_of_order_examples)
            .take(20)
        {
            println!("    {line}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seen(lot: LotId, version: i64, high: Option<i64>) -> LotSeen {
        LotSeen {
            lot_id: lot,
            state: LotState::Open,
            high,
            bid_count: high.map_or(0, |_| 1),
            min_next: 1_000,
            version,
        }
    }

    #[test]
    fn the_floor_ticks_after_each_new_bid_like_the_ticker() {
        // 5 new_bids a second (one every 200 ms), ticks every second without a bid.
        let mut c = FloorClock::even(5.0, 1.0, 1_000);
        assert_eq!(c.due(0), (true, true));
        assert_eq!(c.next(), 200);
        assert_eq!(c.due(200), (true, true), "a tick right after each new_bid");
        // 50 new_bids a second (one every 20 ms): ticks no closer than the ticker's gap.
        let mut c = FloorClock::even(50.0, 1.0, 1_000);
        assert_eq!(c.due(0), (true, true));
        assert_eq!(c.due(20), (true, false));
        assert_eq!(c.due(40), (true, false));
        assert_eq!(c.next(), 50);
        assert_eq!(c.due(50), (false, true));
        // No bids: a tick every tick_ms.
        let mut c = FloorClock::even(0.0, 1.0, 1_000);
        assert_eq!(c.due(0), (false, true));
        assert_eq!(c.due(999), (false, false));
        assert_eq!(c.due(1_000), (false, true));
    }

    #[test]
    fn the_floor_replays_gavels_moments_bursts_included() {
        // Announced at 5.000 s, 5.003 s (a burst) and 5.400 s since the bench started, in any
        // order: the floor sends at 0, 3 and 400 ms, and one new_bid per call when late.
        let ms = 1_000_000;
        let mut c = FloorClock::replay(&[5_400 * ms, 5_000 * ms, 5_003 * ms + 7], 1_000);
        assert_eq!(c.due(0), (true, true));
        assert_eq!(c.next(), 3);
        assert_eq!(c.due(10), (true, false), "the second of the burst, late");
        assert_eq!(c.next(), 50, "its tick waits for the ticker's gap");
        assert_eq!(c.due(50), (false, true));
        assert_eq!(c.next(), 400);
        assert_eq!(c.due(400), (true, true));
        assert_eq!(c.next(), 1_400, "then only the tick_ms tick");
        assert_eq!(c.due(1_400), (false, true));
    }

    #[test]
    fn a_new_bid_must_raise_the_version_a_tick_may_repeat_it() {
        let lot = LotId::new();
        let mut v = View::default();
        v.order("snapshot", lot, 3, false);
        v.order("timer_update", lot, 3, false);
        v.order("new_bid", lot, 4, true);
        assert_eq!(v.out_of_order, 0);
        v.order("new_bid", lot, 4, true);
        v.order("timer_update", lot, 2, false);
        assert_eq!(v.out_of_order, 2);
        assert_eq!(v.out_of_order_examples.len(), 2);
    }

    #[test]
    fn a_watcher_differing_from_the_database_is_reported_and_a_dropped_one_is_not() {
        let lot = LotId::new();
        let truth = Truth {
            lanes: BTreeMap::from([(1, Some(seen(lot, 5, Some(1_100))))]),
            ended: HashMap::new(),
        };
        let view = |version, dropped: Option<&str>| {
            let mut v = View::default();
            v.lanes.insert(1, Some(seen(lot, version, Some(1_100))));
            v.dropped = dropped.map(str::to_owned);
            Arc::new(Mutex::new(v))
        };
        assert!(compare(&[view(5, None)], &truth).is_empty());
        assert_eq!(compare(&[view(4, None)], &truth).len(), 1);
        assert!(compare(&[view(4, Some("1008"))], &truth).is_empty());
    }

    #[test]
    fn a_close_seen_must_match_the_database() {
        let lot = LotId::new();
        let truth = Truth {
            lanes: BTreeMap::new(),
            ended: HashMap::from([(lot, (Outcome::Sold, Some(1_300)))]),
        };
        let view = |outcome, amount| {
            let mut v = View::default();
            v.closed.insert(lot, (outcome, amount));
            Arc::new(Mutex::new(v))
        };
        assert!(compare(&[view(Outcome::Sold, Some(1_300))], &truth).is_empty());
        assert_eq!(
            compare(&[view(Outcome::Sold, Some(1_200))], &truth).len(),
            1
        );
        assert_eq!(compare(&[view(Outcome::Unsold, None)], &truth).len(), 1);
    }
}
