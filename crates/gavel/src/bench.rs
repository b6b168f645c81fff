//! `gavel bench`: load generators that print what they measured.
//!
//! `gavel bench bidder` publishes bids straight to JetStream (no edge) and measures how fast the
//! bidder decides them: decided bids/s and publish → decision latency, read from the
//! `user.<id>.result` answers.

use crate::{migrate, BidderOpts, Conn};
use clap::{Args, Subcommand};
use futures::StreamExt;
use hdrhistogram::Histogram;
use schemas::frames::BidStatus;
use schemas::nats::{BidCommand, NatsMessage, PlaceBid, UserMsg};
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use schemas::{LotId, UserId};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio_util::sync::CancellationToken;

#[derive(Subcommand)]
pub enum BenchCommand {
    /// Bids published straight to JetStream, decided by a bidder (in this process by default).
    Bidder(BidderBench),
    /// Short lots through the clock: hammer lateness and tick jitter.
    Ticker(TickerBench),
    /// `new_bid` to 1,000s of WebSocket watchers: the edge against a bare tokio-tungstenite
    /// broadcast (the floor), latency to the last watcher and memory per idle connection.
    Fanout(crate::bench_fanout::FanoutBench),
    /// A rehearsed auction night over WebSockets: the whole stack, W watchers and B closed-loop
    /// bidders over L lanes for D seconds; throughput, latencies, memory, CPU per process, and
    /// the invariants checked at the end (any violation fails the run).
    Night(crate::bench_night::NightBench),
    /// The floor of `bench fanout` (started by it).
    #[command(hide = true)]
    FloorServer(crate::bench_fanout::FloorServer),
}

#[derive(Args)]
pub struct TickerBench {
    #[command(flatten)]
    conn: Conn,
    /// Lots in all, spread over the lanes.
    #[arg(long, default_value_t = 100)]
    lots: usize,
    /// Lanes of the event.
    #[arg(long, default_value_t = 10)]
    lanes: i32,
    /// Seconds on the clock of each lot (no bids: each runs out).
    #[arg(long, default_value_t = 1)]
    lot_seconds: i32,
    /// Tick period.
    #[arg(long, default_value_t = 200)]
    tick_ms: i64,
    /// Start a private nats-server and database for the run (a clean, reproducible state)
    /// instead of using NATS_URL and DATABASE_URL.
    #[arg(long)]
    private: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Args)]
pub struct BidderBench {
    #[command(flatten)]
    conn: Conn,
    #[command(flatten)]
    bidder: BidderOpts,
    /// Lots receiving bids (1 = one hot lot).
    #[arg(long, default_value_t = 1)]
    lots: usize,
    /// Bids to publish.
    #[arg(long, default_value_t = 100_000)]
    bids: usize,
    /// Distinct bidders (verified users); consecutive bids on a lot alternate between them.
    #[arg(long, default_value_t = 50)]
    bidders: usize,
    /// Bidders racing for each increment: 1 = every bid is valid in stream order (all accepted,
    /// the heaviest case: four announcements each); N = N bids per increment with the same
    /// seen high, the first accepted and the others refused `stale` (a hot lot).
    #[arg(long, default_value_t = 1)]
    contenders: usize,
    /// Open-loop rate in bids/s; unset: as fast as JetStream takes them.
    #[arg(long)]
    rate: Option<u64>,
    /// Confirm every Nth bid: N-1 bids go as core publishes and the Nth as a JetStream publish
    /// whose ack confirms them all (the stream stores one connection's messages in order), as
    /// an importer or a batching edge would; 1 = every bid acked, as the edge does today.
    #[arg(long, default_value_t = 1)]
    ack_every: usize,
    /// Let a bidder running elsewhere decide (do not start one here).
    #[arg(long)]
    external_bidder: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// Start a private nats-server and database for the run (a clean, reproducible state)
    /// instead of using NATS_URL and DATABASE_URL.
    #[arg(long)]
    private: bool,
}

/// Private servers for a bench run, or the configured ones.
async fn servers(
    conn: &Conn,
    private: bool,
) -> anyhow::Result<(Conn, Option<(testkit::NatsServer, testkit::TestDb)>)> {
    let mut conn = conn.clone();
    if !private {
        return Ok((conn, None));
    }
    let nats = testkit::NatsServer::start().await?;
    let db = testkit::TestDb::new().await?;
    conn.nats_url = nats.url();
    conn.database_url = db.url.clone();
    Ok((conn, Some((nats, db))))
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Bidder(b) => bench_bidder(b).await,
        BenchCommand::Ticker(t) => bench_ticker(t).await,
        BenchCommand::Fanout(f) => crate::bench_fanout::run(f).await,
        BenchCommand::Night(n) => crate::bench_night::run(n).await,
        BenchCommand::FloorServer(f) => crate::bench_fanout::floor_server(f).await,
    }
}

async fn bench_bidder(o: BidderBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        o.bidders >= 2,
        "at least 2 bidders (a bidder cannot outbid itself)"
    );
    anyhow::ensure!(o.lots >= 1 && o.bids >= 1, "at least one lot and one bid");
    let (conn, _servers) = servers(&o.conn, o.private).await?;
    migrate(&conn, 1).await?;
    let partitions = conn.partitions()?;
    let pool = store::connect(&conn.database_url, 8).await?;
    let nats = bus::connect(&conn.nats_url, "gavel-bench").await?;
    let js = bus::jetstream(nats.clone());

    eprintln!("setting up {} bidders and {} lots", o.bidders, o.lots);
    let (users, lots) = setup(&pool, o.bidders, o.lots).await?;

    let shutdown = CancellationToken::new();
    let bidder_task = if o.external_bidder {
        None
    } else {
        let bnats = bus::connect(&conn.nats_url, "gavel-bench-bidder").await?;
        let cfg = o.bidder.config(partitions);
        Some(tokio::spawn(bidder::run(
            cfg,
            bnats,
            pool.clone(),
            shutdown.clone(),
        )))
    };

    // Open every lot through its ordered subject, as the ticker would.
    let ends_at = schemas::now_ms() + 3_600_000;
    for &lot in &lots {
        let cmd = BidCommand::Open {
            lot_id: lot,
            ends_at,
        };
        bus::Outgoing::new(
            subj::bids(lot, partitions),
            &cmd,
            None,
            TraceParent::new_root(),
        )
        .send(&js)
        .await?
        .await?;
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let open = store::bidding::count_in_state(&pool, &lots, schemas::LotState::Open).await?;
        if open as usize == lots.len() {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "lots did not open within 60 s: is a bidder running?"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // Answers: every decision reaches user.<id>.result; the idem carries the send time.
    let run_tag = uuid::Uuid::new_v4().simple().to_string()[..8].to_owned();
    let start = Instant::now();
    let hist = Arc::new(Mutex::new(Histogram::<u64>::new_with_bounds(
        1, 60_000_000, 3,
    )?));
    let outcomes = Arc::new(Mutex::new(BTreeMap::<String, u64>::new()));
    let decided = Arc::new(AtomicU64::new(0));
    let mut sub = nats.subscribe("user.*.result").await?;
    nats.flush().await?;
    let collector = {
        let (hist, outcomes, decided) = (hist.clone(), outcomes.clone(), decided.clone());
        let total = o.bids as u64;
        let run_tag = run_tag.clone();
        tokio::spawn(async move {
            let mut last = start;
            while let Some(msg) = sub.next().await {
                let now = Instant::now();
                let Ok(UserMsg::Result(r)) = UserMsg::decode(&msg.payload) else {
                    continue;
                };
                // Only this run's bids (a restarted bidder may re-announce older answers).
                let mut parts = r.idem.split('-');
                if parts.next() != Some(run_tag.as_str()) {
                    continue;
                }
                let Some(sent_us) = parts.next().and_then(|s| s.parse::<u64>().ok()) else {
                    continue;
                };
                let lat = (now - start).as_micros() as u64;
                let _ = hist
                    .lock()
                    .expect("histogram")
                    .record(lat.saturating_sub(sent_us).max(1));
                let key = match r.status {
                    BidStatus::Accepted => "accepted".to_owned(),
                    BidStatus::Rejected => {
                        r.reason.map(|x| x.as_str().to_owned()).unwrap_or_default()
                    }
                };
                *outcomes.lock().expect("outcomes").entry(key).or_default() += 1;
                last = now;
                if decided.fetch_add(1, Ordering::Relaxed) + 1 >= total {
                    break;
                }
            }
            last
        })
    };

    eprintln!(
        "publishing {} bids{}",
        o.bids,
        o.rate.map(|r| format!(" at {r}/s")).unwrap_or_default()
    );
    let (ack_tx, mut ack_rx) =
        tokio::sync::mpsc::channel::<async_nats::jetstream::context::PublishAckFuture>(50_000);
    let acker = tokio::spawn(async move {
        let mut failed = 0u64;
        while let Some(f) = ack_rx.recv().await {
            if f.await.is_err() {
                failed += 1;
            }
        }
        failed
    });
    let cpu_probe = CpuProbe::start(&pool, _servers.as_ref().and_then(|(n, _)| n.pid())).await;
    let contenders = o.contenders.max(1);
    let ack_every = o.ack_every.max(1);
    let core = js.client();
    let mut chains: Vec<(Option<i64>, usize)> = vec![(None, 0); lots.len()];
    let pub_start = Instant::now();
    for i in 0..o.bids {
        if let Some(rate) = o.rate {
            let due = pub_start + Duration::from_secs_f64(i as f64 / rate as f64);
            if due > Instant::now() + Duration::from_micros(500) {
                tokio::time::sleep_until(due.into()).await;
            }
        }
        let li = i % lots.len();
        let (high, k) = chains[li];
        let amount = schemas::min_next(1_000, high);
        let user = users[k % users.len()];
        let next_round = (k + 1) % contenders == 0;
        chains[li] = (if next_round { Some(amount) } else { high }, k + 1);
        let sent_us = (Instant::now() - start).as_micros();
        let idem = format!("{run_tag}-{sent_us}-{i}");
        let bid = BidCommand::PlaceBid(PlaceBid {
            lot_id: lots[li],
            user_id: user,
            amount,
            seen_high: high,
            idem: idem.clone(),
            sent_at: schemas::now_ms(),
        });
        let out = bus::Outgoing::new(
            subj::bids(lots[li], partitions),
            &bid,
            Some(format!("{user}:{idem}")),
            TraceParent::new_root(),
        );
        if (i + 1) % ack_every == 0 || i + 1 == o.bids {
            ack_tx.send(out.send(&js).await?).await?;
        } else {
            out.send_core(&core).await?;
        }
    }
    drop(ack_tx);
    let publish_secs = pub_start.elapsed().as_secs_f64();
    let failed = acker.await?;
    let wait = Duration::from_secs(30 + (o.bids / 5_000) as u64);
    let last = tokio::time::timeout(wait, collector).await;
    let got = decided.load(Ordering::Relaxed);
    let last = match last {
        Ok(Ok(t)) => t,
        _ => Instant::now(),
    };
    let secs = (last - pub_start).as_secs_f64();
    let cpu_us_per_bid = cpu_probe.per_bid_us(&pool, got).await;
    shutdown.cancel();
    if let Some(t) = bidder_task {
        t.await??;
    }

    let h = hist.lock().expect("histogram").clone();
    let outcomes = outcomes.lock().expect("outcomes").clone();
    let ms = |q: f64| h.value_at_quantile(q) as f64 / 1000.0;
    let report = serde_json::json!({
        "bench": "bidder",
        "lots": o.lots,
        "bidders": o.bidders,
        "contenders": contenders,
        "bids_published": o.bids,
        "publish_failed": failed,
        "rate_target": o.rate,
        "publish_secs": publish_secs,
        "decided": got,
        "decided_per_sec": got as f64 / secs,
        "outcomes": outcomes,
        "latency_ms": { "p50": ms(0.5), "p90": ms(0.9), "p99": ms(0.99), "max": h.max() as f64 / 1000.0 },
        "batch_max": o.bidder.batch_max,
        "ack_every": ack_every,
        "cpu_us_per_bid": cpu_us_per_bid,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
    });
    if o.json {
        println!("{report}");
    } else {
        println!(
            "gavel bench bidder: {} lot(s), {} bidders, {} bids{}",
            o.lots,
            o.bidders,
            o.bids,
            o.rate
                .map(|r| format!(", open loop at {r}/s"))
                .unwrap_or_else(|| ", as fast as possible".into())
        );
        println!(
            "  decided            {got} of {} in {secs:.2} s  ->  {:.0} bids/s",
            o.bids,
            got as f64 / secs
        );
        println!(
            "  outcomes           {}",
            outcomes
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>()
                .join(" ")
        );
        println!(
            "  publish->decision  p50 {:.2} ms  p90 {:.2} ms  p99 {:.2} ms  max {:.2} ms",
            ms(0.5),
            ms(0.9),
            ms(0.99),
            h.max() as f64 / 1000.0
        );
        println!(
            "  CPU per bid        {}",
            cpu_us_per_bid
                .iter()
                .map(|(k, v)| format!("{k} {v:.1} us"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        if failed > 0 {
            println!("  publish failures   {failed}");
        }
    }
    anyhow::ensure!(
        got as usize == o.bids,
        "only {got} of {} bids were decided",
        o.bids
    );
    Ok(())
}

/// CPU time of the processes doing the work (this one: the bench client and the bidder; the
/// private nats-server; the database's Postgres backends), so a run on a busy machine still
/// says what a bid costs. Postgres must be on this machine for its part to count.
struct CpuProbe {
    nats: Option<u32>,
    start: BTreeMap<(&'static str, u32), f64>,
}

impl CpuProbe {
    async fn sample(&self, pool: &store::PgPool) -> BTreeMap<(&'static str, u32), f64> {
        let mut pids = vec![("gavel", std::process::id())];
        pids.extend(self.nats.map(|p| ("nats-server", p)));
        let backends = store::health::backend_pids(pool).await.unwrap_or_default();
        pids.extend(backends.into_iter().map(|p| ("postgres", p)));
        pids.into_iter()
            .filter_map(|k| Some((k, crate::bench_kit::cpu_ms(k.1).ok()?)))
            .collect()
    }

    async fn start(pool: &store::PgPool, nats: Option<u32>) -> Self {
        let mut probe = CpuProbe {
            nats,
            start: BTreeMap::new(),
        };
        probe.start = probe.sample(pool).await;
        probe
    }

    /// Microseconds of CPU per decided bid since `start`, per process kind.
    async fn per_bid_us(&self, pool: &store::PgPool, bids: u64) -> BTreeMap<&'static str, f64> {
        let mut out = BTreeMap::new();
        for ((kind, pid), ms) in self.sample(pool).await {
            let before = self.start.get(&(kind, pid)).copied().unwrap_or(0.0);
            *out.entry(kind).or_insert(0.0) += (ms - before) * 1000.0 / bids.max(1) as f64;
        }
        out
    }
}

/// Verified bidders, and `n` scheduled lots in one event (lane 1), each on its own vehicle.
async fn setup(
    pool: &store::PgPool,
    bidders: usize,
    n: usize,
) -> anyhow::Result<(Vec<UserId>, Vec<LotId>)> {
    let run = uuid::Uuid::new_v4().simple().to_string();
    let hash = store::users::hash_password("bench-password")?;
    let mut users = Vec::with_capacity(bidders);
    for i in 0..bidders {
        let u = store::users::create_user(
            pool,
            &format!("bench-{run}-{i}@gavel.test"),
            &hash,
            &format!("Bench {i}"),
            false,
            true,
        )
        .await?;
        users.push(UserId(u.id));
    }
    let (_event, lots) = setup_event(pool, 1, n, 3600, schemas::now_ms()).await?;
    Ok((users, lots))
}

async fn bench_ticker(o: TickerBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        o.lanes >= 1 && o.lots >= o.lanes as usize,
        "at least one lot per lane"
    );
    let (conn, _servers) = servers(&o.conn, o.private).await?;
    migrate(&conn, 1).await?;
    let partitions = conn.partitions()?;
    let pool = store::connect(&conn.database_url, 8).await?;
    let nats = bus::connect(&conn.nats_url, "gavel-bench").await?;
    let per_lane = o.lots / o.lanes as usize;
    let starts_at = schemas::now_ms() + 1_000;
    let (event, _) = setup_event(&pool, o.lanes, per_lane, o.lot_seconds, starts_at).await?;
    let total = per_lane * o.lanes as usize;

    let mut lots_feed = nats.subscribe(format!("auction.{event}.*.lot")).await?;
    let mut ticks = nats.subscribe(format!("auction.{event}.*.tick")).await?;
    let mut commands = nats.subscribe("bids.>").await?;
    nats.flush().await?;
    let shutdown = CancellationToken::new();
    let bidder_task = tokio::spawn(bidder::run(
        bidder::Config::new(partitions),
        bus::connect(&conn.nats_url, "gavel-bench-bidder").await?,
        pool.clone(),
        shutdown.clone(),
    ));
    let mut tcfg = ticker::Config::new(partitions);
    tcfg.tick_ms = o.tick_ms;
    let ticker_task = tokio::spawn(ticker::run(
        tcfg,
        bus::connect(&conn.nats_url, "gavel-bench-ticker").await?,
        pool.clone(),
        shutdown.clone(),
    ));
    eprintln!(
        "running {total} lots of {} s over {} lanes",
        o.lot_seconds, o.lanes
    );

    let mut late_decided = Histogram::<u64>::new(3)?;
    let mut late_seen = Histogram::<u64>::new(3)?;
    let mut late_sent = Histogram::<u64>::new(3)?;
    let mut hammered: std::collections::HashSet<LotId> = Default::default();
    let mut jitter = Histogram::<u64>::new(3)?;
    let mut tick_delay = Histogram::<u64>::new(3)?;
    let mut deadline: std::collections::HashMap<LotId, i64> = Default::default();
    let mut last_tick: std::collections::HashMap<LotId, i64> = Default::default();
    let mut closed = 0usize;
    let limit = Duration::from_secs((per_lane as u64 + 2) * (o.lot_seconds as u64 + 2) + 30);
    let until = tokio::time::Instant::now() + limit;
    while closed < total {
        tokio::select! {
            _ = tokio::time::sleep_until(until) => break,
            Some(m) = lots_feed.next() => {
                let seen = schemas::now_ms();
                match schemas::nats::AuctionMsg::decode(&m.payload) {
                    Ok(schemas::nats::AuctionMsg::LotOpened(c)) => {
                        if let Some(e) = c.ends_at {
                            deadline.insert(c.lot_id, e);
                        }
                    }
                    Ok(schemas::nats::AuctionMsg::LotClosed(c)) => {
                        closed += 1;
                        if let Some(&e) = deadline.get(&c.lot_id) {
                            late_decided.record((c.server_time - e).max(0) as u64)?;
                            late_seen.record((seen - e).max(0) as u64)?;
                        }
                    }
                    _ => {}
                }
            }
            Some(m) = commands.next() => {
                let seen = schemas::now_ms();
                if let Ok(BidCommand::Hammer { lot_id, .. }) = BidCommand::decode(&m.payload) {
                    if let Some(&e) = deadline.get(&lot_id) {
                        if hammered.insert(lot_id) {
                            late_sent.record((seen - e).max(0) as u64)?;
                        }
                    }
                }
            }
            Some(m) = ticks.next() => {
                let seen = schemas::now_ms();
                if let Ok(schemas::nats::AuctionMsg::TimerUpdate(t)) = schemas::nats::AuctionMsg::decode(&m.payload) {
                    tick_delay.record((seen - t.server_time).max(0) as u64)?;
                    if let Some(prev) = last_tick.insert(t.lot_id, t.server_time) {
                        jitter.record((t.server_time - prev - o.tick_ms).unsigned_abs())?;
                    }
                }
            }
        }
    }
    // The event closes once the ticker sees its lanes empty.
    let mut status = store::clock::event_status(&pool, event).await?;
    let until = tokio::time::Instant::now() + Duration::from_secs(3);
    while status != "closed" && tokio::time::Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(50)).await;
        status = store::clock::event_status(&pool, event).await?;
    }
    shutdown.cancel();
    bidder_task.await??;
    ticker_task.await??;
    let q = |h: &Histogram<u64>| serde_json::json!({"p50": h.value_at_quantile(0.5), "p99": h.value_at_quantile(0.99), "max": h.max(), "n": h.len()});
    let report = serde_json::json!({
        "bench": "ticker",
        "lots": total,
        "lanes": o.lanes,
        "lot_seconds": o.lot_seconds,
        "tick_ms": o.tick_ms,
        "closed": closed,
        "event_status": status,
        "hammer_sent_ms": q(&late_sent),
        "hammer_lateness_decided_ms": q(&late_decided),
        "hammer_lateness_announced_ms": q(&late_seen),
        "tick_jitter_ms": q(&jitter),
        "tick_delivery_ms": q(&tick_delay),
    });
    if o.json {
        println!("{report}");
    } else {
        println!(
            "gavel bench ticker: {total} lots of {} s over {} lanes, ticks every {} ms",
            o.lot_seconds, o.lanes, o.tick_ms
        );
        println!("  closed                      {closed} of {total}; event {status}");
        let line = |name: &str, h: &Histogram<u64>| {
            println!(
                "  {name:<27} p50 {} ms  p99 {} ms  max {} ms  ({} samples)",
                h.value_at_quantile(0.5),
                h.value_at_quantile(0.99),
                h.max(),
                h.len()
            )
        };
        line("hammer sent (ticker)", &late_sent);
        line("hammer lateness (decided)", &late_decided);
        line("hammer lateness (announced)", &late_seen);
        line("tick jitter at the ticker", &jitter);
        line("tick delivery", &tick_delay);
    }
    anyhow::ensure!(closed == total, "only {closed} of {total} lots closed");
    Ok(())
}

/// A scheduled event of `lanes` × `per_lane` lots (no reserve, `lot_seconds` on the clock and
/// after each bid) starting at `starts_at`; its lots lane by lane, in position order.
pub(crate) async fn setup_event(
    pool: &store::PgPool,
    lanes: i32,
    per_lane: usize,
    lot_seconds: i32,
    starts_at: i64,
) -> anyhow::Result<(schemas::EventId, Vec<LotId>)> {
    use store::catalog::*;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let vendor = create_vendor(pool, "Bench Motors", "bench@gavel.test").await?;
    let event = create_event(
        pool,
        &NewEvent {
            name: format!("bench {run}"),
            starts_at,
            lanes,
            lot_seconds,
            reset_seconds: lot_seconds,
        },
    )
    .await?;
    let mut lots = Vec::with_capacity(lanes as usize * per_lane);
    for lane in 1..=lanes {
        for position in 1..=per_lane as i32 {
            let vehicle = bench_vehicle(
                pool,
                vendor,
                &format!("T{}{lane:02}{position:04}", &run[..10]),
            )
            .await?;
            lots.push(
                add_lot(
                    pool,
                    &NewLot {
                        event_id: event,
                        vehicle_id: vehicle,
                        lane,
                        position,
                        starting_price: 1_000,
                        reserve: 0,
                    },
                )
                .await?,
            );
        }
    }
    schedule_event(pool, event).await?;
    Ok((event, lots))
}

async fn bench_vehicle(
    pool: &store::PgPool,
    vendor: schemas::VendorId,
    vin: &str,
) -> anyhow::Result<schemas::VehicleId> {
    Ok(store::catalog::create_vehicle(
        pool,
        &store::catalog::NewVehicle {
            vendor_id: vendor,
            vin: vin.to_uppercase(),
            year: 2020,
            make: "Bench".into(),
            model: "Load".into(),
            trim: String::new(),
            mileage: 1,
            photos: vec![],
            pickup: "Bench yard".into(),
        },
    )
    .await?)
}
