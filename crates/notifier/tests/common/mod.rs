//! A private NATS with Gavel's streams, a fresh database, the OneSignal stand-in, and helpers to
//! queue push jobs the way the ticker and the bidder do and to run notifiers against them.
#![allow(dead_code)]

use crate::standin::{self, StandIn};
use async_nats::jetstream;
use bus::Outgoing;
use futures::StreamExt;
use notifier::DeadPush;
use schemas::nats::NotifyJob;
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use schemas::{EventId, LotId, UserId};
use std::time::Duration;
use store::catalog::*;
use store::PgPool;
use testkit::{NatsServer, TestDb};
use tokio_util::sync::CancellationToken;

pub struct Env {
    pub nats: NatsServer,
    pub db: TestDb,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
    pub standin: StandIn,
}

/// A notifier running in this process.
pub struct Running {
    pub stop: CancellationToken,
    pub task: tokio::task::JoinHandle<()>,
}

impl Running {
    /// Stops it as SIGTERM would, and waits until it has drained.
    pub async fn shut_down(self) {
        self.stop.cancel();
        tokio::time::timeout(Duration::from_secs(20), self.task)
            .await
            .expect("the notifier drains in time")
            .expect("the notifier task");
    }
}

impl Env {
    pub async fn start() -> Env {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        let nats = NatsServer::start().await.expect("nats-server");
        let db = TestDb::new().await.expect("test database");
        store::migrate(&db.pool).await.expect("migrations");
        let client = bus::connect(&nats.url(), "test").await.expect("connect");
        let js = bus::jetstream(client.clone());
        bus::ensure_streams(&js, 4, 1).await.expect("streams");
        let standin = StandIn::start().await;
        Env {
            nats,
            db,
            client,
            js,
            standin,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// A notifier sending to the stand-in, with delays short enough for tests.
    pub fn config(&self) -> notifier::Config {
        let mut c = notifier::Config::new();
        c.onesignal = notifier::OneSignal::from_parts(
            Some(standin::APP_ID.into()),
            Some(standin::API_KEY.into()),
        )
        .unwrap();
        c.api_url = self.standin.url.clone();
        c.concurrency = 4;
        c.ack_wait = Duration::from_millis(1_500);
        c.request_timeout = Duration::from_millis(500);
        c.retry = notifier::RetryPolicy {
            base: Duration::from_millis(20),
            max: Duration::from_millis(200),
            misconfigured: Duration::from_millis(300),
            max_retry_after: Duration::from_secs(5),
        };
        c
    }

    pub async fn spawn(&self, config: notifier::Config) -> Running {
        let stop = CancellationToken::new();
        let client = bus::connect(&self.nats.url(), "notifier")
            .await
            .expect("connect");
        let pool = self.db.pool.clone();
        let s = stop.clone();
        let task = tokio::spawn(async move {
            notifier::run(config, client, pool, s)
                .await
                .expect("notifier");
        });
        Running { stop, task }
    }

    /// Queues a job as its producer does: on `notify.<kind>` with a message id.
    pub async fn queue(&self, job: &NotifyJob, msg_id: &str) {
        Outgoing::new(
            subj::notify(job.kind()),
            job,
            Some(msg_id.into()),
            TraceParent::new_root(),
        )
        .send(&self.js)
        .await
        .expect("publish")
        .await
        .expect("stored");
    }

    /// Jobs still in `NOTIFY` (a work queue: acked jobs are gone).
    pub async fn queued(&self) -> u64 {
        let mut s = self.js.get_stream(subj::STREAM_NOTIFY).await.unwrap();
        s.info().await.unwrap().state.messages
    }

    /// Waits until every job was acked.
    pub async fn wait_drained(&self, deadline: Duration) {
        testkit::wait_until(deadline, "NOTIFY is empty", || async {
            self.queued().await == 0
        })
        .await
        .unwrap();
    }

    /// Every dead letter stored so far.
    pub async fn dead_letters(&self) -> Vec<DeadPush> {
        let mut s = self.js.get_stream(subj::STREAM_NOTIFY_DEAD).await.unwrap();
        let n = s.info().await.unwrap().state.messages;
        let mut out = Vec::new();
        if n == 0 {
            return out;
        }
        let c: jetstream::consumer::PullConsumer = s
            .create_consumer(jetstream::consumer::pull::Config {
                ack_policy: jetstream::consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(5),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut msgs = c.fetch().max_messages(n as usize).messages().await.unwrap();
        while let Some(m) = msgs.next().await {
            let m = m.unwrap();
            assert!(m.subject.starts_with("notify_dead."), "{}", m.subject);
            out.push(
                <DeadPush as schemas::nats::NatsMessage>::decode(&m.payload).expect("a dead push"),
            );
        }
        out
    }

    /// An event named `name` with one lot (a 2019 Toyota Corolla).
    pub async fn event_with_lot(&self, name: &str) -> (EventId, LotId) {
        let pool = self.pool();
        let vendor = create_vendor(pool, "Test Motors", "t@gavel.test")
            .await
            .unwrap();
        let event = create_event(
            pool,
            &NewEvent {
                name: name.into(),
                starts_at: schemas::now_ms(),
                lanes: 1,
                lot_seconds: 30,
                reset_seconds: 30,
            },
        )
        .await
        .unwrap();
        let vehicle = create_vehicle(
            pool,
            &NewVehicle {
                vendor_id: vendor,
                vin: uuid::Uuid::new_v4().simple().to_string()[..17].to_uppercase(),
                year: 2019,
                make: "Toyota".into(),
                model: "Corolla".into(),
                trim: "LE".into(),
                mileage: 40_000,
                photos: vec![],
                pickup: "Gate 3, bring ID".into(),
            },
        )
        .await
        .unwrap();
        let lot = add_lot(
            pool,
            &NewLot {
                event_id: event,
                vehicle_id: vehicle,
                lane: 1,
                position: 1,
                starting_price: 100_000,
                reserve: 0,
            },
        )
        .await
        .unwrap();
        (event, lot)
    }

    /// `n` users at once (a cohort of thousands in milliseconds).
    pub async fn users(&self, n: usize, verified: bool) -> Vec<UserId> {
        let ids: Vec<uuid::Uuid> = sqlx::query_scalar(
            "INSERT INTO users (id, email, password_hash, name, verified)
             SELECT gen_random_uuid(), 'bulk-' || gen_random_uuid() || '@gavel.test', 'x',
                    'Bulk ' || g, $2
               FROM generate_series(1, $1) AS g
             RETURNING id",
        )
        .bind(n as i32)
        .bind(verified)
        .fetch_all(self.pool())
        .await
        .unwrap();
        ids.into_iter().map(UserId).collect()
    }

    /// Registers every user for the event.
    pub async fn register_all(&self, event: EventId, users: &[UserId]) {
        let ids: Vec<uuid::Uuid> = users.iter().map(|u| u.0).collect();
        sqlx::query(
            "INSERT INTO event_registrations (event_id, user_id) SELECT $1, unnest($2::uuid[])",
        )
        .bind(event.0)
        .bind(&ids)
        .execute(self.pool())
        .await
        .unwrap();
    }
}

pub fn outbid(user: UserId, event: EventId, lot: LotId, your_bid: i64, high: i64) -> NotifyJob {
    NotifyJob::Outbid {
        user_id: user,
        event_id: event,
        lot_id: lot,
        your_bid,
        high,
        min_next: high + schemas::increment(high),
    }
}

pub fn won(user: UserId, event: EventId, lot: LotId, amount: i64) -> NotifyJob {
    NotifyJob::Won {
        user_id: user,
        event_id: event,
        lot_id: lot,
        amount,
        pickup: "Gate 3, bring ID".into(),
    }
}

/// The idempotency key the notifier uses for a job's batch.
pub fn key(job: &NotifyJob, batch: usize) -> String {
    notifier::push::idempotency_key(job, batch).to_string()
}
