//! The bid path on a real NATS and Postgres: ordering, races with the hammer, idempotency,
//! fencing and the announcements.

mod common;

use common::{Env, PARTITIONS};
use futures::StreamExt;
use schemas::frames::{BidResult, BidStatus};
use schemas::nats::{AuctionMsg, BidCommand, NatsMessage, NotifyJob, UserMsg};
use schemas::{min_next, LotState, Outcome, RejectReason};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use testkit::wait_until;

async fn count_bids(env: &Env, lot: schemas::LotId) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM bids WHERE lot_id = $1")
        .bind(lot.0)
        .fetch_one(env.pool())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_racing_publishers_on_one_lot_decide_in_stream_order() {
    let env = Env::start().await;
    let (_stop, _bidder) = env.spawn_bidder(env.bidder_config()).await;
    let users = env.users(50, true).await;
    let (event, lots) = env.lots(1, 0).await;
    let lot = lots[0];
    let seq = env.open(lot).await;
    env.wait_applied(lot, seq).await;

    // Every publisher bids the minimum over the high it last saw on the lane, like an app.
    let known = Arc::new(AtomicI64::new(-1));
    let mut feed = env
        .client
        .subscribe(schemas::subjects::auction_bid(event, 1))
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    {
        let known = known.clone();
        tokio::spawn(async move {
            while let Some(m) = feed.next().await {
                if let Ok(AuctionMsg::NewBid(nb)) = AuctionMsg::decode(&m.payload) {
                    known.fetch_max(nb.amount, Ordering::SeqCst);
                }
            }
        });
    }
    let env = Arc::new(env);
    let mut tasks = Vec::new();
    for (p, user) in users.iter().copied().enumerate() {
        let (env, known) = (env.clone(), known.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0..200 {
                let k = known.load(Ordering::SeqCst);
                let seen = (k > 0).then_some(k);
                let amount = min_next(100_000, seen);
                env.bid(lot, user, amount, seen, &format!("p{p}-{i}")).await;
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    wait_until(Duration::from_secs(60), "10,000 decisions", || async {
        count_bids(&env, lot).await == 10_000
    })
    .await
    .unwrap();

    let accepted = store::bidding::accepted_bids(env.pool(), lot)
        .await
        .unwrap();
    assert!(accepted.len() > 1, "some bids were accepted");
    for w in accepted.windows(2) {
        assert!(
            w[1].amount > w[0].amount,
            "accepted amounts strictly increase in stream order"
        );
        assert!(w[1].stream_seq > w[0].stream_seq);
        assert_eq!(w[1].prev_high, Some(w[0].amount));
        assert_eq!(w[1].version.unwrap(), w[0].version.unwrap() + 1);
    }
    let distinct: i64 =
        sqlx::query_scalar("SELECT count(DISTINCT (user_id, idem)) FROM bids WHERE lot_id = $1")
            .bind(lot.0)
            .fetch_one(env.pool())
            .await
            .unwrap();
    assert_eq!(distinct, 10_000, "every bid has exactly one decision");
    let state = env.lot(lot).await;
    assert_eq!(state.high, accepted.last().map(|b| b.amount));
    assert_eq!(state.bid_count as usize, accepted.len());

    let subject = schemas::subjects::auction_bid(event, 1);
    wait_until(Duration::from_secs(10), "announcements", || async {
        env.count("AUCTION", &subject).await == accepted.len() as u64
    })
    .await
    .unwrap();
    let announced: Vec<AuctionMsg> = env.read_all("AUCTION", &subject).await;
    let amounts: Vec<i64> = announced
        .iter()
        .map(|m| match m {
            AuctionMsg::NewBid(nb) => nb.amount,
            other => panic!("unexpected {other:?}"),
        })
        .collect();
    assert_eq!(
        amounts,
        accepted.iter().map(|b| b.amount).collect::<Vec<_>>(),
        "one new_bid per accepted bid, in order"
    );
    assert_eq!(env.count("USERS", "user.*.result").await, 10_000);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bid_before_the_hammer_makes_it_stale_and_bids_after_it_are_closed() {
    let env = Env::start().await;
    let (_stop, _bidder) = env.spawn_bidder(env.bidder_config()).await;
    let u = env.users(2, true).await;
    let (event, lots) = env.lots(1, 0).await;
    let lot = lots[0];
    let seq = env.open(lot).await;
    env.wait_applied(lot, seq).await;
    let opened = env.lot(lot).await;

    // The ticker saw version v and sends the hammer; a bid lands first in the stream.
    env.bid(lot, u[0], 100_000, None, "a1").await;
    let stale = env
        .send(
            &BidCommand::Hammer {
                lot_id: lot,
                expected_version: opened.version,
            },
            Some(format!("hammer-{lot}-{}", opened.version)),
        )
        .await;
    env.wait_applied(lot, stale).await;
    let after = env.lot(lot).await;
    assert_eq!(after.state, LotState::Open, "the stale hammer is ignored");
    assert_eq!(after.high, Some(100_000));
    assert!(
        after.ends_at.unwrap() > opened.ends_at.unwrap() - 1,
        "the bid put time back"
    );
    assert!(after.ends_at.unwrap() >= schemas::now_ms() + 25_000);

    // The effective hammer, then bids after it.
    let hammer = env
        .send(
            &BidCommand::Hammer {
                lot_id: lot,
                expected_version: after.version,
            },
            None,
        )
        .await;
    let late = env.bid(lot, u[1], 102_500, Some(100_000), "late").await;
    let again = env
        .send(
            &BidCommand::Hammer {
                lot_id: lot,
                expected_version: after.version + 1,
            },
            None,
        )
        .await;
    env.wait_applied(lot, hammer).await;
    for s in [late, again] {
        wait_until(Duration::from_secs(10), "decided", || env.decided(s))
            .await
            .unwrap();
    }
    let closed = env.lot(lot).await;
    assert_eq!(
        (closed.state, closed.outcome),
        (LotState::Closed, Some(Outcome::Sold))
    );
    let late_rec = store::bidding::bids_by_idem(env.pool(), &[(u[1], "late".into())])
        .await
        .unwrap();
    assert_eq!(late_rec[0].reason, Some(RejectReason::Closed));
    let settlements: Vec<(uuid::Uuid, i64)> =
        sqlx::query_as("SELECT user_id, amount FROM settlements WHERE lot_id = $1")
            .bind(lot.0)
            .fetch_all(env.pool())
            .await
            .unwrap();
    assert_eq!(
        settlements,
        vec![(u[0].0, 100_000)],
        "exactly one settlement"
    );

    // The close, the won notice and the push job were each announced once.
    wait_until(Duration::from_secs(10), "won announced", || async {
        env.count("NOTIFY", "notify.won").await == 1
    })
    .await
    .unwrap();
    let lane: Vec<AuctionMsg> = env
        .read_all("AUCTION", &schemas::subjects::auction_lot(event, 1))
        .await;
    let closes: Vec<_> = lane
        .iter()
        .filter_map(|m| match m {
            AuctionMsg::LotClosed(c) => Some(c.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(closes.len(), 1);
    assert_eq!(
        (closes[0].outcome, closes[0].amount),
        (Outcome::Sold, Some(100_000))
    );
    let won: Vec<UserMsg> = env.read_all("USERS", &format!("user.{}.won", u[0])).await;
    assert!(
        matches!(&won[..], [UserMsg::Won(w)] if w.amount == 100_000 && w.pickup == "Gate 3, bring ID")
    );
    let job: NotifyJob = env.last("NOTIFY", "notify.won").await;
    assert!(matches!(job, NotifyJob::Won { user_id, .. } if user_id == u[0]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn below_reserve_or_without_bids_closes_unsold_without_settlement() {
    let env = Env::start().await;
    let (_stop, _bidder) = env.spawn_bidder(env.bidder_config()).await;
    let u = env.users(1, true).await;
    let (_event, lots) = env.lots(2, 500_000).await;
    for &lot in &lots {
        let s = env.open(lot).await;
        env.wait_applied(lot, s).await;
    }
    env.bid(lots[0], u[0], 100_000, None, "low").await;
    for &lot in &lots {
        let v = loop {
            let l = env.lot(lot).await;
            if lot != lots[0] || l.high.is_some() {
                break l.version;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let s = env
            .send(
                &BidCommand::Hammer {
                    lot_id: lot,
                    expected_version: v,
                },
                None,
            )
            .await;
        env.wait_applied(lot, s).await;
        let l = env.lot(lot).await;
        assert_eq!(
            (l.state, l.outcome),
            (LotState::Closed, Some(Outcome::Unsold))
        );
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM settlements")
        .fetch_one(env.pool())
        .await
        .unwrap();
    assert_eq!(n, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_bid_twice_is_decided_once_and_answered_identically() {
    let env = Env::start().await;
    let (_stop, _bidder) = env.spawn_bidder(env.bidder_config()).await;
    let u = env.users(1, true).await;
    let (_event, lots) = env.lots(1, 0).await;
    let lot = lots[0];
    let s = env.open(lot).await;
    env.wait_applied(lot, s).await;

    let mut answers = env
        .client
        .subscribe(format!("user.{}.result", u[0]))
        .await
        .unwrap();
    env.client.flush().await.unwrap();
    // This test's BIDS forgets message ids after 1 s (production keeps them 2 min), set before
    // the first publish so its id expires on that schedule.
    let mut cfg = env
        .js
        .get_stream("BIDS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .config
        .clone();
    cfg.duplicate_window = Duration::from_secs(1);
    env.js.update_stream(cfg).await.unwrap();
    // Inside JetStream's dedupe window: the same Nats-Msg-Id is stored once.
    let first = env.bid(lot, u[0], 100_000, None, "same").await;
    let dup = env.bid(lot, u[0], 100_000, None, "same").await;
    assert_eq!(
        first, dup,
        "JetStream answers the duplicate with the first sequence"
    );
    // Outside the window: the very same message, same Nats-Msg-Id, is stored again and
    // reaches the bidder again.
    let late = loop {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let seq = env.bid(lot, u[0], 100_000, None, "same").await;
        if seq != first {
            break seq;
        }
    };
    assert_ne!(late, first);
    let mut results: Vec<BidResult> = Vec::new();
    while results.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(10), answers.next())
            .await
            .expect("an answer")
            .unwrap();
        let UserMsg::Result(r) = UserMsg::decode(&m.payload).unwrap() else {
            panic!("not a result")
        };
        // The answer belongs to the bid's trace, with the documented headers.
        let h = m.headers.as_ref().expect("headers");
        let tp =
            schemas::trace::TraceParent::parse(h.get("traceparent").unwrap().as_str()).unwrap();
        assert_eq!(tp.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(
            h.get("Content-Type").unwrap().as_str(),
            "application/msgpack"
        );
        assert_eq!(h.get("Gavel-Type").unwrap().as_str(), "bid_result.v1");
        assert!(h.get("Nats-Msg-Id").unwrap().as_str().starts_with("bids-"));
        results.push(r);
    }
    assert_eq!(results[0], results[1], "both answers identical");
    assert_eq!(results[0].status, BidStatus::Accepted);
    assert_eq!(count_bids(&env, lot).await, 1, "one decision");
    let l = env.lot(lot).await;
    assert_eq!((l.high, l.bid_count), (Some(100_000), 1));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_recorded_with_their_reason() {
    let env = Env::start().await;
    let (_stop, _bidder) = env.spawn_bidder(env.bidder_config()).await;
    let verified = env.users(1, true).await[0];
    let unverified = env.users(1, false).await[0];
    let (_event, lots) = env.lots(2, 0).await;
    let s = env.open(lots[0]).await;
    env.wait_applied(lots[0], s).await;
    let cases = [
        (
            lots[0],
            unverified,
            100_000,
            "nv",
            RejectReason::NotVerified,
        ),
        (lots[1], verified, 100_000, "cl", RejectReason::Closed),
        (
            schemas::LotId::new(),
            verified,
            100_000,
            "nf",
            RejectReason::NotFound,
        ),
        (lots[0], verified, 99_999, "tl", RejectReason::TooLow),
        (lots[0], verified, -1, "inv", RejectReason::Invalid),
    ];
    for (lot, user, amount, idem, _) in cases {
        let s = env.bid(lot, user, amount, None, idem).await;
        wait_until(Duration::from_secs(10), "decided", || env.decided(s))
            .await
            .unwrap();
    }
    for (_, user, _, idem, reason) in cases {
        let r = store::bidding::bids_by_idem(env.pool(), &[(user, idem.into())])
            .await
            .unwrap();
        assert_eq!(r[0].reason, Some(reason), "{idem}");
        assert_eq!(r[0].status, BidStatus::Rejected);
    }
    assert_eq!(env.lot(lots[0]).await.high, None, "refusals change nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bid_whose_idem_the_database_refuses_is_recorded_invalid_and_the_lot_goes_on() {
    let env = Env::start().await;
    let (_stop, _bidder) = env.spawn_bidder(env.bidder_config()).await;
    let user = env.users(1, true).await[0];
    let (_event, lots) = env.lots(1, 0).await;
    let s = env.open(lots[0]).await;
    env.wait_applied(lots[0], s).await;
    // Published straight on BIDS (the edge refuses these): empty, 65 characters, a NUL.
    let long = "k".repeat(65);
    let mut seqs = Vec::new();
    for idem in ["", long.as_str(), "nul\0idem"] {
        seqs.push(env.bid(lots[0], user, 100_000, None, idem).await);
    }
    let good = env.bid(lots[0], user, 100_000, None, "good").await;
    env.wait_applied(lots[0], good).await;
    let (bids, _) = store::bidding::decisions_by_seq(
        env.pool(),
        &seqs.iter().map(|&s| s as i64).collect::<Vec<_>>(),
    )
    .await
    .unwrap();
    assert_eq!(bids.len(), 3, "each bad bid has one recorded decision");
    for b in &bids {
        assert_eq!(b.reason, Some(RejectReason::Invalid));
        assert_eq!(b.idem, format!("invalid-idem-{}", b.stream_seq));
    }
    assert_eq!(
        env.lot(lots[0]).await.high,
        Some(100_000),
        "the partition did not stall"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_delivered_after_later_ones_is_still_decided() {
    // What a NATS cluster that lost its quorum was seen to do: deliver a bid after later
    // messages had been committed, so it sits below the partition's applied position with no
    // decision. It must be decided (late), never dropped as a replay.
    let env = Env::start().await;
    let users = env.users(2, true).await;
    let (_event, lots) = env.lots(1, 0).await;
    let (stop, bidder) = env.spawn_bidder(env.bidder_config()).await;
    let s = env.open(lots[0]).await;
    env.wait_applied(lots[0], s).await;
    stop.cancel();
    bidder.await.unwrap();
    let first = env.bid(lots[0], users[0], 100_000, None, "skipped").await;
    let second = env.bid(lots[0], users[1], 100_000, None, "after").await;
    // The partition's committed position as if the first had been passed over.
    let p = schemas::subjects::Partition::of(lots[0], PARTITIONS).get();
    sqlx::query("UPDATE partition_leases SET applied_seq = $1 WHERE partition = $2")
        .bind(first as i64)
        .bind(i32::from(p))
        .execute(env.pool())
        .await
        .unwrap();
    let (_stop, _bidder) = env.spawn_bidder(env.bidder_config()).await;
    wait_until(Duration::from_secs(20), "both decided", || async {
        env.decided(first).await && env.decided(second).await
    })
    .await
    .unwrap();
    let (bids, _) = store::bidding::decisions_by_seq(env.pool(), &[first as i64, second as i64])
        .await
        .unwrap();
    let by_seq = |s: u64| bids.iter().find(|b| b.stream_seq == s as i64).unwrap();
    assert_eq!(
        by_seq(first).status,
        BidStatus::Accepted,
        "decided in stream order"
    );
    assert_eq!(by_seq(second).reason, Some(RejectReason::Stale));
    let lot = env.lot(lots[0]).await;
    assert_eq!((lot.high, lot.high_bidder), (Some(100_000), Some(users[0])));
    assert!(store::audit::check(env.pool(), Some(&lots))
        .await
        .unwrap()
        .is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_owner_whose_lease_was_taken_over_cannot_commit() {
    let env = Env::start().await;
    let pool = env.pool();
    // Store level: A holds partition 0, its lease expires, B takes it over.
    let a = store::bidding::acquire_lease(pool, 0, "A", 50)
        .await
        .unwrap()
        .unwrap();
    let b = loop {
        if let Some(b) = store::bidding::acquire_lease(pool, 0, "B", 60_000)
            .await
            .unwrap()
        {
            break b;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(b.epoch, a.epoch + 1, "a takeover bumps the fencing epoch");
    let batch = store::bidding::Batch {
        applied_seq: 5,
        ..Default::default()
    };
    let r = store::bidding::commit_batch(pool, &a, 1_000, &batch).await;
    assert!(matches!(r, Err(store::StoreError::Fenced)), "{r:?}");
    assert!(store::bidding::acquire_lease(pool, 0, "A", 1_000)
        .await
        .unwrap()
        .is_none());
    // B steps down cleanly: the lease is free at once for the bidder below.
    store::bidding::release_lease(pool, &b).await.unwrap();

    // Bidder level: a running bidder whose lease is stolen stops deciding until it is back.
    let mut cfg = env.bidder_config();
    cfg.only = None;
    let (_stop, _bidder) = env.spawn_bidder(cfg).await;
    let u = env.users(1, true).await;
    let (_event, lots) = env.lots(1, 0).await;
    let lot = lots[0];
    let s = env.open(lot).await;
    env.wait_applied(lot, s).await;
    let p = schemas::Partition::of(lot, PARTITIONS).get() as i32;
    sqlx::query(
        "UPDATE partition_leases SET epoch = epoch + 1, owner = 'thief',
                expires_at = now() + interval '1 hour' WHERE partition = $1",
    )
    .bind(p)
    .execute(pool)
    .await
    .unwrap();
    let s = env.bid(lot, u[0], 100_000, None, "fenced").await;
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    assert!(!env.decided(s).await, "a fenced owner commits nothing");
    sqlx::query("UPDATE partition_leases SET expires_at = '-infinity' WHERE partition = $1")
        .bind(p)
        .execute(pool)
        .await
        .unwrap();
    env.wait_applied(lot, s).await;
    assert_eq!(env.lot(lot).await.high, Some(100_000));
}
