//! `send_batch` against a real nats-server: one ack per stream confirms a whole batch, in
//! order; a batch that crossed a reconnect is never taken as confirmed.

use async_nats::jetstream;
use bus::Outgoing;
use schemas::nats::{NotifyJob, UserMsg};
use schemas::trace::TraceParent;
use schemas::{EventId, LotId, UserId};
use std::time::Duration;

fn batch(tag: &str, n: usize) -> Vec<Outgoing> {
    let user = UserId(uuid::Uuid::new_v4());
    let lot = LotId(uuid::Uuid::new_v4());
    (0..n)
        .flat_map(|i| {
            let job = NotifyJob::Outbid {
                user_id: user,
                event_id: EventId(uuid::Uuid::new_v4()),
                lot_id: lot,
                your_bid: 1_000 + i as i64,
                high: 2_000 + i as i64,
                min_next: 2_100 + i as i64,
            };
            let result = UserMsg::Outbid(schemas::frames::Outbid {
                lot_id: lot,
                your_bid: 1_000 + i as i64,
                high: 2_000 + i as i64,
                min_next: 2_100 + i as i64,
            });
            [
                Outgoing::new(
                    schemas::subjects::user(user, schemas::subjects::UserKind::Outbid),
                    &result,
                    Some(format!("{tag}-{i}.outbid")),
                    TraceParent::new_root(),
                ),
                Outgoing::new(
                    schemas::subjects::notify(job.kind()),
                    &job,
                    Some(format!("{tag}-{i}.push")),
                    TraceParent::new_root(),
                ),
            ]
        })
        .collect()
}

async fn stored(js: &jetstream::Context, stream: &str) -> u64 {
    js.get_stream(stream)
        .await
        .expect("stream")
        .info()
        .await
        .expect("info")
        .state
        .messages
}

#[tokio::test]
async fn one_ack_per_stream_confirms_the_whole_batch_in_order() -> anyhow::Result<()> {
    let server = testkit::NatsServer::start().await?;
    let client = bus::connect(&server.url(), "batch-test").await?;
    let js = bus::jetstream(client);
    bus::ensure_streams(&js, 4, 1).await?;
    let msgs = batch("a", 500);
    let sent = bus::send_batch(&js, &msgs, false).await?;
    assert!(
        sent.confirmed().await,
        "a batch on a steady connection is confirmed"
    );
    assert_eq!(stored(&js, "USERS").await, 500);
    assert_eq!(stored(&js, "NOTIFY").await, 500);
    // In the order sent: the n-th outbid notice is the n-th message of USERS.
    let users = js.get_stream("USERS").await?;
    for (n, i) in [(1u64, 0i64), (250, 249), (500, 499)] {
        let m = users.get_raw_message(n).await?;
        let UserMsg::Outbid(o) = <UserMsg as schemas::nats::NatsMessage>::decode(&m.payload)?
        else {
            panic!("not an outbid notice");
        };
        assert_eq!(o.your_bid, 1_000 + i);
    }
    // Sent again (a replay after a crash): every message is a duplicate, nothing is added.
    assert!(bus::send_batch(&js, &msgs, false).await?.confirmed().await);
    assert_eq!(stored(&js, "USERS").await, 500);
    // An ack per message (replicated streams) stores the same.
    assert!(
        bus::send_batch(&js, &batch("b", 10), true)
            .await?
            .confirmed()
            .await
    );
    assert_eq!(stored(&js, "USERS").await, 510);
    Ok(())
}

#[tokio::test]
async fn a_batch_sent_across_a_reconnect_is_not_confirmed() -> anyhow::Result<()> {
    let mut server = testkit::NatsServer::start().await?;
    let client = bus::connect(&server.url(), "batch-test").await?;
    let js = bus::jetstream(client.clone());
    bus::ensure_streams(&js, 4, 1).await?;
    server.kill();
    // Sent while the server is away: the client buffers, then reconnects.
    let sent = bus::send_batch(&js, &batch("c", 50), false).await?;
    server.restart().await?;
    testkit::wait_until(Duration::from_secs(20), "client reconnects", || {
        let c = client.clone();
        async move { c.connection_state() == async_nats::connection::State::Connected }
    })
    .await?;
    assert!(
        !sent.confirmed().await,
        "a batch that crossed a reconnect must be republished"
    );
    Ok(())
}
