//! The clock end to end on a real NATS and Postgres, with a bidder: events start, lots open in
//! order, close once with the right outcome, lanes rotate, the event closes; a late bid resets.

#[path = "../../bidder/tests/common/mod.rs"]
mod common;

use common::{Env, PARTITIONS};
use futures::StreamExt;
use schemas::nats::{AuctionMsg, BidCommand, NatsMessage};
use schemas::{LotState, Outcome};
use std::time::Duration;
use testkit::wait_until;

fn ticker_config() -> ticker::Config {
    let mut c = ticker::Config::new(PARTITIONS);
    c.tick_ms = 200;
    c.poll_ms = 100;
    c.lease_ttl = Duration::from_millis(1_000);
    c.bucket = format!("ticker_{}", uuid::Uuid::new_v4().simple());
    c
}

async fn spawn_ticker(env: &Env, config: ticker::Config) -> tokio_util::sync::CancellationToken {
    let token = tokio_util::sync::CancellationToken::new();
    let client = bus::connect(&env.nats.url(), "ticker").await.unwrap();
    let pool = env.pool().clone();
    let t = token.clone();
    tokio::spawn(async move { ticker::run(config, client, pool, t).await.expect("ticker") });
    token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_lanes_of_three_lots_run_in_order_and_the_event_closes() {
    let env = Env::start().await;
    let (_b, _bh) = env.spawn_bidder(env.bidder_config()).await;
    let users = env.users(2, true).await;
    // lane 1: reserve 0 (a bid sells); lane 2: reserve far above any bid here (unsold)
    let (event, lanes) = env
        .event(2, 3, schemas::now_ms() + 300, 2, 2, |lane, _| {
            if lane == 1 {
                0
            } else {
                10_000_000
            }
        })
        .await;
    let mut feed = env
        .client
        .subscribe(format!("auction.{event}.*.lot"))
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    let _t = spawn_ticker(&env, ticker_config()).await;

    // Bid once on the first lot of each lane as soon as it is open.
    for lane in &lanes {
        let lot = lane[0];
        wait_until(Duration::from_secs(10), "first lot open", || async {
            env.lot(lot).await.state == LotState::Open
        })
        .await
        .unwrap();
        env.bid(lot, users[0], 100_000, None, &format!("first-{lot}"))
            .await;
    }
    wait_until(Duration::from_secs(40), "event closed", || async {
        store::clock::event_status(env.pool(), event).await.unwrap() == "closed"
    })
    .await
    .unwrap();

    let mut opened: Vec<(i32, i32)> = Vec::new();
    let mut closed: Vec<(i32, i32, Outcome)> = Vec::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), feed.next()).await {
        match AuctionMsg::decode(&m.payload).unwrap() {
            AuctionMsg::LotOpened(c) => opened.push((c.lane, c.position)),
            AuctionMsg::LotClosed(c) => closed.push((c.lane, c.position, c.outcome)),
            _ => {}
        }
    }
    for lane in 1..=2 {
        let o: Vec<i32> = opened.iter().filter(|x| x.0 == lane).map(|x| x.1).collect();
        assert_eq!(
            o,
            vec![1, 2, 3],
            "lane {lane} opens in position order, each once"
        );
        let c: Vec<(i32, Outcome)> = closed
            .iter()
            .filter(|x| x.0 == lane)
            .map(|x| (x.1, x.2))
            .collect();
        let first = if lane == 1 {
            Outcome::Sold
        } else {
            Outcome::Unsold
        };
        assert_eq!(
            c,
            vec![(1, first), (2, Outcome::Unsold), (3, Outcome::Unsold)],
            "lane {lane} closes each lot once with its outcome"
        );
    }
    for (i, lane) in lanes.iter().enumerate() {
        for (j, &lot) in lane.iter().enumerate() {
            let l = env.lot(lot).await;
            let want = if i == 0 && j == 0 {
                Outcome::Sold
            } else {
                Outcome::Unsold
            };
            assert_eq!((l.state, l.outcome), (LotState::Closed, Some(want)));
        }
    }
    let settlements: i64 = sqlx::query_scalar("SELECT count(*) FROM settlements")
        .fetch_one(env.pool())
        .await
        .unwrap();
    assert_eq!(settlements, 1);
    assert_eq!(
        env.count("NOTIFY", "notify.event_starting").await,
        1,
        "one start alert job"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bid_in_the_last_100_ms_resets_the_deadline_and_the_old_hammer_is_ignored() {
    let env = Env::start().await;
    let (_b, _bh) = env.spawn_bidder(env.bidder_config()).await;
    let users = env.users(1, true).await;
    let (event, lanes) = env.event(1, 1, schemas::now_ms(), 2, 2, |_, _| 0).await;
    let lot = lanes[0][0];
    let mut ticks = env
        .client
        .subscribe(schemas::subjects::auction_tick(event, 1))
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    let _t = spawn_ticker(&env, ticker_config()).await;
    wait_until(Duration::from_secs(10), "lot open", || async {
        env.lot(lot).await.state == LotState::Open
    })
    .await
    .unwrap();
    let opened = env.lot(lot).await;
    let deadline = opened.ends_at.unwrap();
    let wait = (deadline - 80 - schemas::now_ms()).max(0) as u64;
    tokio::time::sleep(Duration::from_millis(wait)).await;
    env.bid(lot, users[0], 100_000, None, "last-moment").await;
    // The hammer the ticker may already have in flight for the opening version.
    env.send(
        &BidCommand::Hammer {
            lot_id: lot,
            expected_version: opened.version,
        },
        None,
    )
    .await;
    wait_until(Duration::from_secs(5), "bid decided", || async {
        env.lot(lot).await.high.is_some()
    })
    .await
    .unwrap();
    let after = env.lot(lot).await;
    assert_eq!(after.state, LotState::Open, "the old hammer is stale");
    let new_deadline = after.ends_at.unwrap();
    assert!(
        new_deadline >= deadline + 1_900,
        "reset to about 2 s after the bid"
    );
    // A tick carrying the new deadline comes at once, and every later tick agrees.
    let first = tokio::time::timeout(Duration::from_millis(500), async {
        loop {
            let m = ticks.next().await.unwrap();
            if let AuctionMsg::TimerUpdate(t) = AuctionMsg::decode(&m.payload).unwrap() {
                if t.version == after.version {
                    return t;
                }
            }
        }
    })
    .await
    .expect("a tick with the new version");
    assert_eq!(first.ends_at, new_deadline);
    wait_until(Duration::from_secs(10), "sold", || async {
        env.lot(lot).await.state == LotState::Closed
    })
    .await
    .unwrap();
    let closed = env.lot(lot).await;
    assert_eq!(closed.outcome, Some(Outcome::Sold));
    assert!(
        schemas::now_ms() >= new_deadline,
        "not closed before the new deadline"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_lot_keeps_its_time_and_is_not_hammered_until_resumed() {
    let env = Env::start().await;
    let (_b, _bh) = env.spawn_bidder(env.bidder_config()).await;
    let (event, lanes) = env.event(1, 1, schemas::now_ms(), 3, 3, |_, _| 0).await;
    let lot = lanes[0][0];
    let mut ticks = env
        .client
        .subscribe(schemas::subjects::auction_tick(event, 1))
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    let _t = spawn_ticker(&env, ticker_config()).await;
    wait_until(Duration::from_secs(10), "lot open", || async {
        env.lot(lot).await.state == LotState::Open
    })
    .await
    .unwrap();
    let open = env.lot(lot).await;
    let pause = env.send(&BidCommand::Pause { lot_id: lot }, None).await;
    env.wait_applied(lot, pause).await;
    let paused = env.lot(lot).await;
    assert_eq!(paused.state, LotState::Paused);
    let kept = paused.remaining_ms.unwrap();
    assert!(kept > 0 && kept <= 3_000);
    // Past the old deadline: still paused, and the only ticks are the one announcing the pause.
    let past = (open.ends_at.unwrap() + 500 - schemas::now_ms()).max(0) as u64;
    let mut paused_ticks = 0;
    let window = tokio::time::sleep(Duration::from_millis(past));
    tokio::pin!(window);
    loop {
        tokio::select! {
            _ = &mut window => break,
            Some(m) = ticks.next() => {
                if let AuctionMsg::TimerUpdate(t) = AuctionMsg::decode(&m.payload).unwrap() {
                    if t.version >= paused.version {
                        assert_eq!(t.state, LotState::Paused);
                        assert_eq!(t.remaining_ms, kept);
                        paused_ticks += 1;
                    }
                }
            }
        }
    }
    assert!(
        paused_ticks <= 1,
        "a paused lot does not tick ({paused_ticks})"
    );
    assert_eq!(
        env.lot(lot).await.state,
        LotState::Paused,
        "a paused lot is not hammered"
    );
    let resume = env.send(&BidCommand::Resume { lot_id: lot }, None).await;
    let resumed_at = schemas::now_ms();
    env.wait_applied(lot, resume).await;
    let resumed = env.lot(lot).await;
    assert_eq!(resumed.state, LotState::Open);
    let ends_at = resumed.ends_at.unwrap();
    assert!(
        (ends_at - (resumed_at + kept)).abs() < 500,
        "resume gives back the time kept"
    );
    wait_until(
        Duration::from_secs(10),
        "closed after the kept time",
        || async { env.lot(lot).await.state == LotState::Closed },
    )
    .await
    .unwrap();
    assert!(schemas::now_ms() >= ends_at);
}
