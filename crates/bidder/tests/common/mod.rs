//! A real NATS (private 2.10+ server), a fresh Postgres database, streams, and helpers to list
//! lots and publish commands the way the edge and the ticker do.
#![allow(dead_code)]

use async_nats::jetstream::{self, consumer};
use schemas::nats::{BidCommand, NatsMessage, PlaceBid};
use schemas::subjects as subj;
use schemas::trace::TraceParent;
use schemas::{EventId, LotId, UserId};
use std::time::Duration;
use store::catalog::*;
use store::PgPool;
use testkit::{NatsServer, TestDb};

pub const PARTITIONS: u16 = 4;

pub struct Env {
    pub nats: NatsServer,
    pub db: TestDb,
    pub client: async_nats::Client,
    pub js: jetstream::Context,
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
        bus::ensure_streams(&js, PARTITIONS, 1)
            .await
            .expect("streams");
        Env {
            nats,
            db,
            client,
            js,
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.db.pool
    }

    /// A bidder config with a short lease, for tests that take over.
    pub fn bidder_config(&self) -> bidder::Config {
        let mut c = bidder::Config::new(PARTITIONS);
        c.lease_ttl = Duration::from_millis(1_000);
        c
    }

    /// Runs an in-process bidder until the returned token is cancelled.
    pub async fn spawn_bidder(
        &self,
        config: bidder::Config,
    ) -> (
        tokio_util::sync::CancellationToken,
        tokio::task::JoinHandle<()>,
    ) {
        let token = tokio_util::sync::CancellationToken::new();
        let client = bus::connect(&self.nats.url(), "bidder")
            .await
            .expect("connect");
        let pool = self.db.pool.clone();
        let t = token.clone();
        let h = tokio::spawn(async move {
            bidder::run(config, client, pool, t).await.expect("bidder");
        });
        (token, h)
    }

    pub async fn users(&self, n: usize, verified: bool) -> Vec<UserId> {
        let mut out = Vec::new();
        for i in 0..n {
            let u = store::users::create_user(
                self.pool(),
                &format!("u{i}-{}@gavel.test", uuid::Uuid::new_v4().simple()),
                "x",
                &format!("User {i}"),
                false,
                verified,
            )
            .await
            .expect("user");
            out.push(UserId(u.id));
        }
        out
    }

    /// A scheduled event with `n` lots in lane 1 (starting price 1,000.00, reserve `reserve`).
    pub async fn lots(&self, n: usize, reserve: i64) -> (EventId, Vec<LotId>) {
        let (event, lanes) = self
            .event(1, n, schemas::now_ms(), 30, 30, |_, _| reserve)
            .await;
        (event, lanes.into_iter().next().unwrap_or_default())
    }

    /// A scheduled event starting at `starts_at` with `per_lane` lots in each of `lanes` lanes
    /// (starting price 1,000.00, reserve from `reserve(lane, position)`); the lots by lane.
    pub async fn event(
        &self,
        lanes: i32,
        per_lane: usize,
        starts_at: i64,
        lot_seconds: i32,
        reset_seconds: i32,
        reserve: impl Fn(i32, i32) -> i64,
    ) -> (EventId, Vec<Vec<LotId>>) {
        let pool = self.pool();
        let vendor = create_vendor(pool, "Test Motors", "t@gavel.test")
            .await
            .unwrap();
        let event = create_event(
            pool,
            &NewEvent {
                name: "Test sale".into(),
                starts_at,
                lanes,
                lot_seconds,
                reset_seconds,
            },
        )
        .await
        .unwrap();
        let mut all = Vec::new();
        for lane in 1..=lanes {
            let mut lots = Vec::new();
            for position in 1..=per_lane as i32 {
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
                lots.push(
                    add_lot(
                        pool,
                        &NewLot {
                            event_id: event,
                            vehicle_id: vehicle,
                            lane,
                            position,
                            starting_price: 100_000,
                            reserve: reserve(lane, position),
                        },
                    )
                    .await
                    .unwrap(),
                );
            }
            all.push(lots);
        }
        schedule_event(pool, event).await.unwrap();
        (event, all)
    }

    /// Publishes a command on the lot's ordered subject; returns its stream sequence.
    pub async fn send(&self, cmd: &BidCommand, msg_id: Option<String>) -> u64 {
        let trace =
            TraceParent::parse("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01").unwrap();
        let ack = bus::Outgoing::new(subj::bids(cmd.lot_id(), PARTITIONS), cmd, msg_id, trace)
            .send(&self.js)
            .await
            .expect("publish")
            .await
            .expect("puback");
        ack.sequence
    }

    pub async fn open(&self, lot: LotId) -> u64 {
        self.send(
            &BidCommand::Open {
                lot_id: lot,
                ends_at: schemas::now_ms() + 30_000,
            },
            None,
        )
        .await
    }

    pub async fn bid(
        &self,
        lot: LotId,
        user: UserId,
        amount: i64,
        seen_high: Option<i64>,
        idem: &str,
    ) -> u64 {
        let cmd = BidCommand::PlaceBid(PlaceBid {
            lot_id: lot,
            user_id: user,
            amount,
            seen_high,
            idem: idem.into(),
            sent_at: schemas::now_ms(),
        });
        self.send(&cmd, Some(format!("{user}:{idem}"))).await
    }

    pub async fn lot(&self, lot: LotId) -> store::bidding::LotRecord {
        store::bidding::load_lots(self.pool(), &[lot])
            .await
            .unwrap()
            .pop()
            .expect("lot exists")
    }

    /// Waits until the lot has applied at least stream sequence `seq`.
    pub async fn wait_applied(&self, lot: LotId, seq: u64) {
        testkit::wait_until(Duration::from_secs(30), "lot applied", || async {
            self.lot(lot).await.applied_seq >= seq as i64 || self.decided(seq).await
        })
        .await
        .expect("decided in time");
    }

    /// Whether the message at `seq` has a recorded decision.
    pub async fn decided(&self, seq: u64) -> bool {
        let (b, c) = store::bidding::decisions_by_seq(self.pool(), &[seq as i64])
            .await
            .unwrap();
        !b.is_empty() || !c.is_empty()
    }

    /// How many messages a stream holds on subjects matching `filter`.
    pub async fn count(&self, stream: &str, filter: &str) -> u64 {
        use futures::TryStreamExt;
        let s = self.js.get_stream(stream).await.unwrap();
        let subjects: Vec<(String, usize)> = s
            .info_with_subjects(filter)
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        subjects.iter().map(|(_, n)| *n as u64).sum()
    }

    /// The last message a stream holds on `subject`, decoded.
    pub async fn last<M: NatsMessage>(&self, stream: &str, subject: &str) -> M {
        let s = self.js.get_stream(stream).await.unwrap();
        let m = s.get_last_raw_message_by_subject(subject).await.unwrap();
        M::decode(&m.payload).unwrap()
    }

    /// Every message a stream holds on `filter`, decoded.
    pub async fn read_all<M: NatsMessage>(&self, stream: &str, filter: &str) -> Vec<M> {
        use futures::StreamExt;
        let n = self.count(stream, filter).await as usize;
        let s = self.js.get_stream(stream).await.unwrap();
        let c: consumer::PullConsumer = s
            .create_consumer(consumer::pull::Config {
                filter_subject: filter.into(),
                ack_policy: consumer::AckPolicy::None,
                inactive_threshold: Duration::from_secs(5),
                ..Default::default()
            })
            .await
            .unwrap();
        let mut out = Vec::new();
        let mut msgs = c.fetch().max_messages(n.max(1)).messages().await.unwrap();
        while out.len() < n {
            let Some(m) = msgs.next().await else {
                msgs = c
                    .fetch()
                    .max_messages(n - out.len())
                    .messages()
                    .await
                    .unwrap();
                continue;
            };
            out.push(M::decode(&m.unwrap().payload).unwrap());
        }
        out
    }
}
