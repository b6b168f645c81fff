//! `gavel dev`: the whole stack in one process, on whatever servers a laptop has.
//!
//! In order: bind the edge's port (fail before starting anything), find or start NATS and
//! Postgres ([`servers`]), migrate and create the streams (the same `migrate` as `gavel
//! migrate`), seed the demo ([`crate::seed`]), run the four services under one root
//! cancellation token and task tracker, print where to go, and on Ctrl-C or SIGTERM drain the
//! services and stop the private servers it started.
//!
//! A server is used when `NATS_URL` / `DATABASE_URL` name it, or when one answers on its
//! default local port (a nats-server only if it is 2.10 or newer with JetStream); otherwise a
//! private one runs with its data under `.gavel/` (kept between runs), as the `postgres` user
//! when we are root, and dies with this process even if it is killed outright.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::Context as _;
use clap::Args;
use sqlx::Connection as _;
use tokio::io::AsyncReadExt as _;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::seed;

/// How long the services get to drain after Ctrl-C before the servers are stopped anyway.
const DRAIN: Duration = Duration::from_secs(15);

/// How long a probe of a local server may take.
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);

/// `gavel dev` settings. The hidden ones let tests point the probes at ports nobody listens on,
/// so that they exercise the private servers without touching the machine's.
#[derive(Args, Clone)]
pub struct DevArgs {
    /// Do not seed the demo (users, a vendor's cars and an event that goes live in 45 s).
    #[arg(long)]
    pub no_seed: bool,
    /// NATS server(s). Unset: the nats-server on 127.0.0.1:4222 if it is 2.10 or newer with
    /// JetStream, else a private one with its store in <data-dir>/nats.
    #[arg(long, env = "NATS_URL")]
    pub nats_url: Option<String>,
    /// Postgres. Unset: the one on 127.0.0.1:5432 (database `gavel`, created if missing) if it
    /// answers, else a private cluster in <data-dir>/pg.
    #[arg(long, env = "DATABASE_URL")]
    pub database_url: Option<String>,
    /// Partitions of BIDS; fixed once the stream exists.
    #[arg(long, env = "GAVEL_PARTITIONS", default_value_t = 16)]
    pub partitions: u32,
    /// Where the edge (REST, WebSockets, the web client) listens.
    #[arg(long, env = "GAVEL_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: SocketAddr,
    /// Signs access tokens (at least 32 bytes); random for each run when unset, so a restart
    /// logs everyone out.
    #[arg(long, env = "GAVEL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Login and register calls per minute per client address; 0 turns the limit off.
    #[arg(long, env = "GAVEL_AUTH_RATE", default_value_t = 30)]
    pub auth_rate: u32,
    /// Bids per second per user, a burst of as many; 0 turns the limit off.
    #[arg(long, env = "GAVEL_BID_RATE", default_value_t = 20)]
    pub bid_rate: u32,
    /// Origins allowed to open a WebSocket from a browser, comma-separated (default: the
    /// edge's own page).
    #[arg(long, env = "GAVEL_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
    /// Where private servers keep their data between runs.
    #[arg(long, env = "GAVEL_DEV_DIR", default_value = ".gavel")]
    pub data_dir: PathBuf,
    /// The address where a local nats-server is looked for.
    #[arg(long, hide = true, default_value = "127.0.0.1:4222")]
    pub probe_nats: SocketAddr,
    /// The address where a local Postgres is looked for.
    #[arg(long, hide = true, default_value = "127.0.0.1:5432")]
    pub probe_postgres: SocketAddr,
    #[command(flatten)]
    pub ticker: crate::TickerOpts,
    #[command(flatten)]
    pub notifier: crate::NotifierOpts,
}

/// The servers in use, and the private ones this run owns.
struct Servers {
    nats_url: String,
    database_url: String,
    nats: Option<testkit::NatsServer>,
    pg: Option<testkit::PgCluster>,
}

impl Servers {
    /// Stops the private servers cleanly: NATS first (its clients are gone), then Postgres.
    async fn stop(mut self) {
        if let Some(nats) = self.nats.as_mut() {
            match nats.stop(Duration::from_secs(10)).await {
                Ok(()) => println!("gavel dev: private nats-server stopped"),
                Err(e) => eprintln!("gavel dev: {e:#}"),
            }
        }
        if let Some(pg) = self.pg.as_mut() {
            match pg.stop().await {
                Ok(()) => println!("gavel dev: private Postgres stopped"),
                Err(e) => eprintln!("gavel dev: {e:#}"),
            }
        }
    }
}

/// Runs `gavel dev` until Ctrl-C or SIGTERM (a second one exits at once).
///
/// Call it from the main task, not a spawned one: private servers die with the thread that
/// started them, and the main thread lives as long as the process.
pub async fn run(args: DevArgs) -> anyhow::Result<()> {
    let partitions = schemas::subjects::check_partitions(args.partitions)?;
    let root = on_signals();
    let listener = tokio::net::TcpListener::bind(args.http_addr)
        .await
        .with_context(|| {
            format!(
                "listening on {} (set GAVEL_HTTP_ADDR to another address)",
                args.http_addr
            )
        })?;
    let http_addr = listener.local_addr()?;
    let jwt_secret = match &args.jwt_secret {
        Some(secret) => secret.clone(),
        None => format!(
            "{}{}",
            uuid::Uuid::new_v4().simple(),
            uuid::Uuid::new_v4().simple()
        ),
    };
    let mut edge_config = edge::Config::new(edge::auth::Secret::new(jwt_secret), partitions);
    edge_config.http_addr = http_addr;
    edge_config.auth_rate = args.auth_rate;
    edge_config.bid_rate = args.bid_rate;
    edge_config.allowed_origins = args.allowed_origins.clone();
    edge_config.drain = Duration::from_secs(3);
    edge_config.check()?;
    let ticker_config = args.ticker.config(partitions);
    let notifier_config = args.notifier.config()?;

    // Servers first; a Ctrl-C meanwhile drops the guards, which stop what has started.
    let servers = tokio::select! {
        _ = root.cancelled() => return Ok(()),
        s = servers(&args) => s?,
    };
    let prepared = tokio::select! {
        _ = root.cancelled() => None,
        p = prepare(&args, &servers, partitions) => Some(p),
    };
    let demo = match prepared {
        None => {
            servers.stop().await;
            return Ok(());
        }
        Some(Err(e)) => {
            servers.stop().await;
            return Err(e);
        }
        Some(Ok(demo)) => demo,
    };

    let tracker = TaskTracker::new();
    let started = async {
        let (nats_url, db) = (&servers.nats_url, &servers.database_url);
        let bidder_nats = bus::connect(nats_url, "gavel-dev-bidder").await?;
        let bidder_pool = store::connect(db, 8).await?;
        let ticker_nats = bus::connect(nats_url, "gavel-dev-ticker").await?;
        let ticker_pool = store::connect(db, 4).await?;
        let notifier_nats = bus::connect(nats_url, "gavel-dev-notifier").await?;
        let notifier_pool = store::connect(db, 4).await?;
        let edge_nats = bus::connect(nats_url, "gavel-dev-edge").await?;
        let edge_pool = store::connect(db, 16).await?;
        let bidder_config = bidder::Config::new(partitions);
        service(&tracker, &root, "bidder", |t| {
            bidder::run(bidder_config, bidder_nats, bidder_pool, t)
        });
        service(&tracker, &root, "ticker", |t| {
            ticker::run(ticker_config, ticker_nats, ticker_pool, t)
        });
        service(&tracker, &root, "notifier", |t| {
            notifier::run(notifier_config, notifier_nats, notifier_pool, t)
        });
        service(&tracker, &root, "edge", |t| {
            edge::serve_on(listener, edge_config, edge_nats, edge_pool, t)
        });
        anyhow::Ok(())
    };
    if let Err(e) = started.await {
        root.cancel();
        tracker.close();
        tracker.wait().await;
        servers.stop().await;
        return Err(e);
    }
    tracker.close();
    banner(http_addr, &servers, demo.as_ref());

    root.cancelled().await;
    println!("gavel dev: stopping");
    if tokio::time::timeout(DRAIN, tracker.wait()).await.is_err() {
        eprintln!("gavel dev: services still draining after {DRAIN:?}; stopping the servers");
    }
    servers.stop().await;
    Ok(())
}

/// Runs one service under a child of `root`; if it fails or ends on its own, everything stops.
fn service<F, Fut>(tracker: &TaskTracker, root: &CancellationToken, name: &'static str, f: F)
where
    F: FnOnce(CancellationToken) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>> + Send + 'static,
{
    let fut = f(root.child_token());
    let root = root.clone();
    tracker.spawn(async move {
        match fut.await {
            Ok(()) if root.is_cancelled() => {}
            Ok(()) => {
                tracing::error!(service = name, "service ended on its own; stopping");
                root.cancel();
            }
            Err(e) => {
                tracing::error!(service = name, error = %format!("{e:#}"), "service failed; stopping");
                root.cancel();
            }
        }
    });
}

/// The root token: cancelled on the first Ctrl-C or SIGTERM; a second one exits at once (the
/// private servers die with the process).
fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let Ok(mut term) =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        else {
            tracing::error!("cannot listen for SIGTERM");
            return;
        };
        for n in 0.. {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
            if n > 0 {
                eprintln!("gavel dev: second signal, exiting now");
                std::process::exit(130);
            }
            tracing::info!("shutting down");
            t.cancel();
        }
    });
    token
}

/// Finds or starts NATS and Postgres.
async fn servers(args: &DevArgs) -> anyhow::Result<Servers> {
    let mut servers = Servers {
        nats_url: String::new(),
        database_url: String::new(),
        nats: None,
        pg: None,
    };
    let dir = &args.data_dir;
    servers.nats_url = match &args.nats_url {
        Some(url) => url.clone(),
        None => match local_nats(args.probe_nats).await {
            Ok(url) => {
                println!("gavel dev: using the nats-server on {}", args.probe_nats);
                url
            }
            Err(why) => {
                let store = dir.join("nats");
                println!(
                    "gavel dev: {why}; starting a private nats-server (store {})",
                    store.display()
                );
                let nats = testkit::NatsServer::start_with(testkit::NatsOptions {
                    dir: Some(store),
                    kill_with_parent: true,
                })
                .await
                .context("starting a private nats-server")?;
                let url = nats.url();
                servers.nats = Some(nats);
                url
            }
        },
    };
    servers.database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => match local_postgres(args.probe_postgres).await {
            Ok(()) => {
                println!(
                    "gavel dev: using the Postgres on {} (database gavel)",
                    args.probe_postgres
                );
                format!("postgres://postgres@{}/gavel", args.probe_postgres)
            }
            Err(why) => {
                let data = dir.join("pg");
                println!(
                    "gavel dev: {why}; starting a private Postgres (data {})",
                    data.display()
                );
                let pg = testkit::PgCluster::start_with(testkit::PgOptions {
                    dir: Some(data),
                    kill_with_parent: true,
                })
                .await
                .context("starting a private Postgres")?;
                let url = pg.url_of("gavel");
                servers.pg = Some(pg);
                url
            }
        },
    };
    Ok(servers)
}

/// The URL of a usable nats-server at `addr`, or why it is not usable. Reads the `INFO` line
/// a server sends on connect, so an old server is recognised without a client handshake.
async fn local_nats(addr: SocketAddr) -> Result<String, String> {
    let info = tokio::time::timeout(PROBE_TIMEOUT, async {
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let mut buf = Vec::with_capacity(1024);
        let mut chunk = [0u8; 1024];
        while !buf.windows(2).any(|w| w == b"\r\n") && buf.len() < 16 * 1024 {
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                break;
            }
            buf.extend_from_slice(&chunk[..n]);
        }
        std::io::Result::Ok(buf)
    })
    .await;
    let line = match info {
        Err(_) => {
            return Err(format!(
                "nothing answered on {addr} within {PROBE_TIMEOUT:?}"
            ))
        }
        Ok(Err(e)) => return Err(format!("no nats-server on {addr} ({e})")),
        Ok(Ok(bytes)) => String::from_utf8_lossy(&bytes).into_owned(),
    };
    let json = line
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("INFO "))
        .and_then(|j| serde_json::from_str::<serde_json::Value>(j).ok())
        .ok_or_else(|| format!("what answers on {addr} is not a nats-server"))?;
    let version = json["version"].as_str().unwrap_or("?");
    if !bus::version_supported(version) {
        return Err(format!(
            "the nats-server on {addr} is {version}, older than the 2.10 Gavel needs"
        ));
    }
    if json["jetstream"].as_bool() != Some(true) {
        return Err(format!(
            "the nats-server {version} on {addr} runs without JetStream"
        ));
    }
    Ok(format!("nats://{addr}"))
}

/// Whether the Postgres at `addr` lets the `postgres` role in, or why not.
async fn local_postgres(addr: SocketAddr) -> Result<(), String> {
    let url = format!("postgres://postgres@{addr}/postgres");
    match tokio::time::timeout(PROBE_TIMEOUT, sqlx::PgConnection::connect(&url)).await {
        Err(_) => Err(format!(
            "nothing answered on {addr} within {PROBE_TIMEOUT:?}"
        )),
        Ok(Err(e)) => Err(format!("no usable Postgres on {addr} ({e})")),
        Ok(Ok(conn)) => {
            let _ = conn.close().await;
            Ok(())
        }
    }
}

/// Migrates, creates the streams, checks that the database and the streams belong together,
/// and seeds the demo unless told not to.
async fn prepare(
    args: &DevArgs,
    servers: &Servers,
    partitions: u16,
) -> anyhow::Result<Option<seed::Demo>> {
    let conn = crate::Conn {
        nats_url: servers.nats_url.clone(),
        database_url: servers.database_url.clone(),
        partitions: u32::from(partitions),
    };
    crate::migrate(&conn, 1).await?;
    let pool = store::connect(&servers.database_url, 4).await?;
    let nats = bus::connect(&servers.nats_url, "gavel-dev").await?;
    same_history(&pool, &bus::jetstream(nats), &servers.database_url).await?;
    let demo = if args.no_seed {
        None
    } else {
        Some(seed::seed(&pool, now_ms()).await?)
    };
    pool.close().await;
    Ok(demo)
}

/// Refuses a database whose bidders have applied more of `BIDS` than the stream holds: it was
/// used with another NATS store (say `.gavel/nats` was deleted), and the bidders would wait
/// for sequence numbers the new stream only reaches much later, ignoring every bid until then.
async fn same_history(
    pool: &store::PgPool,
    js: &async_nats::jetstream::Context,
    database_url: &str,
) -> anyhow::Result<()> {
    let applied: i64 =
        sqlx::query_scalar("SELECT coalesce(max(applied_seq), 0) FROM partition_leases")
            .fetch_one(pool)
            .await?;
    let mut bids = js.get_stream(schemas::subjects::STREAM_BIDS).await?;
    let last = bids.info().await?.state.last_sequence;
    if u64::try_from(applied).unwrap_or(0) > last {
        anyhow::bail!(
            "the database {database_url} has decided bids up to BIDS sequence {applied}, but \
             this NATS's BIDS stream ends at {last}: they come from different runs. Start over \
             with a fresh database (e.g. `dropdb -h 127.0.0.1 -U postgres gavel`), or set \
             DATABASE_URL and NATS_URL to servers that belong together"
        );
    }
    Ok(())
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What a newcomer needs: where to go, how to log in, where the servers are.
fn banner(http_addr: SocketAddr, servers: &Servers, demo: Option<&seed::Demo>) {
    let host = if http_addr.ip().is_unspecified() {
        SocketAddr::from(([127, 0, 0, 1], http_addr.port()))
    } else {
        http_addr
    };
    println!();
    println!("Gavel is running: http://{host}/");
    if let Some(demo) = demo {
        let secs = ((demo.starts_at - now_ms()).max(0) + 999) / 1000;
        println!(
            "  demo event \"{}\" ({}): {} cars in {} lanes, goes live in {secs} s",
            demo.event_name,
            demo.event_id,
            demo.lots,
            seed::LANES
        );
        let buyers: Vec<&str> = seed::BUYERS.iter().map(|(email, _)| *email).collect();
        println!(
            "  log in with password {:?} as {} (admin) or {} (verified buyers)",
            seed::PASSWORD,
            seed::ADMIN,
            buyers.join(", ")
        );
    }
    println!("  NATS_URL={}", servers.nats_url);
    println!("  DATABASE_URL={}", servers.database_url);
    println!("  Ctrl-C stops everything.");
}
