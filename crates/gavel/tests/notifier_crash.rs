//! `gavel notifier` killed mid-job (SIGKILL: no cleanup, no ack) while OneSignal holds two of
//! its requests, one already recorded and one not; a fresh process takes the jobs over. Every
//! push arrives exactly once: none lost, none doubled. Then a SIGTERM drains and exits cleanly.

#[path = "../../notifier/tests/common/mod.rs"]
mod common;
#[path = "../../notifier/tests/standin/mod.rs"]
mod standin;

use common::{key, outbid, won, Env};
use schemas::nats::NotifyJob;
use standin::Fault;
use std::collections::HashSet;
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use testkit::wait_until;

fn notifier_process(env: &Env) -> Child {
    Command::new(env!("CARGO_BIN_EXE_gavel"))
        .arg("notifier")
        .args([
            "--ack-wait-ms",
            "1000",
            // Long enough that a held request is still held when the process dies.
            "--request-timeout-ms",
            "60000",
            "--retry-base-ms",
            "20",
            "--retry-max-ms",
            "200",
            "--concurrency",
            "4",
        ])
        .env("NATS_URL", env.nats.url())
        .env("DATABASE_URL", &env.db.url)
        .env("ONESIGNAL_APP_ID", standin::APP_ID)
        .env("ONESIGNAL_API_KEY", standin::API_KEY)
        .env("ONESIGNAL_API_URL", &env.standin.url)
        .env("RUST_LOG", "error")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gavel notifier starts")
}

async fn wait_exit(mut child: Child, deadline: Duration) -> std::process::ExitStatus {
    let started = std::time::Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("child status") {
            return status;
        }
        assert!(
            started.elapsed() < deadline,
            "the notifier did not exit in time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_job_and_restarted_no_push_lost_none_doubled() {
    let env = Env::start().await;
    let (event, lot) = env.event_with_lot("Crash Sale").await;
    let cohort = env.users(2_500, true).await;
    env.register_all(event, &cohort).await;
    let bidders = env.users(4, true).await;
    let start = NotifyJob::EventStarting { event_id: event };
    let outbids: Vec<NotifyJob> = (0..3)
        .map(|i| {
            outbid(
                bidders[i],
                event,
                lot,
                1_000_000 + 5_000 * i as i64,
                1_005_000 + 5_000 * i as i64,
            )
        })
        .collect();
    let win = won(bidders[3], event, lot, 1_020_000);

    // The start alert's first batch goes through; its second is recorded and then its answer
    // never comes. One outbid push is held before OneSignal records it.
    env.standin.fail_next_for("event_starting", Fault::Pass);
    env.standin
        .fail_next_for("event_starting", Fault::RecordThenHang);
    env.standin.fail_next_for("outbid", Fault::Hang);
    env.queue(&start, &format!("event_starting-{event}")).await;
    for (i, job) in outbids.iter().enumerate() {
        env.queue(job, &format!("bids-{i}.push_outbid")).await;
    }
    env.queue(&win, "bids-9.push_won").await;

    let first = notifier_process(&env);
    wait_until(
        Duration::from_secs(30),
        "two requests held by OneSignal",
        || async { env.standin.hanging() == 2 },
    )
    .await
    .unwrap();
    let recorded: HashSet<String> = env
        .standin
        .deliveries()
        .into_iter()
        .map(|d| d.key)
        .collect();
    assert!(recorded.contains(&key(&start, 0)) && recorded.contains(&key(&start, 1)));
    let mut first = first;
    first.kill().expect("SIGKILL");
    first.wait().unwrap();
    assert!(
        env.queued().await >= 2,
        "the jobs in hand were not acked before the kill"
    );

    let second = notifier_process(&env);
    env.wait_drained(Duration::from_secs(60)).await;

    env.standin.assert_exactly_once();
    let keys: HashSet<String> = env
        .standin
        .deliveries()
        .into_iter()
        .map(|d| d.key)
        .collect();
    let mut want: HashSet<String> = [key(&start, 0), key(&start, 1), key(&win, 0)].into();
    want.extend(outbids.iter().map(|j| key(j, 0)));
    assert_eq!(keys, want, "every push once, none lost");
    let reached: usize = env
        .standin
        .deliveries()
        .iter()
        .filter(|d| d.kind == "event_starting")
        .map(|d| d.recipients.len())
        .sum();
    assert_eq!(reached, 2_500);

    // The recorded-but-unanswered batch was asked again with its key and not sent again.
    let handled: Vec<String> = env
        .standin
        .requests_with(&key(&start, 1))
        .into_iter()
        .map(|r| r.handled)
        .collect();
    assert_eq!(handled, ["recorded+fault:RecordThenHang", "repeat"]);
    // The held outbid push was sent by the second process, with the same key.
    let held = env
        .standin
        .requests()
        .into_iter()
        .find(|r| r.handled == "fault:Hang")
        .expect("an outbid push was held");
    let handled: Vec<String> = env
        .standin
        .requests_with(held.key.as_deref().unwrap())
        .into_iter()
        .map(|r| r.handled)
        .collect();
    assert_eq!(handled, ["fault:Hang", "recorded"]);
    assert!(env.dead_letters().await.is_empty());

    // SIGTERM: the notifier drains and exits cleanly.
    let status = Command::new("kill")
        .args(["-TERM", &second.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let exit = wait_exit(second, Duration::from_secs(20)).await;
    assert!(exit.success(), "clean exit on SIGTERM: {exit}");
}
