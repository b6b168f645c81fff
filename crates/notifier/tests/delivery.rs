//! The notifier against a real NATS, a real Postgres and a strict OneSignal stand-in: faults are
//! retried with the same idempotency key and every push is recorded once; a cohort is split in
//! batches of at most 2,000 and reaches only registered, verified users; a 400 goes to the dead
//! letters and the queue moves on; final non-deliveries are not retried; a bad key is retried
//! slowly; without credentials pushes are only logged.

mod common;
mod standin;

use common::{key, outbid, won, Env};
use schemas::nats::NotifyJob;
use schemas::UserId;
use standin::Fault;
use std::collections::HashSet;
use std::time::Duration;
use testkit::wait_until;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_are_retried_with_the_same_key_and_each_push_is_recorded_once() {
    let env = Env::start().await;
    let (event, lot) = env.event_with_lot("Tuesday Dealer Sale").await;
    let users = env.users(2, true).await;
    let out = outbid(users[0], event, lot, 1_230_000, 1_240_000);
    let win = won(users[1], event, lot, 1_250_000);
    // The outbid push: two 429s, a 500, a timeout, then recorded with its answer lost.
    for f in [
        Fault::RateLimited(Some("1".into())),
        Fault::RateLimited(Some("1".into())),
        Fault::Status(500),
        Fault::Hang,
        Fault::RecordThenDrop,
    ] {
        env.standin.fail_next_for("outbid", f);
    }
    // The won push: a 503, a dropped connection, then recorded and answered 500.
    for f in [
        Fault::Status(503),
        Fault::Drop,
        Fault::RecordThenStatus(500),
    ] {
        env.standin.fail_next_for("won", f);
    }
    let config = env.config();
    let metrics = config.metrics.clone();
    let running = env.spawn(config).await;
    env.queue(&out, "bids-7.push_outbid").await;
    env.queue(&win, "bids-9.push_won").await;
    env.wait_drained(Duration::from_secs(30)).await;

    env.standin.assert_exactly_once();
    assert_eq!(env.standin.faults_left(), 0, "every fault was met");
    let deliveries = env.standin.deliveries();
    assert_eq!(deliveries.len(), 2, "{deliveries:#?}");

    let k = key(&out, 0);
    let tries = env.standin.requests_with(&k);
    let handled: Vec<&str> = tries.iter().map(|r| r.handled.as_str()).collect();
    assert_eq!(
        handled,
        [
            "fault:RateLimited(Some(\"1\"))",
            "fault:RateLimited(Some(\"1\"))",
            "fault:Status(500)",
            "fault:Hang",
            "recorded+fault:RecordThenDrop",
            "repeat",
        ],
        "one key across every retry of the outbid push"
    );
    for pair in tries[..3].windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(990),
            "Retry-After: 1 was honoured"
        );
    }
    let d = deliveries.iter().find(|d| d.key == k).unwrap();
    assert_eq!(d.recipients, [users[0].to_string()]);
    assert_eq!(d.heading, "You've been outbid");
    assert_eq!(
        d.text,
        "The high bid on the 2019 Toyota Corolla is now $12,400, over your $12,300. \
         Bid $12,450 or more to lead again."
    );
    assert_eq!(d.data["lot_id"], lot.to_string());
    assert_eq!(d.data["event_id"], event.to_string());

    let k = key(&win, 0);
    let handled: Vec<String> = env
        .standin
        .requests_with(&k)
        .into_iter()
        .map(|r| r.handled)
        .collect();
    assert_eq!(
        handled,
        [
            "fault:Status(503)",
            "fault:Drop",
            "recorded+fault:RecordThenStatus(500)",
            "repeat"
        ]
    );
    let d = deliveries.iter().find(|d| d.key == k).unwrap();
    assert_eq!(d.heading, "You won the 2019 Toyota Corolla!");
    assert_eq!(d.text, "Hammer price $12,500. Pickup: Gate 3, bring ID");
    assert_eq!(
        env.standin.requests().len(),
        10,
        "no request without one of the two keys"
    );

    assert_eq!(metrics.retries("outbid", "rate_limited"), 2);
    assert_eq!(metrics.retries("outbid", "server_error"), 1);
    assert_eq!(metrics.retries("outbid", "timeout"), 1);
    assert_eq!(metrics.retries("outbid", "connection"), 1);
    assert_eq!(metrics.retries("won", "server_error"), 2);
    assert_eq!(metrics.retries("won", "connection"), 1);
    assert_eq!(metrics.pushes("outbid", "sent"), 1);
    assert_eq!(metrics.pushes("won", "sent"), 1);
    assert!(env.dead_letters().await.is_empty());
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cohort_of_4500_is_three_requests_to_registered_verified_users_only() {
    let env = Env::start().await;
    let (event, _) = env.event_with_lot("Saturday Public Sale").await;
    let cohort = env.users(4_500, true).await;
    env.register_all(event, &cohort).await;
    let unverified = env.users(25, false).await;
    for u in &unverified {
        assert!(store::push::register(env.pool(), event, *u).await.unwrap());
        assert!(!store::push::register(env.pool(), event, *u).await.unwrap());
    }
    // Verified, but registered for another event only.
    let elsewhere = env.users(25, true).await;
    let (other, _) = env.event_with_lot("Another Sale").await;
    env.register_all(other, &elsewhere).await;

    // Registered after the start alert was queued: in the live event already, not alerted.
    let late = env.users(1, true).await;
    sqlx::query(
        "INSERT INTO event_registrations (event_id, user_id, created_at)
         VALUES ($1, $2, now() + interval '1 minute')",
    )
    .bind(event.0)
    .bind(late[0].0)
    .execute(env.pool())
    .await
    .unwrap();

    let config = env.config();
    let metrics = config.metrics.clone();
    let running = env.spawn(config).await;
    let start = NotifyJob::EventStarting { event_id: event };
    env.queue(&start, &format!("event_starting-{event}")).await;
    env.wait_drained(Duration::from_secs(30)).await;

    env.standin.assert_exactly_once();
    let deliveries = env.standin.deliveries();
    let mut sizes: Vec<usize> = deliveries.iter().map(|d| d.recipients.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, [500, 2_000, 2_000]);
    assert_eq!(env.standin.requests().len(), 3, "three requests, no retry");
    let reached: HashSet<String> = deliveries
        .iter()
        .flat_map(|d| d.recipients.clone())
        .collect();
    let expected: HashSet<String> = cohort.iter().map(UserId::to_string).collect();
    assert_eq!(reached, expected, "the whole cohort, nobody else");
    for u in unverified.iter().chain(&elsewhere).chain(&late) {
        assert!(!reached.contains(&u.to_string()));
    }
    let keys: HashSet<String> = deliveries.iter().map(|d| d.key.clone()).collect();
    let want: HashSet<String> = (0..3).map(|b| key(&start, b)).collect();
    assert_eq!(keys, want);
    for d in &deliveries {
        assert_eq!(d.kind, "event_starting");
        assert_eq!(d.heading, "Auction starting now");
        assert!(
            d.text.starts_with("Saturday Public Sale is live."),
            "{}",
            d.text
        );
        assert_eq!(d.data["event_id"], event.to_string());
    }
    assert_eq!(metrics.pushes("event_starting", "sent"), 3);

    // The same start queued again (past JetStream's duplicate window, say) sends nothing new:
    // the keys come from the job, not from the message.
    env.queue(&start, &format!("event_starting-{event}-again"))
        .await;
    env.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(env.standin.deliveries().len(), 3);
    let repeats = env
        .standin
        .requests()
        .iter()
        .filter(|r| r.handled == "repeat")
        .count();
    assert_eq!(repeats, 3);
    env.standin.assert_exactly_once();
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_request_goes_to_the_dead_letters_and_the_queue_moves_on() {
    let env = Env::start().await;
    let (event, lot) = env.event_with_lot("Dead Letter Sale").await;
    let users = env.users(2, true).await;
    let win = won(users[0], event, lot, 2_500_000);
    let out = outbid(users[1], event, lot, 2_400_000, 2_500_000);
    env.standin.fail_next_for(
        "won",
        Fault::BadRequest("Message Notifications must have English language content".into()),
    );
    let mut config = env.config();
    config.concurrency = 1; // one job at a time: the next one waits for the refused one
    let metrics = config.metrics.clone();
    let running = env.spawn(config).await;
    env.queue(&win, "bids-3.push_won").await;
    env.queue(&out, "bids-4.push_outbid").await;
    env.wait_drained(Duration::from_secs(30)).await;

    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1, "{dead:#?}");
    let d = &dead[0];
    assert_eq!(d.kind, "won");
    assert_eq!(d.status, Some(400));
    assert_eq!(
        d.reason,
        "Message Notifications must have English language content"
    );
    assert_eq!(d.job.as_ref(), Some(&win));
    assert_eq!(d.idempotency_key.map(|k| k.to_string()), Some(key(&win, 0)));
    assert_eq!(d.recipients, [users[0]]);
    assert_eq!((d.batch, d.batches, d.attempts), (Some(0), Some(1), 1));
    assert!(d.stream_seq >= 1 && d.raw.is_none());
    assert_eq!(
        env.standin.requests_with(&key(&win, 0)).len(),
        1,
        "a 400 is not retried"
    );
    let deliveries = env.standin.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].key, key(&out, 0), "the next job went through");
    env.standin.assert_exactly_once();
    assert_eq!(metrics.dead_letters("won", "refused"), 1);
    assert_eq!(metrics.pushes("won", "dead_letter"), 1);
    assert_eq!(metrics.pushes("outbid", "sent"), 1);
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_that_send_nothing_are_final_and_not_retried() {
    let env = Env::start().await;
    let (event, lot) = env.event_with_lot("Quiet Sale").await;
    let users = env.users(3, true).await;
    env.register_all(event, &users[1..]).await;
    // users[0] has no subscription at all; users[2] neither, but users[1] has one.
    env.standin
        .unsubscribe([users[0].to_string(), users[2].to_string()]);
    let out = outbid(users[0], event, lot, 150_000, 160_000);
    let start = NotifyJob::EventStarting { event_id: event };
    let config = env.config();
    let metrics = config.metrics.clone();
    let running = env.spawn(config).await;
    env.queue(&out, "bids-1.push_outbid").await;
    env.queue(&start, &format!("event_starting-{event}")).await;
    env.wait_drained(Duration::from_secs(30)).await;

    let handled: Vec<String> = env
        .standin
        .requests_with(&key(&out, 0))
        .into_iter()
        .map(|r| r.handled)
        .collect();
    assert_eq!(handled, ["not_subscribed"], "logged, not retried");
    assert_eq!(env.standin.requests_with(&key(&start, 0)).len(), 1);
    let deliveries = env.standin.deliveries();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].recipients, [users[1].to_string()]);
    assert_eq!(metrics.pushes("outbid", "not_delivered"), 1);
    assert_eq!(
        metrics.pushes("event_starting", "sent"),
        1,
        "sent to the subscribed one; the invalid alias is only logged"
    );
    assert!(env.dead_letters().await.is_empty());
    env.standin.assert_exactly_once();
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bad_key_is_retried_slowly_and_the_job_waits_for_a_good_one() {
    let env = Env::start().await;
    let (event, lot) = env.event_with_lot("Key Sale").await;
    let users = env.users(1, true).await;
    let out = outbid(users[0], event, lot, 150_000, 160_000);
    let mut bad = env.config();
    bad.onesignal =
        notifier::OneSignal::from_parts(Some(standin::APP_ID.into()), Some("wrong-key".into()))
            .unwrap();
    let metrics = bad.metrics.clone();
    let running = env.spawn(bad).await;
    env.queue(&out, "bids-1.push_outbid").await;
    wait_until(
        Duration::from_secs(20),
        "three refused attempts",
        || async { env.standin.requests().len() >= 3 },
    )
    .await
    .unwrap();
    let requests = env.standin.requests();
    assert!(requests.iter().all(|r| r.handled == "403"), "{requests:#?}");
    for pair in requests.windows(2) {
        assert!(
            pair[1].at - pair[0].at >= Duration::from_millis(290),
            "a bad key is retried slowly"
        );
    }
    assert!(metrics.retries("outbid", "misconfigured") >= 3);
    assert!(env.standin.deliveries().is_empty());
    // Stopping hands the job back rather than acking or dropping it.
    running.shut_down().await;
    assert_eq!(env.queued().await, 1, "the job is still queued");

    // With the key fixed, the same job is sent once.
    let running = env.spawn(env.config()).await;
    env.wait_drained(Duration::from_secs(30)).await;
    assert_eq!(env.standin.deliveries().len(), 1);
    env.standin.assert_exactly_once();
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_credentials_each_push_is_logged_not_sent() {
    let env = Env::start().await;
    let (event, lot) = env.event_with_lot("Dry Run Sale").await;
    let users = env.users(3, true).await;
    env.register_all(event, &users).await;
    let mut config = env.config();
    config.onesignal = None;
    let metrics = config.metrics.clone();
    let running = env.spawn(config).await;
    env.queue(
        &NotifyJob::EventStarting { event_id: event },
        &format!("event_starting-{event}"),
    )
    .await;
    env.queue(&won(users[0], event, lot, 100_000), "bids-2.push_won")
        .await;
    env.wait_drained(Duration::from_secs(30)).await;
    assert!(
        env.standin.requests().is_empty(),
        "nothing reached OneSignal"
    );
    assert_eq!(metrics.pushes("event_starting", "logged"), 1);
    assert_eq!(metrics.pushes("won", "logged"), 1);
    running.shut_down().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_that_is_not_a_job_is_dead_lettered() {
    let env = Env::start().await;
    let config = env.config();
    let metrics = config.metrics.clone();
    let running = env.spawn(config).await;
    env.js
        .publish("notify.won", bytes::Bytes::from_static(b"\xc1 not msgpack"))
        .await
        .unwrap()
        .await
        .unwrap();
    env.wait_drained(Duration::from_secs(30)).await;
    let dead = env.dead_letters().await;
    assert_eq!(dead.len(), 1);
    assert_eq!(dead[0].kind, "unknown");
    assert!(
        dead[0].reason.starts_with("not a push job"),
        "{}",
        dead[0].reason
    );
    assert_eq!(dead[0].raw.as_deref(), Some(&b"\xc1 not msgpack"[..]));
    assert_eq!(metrics.dead_letters("unknown", "undecodable"), 1);
    assert!(env.standin.requests().is_empty());
    running.shut_down().await;
}
