//! Crash safety with real process deaths: `gavel bidder` aborts (no cleanup, no ack) after
//! committing a batch, or after announcing it, and a fresh process takes over the partition.
//! Nothing is decided twice, no announcement is duplicated, nothing is lost.

#[path = "../../bidder/tests/common/mod.rs"]
mod common;

use common::{Env, PARTITIONS};
use schemas::nats::AuctionMsg;
use schemas::{min_next, LotId, UserId};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::wait_until;

fn bidder_process(env: &Env, crash_at: Option<&str>) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gavel"));
    cmd.arg("bidder")
        .args([
            "--partitions",
            &PARTITIONS.to_string(),
            "--lease-ttl-ms",
            "1000",
        ])
        .env("NATS_URL", env.nats.url())
        .env("DATABASE_URL", &env.db.url)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(c) = crash_at {
        cmd.args(["--crash-at", c]);
    }
    cmd.spawn().expect("gavel bidder starts")
}

/// Publishes bids `from..to` of a chain where every bid is valid in stream order.
async fn chain(env: &Env, lot: LotId, users: &[UserId], from: usize, to: usize) {
    let mut high = (from > 0).then(|| amount_at(from - 1));
    for i in from..to {
        let amount = min_next(100_000, high);
        assert_eq!(amount, amount_at(i));
        env.bid(lot, users[i % 2], amount, high, &format!("chain-{i}"))
            .await;
        high = Some(amount);
    }
}

fn amount_at(i: usize) -> i64 {
    let mut high = None;
    for _ in 0..=i {
        high = Some(min_next(100_000, high));
    }
    high.unwrap()
}

async fn crash_and_take_over(point: &str) {
    let env = Env::start().await;
    let users = env.users(2, true).await;
    let (event, lots) = env.lots(1, 0).await;
    let lot = lots[0];
    env.open(lot).await;
    chain(&env, lot, &users, 0, 20).await;

    let mut first = bidder_process(&env, Some(point));
    let status = tokio::task::spawn_blocking(move || first.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(!status.success(), "the bidder died at {point}: {status}");
    let (bids, _) = store::bidding::decisions_by_seq(env.pool(), &(1..=21).collect::<Vec<_>>())
        .await
        .unwrap();
    assert!(
        !bids.is_empty(),
        "the first batch was committed before the crash"
    );

    let mut second = bidder_process(&env, None);
    chain(&env, lot, &users, 20, 30).await;
    wait_until(Duration::from_secs(30), "all 30 bids decided", || async {
        env.lot(lot).await.bid_count == 30
    })
    .await
    .unwrap();

    let accepted = store::bidding::accepted_bids(env.pool(), lot)
        .await
        .unwrap();
    assert_eq!(
        accepted.len(),
        30,
        "every bid decided exactly once, all accepted"
    );
    for (i, b) in accepted.iter().enumerate() {
        assert_eq!(b.amount, amount_at(i));
        assert_eq!(b.idem, format!("chain-{i}"));
    }
    let lane_bids = schemas::subjects::auction_bid(event, 1);
    wait_until(
        Duration::from_secs(10),
        "announcements confirmed",
        || async { env.count("USERS", "user.*.result").await >= 30 },
    )
    .await
    .unwrap();
    // Let the new owner finish any replay, then count: exact, never more.
    wait_until(Duration::from_secs(10), "30 outbid pushes", || async {
        env.count("NOTIFY", "notify.outbid").await >= 29
    })
    .await
    .unwrap();
    assert_eq!(
        env.count("AUCTION", &lane_bids).await,
        30,
        "no new_bid duplicated or lost"
    );
    assert_eq!(
        env.count("USERS", "user.*.result").await,
        30,
        "no answer duplicated"
    );
    assert_eq!(env.count("USERS", "user.*.outbid").await, 29);
    assert_eq!(env.count("NOTIFY", "notify.outbid").await, 29);
    let lot_msgs: Vec<AuctionMsg> = env
        .read_all("AUCTION", &schemas::subjects::auction_lot(event, 1))
        .await;
    assert_eq!(lot_msgs.len(), 1, "the lot was opened once");
    let new_bids: Vec<AuctionMsg> = env.read_all("AUCTION", &lane_bids).await;
    let versions: Vec<i64> = new_bids
        .iter()
        .map(|m| match m {
            AuctionMsg::NewBid(nb) => nb.version,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert!(
        versions.windows(2).all(|w| w[1] == w[0] + 1),
        "{versions:?}"
    );
    second.kill().unwrap();
    second.wait().unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_commit_before_ack() {
    crash_and_take_over("after-commit:1").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_announce_before_ack() {
    crash_and_take_over("after-announce:1").await;
}
