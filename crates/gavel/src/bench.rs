//! `gavel bench`: load generators that print what they measured.
//!
//! `gavel bench bidder` publishes bids straight to JetStream (no edge) and measures how fast the
//! bidder decides them: decided bids/s and publish → decision latency, read from the
//! `user.<id>.result` answers.

use crate::{migrate, BidderOpts, Conn};
use async_nats::jetstream::message::PublishMessage;
use clap::{Args, Subcommand};
use futures::StreamExt;
use hdrhistogram::Histogram;
use schemas::frames::BidStatus;
use schemas::nats::{headers, BidCommand, NatsMessage, PlaceBid, UserMsg};
use schemas::subjects as subj;
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
    /// Let a bidder running elsewhere decide (do not start one here).
    #[arg(long)]
    external_bidder: bool,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
}

pub async fn run(cmd: BenchCommand) -> anyhow::Result<()> {
    match cmd {
        BenchCommand::Bidder(b) => bench_bidder(b).await,
    }
}

async fn bench_bidder(o: BidderBench) -> anyhow::Result<()> {
    anyhow::ensure!(
        o.bidders >= 2,
        "at least 2 bidders (a bidder cannot outbid itself)"
    );
    anyhow::ensure!(o.lots >= 1 && o.bids >= 1, "at least one lot and one bid");
    migrate(&o.conn, 1).await?;
    let partitions = o.conn.partitions()?;
    let pool = store::connect(&o.conn.database_url, 8).await?;
    let nats = bus::connect(&o.conn.nats_url, "gavel-bench").await?;
    let js = bus::jetstream(nats.clone());

    eprintln!("setting up {} bidders and {} lots", o.bidders, o.lots);
    let (users, lots) = setup(&pool, o.bidders, o.lots).await?;

    let shutdown = CancellationToken::new();
    let bidder_task = if o.external_bidder {
        None
    } else {
        let bnats = bus::connect(&o.conn.nats_url, "gavel-bench-bidder").await?;
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
        js.send_publish(
            subj::bids(lot, partitions),
            PublishMessage::build().payload(cmd.encode().into()),
        )
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
    let contenders = o.contenders.max(1);
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
        let mut h = async_nats::HeaderMap::new();
        h.insert(headers::CONTENT_TYPE, headers::MSGPACK);
        h.insert(headers::GAVEL_TYPE, bid.gavel_type());
        h.insert(headers::NATS_MSG_ID, format!("{user}:{idem}").as_str());
        h.insert(
            headers::TRACEPARENT,
            schemas::trace::TraceParent::new_root().to_string().as_str(),
        );
        let f = js
            .send_publish(
                subj::bids(lots[li], partitions),
                PublishMessage::build()
                    .payload(bid.encode().into())
                    .headers(h),
            )
            .await?;
        ack_tx.send(f).await?;
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

/// Verified bidders, and `n` scheduled lots in one event (lane 1), each on its own vehicle.
async fn setup(
    pool: &store::PgPool,
    bidders: usize,
    n: usize,
) -> anyhow::Result<(Vec<UserId>, Vec<LotId>)> {
    use store::catalog::*;
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
    let vendor = create_vendor(pool, "Bench Motors", "bench@gavel.test").await?;
    let event = create_event(
        pool,
        &NewEvent {
            name: format!("bench {run}"),
            starts_at: schemas::now_ms(),
            lanes: 1,
            lot_seconds: 3600,
            reset_seconds: 3600,
        },
    )
    .await?;
    let mut lots = Vec::with_capacity(n);
    for i in 0..n {
        let vin: String = format!("B{}{:06}", &run[..10], i).to_uppercase();
        let vehicle = create_vehicle(
            pool,
            &NewVehicle {
                vendor_id: vendor,
                vin,
                year: 2020,
                make: "Bench".into(),
                model: "Load".into(),
                trim: String::new(),
                mileage: 1,
                photos: vec![],
                pickup: "Bench yard".into(),
            },
        )
        .await?;
        lots.push(
            add_lot(
                pool,
                &NewLot {
                    event_id: event,
                    vehicle_id: vehicle,
                    lane: 1,
                    position: i as i32 + 1,
                    starting_price: 1_000,
                    reserve: 0,
                },
            )
            .await?,
        );
    }
    schedule_event(pool, event).await?;
    Ok((users, lots))
}
