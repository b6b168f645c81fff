//! The ticker's leadership with real processes: `gavel ticker` twice on one lease bucket. Killing
//! the leader mid-lot hands the clock to the standby within the lease; two tickers that both
//! believe they lead (`--force-leader`) open and close every lot exactly once, with the right
//! outcome, even while bids race their hammers.

#[path = "../../bidder/tests/common/mod.rs"]
mod common;

use common::{Env, PARTITIONS};
use schemas::nats::AuctionMsg;
use schemas::{min_next, EventId, LotId, LotState, Outcome};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use testkit::wait_until;

/// The tickers' lease, in ms.
const LEASE_MS: u64 = 1_000;

/// A `gavel ticker` process, killed (and reaped) when dropped, so a failing test leaves none.
struct Ticker(Child);

impl Ticker {
    fn pid(&self) -> u32 {
        self.0.id()
    }

    /// SIGKILL, then reap.
    fn kill(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.kill();
    }
}

fn ticker_process(env: &Env, bucket: &str, force_leader: bool) -> Ticker {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gavel"));
    cmd.arg("ticker")
        .args([
            "--partitions",
            &PARTITIONS.to_string(),
            "--tick-ms",
            "200",
            "--poll-ms",
            "100",
            "--lease-ttl-ms",
            &LEASE_MS.to_string(),
            "--bucket",
            bucket,
        ])
        .env("NATS_URL", env.nats.url())
        .env("DATABASE_URL", &env.db.url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if force_leader {
        cmd.arg("--force-leader");
    }
    Ticker(cmd.spawn().expect("gavel ticker starts"))
}

fn bucket_name() -> String {
    format!("ticker_{}", uuid::Uuid::new_v4().simple())
}

/// The pid in a ticker's name, `ticker-<pid>-<random>`.
fn pid_of(name: &str) -> Option<u32> {
    name.strip_prefix("ticker-")?
        .split('-')
        .next()?
        .parse()
        .ok()
}

/// The pid of the ticker whose name the lease holds, if any.
async fn leader_pid(env: &Env, bucket: &str) -> Option<u32> {
    let kv = env.js.get_key_value(bucket).await.ok()?;
    let name = kv.get("leader").await.ok()??;
    pid_of(&String::from_utf8_lossy(&name))
}

/// Applied `open` and `hammer` commands of a lot, and all hammers (applied or stale).
async fn applied_commands(env: &Env, lot: LotId) -> (i64, i64, i64) {
    sqlx::query_as(
        "SELECT count(*) FILTER (WHERE kind = 'open' AND applied),
                count(*) FILTER (WHERE kind = 'hammer' AND applied),
                count(*) FILTER (WHERE kind = 'hammer')
           FROM lot_commands WHERE lot_id = $1",
    )
    .bind(lot.0)
    .fetch_one(env.pool())
    .await
    .unwrap()
}

/// How late each close was decided after its lot's deadline, in ms (applied hammers only).
async fn hammer_lateness(env: &Env) -> Vec<i64> {
    sqlx::query_scalar(
        "SELECT decided_at - ends_at FROM lot_commands
          WHERE kind = 'hammer' AND applied ORDER BY 1",
    )
    .fetch_all(env.pool())
    .await
    .unwrap()
}

/// The audit of the whole database finds nothing: each lot closed once and never changed after,
/// settlements and lot states as their bids say.
async fn assert_audit_clean(env: &Env) {
    let violations = store::audit::check(env.pool(), None).await.unwrap();
    assert!(violations.is_empty(), "audit: {violations:#?}");
}

/// Every `LotOpened` and `LotClosed` stored for the event, by lot, once all `expected` lots
/// closed have been announced (the event may close before the last close is announced: the
/// bidder commits, then announces).
async fn announcements(
    env: &Env,
    event: EventId,
    expected: usize,
) -> (
    HashMap<LotId, usize>,
    HashMap<LotId, Vec<(Outcome, Option<i64>)>>,
) {
    let filter = format!("auction.{event}.*.lot");
    wait_until(
        Duration::from_secs(10),
        "every open and close announced",
        || async { env.count("AUCTION", &filter).await >= 2 * expected as u64 },
    )
    .await
    .unwrap();
    let mut opened: HashMap<LotId, usize> = HashMap::new();
    let mut closed: HashMap<LotId, Vec<(Outcome, Option<i64>)>> = HashMap::new();
    for m in env.read_all::<AuctionMsg>("AUCTION", &filter).await {
        match m {
            AuctionMsg::LotOpened(c) => *opened.entry(c.lot_id).or_default() += 1,
            AuctionMsg::LotClosed(c) => closed
                .entry(c.lot_id)
                .or_default()
                .push((c.outcome, c.amount)),
            other => panic!("unexpected on {filter}: {other:?}"),
        }
    }
    (opened, closed)
}

/// Every lot opened once and closed once: in `lot_commands` (one applied open, one applied
/// hammer), in the `AUCTION` stream (one `LotOpened`, one `LotClosed`) and in `lots` (closed).
/// Returns each lot's announced close.
async fn assert_each_lot_once(
    env: &Env,
    event: EventId,
    lanes: &[Vec<LotId>],
) -> HashMap<LotId, (Outcome, Option<i64>)> {
    let all: Vec<LotId> = lanes.iter().flatten().copied().collect();
    let (opened, mut closed) = announcements(env, event, all.len()).await;
    let mut out = HashMap::new();
    for (lane, lots) in lanes.iter().enumerate() {
        for (pos, &lot) in lots.iter().enumerate() {
            let at = format!("lane {} position {}", lane + 1, pos + 1);
            let (opens, hammers, all_hammers) = applied_commands(env, lot).await;
            assert_eq!(opens, 1, "{at}: exactly one applied open");
            assert_eq!(
                hammers, 1,
                "{at}: exactly one applied hammer ({all_hammers} hammers decided)"
            );
            assert_eq!(opened.get(&lot), Some(&1), "{at}: one LotOpened");
            let c = closed.remove(&lot).unwrap_or_default();
            assert_eq!(c.len(), 1, "{at}: one LotClosed, got {c:?}");
            assert_eq!(env.lot(lot).await.state, LotState::Closed, "{at}");
            out.insert(lot, c[0]);
        }
    }
    assert_eq!(opened.len(), all.len(), "no LotOpened for another lot");
    assert!(closed.is_empty(), "no LotClosed for another lot");
    out
}

async fn wait_event_closed(env: &Env, event: EventId) {
    wait_until(Duration::from_secs(30), "event closed", || async {
        store::clock::event_status(env.pool(), event).await.unwrap() == "closed"
    })
    .await
    .unwrap();
}

async fn wait_open(env: &Env, lot: LotId) {
    wait_until(
        Duration::from_secs(10),
        "first lot of lane 1 open",
        || async { env.lot(lot).await.state == LotState::Open },
    )
    .await
    .unwrap();
}

async fn settlements(env: &Env) -> Vec<(uuid::Uuid, uuid::Uuid, i64)> {
    sqlx::query_as("SELECT lot_id, user_id, amount FROM settlements")
        .fetch_all(env.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_the_leading_ticker_hands_over_to_the_standby() {
    let started = Instant::now();
    let env = Env::start().await;
    let (_b, _bh) = env.spawn_bidder(env.bidder_config()).await;
    let (event, lanes) = env.event(2, 3, schemas::now_ms(), 2, 2, |_, _| 0).await;
    let first = lanes[0][0];
    let bucket = bucket_name();
    let a = ticker_process(&env, &bucket, false);
    let b = ticker_process(&env, &bucket, false);
    let pids = [a.pid(), b.pid()];

    wait_until(Duration::from_secs(10), "one ticker leads", || async {
        leader_pid(&env, &bucket)
            .await
            .is_some_and(|p| pids.contains(&p))
    })
    .await
    .unwrap();
    let (mut leader, standby) = if leader_pid(&env, &bucket).await == Some(a.pid()) {
        (a, b)
    } else {
        (b, a)
    };

    wait_open(&env, first).await;
    leader.kill();
    let killed = Instant::now();
    let lot = env.lot(first).await;
    assert_eq!(lot.state, LotState::Open, "killed mid-lot");
    assert!(
        lot.ends_at.unwrap() > schemas::now_ms(),
        "killed before the deadline"
    );

    // The dead leader's last renewal, as the server stamped it: the lease expires LEASE_MS later.
    let kv = env.js.get_key_value(&bucket).await.unwrap();
    let last_renewal = kv.entry("leader").await.unwrap().expect("a lease").created;
    wait_until(
        Duration::from_millis(LEASE_MS + 10_000),
        "the standby leads",
        || async { leader_pid(&env, &bucket).await == Some(standby.pid()) },
    )
    .await
    .unwrap();
    let handover = killed.elapsed();
    let taken = kv.entry("leader").await.unwrap().expect("a lease").created;
    let after_expiry = (taken - last_renewal).whole_milliseconds() - LEASE_MS as i128;
    assert!(
        after_expiry <= 2_000,
        "the standby took over {after_expiry} ms after the lease expired"
    );

    wait_event_closed(&env, event).await;
    let closes = assert_each_lot_once(&env, event, &lanes).await;
    for (lot, (outcome, amount)) in &closes {
        assert_eq!((*outcome, *amount), (Outcome::Unsold, None), "{lot}");
        assert_eq!(env.lot(*lot).await.outcome, Some(Outcome::Unsold), "{lot}");
    }
    assert!(settlements(&env).await.is_empty(), "nothing sold");
    assert_audit_clean(&env).await;
    // The lot on the block when the leader died waits for the standby (the lease, then its
    // first poll); the others close on time.
    let late = hammer_lateness(&env).await;
    assert_eq!(late.len(), 6, "{late:?}");
    assert!(
        *late.last().unwrap() <= LEASE_MS as i64 + 2_000,
        "hammer lateness {late:?} ms"
    );

    drop(standby);
    eprintln!(
        "handover {} ms after the kill; hammer lateness {late:?} ms; test {} ms",
        handover.as_millis(),
        started.elapsed().as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_tickers_that_both_lead_do_no_harm() {
    let started = Instant::now();
    let env = Env::start().await;
    let (_b, _bh) = env.spawn_bidder(env.bidder_config()).await;
    let users = env.users(2, true).await;
    let (event, lanes) = env.event(2, 3, schemas::now_ms(), 2, 2, |_, _| 0).await;
    let first = lanes[0][0];
    let bucket = bucket_name();
    let a = ticker_process(&env, &bucket, true);
    let b = ticker_process(&env, &bucket, true);

    wait_open(&env, first).await;
    // Two bids at once (the clock resets), then bids just before the next deadlines, so the
    // hammers both tickers send at those deadlines race them: either may win in stream order.
    let mut high: Option<i64> = None;
    let mut seq = 0;
    for i in 0..2 {
        let amount = min_next(100_000, high);
        seq = env
            .bid(first, users[i % 2], amount, high, &format!("bid-{i}"))
            .await;
        high = Some(amount);
    }
    env.wait_applied(first, seq).await;
    let lot = env.lot(first).await;
    assert_eq!(
        (lot.state, lot.bid_count, lot.high),
        (LotState::Open, 2, high),
        "both early bids accepted"
    );
    for (i, before_ms) in [(2, 30), (3, 5)] {
        let lot = env.lot(first).await;
        if lot.state != LotState::Open {
            break;
        }
        let user = if lot.high_bidder == Some(users[0]) {
            users[1]
        } else {
            users[0]
        };
        let at = (lot.ends_at.unwrap() - before_ms - schemas::now_ms()).max(0) as u64;
        tokio::time::sleep(Duration::from_millis(at)).await;
        let amount = min_next(100_000, lot.high);
        let seq = env
            .bid(first, user, amount, lot.high, &format!("bid-{i}"))
            .await;
        env.wait_applied(first, seq).await;
    }

    wait_event_closed(&env, event).await;
    let closes = assert_each_lot_once(&env, event, &lanes).await;

    let accepted = store::bidding::accepted_bids(env.pool(), first)
        .await
        .unwrap();
    assert!(accepted.len() >= 2, "{accepted:?}");
    let last = accepted.last().unwrap();
    let sold = env.lot(first).await;
    assert_eq!(
        (sold.outcome, sold.high, sold.high_bidder),
        (Some(Outcome::Sold), Some(last.amount), Some(last.user_id)),
        "sold to the last accepted bid"
    );
    assert_eq!(
        closes[&first],
        (Outcome::Sold, Some(last.amount)),
        "announced sold"
    );
    let refused: Vec<_> = sqlx::query_as::<_, (String, Option<String>)>(
        "SELECT idem, reason FROM bids WHERE lot_id = $1 AND status = 'rejected'",
    )
    .bind(first.0)
    .fetch_all(env.pool())
    .await
    .unwrap();
    for (idem, reason) in &refused {
        assert_eq!(
            reason.as_deref(),
            Some("closed"),
            "{idem}: only the hammer refuses a bid here"
        );
    }
    for (lot, close) in &closes {
        if *lot != first {
            assert_eq!(*close, (Outcome::Unsold, None), "{lot}");
            assert_eq!(env.lot(*lot).await.outcome, Some(Outcome::Unsold), "{lot}");
        }
    }
    let settled = settlements(&env).await;
    assert_eq!(
        settled,
        vec![(first.0, last.user_id.0, last.amount)],
        "exactly one settlement, the winner's"
    );
    let stale_hammers = applied_commands(&env, first).await.2 - 1;
    assert_audit_clean(&env).await;
    let late = hammer_lateness(&env).await;
    assert_eq!(late.len(), 6, "{late:?}");
    assert!(
        *late.last().unwrap() <= 1_000,
        "two leaders still close on time: lateness {late:?} ms"
    );

    drop((a, b));
    eprintln!(
        "{} bids accepted, {} refused after the hammer, {stale_hammers} stale hammers; \
         hammer lateness {late:?} ms; test {} ms",
        accepted.len(),
        refused.len(),
        started.elapsed().as_millis()
    );
}
