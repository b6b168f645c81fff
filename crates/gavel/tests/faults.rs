//! Fault injection with bids flowing: a bidder killed with SIGKILL, nats-server killed and
//! restarted on its store, nats-server frozen (SIGSTOP) and thawed, one node of a three-node
//! JetStream cluster killed and brought back, Postgres stopped (and crashed) for 5 s, one of two
//! edges killed under WebSocket clients. The services are real `gavel` child processes; the
//! servers are testkit's private ones.
//!
//! Each test runs a loader: verified buyers bidding on open lots the way the edge does (a
//! `Nats-Msg-Id` of user and idem, the answer awaited on `user.<id>.result`, the recorded
//! decision looked up when no answer comes), each retrying an unanswered bid with the SAME idem
//! until it is answered. After the fault and the recovery, [`verify`] checks what DESIGN.md
//! promises: every answer a client heard is the decision Postgres holds (so no accepted bid is
//! lost), each (user, idem) was decided once, the lots' accepted bids are exactly those clients
//! heard accepted, and `store::audit` finds nothing. Each test prints a `FAULT` line with its
//! figures (docs/reliability/faults.md quotes them).
//!
//! Other faults are covered elsewhere: the leading ticker killed and two tickers fighting over
//! the lease in `ticker_failover.rs`, OneSignal failing in `notifier_crash.rs` and
//! `crates/notifier/tests/delivery.rs`, a bidder dying between commit and ack in `crash.rs`.

use async_nats::jetstream;
use futures::StreamExt;
use schemas::frames::{BidResult, BidStatus};
use schemas::nats::{BidCommand, NatsMessage, PlaceBid, UserMsg};
use schemas::subjects::{self as subj, UserKind};
use schemas::trace::TraceParent;
use schemas::{LotId, UserId};
use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use store::catalog::{self, NewEvent, NewLot, NewVehicle};
use store::PgPool;
use testkit::{wait_until, NatsCluster, NatsServer, PgCluster, TestDb};
use tokio_util::sync::CancellationToken;

const PARTITIONS: u16 = 4;
/// How long a client waits for an answer before it looks the decision up and asks again.
const ANSWER_WAIT: Duration = Duration::from_millis(1_500);
/// A bid still unanswered after this is a stuck client: the test fails.
const STUCK: Duration = Duration::from_secs(45);

/// Where the services and the clients meet.
struct Rig {
    nats_url: String,
    db_url: String,
    pool: PgPool,
    client: async_nats::Client,
    js: jetstream::Context,
}

impl Rig {
    async fn new(nats_url: String, db: &TestDb, replicas: usize) -> Rig {
        let _ = tracing_subscriber::fmt()
            .with_env_filter(
                tracing_subscriber::EnvFilter::try_from_default_env()
                    .unwrap_or_else(|_| "warn".into()),
            )
            .with_test_writer()
            .try_init();
        store::migrate(&db.pool).await.expect("migrations");
        let client = bus::connect(&nats_url, "faults").await.expect("connect");
        let js = bus::jetstream(client.clone());
        bus::ensure_streams(&js, PARTITIONS, replicas)
            .await
            .expect("streams");
        Rig {
            nats_url,
            db_url: db.url.clone(),
            pool: db.pool.clone(),
            client,
            js,
        }
    }

    /// Where every fault starts: a sale of `LOTS` lots to `USERS` buyers, a bidder, the lots
    /// open, and the loader 300 answers into its burst.
    async fn mid_burst(&self) -> (Service, Vec<LotId>, Loader) {
        let (users, lots) = self.sale(USERS, LOTS).await;
        let bidder = self.bidder();
        self.wait_open(&lots).await;
        let loader = Loader::start(self, &users, &lots, PACE);
        loader.wait_answers(300, "300 bids before the fault").await;
        (bidder, lots, loader)
    }

    /// `gavel bidder` as a child process (so that a kill is a real SIGKILL).
    fn bidder(&self) -> Service {
        let child = Command::new(env!("CARGO_BIN_EXE_gavel"))
            .args([
                "bidder",
                "--partitions",
                &PARTITIONS.to_string(),
                "--lease-ttl-ms",
                "1000",
            ])
            .env("NATS_URL", &self.nats_url)
            .env("DATABASE_URL", &self.db_url)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("gavel bidder starts");
        Service(Some(child))
    }

    /// `users` verified buyers and an event with `lots` lots (one per lane), all open for ten
    /// minutes (no ticker runs: nothing closes them during the test).
    async fn sale(&self, users: usize, lots: usize) -> (Vec<UserId>, Vec<LotId>) {
        let pool = &self.pool;
        let mut buyers = Vec::new();
        for i in 0..users {
            let u = store::users::create_user(
                pool,
                &format!("b{i}-{}@gavel.test", uuid::Uuid::new_v4().simple()),
                "x",
                &format!("Buyer {i}"),
                false,
                true,
            )
            .await
            .unwrap();
            buyers.push(UserId(u.id));
        }
        let vendor = catalog::create_vendor(pool, "Fault Motors", "f@gavel.test")
            .await
            .unwrap();
        let event = catalog::create_event(
            pool,
            &NewEvent {
                name: "Fault sale".into(),
                starts_at: schemas::now_ms(),
                lanes: lots as i32,
                lot_seconds: 600,
                reset_seconds: 30,
            },
        )
        .await
        .unwrap();
        let mut ids = Vec::new();
        for lane in 1..=lots as i32 {
            let vehicle = catalog::create_vehicle(
                pool,
                &NewVehicle {
                    vendor_id: vendor,
                    vin: uuid::Uuid::new_v4().simple().to_string()[..17].to_uppercase(),
                    year: 2020,
                    make: "Volvo".into(),
                    model: "V60".into(),
                    trim: String::new(),
                    mileage: 10_000,
                    photos: vec![],
                    pickup: "Gate 1".into(),
                },
            )
            .await
            .unwrap();
            ids.push(
                catalog::add_lot(
                    pool,
                    &NewLot {
                        event_id: event,
                        vehicle_id: vehicle,
                        lane,
                        position: 1,
                        starting_price: 100_000,
                        reserve: 0,
                    },
                )
                .await
                .unwrap(),
            );
        }
        catalog::schedule_event(pool, event).await.unwrap();
        for &lot in &ids {
            let open = BidCommand::Open {
                lot_id: lot,
                ends_at: schemas::now_ms() + 600_000,
            };
            bus::Outgoing::new(
                subj::bids(lot, PARTITIONS),
                &open,
                Some(format!("open-{lot}")),
                TraceParent::new_root(),
            )
            .send(&self.js)
            .await
            .unwrap()
            .await
            .unwrap();
        }
        (buyers, ids)
    }

    /// The bidders' acknowledged position: the sum of every partition consumer's ack floor.
    async fn acked(&self) -> u64 {
        let Ok(bids) = self.js.get_stream("BIDS").await else {
            return 0;
        };
        let mut sum = 0;
        for p in 0..PARTITIONS {
            if let Ok(info) = bids.consumer_info(format!("bidder-p{p}")).await {
                sum += info.ack_floor.stream_sequence;
            }
        }
        sum
    }

    /// Waits until every lot is open (the bidder runs); on a timeout, says what the bidder's
    /// consumers hold.
    async fn wait_open(&self, lots: &[LotId]) {
        let opened = wait_until(Duration::from_secs(30), "the lots are open", || async {
            store::bidding::count_in_state(&self.pool, lots, schemas::LotState::Open)
                .await
                .is_ok_and(|n| n == lots.len() as i64)
        })
        .await;
        if let Err(e) = opened {
            let mut consumers = Vec::new();
            if let Ok(bids) = self.js.get_stream("BIDS").await {
                for p in 0..PARTITIONS {
                    let info = bids.consumer_info(format!("bidder-p{p}")).await;
                    consumers.push(format!(
                        "bidder-p{p}: {:?}",
                        info.map(|i| (i.num_pending, i.num_ack_pending, i.ack_floor))
                    ));
                }
            }
            let states = store::bidding::load_lots(&self.pool, lots).await;
            panic!("{e}: lots {states:?}; consumers {consumers:#?}");
        }
    }
}

/// A child service, killed with SIGKILL when dropped.
struct Service(Option<Child>);

impl Service {
    /// SIGKILL: no drain, no lease released, no ack sent.
    fn kill(&mut self) {
        if let Some(mut c) = self.0.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.kill();
    }
}

/// One answered bid, as the client heard it.
#[derive(Clone, Debug)]
struct Heard {
    user: UserId,
    idem: String,
    amount: i64,
    result: BidResult,
    asked: Instant,
    answered: Instant,
    attempts: u32,
}

/// The clients' shared record.
#[derive(Default)]
struct Log {
    heard: Vec<Heard>,
    /// Attempts that failed to publish (the broker was away).
    publish_failures: u64,
    /// Answers that came from looking the decision up after no answer arrived in time.
    looked_up: u64,
}

/// Verified buyers bidding on `lots` until `stop`, each one bid at a time.
struct Loader {
    stop: CancellationToken,
    log: Arc<Mutex<Log>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    started: Instant,
}

impl Loader {
    fn start(rig: &Rig, users: &[UserId], lots: &[LotId], pace: Duration) -> Loader {
        let stop = CancellationToken::new();
        let log = Arc::new(Mutex::new(Log::default()));
        let tasks = users
            .iter()
            .enumerate()
            .map(|(i, &user)| {
                let c = Client {
                    user,
                    lots: lots.to_vec(),
                    // Buyers start on different lots so that they race each other.
                    turn: i,
                    client: rig.client.clone(),
                    js: rig.js.clone(),
                    pool: rig.pool.clone(),
                    log: log.clone(),
                };
                tokio::spawn(c.run(stop.clone(), pace))
            })
            .collect();
        Loader {
            stop,
            log,
            tasks,
            started: Instant::now(),
        }
    }

    /// Waits until `n` more answers have been heard.
    async fn wait_answers(&self, n: usize, what: &str) {
        let from = self.log.lock().unwrap().heard.len();
        wait_until(Duration::from_secs(60), what, || async {
            self.log.lock().unwrap().heard.len() >= from + n
        })
        .await
        .unwrap();
    }

    /// The end of every fault: `what` (300 more answers after the recovery), then the clients
    /// stop; the log and its `FAULT` figures line.
    async fn finish_after(
        self,
        what: &str,
        name: &str,
        fault: Instant,
        recovered: Instant,
    ) -> (Log, String) {
        self.wait_answers(300, what).await;
        let started = self.started;
        let log = self.finish().await;
        let line = figures(name, &log, started, fault, recovered);
        (log, line)
    }

    /// Stops asking new bids, lets every outstanding one be answered, and returns the record.
    async fn finish(self) -> Log {
        self.stop.cancel();
        for t in self.tasks {
            t.await.expect("a client panicked (stuck?)");
        }
        Arc::try_unwrap(self.log)
            .ok()
            .expect("clients done")
            .into_inner()
            .unwrap()
    }
}

struct Client {
    user: UserId,
    lots: Vec<LotId>,
    turn: usize,
    client: async_nats::Client,
    js: jetstream::Context,
    pool: PgPool,
    log: Arc<Mutex<Log>>,
}

impl Client {
    async fn run(self, stop: CancellationToken, pace: Duration) {
        let mut answers = self
            .client
            .subscribe(subj::user(self.user, UserKind::Result))
            .await
            .expect("subscribe");
        // What this client last heard of each lot: (high, min_next).
        let mut known: HashMap<LotId, (Option<i64>, i64)> =
            self.lots.iter().map(|&l| (l, (None, 100_000))).collect();
        let mut n = 0usize;
        while !stop.is_cancelled() {
            let lot = self.lots[(self.turn + n) % self.lots.len()];
            let (high, min_next) = known[&lot];
            let idem = format!("f{n}");
            let heard = self.ask(&mut answers, lot, min_next, high, idem).await;
            if let (Some(h), Some(m)) = (heard.result.high, heard.result.min_next) {
                known.insert(lot, (Some(h), m));
            }
            self.log.lock().unwrap().heard.push(heard);
            n += 1;
            tokio::time::sleep(pace).await;
        }
    }

    /// Asks until answered, always with the same idem; panics when stuck.
    async fn ask(
        &self,
        answers: &mut async_nats::Subscriber,
        lot: LotId,
        amount: i64,
        seen_high: Option<i64>,
        idem: String,
    ) -> Heard {
        let asked = Instant::now();
        let cmd = BidCommand::PlaceBid(PlaceBid {
            lot_id: lot,
            user_id: self.user,
            amount,
            seen_high,
            idem: idem.clone(),
            sent_at: schemas::now_ms(),
        });
        let mut attempts = 0;
        loop {
            if asked.elapsed() >= STUCK {
                let in_stream = self.in_stream(lot, &idem).await;
                panic!(
                    "client stuck: {} idem {idem} unanswered after {STUCK:?}; the bid is in \
                     BIDS: {in_stream:?}",
                    self.user
                );
            }
            attempts += 1;
            let out = bus::Outgoing::new(
                subj::bids(lot, PARTITIONS),
                &cmd,
                Some(format!("{}:{}", self.user.0, idem)),
                TraceParent::new_root(),
            );
            let published = tokio::time::timeout(ANSWER_WAIT, async {
                out.send(&self.js).await.ok()?.await.ok()
            })
            .await
            .ok()
            .flatten();
            if published.is_none() {
                self.log.lock().unwrap().publish_failures += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            let wait = async {
                while let Some(m) = answers.next().await {
                    if let Ok(UserMsg::Result(r)) = UserMsg::decode(&m.payload) {
                        if r.idem == idem {
                            return Some(r);
                        }
                    }
                }
                None
            };
            let result = match published {
                Some(_) => tokio::time::timeout(ANSWER_WAIT, wait).await.ok().flatten(),
                None => None,
            };
            let result = match result {
                Some(r) => Some(r),
                None => self.look_up(&idem).await,
            };
            if let Some(result) = result {
                return Heard {
                    user: self.user,
                    idem,
                    amount,
                    result,
                    asked,
                    answered: Instant::now(),
                    attempts,
                };
            }
        }
    }

    /// Whether `BIDS` holds this bid (for the stuck-client diagnosis): the stream sequences of
    /// its copies on the lot's subject.
    async fn in_stream(&self, lot: LotId, idem: &str) -> Result<Vec<u64>, String> {
        let stream = self
            .js
            .get_stream("BIDS")
            .await
            .map_err(|e| e.to_string())?;
        let consumer = stream
            .create_consumer(jetstream::consumer::pull::OrderedConfig {
                filter_subject: subj::bids(lot, PARTITIONS),
                ..Default::default()
            })
            .await
            .map_err(|e| e.to_string())?;
        let mut msgs = consumer.messages().await.map_err(|e| e.to_string())?;
        let mut seqs = Vec::new();
        while let Ok(Some(Ok(m))) = tokio::time::timeout(Duration::from_secs(1), msgs.next()).await
        {
            if let Ok(BidCommand::PlaceBid(b)) = BidCommand::decode(&m.payload) {
                if b.user_id == self.user && b.idem == idem {
                    seqs.push(m.info().map(|i| i.stream_sequence).unwrap_or(0));
                }
            }
        }
        Ok(seqs)
    }

    /// The recorded decision, as the edge looks it up for a retried bid.
    async fn look_up(&self, idem: &str) -> Option<BidResult> {
        let keys = [(self.user, idem.to_owned())];
        let found = tokio::time::timeout(
            Duration::from_secs(2),
            store::bidding::bids_by_idem(&self.pool, &keys),
        )
        .await
        .ok()?
        .ok()?;
        let r = found.first()?.result();
        self.log.lock().unwrap().looked_up += 1;
        Some(r)
    }
}

/// The promises of DESIGN.md, checked against what the clients heard.
async fn verify(pool: &PgPool, lots: &[LotId], log: &Log) {
    let heard = &log.heard;
    assert!(!heard.is_empty(), "no bid was answered");
    let keys: Vec<(UserId, String)> = heard.iter().map(|h| (h.user, h.idem.clone())).collect();
    let mut recorded = HashMap::new();
    for chunk in keys.chunks(1_000) {
        for b in store::bidding::bids_by_idem(pool, chunk).await.unwrap() {
            let key = (b.user_id, b.idem.clone());
            assert!(
                recorded.insert(key, b).is_none(),
                "a (user, idem) decided twice"
            );
        }
    }
    for h in heard {
        let b = recorded
            .get(&(h.user, h.idem.clone()))
            .unwrap_or_else(|| panic!("{} {} was answered but is not recorded", h.user, h.idem));
        assert_eq!(
            b.result(),
            h.result,
            "the answer heard is the decision recorded"
        );
        assert_eq!(b.amount, h.amount);
    }
    for &lot in lots {
        let mut db: Vec<(UserId, String)> = store::bidding::accepted_bids(pool, lot)
            .await
            .unwrap()
            .into_iter()
            .map(|b| (b.user_id, b.idem))
            .collect();
        let mut clients: Vec<(UserId, String)> = heard
            .iter()
            .filter(|h| h.result.lot_id == lot && h.result.status == BidStatus::Accepted)
            .map(|h| (h.user, h.idem.clone()))
            .collect();
        db.sort();
        clients.sort();
        assert_eq!(
            db, clients,
            "the lot's accepted bids are exactly those clients heard accepted"
        );
    }
    let violations = store::audit::check(pool, Some(lots)).await.unwrap();
    assert!(violations.is_empty(), "audit: {violations:#?}");
}

/// Figures for the report: the whole run, and the bids asked during `[from, to)`.
fn figures(name: &str, log: &Log, started: Instant, fault: Instant, recovered: Instant) -> String {
    let accepted = |hs: &[&Heard]| {
        hs.iter()
            .filter(|h| h.result.status == BidStatus::Accepted)
            .count()
    };
    let all: Vec<&Heard> = log.heard.iter().collect();
    let during: Vec<&Heard> = log
        .heard
        .iter()
        .filter(|h| h.asked < recovered && h.answered >= fault)
        .collect();
    let slowest = log
        .heard
        .iter()
        .map(|h| h.answered - h.asked)
        .max()
        .unwrap_or_default();
    let first_after = log
        .heard
        .iter()
        .filter(|h| h.answered >= recovered)
        .map(|h| h.answered - recovered)
        .min()
        .unwrap_or_default();
    let retried = log.heard.iter().filter(|h| h.attempts > 1).count();
    // The longest stretch in which no client heard any answer: the outage as clients saw it.
    let mut times: Vec<Instant> = log.heard.iter().map(|h| h.answered).collect();
    times.sort();
    let gap = times
        .windows(2)
        .map(|w| w[1] - w[0])
        .max()
        .unwrap_or_default();
    format!(
        "FAULT {name}: {} bids answered in {:.1} s ({} accepted); {} in flight during the fault \
         ({} accepted); fault {:.1} s; first answer {} ms after recovery; slowest answer {} ms; \
         longest stretch without any answer {} ms; {} bids retried with the same idem, {} failed publishes, {} answers looked up",
        all.len(),
        started.elapsed().as_secs_f64(),
        accepted(&all),
        during.len(),
        accepted(&during),
        (recovered - fault).as_secs_f64(),
        first_after.as_millis(),
        slowest.as_millis(),
        gap.as_millis(),
        retried,
        log.publish_failures,
        log.looked_up,
    )
}

const USERS: usize = 6;
const LOTS: usize = 2;
const PACE: Duration = Duration::from_millis(5);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bidder_killed_mid_burst_and_restarted() {
    let nats = NatsServer::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let rig = Rig::new(nats.url(), &db, 1).await;
    let (mut bidder, lots, loader) = rig.mid_burst().await;

    let fault = Instant::now();
    bidder.kill();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _bidder = rig.bidder();
    let restarted = Instant::now();
    let (log, line) = loader
        .finish_after(
            "300 bids after the restart",
            "bidder kill -9",
            fault,
            restarted,
        )
        .await;
    eprintln!("{line}");
    verify(&rig.pool, &lots, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_killed_mid_burst_and_restarted_on_its_store() {
    let mut nats = NatsServer::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let rig = Rig::new(nats.url(), &db, 1).await;
    let (_bidder, lots, loader) = rig.mid_burst().await;

    let fault = Instant::now();
    nats.kill();
    tokio::time::sleep(Duration::from_secs(2)).await;
    nats.restart().await.unwrap();
    let restarted = Instant::now();
    let (log, line) = loader
        .finish_after(
            "300 bids after the restart",
            "nats-server kill -9",
            fault,
            restarted,
        )
        .await;
    eprintln!("{line}");
    verify(&rig.pool, &lots, &log).await;
}

/// A server that stops answering without closing its sockets (SIGSTOP: a stalled VM, a long
/// pause) for longer than the bidder's heartbeat allows: the bidder gives up its pull and makes
/// the consumer again from its last announced message once the server answers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_server_frozen_mid_burst_then_thawed() {
    let nats = NatsServer::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let rig = Rig::new(nats.url(), &db, 1).await;
    let (_bidder, lots, loader) = rig.mid_burst().await;

    let fault = Instant::now();
    nats.freeze().unwrap();
    tokio::time::sleep(Duration::from_secs(6)).await;
    nats.thaw().unwrap();
    let thawed = Instant::now();
    let (log, line) = loader
        .finish_after(
            "300 bids after the thaw",
            "nats-server frozen 6 s",
            fault,
            thawed,
        )
        .await;
    eprintln!("{line}");
    verify(&rig.pool, &lots, &log).await;
    // A message the thawed server hands to the pull the bidder dropped would sit unacked until
    // `ack_wait` (30 s) if the bidder did not notice: every bid is answered well before that.
    let longest_wait_after_thaw = log
        .heard
        .iter()
        .filter(|h| h.answered >= thawed)
        .map(|h| h.answered - h.asked.max(thawed))
        .max()
        .unwrap_or_default();
    assert!(
        longest_wait_after_thaw < Duration::from_secs(15),
        "a bid waited {longest_wait_after_thaw:?} after the thaw"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_node_of_a_three_node_cluster_killed_mid_burst_and_brought_back() {
    let mut cluster = NatsCluster::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let rig = Rig::new(cluster.urls(), &db, 3).await;
    let (_bidder, lots, loader) = rig.mid_burst().await;

    for name in ["BIDS", "AUCTION", "USERS", "NOTIFY"] {
        let mut stream = rig.js.get_stream(name).await.unwrap();
        let info = stream.info().await.unwrap();
        assert_eq!(info.config.num_replicas, 3, "{name} is replicated 3 ways");
    }
    // Kill the leader of BIDS: the bids' stream must elect another one mid-burst.
    let leader = rig
        .js
        .get_stream("BIDS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .cluster
        .as_ref()
        .and_then(|c| c.leader.clone())
        .expect("BIDS has a leader");
    let victim = (0..3)
        .find(|&i| leader == format!("n{}", i + 1))
        .expect("a node's name");
    let fault = Instant::now();
    cluster.kill(victim);
    loader
        .wait_answers(300, "300 bids with one node down")
        .await;
    let degraded = Instant::now();
    cluster.restart(victim).await.unwrap();
    let back = Instant::now();
    loader
        .wait_answers(300, "300 bids after the node is back")
        .await;
    let started = loader.started;
    let log = loader.finish().await;
    let mut per_second = vec![0usize; (back - fault).as_secs() as usize + 2];
    for h in &log.heard {
        if h.answered >= fault && h.answered < back {
            per_second[(h.answered - fault).as_secs() as usize] += 1;
        }
    }
    eprintln!("answers per second while the node was down: {per_second:?}");
    eprintln!(
        "{} (node n{} down {:.1} s; back and caught up in {:.1} s)",
        figures("cluster node kill -9", &log, started, fault, fault),
        victim + 1,
        (back - fault).as_secs_f64(),
        (back - degraded).as_secs_f64(),
    );
    verify(&rig.pool, &lots, &log).await;
}

/// Two of three nodes killed: JetStream has no quorum, so no bid can be stored (clients' publishes
/// fail and they keep asking); both brought back, everything carries on.
///
/// This test found bids stored in `BIDS` but never decided (about one run in three, before
/// commits 0eafb9b and e97d82b): a delivery lost with the consumer's leader, then acked with the
/// later ones (AckPolicy::All). The bidder now notices the skipped delivery number and consumes
/// again from its last announced message, and decides a message below its applied position that
/// has no decision instead of dropping it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_of_a_three_node_cluster_killed_no_quorum_then_back() {
    let mut cluster = NatsCluster::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let rig = Rig::new(cluster.urls(), &db, 3).await;
    let (_bidder, lots, loader) = rig.mid_burst().await;

    let fault = Instant::now();
    cluster.kill(0);
    cluster.kill(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    cluster.restart_only(0).await.unwrap();
    cluster.restart_only(1).await.unwrap();
    cluster.wait_healthy().await.unwrap();
    let back = Instant::now();
    let (log, line) = loader
        .finish_after(
            "300 bids after quorum is back",
            "cluster 2 of 3 nodes kill -9",
            fault,
            back,
        )
        .await;
    eprintln!(
        "{line} (healthy again {:.1} s after the restart began)",
        (back - fault).as_secs_f64() - 3.0,
    );
    verify(&rig.pool, &lots, &log).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stopped_for_five_seconds_mid_burst() {
    postgres_away(false, "postgres stopped 5 s").await;
}

/// Postgres crashed (SIGKILL to the postmaster and every backend) mid-burst: the bidder's
/// in-flight transaction is lost with it, crash recovery replays the WAL, and the bidder carries
/// on from what was committed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_crashed_mid_burst() {
    postgres_away(true, "postgres kill -9, down 5 s").await;
}

/// Takes Postgres away for 5 s mid-burst, cleanly (`stop`) or as a crash (`kill`).
async fn postgres_away(crash: bool, name: &str) {
    let nats = NatsServer::start().await.unwrap();
    let mut pg = PgCluster::start().await.unwrap();
    let db = TestDb::new_on(&pg.admin_url()).await.unwrap();
    let rig = Rig::new(nats.url(), &db, 1).await;
    let (_bidder, lots, loader) = rig.mid_burst().await;

    let fault = Instant::now();
    if crash {
        pg.kill();
    } else {
        pg.stop().await.unwrap();
    }
    let answered_at_stop = loader.log.lock().unwrap().heard.len();
    // A batch committed just before the stop may still be acked; after that, nothing is.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let acked_early = rig.acked().await;
    tokio::time::sleep(Duration::from_secs(4)).await;
    let acked_late = rig.acked().await;
    let answered_while_down = loader.log.lock().unwrap().heard.len() - answered_at_stop;
    pg.start_again().await.unwrap();
    let restarted = Instant::now();
    let (log, line) = loader
        .finish_after("300 bids after the restart", name, fault, restarted)
        .await;
    eprintln!("{line} ({answered_while_down} answered while Postgres was down)");
    assert_eq!(
        acked_early, acked_late,
        "the bidder acked nothing while Postgres was down"
    );
    // Nothing can be decided without Postgres: at most the bids already committed before the
    // stop are answered while it is down.
    assert!(
        answered_while_down <= USERS,
        "{answered_while_down} answers while Postgres was down"
    );
    verify(&rig.pool, &lots, &log).await;
}

const SECRET: &str = "the fault tests' secret, thirty-two bytes or more";

/// `gavel edge` as a child process on a port of its own; returns it once `/readyz` is 200.
async fn edge_process(rig: &Rig) -> (Service, std::net::SocketAddr) {
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_gavel"))
        .arg("edge")
        .env("NATS_URL", &rig.nats_url)
        .env("DATABASE_URL", &rig.db_url)
        .env("GAVEL_PARTITIONS", PARTITIONS.to_string())
        .env("GAVEL_HTTP_ADDR", addr.to_string())
        .env("GAVEL_JWT_SECRET", SECRET)
        .env("GAVEL_BID_RATE", "0")
        .env("GAVEL_AUTH_RATE", "0")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("gavel edge starts");
    let service = Service(Some(child));
    let http = reqwest::Client::new();
    wait_until(Duration::from_secs(30), "the edge is ready", || async {
        http.get(format!("http://{addr}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status().is_success())
    })
    .await
    .unwrap();
    (service, addr)
}

/// What one WebSocket client believes of each lot: (version, high).
type View = Arc<Mutex<HashMap<LotId, (i64, Option<i64>)>>>;

/// A buyer on a WebSocket: subscribed to the event, bidding one bid at a time while `bidding`
/// is not cancelled, watching until `done`. When its socket dies it reconnects to the next edge,
/// subscribes again (a fresh snapshot) and asks its unanswered bid again with the same idem.
struct WsClient {
    user: UserId,
    token: String,
    edges: Vec<std::net::SocketAddr>,
    first_edge: usize,
    event: schemas::EventId,
    lots: Vec<LotId>,
    view: View,
    log: Arc<Mutex<Log>>,
    /// How long each reconnection took: socket lost → snapshot from another edge.
    reconnects: Arc<Mutex<Vec<Duration>>>,
}

impl WsClient {
    async fn run(self, bidding: CancellationToken, done: CancellationToken) {
        use futures::SinkExt;
        use tokio_tungstenite::tungstenite::Message;
        let mut edge = self.first_edge;
        let mut known: HashMap<LotId, (Option<i64>, i64)> =
            self.lots.iter().map(|&l| (l, (None, 100_000))).collect();
        let mut n = 0usize;
        // The bid being asked: (lot, amount, seen_high, idem, first asked, attempts).
        let mut asking: Option<(LotId, i64, Option<i64>, String, Instant, u32)> = None;
        let mut lost: Option<Instant> = None;
        'connect: while !done.is_cancelled() {
            let url = format!("ws://{}/ws?token={}", self.edges[edge], self.token);
            let Ok((mut ws, _)) = tokio_tungstenite::connect_async(url).await else {
                edge = (edge + 1) % self.edges.len();
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            };
            let subscribe = serde_json::json!({"type": "subscribe", "event_id": self.event});
            if ws.send(Message::text(subscribe.to_string())).await.is_err() {
                continue;
            }
            // Whether the current ask went out on this socket.
            let mut sent = false;
            loop {
                if asking.is_none() && !bidding.is_cancelled() {
                    let lot = self.lots[(self.first_edge + n) % self.lots.len()];
                    let (high, min_next) = known[&lot];
                    asking = Some((lot, min_next, high, format!("w{n}"), Instant::now(), 0));
                    n += 1;
                }
                if let Some((lot, amount, seen_high, idem, asked, attempts)) = &mut asking {
                    assert!(
                        asked.elapsed() < STUCK,
                        "client stuck: {} idem {idem} unanswered",
                        self.user
                    );
                    if !sent {
                        let bid = serde_json::json!({"type": "bid", "lot_id": lot,
                            "amount": amount, "seen_high": seen_high, "idem": idem});
                        if ws.send(Message::text(bid.to_string())).await.is_err() {
                            break;
                        }
                        *attempts += 1;
                        sent = true;
                    }
                }
                let frame = tokio::select! {
                    _ = done.cancelled() => break 'connect,
                    f = tokio::time::timeout(Duration::from_secs(12), ws.next()) => f,
                };
                let text = match frame {
                    // No answer in 12 s: ask again, same idem.
                    Err(_) => {
                        sent = false;
                        continue;
                    }
                    Ok(Some(Ok(Message::Text(t)))) => t,
                    Ok(Some(Ok(_))) => continue,
                    Ok(Some(Err(_)) | None) => break,
                };
                let f: serde_json::Value = serde_json::from_str(&text).unwrap();
                match f["type"].as_str().unwrap_or_default() {
                    "snapshot" => {
                        if let Some(at) = lost.take() {
                            self.reconnects.lock().unwrap().push(at.elapsed());
                        }
                        let mut view = self.view.lock().unwrap();
                        for lane in f["lanes"].as_array().unwrap() {
                            let l = &lane["lot"];
                            if l.is_null() {
                                continue;
                            }
                            let id: LotId = serde_json::from_value(l["lot_id"].clone()).unwrap();
                            let version = l["version"].as_i64().unwrap();
                            let entry = view.entry(id).or_insert((-1, None));
                            if version >= entry.0 {
                                *entry = (version, l["high"].as_i64());
                            }
                        }
                    }
                    "new_bid" => {
                        let id: LotId = serde_json::from_value(f["lot_id"].clone()).unwrap();
                        let version = f["version"].as_i64().unwrap();
                        let mut view = self.view.lock().unwrap();
                        let entry = view.entry(id).or_insert((-1, None));
                        if version > entry.0 {
                            *entry = (version, f["amount"].as_i64());
                        }
                    }
                    "bid_result" => {
                        let r: BidResult = serde_json::from_value(f).unwrap();
                        let Some((lot, amount, _, idem, asked, attempts)) = asking.clone() else {
                            continue;
                        };
                        if r.idem != idem {
                            continue;
                        }
                        if let (Some(h), Some(m)) = (r.high, r.min_next) {
                            known.insert(lot, (Some(h), m));
                        }
                        self.log.lock().unwrap().heard.push(Heard {
                            user: self.user,
                            idem,
                            amount,
                            result: r,
                            asked,
                            answered: Instant::now(),
                            attempts,
                        });
                        asking = None;
                        sent = false;
                    }
                    // The edge could not get an answer in time: ask again, same idem.
                    "error" if f["code"] == "unavailable" => sent = false,
                    _ => {}
                }
            }
            // The socket died: the next edge, a fresh snapshot, the same bid again.
            lost.get_or_insert_with(Instant::now);
            edge = (edge + 1) % self.edges.len();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edge_killed_its_clients_reconnect_to_the_other_and_converge() {
    let nats = NatsServer::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let rig = Rig::new(nats.url(), &db, 1).await;
    let (users, lots) = rig.sale(USERS, LOTS).await;
    let event = store::bidding::load_lots(&rig.pool, &lots[..1])
        .await
        .unwrap()[0]
        .event_id;
    let _bidder = rig.bidder();
    rig.wait_open(&lots).await;
    let (mut edge_a, a) = edge_process(&rig).await;
    let (_edge_b, b) = edge_process(&rig).await;

    let tokens =
        edge::auth::Tokens::new(&edge::auth::Secret::new(SECRET), Duration::from_secs(3600));
    let bidding = CancellationToken::new();
    let done = CancellationToken::new();
    let log = Arc::new(Mutex::new(Log::default()));
    let reconnects = Arc::new(Mutex::new(Vec::new()));
    let mut views = Vec::new();
    let mut tasks = Vec::new();
    // Buyers plus as many watchers (who never bid), half of each on either edge.
    for (i, user) in users.iter().chain(users.iter()).enumerate() {
        let view = View::default();
        views.push(view.clone());
        let c = WsClient {
            user: *user,
            token: tokens.issue(*user, edge::auth::Role::Buyer).unwrap().0,
            edges: vec![a, b],
            first_edge: i % 2,
            event,
            lots: lots.clone(),
            view,
            log: log.clone(),
            reconnects: reconnects.clone(),
        };
        let bidding = if i < users.len() {
            bidding.clone()
        } else {
            let watching = CancellationToken::new();
            watching.cancel();
            watching
        };
        tasks.push(tokio::spawn(c.run(bidding, done.clone())));
    }
    let started = Instant::now();
    let answered = || log.lock().unwrap().heard.len();
    wait_until(
        Duration::from_secs(60),
        "200 bids before the kill",
        || async { answered() >= 200 },
    )
    .await
    .unwrap();
    let fault = Instant::now();
    edge_a.kill();
    let at_kill = answered();
    wait_until(
        Duration::from_secs(60),
        "200 bids after the kill",
        || async { answered() >= at_kill + 200 },
    )
    .await
    .unwrap();
    bidding.cancel();
    // Every buyer's last bid answered, then every client converges on the database.
    wait_until(Duration::from_secs(60), "the buyers are idle", || async {
        let n = answered();
        tokio::time::sleep(Duration::from_millis(300)).await;
        n == answered()
    })
    .await
    .unwrap();
    let truth: HashMap<LotId, (i64, Option<i64>)> = store::bidding::load_lots(&rig.pool, &lots)
        .await
        .unwrap()
        .into_iter()
        .map(|l| (l.id, (l.version, l.high)))
        .collect();
    let converged = wait_until(
        Duration::from_secs(15),
        "every client equals the DB",
        || async {
            views.iter().all(|v| {
                let v = v.lock().unwrap();
                lots.iter().all(|l| v.get(l) == truth.get(l))
            })
        },
    )
    .await;
    let converge_ms = fault.elapsed().as_millis();
    done.cancel();
    for t in tasks {
        t.await.expect("a client panicked (stuck?)");
    }
    if let Err(e) = converged {
        let seen: Vec<_> = views.iter().map(|v| v.lock().unwrap().clone()).collect();
        panic!("{e}: the DB says {truth:?}, the clients {seen:#?}");
    }
    let log = Arc::try_unwrap(log).ok().unwrap().into_inner().unwrap();
    let reconnects = reconnects.lock().unwrap().clone();
    eprintln!(
        "{}; {} sockets reconnected to the other edge (slowest {} ms); all {} clients converged \
         on the DB within {converge_ms} ms of the kill",
        figures("edge kill -9", &log, started, fault, fault),
        reconnects.len(),
        reconnects
            .iter()
            .max()
            .unwrap_or(&Duration::ZERO)
            .as_millis(),
        views.len(),
    );
    assert_eq!(
        reconnects.len(),
        users.len(),
        "the killed edge's clients (half of them) reconnected"
    );
    verify(&rig.pool, &lots, &log).await;
}
