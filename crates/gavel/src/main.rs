//! `gavel`: the command line. Each subcommand wires the service libraries together; no rules
//! live here. See PROTOCOL.md ("Command line and configuration").

mod bench;
mod bench_fanout;
mod bench_kit;
mod bench_night;
mod dev;
mod seed;
mod telemetry;

/// mimalloc: the bid path allocates many small short-lived buffers (messages, headers, rows);
/// glibc's malloc took about a quarter of the process's CPU in `gavel bench bidder`.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

use anyhow::Context as _;
use clap::{Args, Parser, Subcommand};
use futures::StreamExt;
use std::time::Duration;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "gavel",
    version,
    about = "Daily live car auctions: the Gavel backend"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// Where the servers are.
#[derive(Args, Clone, Debug)]
pub struct Conn {
    /// NATS server(s), comma-separated.
    #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Postgres.
    #[arg(
        long,
        env = "DATABASE_URL",
        default_value = "postgres://postgres@127.0.0.1:5432/gavel"
    )]
    pub database_url: String,
    /// Partitions of BIDS; fixed once the stream exists.
    #[arg(long, env = "GAVEL_PARTITIONS", default_value_t = 16)]
    pub partitions: u32,
}

impl Conn {
    pub fn partitions(&self) -> anyhow::Result<u16> {
        Ok(schemas::subjects::check_partitions(self.partitions)?)
    }
}

// Parsed once at start-up; boxing `dev`'s arguments would buy nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// The whole stack in one process on local or private servers, with a demo auction
    /// (see DESIGN.md, "Running it").
    Dev(dev::DevArgs),
    /// Apply database migrations and create the NATS streams.
    Migrate {
        #[command(flatten)]
        conn: Conn,
        /// Stream replicas (3 on a NATS cluster).
        #[arg(long, default_value_t = 1)]
        replicas: usize,
    },
    /// Manage users.
    User {
        #[command(subcommand)]
        command: UserCommand,
    },
    /// Run the bidder: the ordered judge of bids, one consumer per partition it holds.
    Bidder {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        opts: BidderOpts,
    },
    /// Run the ticker: the clock that starts events, ticks, hammers and rotates lanes (one leads,
    /// others stand by).
    Ticker {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        opts: TickerOpts,
    },
    /// Run the notifier: push jobs from NOTIFY to OneSignal, idempotent and retried (logged
    /// instead of sent while OneSignal is not configured).
    Notifier {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        opts: NotifierOpts,
    },
    /// Run the edge: REST for buyers and admins (WebSockets come next).
    Edge {
        #[command(flatten)]
        conn: Conn,
        #[command(flatten)]
        opts: EdgeOpts,
    },
    /// Print NATS messages on a subject as JSON lines (decodes Gavel's MessagePack).
    Tail {
        /// Subject or wildcard, e.g. `auction.>` or `bids.3.*`.
        subject: String,
        /// NATS server(s).
        #[arg(long, env = "NATS_URL", default_value = "nats://127.0.0.1:4222")]
        nats_url: String,
        /// Stop after this many messages.
        #[arg(long)]
        count: Option<usize>,
    },
    /// Load generators and their reports.
    Bench {
        #[command(subcommand)]
        command: bench::BenchCommand,
    },
}

#[derive(Subcommand)]
enum UserCommand {
    /// Create a user (e.g. the first admin).
    Add {
        #[arg(
            long,
            env = "DATABASE_URL",
            default_value = "postgres://postgres@127.0.0.1:5432/gavel"
        )]
        database_url: String,
        #[arg(long)]
        email: String,
        #[arg(long)]
        password: String,
        #[arg(long)]
        name: String,
        /// Make the user an admin.
        #[arg(long)]
        admin: bool,
        /// Mark the user verified (allowed to bid).
        #[arg(long)]
        verified: bool,
    },
}

/// Bidder tuning.
#[derive(Args, Clone, Debug)]
pub struct BidderOpts {
    /// Serve only these partitions (comma-separated); default: compete for all.
    #[arg(long, value_delimiter = ',')]
    pub only: Option<Vec<u16>>,
    /// Lease time-to-live in ms: how long a standby waits after an owner dies.
    #[arg(long, env = "GAVEL_LEASE_TTL_MS", default_value_t = 10_000)]
    pub lease_ttl_ms: u64,
    /// Most commands decided in one transaction.
    #[arg(long, default_value_t = 1000)]
    pub batch_max: usize,
    /// Crash tests only: abort at `after-commit:N` or `after-announce:N` (Nth batch).
    #[arg(long, hide = true)]
    pub crash_at: Option<bidder::CrashAt>,
}

impl BidderOpts {
    pub fn config(&self, partitions: u16) -> bidder::Config {
        let mut c = bidder::Config::new(partitions);
        c.only = self.only.clone();
        c.lease_ttl = Duration::from_millis(self.lease_ttl_ms.max(300));
        c.batch_max = self.batch_max.max(1);
        c.crash_at = self.crash_at;
        c
    }
}

/// Edge settings.
#[derive(Args, Clone)]
pub struct EdgeOpts {
    /// Where the edge listens.
    #[arg(long, env = "GAVEL_HTTP_ADDR", default_value = "127.0.0.1:8080")]
    pub http_addr: std::net::SocketAddr,
    /// Signs access tokens; at least 32 bytes. Required outside `gavel dev`.
    #[arg(long, env = "GAVEL_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: String,
    /// Login and register calls per minute per client address; 0 turns the limit off.
    #[arg(long, env = "GAVEL_AUTH_RATE", default_value_t = 30)]
    pub auth_rate: u32,
    /// Bids per second per user, a burst of as many; 0 turns the limit off.
    #[arg(long, env = "GAVEL_BID_RATE", default_value_t = 20)]
    pub bid_rate: u32,
    /// Origins allowed to open a WebSocket from a browser, comma-separated (default:
    /// `http://` + the listening address).
    #[arg(long, env = "GAVEL_ALLOWED_ORIGINS", value_delimiter = ',')]
    pub allowed_origins: Vec<String>,
}

impl EdgeOpts {
    pub fn config(&self, partitions: u16) -> anyhow::Result<edge::Config> {
        let mut c = edge::Config::new(edge::auth::Secret::new(self.jwt_secret.clone()), partitions);
        c.http_addr = self.http_addr;
        c.auth_rate = self.auth_rate;
        c.bid_rate = self.bid_rate;
        c.allowed_origins = self.allowed_origins.clone();
        c.check()?;
        Ok(c)
    }
}

/// Ticker tuning.
#[derive(Args, Clone, Debug)]
pub struct TickerOpts {
    /// Tick period of an open lot, in ms.
    #[arg(long, env = "GAVEL_TICK_MS", default_value_t = 1000)]
    pub tick_ms: i64,
    /// How often Postgres is read for events to start and lots to open, in ms.
    #[arg(long, default_value_t = 250)]
    pub poll_ms: i64,
    /// Leader lease in ms: a standby takes over this long after the leader dies.
    #[arg(long, env = "GAVEL_TICKER_LEASE_MS", default_value_t = 3000)]
    pub lease_ttl_ms: u64,
    /// The KV bucket of the leader lease.
    #[arg(long, default_value = "gavel_ticker", hide = true)]
    pub bucket: String,
    /// Tests only: lead without a lease.
    #[arg(long, hide = true)]
    pub force_leader: bool,
}

impl TickerOpts {
    pub fn config(&self, partitions: u16) -> ticker::Config {
        let mut c = ticker::Config::new(partitions);
        c.tick_ms = self.tick_ms.max(10);
        c.poll_ms = self.poll_ms.clamp(10, 1000);
        c.lease_ttl = Duration::from_millis(self.lease_ttl_ms.max(300));
        c.bucket = self.bucket.clone();
        c.force_leader = self.force_leader;
        c
    }
}

/// Notifier settings: OneSignal from the environment, delays for ops and tests.
#[derive(Args, Clone, Debug)]
pub struct NotifierOpts {
    /// OneSignal app id; with the API key pushes are sent, with neither they are logged.
    #[arg(long, env = "ONESIGNAL_APP_ID")]
    pub onesignal_app_id: Option<String>,
    /// OneSignal REST API key (set it in the environment; it is never printed).
    #[arg(long, env = "ONESIGNAL_API_KEY", hide_env_values = true)]
    pub onesignal_api_key: Option<String>,
    /// OneSignal's API base URL.
    #[arg(long, env = "ONESIGNAL_API_URL", default_value = notifier::DEFAULT_API_URL)]
    pub onesignal_api_url: String,
    /// Push jobs handled at once.
    #[arg(long, default_value_t = 8)]
    pub concurrency: usize,
    /// Timeout of one OneSignal request, in ms.
    #[arg(long, default_value_t = 10_000)]
    pub request_timeout_ms: u64,
    /// How soon a dead notifier's jobs are redelivered, in ms.
    #[arg(long, default_value_t = 30_000, hide = true)]
    pub ack_wait_ms: u64,
    /// First retry backoff in ms; it doubles up to --retry-max-ms.
    #[arg(long, default_value_t = 500, hide = true)]
    pub retry_base_ms: u64,
    /// Longest retry backoff in ms (also the wait after a bad key).
    #[arg(long, default_value_t = 60_000, hide = true)]
    pub retry_max_ms: u64,
}

impl NotifierOpts {
    pub fn config(&self) -> anyhow::Result<notifier::Config> {
        let mut c = notifier::Config::new();
        c.onesignal = notifier::OneSignal::from_parts(
            self.onesignal_app_id.clone(),
            self.onesignal_api_key.clone(),
        )?;
        c.api_url = self.onesignal_api_url.clone();
        c.concurrency = self.concurrency.max(1);
        c.request_timeout = Duration::from_millis(self.request_timeout_ms.max(100));
        c.ack_wait = Duration::from_millis(self.ack_wait_ms.max(300));
        c.retry.base = Duration::from_millis(self.retry_base_ms.max(1));
        c.retry.max = Duration::from_millis(self.retry_max_ms.max(self.retry_base_ms).max(1));
        c.retry.misconfigured = c.retry.max;
        c.check()?;
        Ok(c)
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let _telemetry = telemetry::init(telemetry::service_name(&cli.command))?;
    match cli.command {
        Command::Migrate { conn, replicas } => {
            migrate(&conn, replicas).await?;
            println!("migrations applied and streams ready");
        }
        Command::User {
            command:
                UserCommand::Add {
                    database_url,
                    email,
                    password,
                    name,
                    admin,
                    verified,
                },
        } => {
            if !(8..=128).contains(&password.chars().count()) {
                anyhow::bail!("a password has 8 to 128 characters");
            }
            let pool = store::connect(&database_url, 2).await?;
            let hash = tokio::task::spawn_blocking(move || store::users::hash_password(&password))
                .await??;
            let user = store::users::create_user(&pool, &email, &hash, &name, admin, verified)
                .await
                .map_err(|e| match e {
                    store::StoreError::Conflict(_) => anyhow::anyhow!("{email} is in use already"),
                    store::StoreError::Constraint(_) => {
                        anyhow::anyhow!("{email} is not an email address")
                    }
                    other => other.into(),
                })?;
            println!(
                "{}",
                serde_json::json!({"id": user.id, "email": user.email, "name": user.name, "role": user.role, "verified": user.verified})
            );
        }
        Command::Bidder { conn, opts } => {
            let partitions = conn.partitions()?;
            let nats = bus::connect(&conn.nats_url, "gavel-bidder").await?;
            let pool = store::connect(&conn.database_url, 8).await?;
            let shutdown = shutdown_on_signal();
            bidder::run(opts.config(partitions), nats, pool, shutdown).await?;
        }
        Command::Ticker { conn, opts } => {
            let partitions = conn.partitions()?;
            let nats = bus::connect(&conn.nats_url, "gavel-ticker").await?;
            let pool = store::connect(&conn.database_url, 4).await?;
            let shutdown = shutdown_on_signal();
            ticker::run(opts.config(partitions), nats, pool, shutdown).await?;
        }
        Command::Notifier { conn, opts } => {
            let config = opts.config()?;
            let nats = bus::connect(&conn.nats_url, "gavel-notifier").await?;
            let pool = store::connect(&conn.database_url, 4).await?;
            let shutdown = shutdown_on_signal();
            notifier::run(config, nats, pool, shutdown).await?;
        }
        Command::Edge { conn, opts } => {
            let config = opts.config(conn.partitions()?)?;
            let nats = bus::connect(&conn.nats_url, "gavel-edge").await?;
            let pool = store::connect(&conn.database_url, 16).await?;
            let shutdown = shutdown_on_signal();
            tracing::info!(addr = %config.http_addr, "edge listening");
            edge::run(config, nats, pool, shutdown).await?;
        }
        Command::Tail {
            subject,
            nats_url,
            count,
        } => tail(&nats_url, &subject, count).await?,
        Command::Bench { command } => bench::run(command).await?,
        // Awaited here, on the main thread: private servers die with the thread that started them.
        Command::Dev(args) => dev::run(args).await?,
    }
    Ok(())
}

/// Database, then streams: everything a service needs to exist before it starts.
pub async fn migrate(conn: &Conn, replicas: usize) -> anyhow::Result<()> {
    store::ensure_database(&conn.database_url)
        .await
        .with_context(|| format!("creating the database of {}", conn.database_url))?;
    let pool = store::connect(&conn.database_url, 2).await?;
    store::migrate(&pool).await?;
    let nats = bus::connect(&conn.nats_url, "gavel-migrate").await?;
    let js = bus::jetstream(nats);
    bus::ensure_streams(&js, conn.partitions()?, replicas).await?;
    ticker::leader::bucket(&js, "gavel_ticker", Duration::from_secs(3)).await?;
    Ok(())
}

async fn tail(url: &str, subject: &str, count: Option<usize>) -> anyhow::Result<()> {
    let client = bus::connect(url, "gavel-tail").await?;
    let mut sub = client.subscribe(subject.to_owned()).await?;
    client.flush().await?;
    eprintln!("tailing {subject}");
    let mut seen = 0;
    while let Some(msg) = sub.next().await {
        let header = |name: &str| {
            msg.headers
                .as_ref()
                .and_then(|h| h.get(name))
                .map(|v| v.as_str().to_owned())
        };
        let data = schemas::nats::to_json(msg.subject.as_str(), &msg.payload).unwrap_or_else(
            |e| serde_json::json!({ "undecodable": e.to_string(), "bytes": msg.payload.len() }),
        );
        let line = serde_json::json!({
            "subject": msg.subject.as_str(),
            "type": header(schemas::nats::headers::GAVEL_TYPE),
            "msg_id": header(schemas::nats::headers::NATS_MSG_ID),
            "traceparent": header(schemas::nats::headers::TRACEPARENT),
            "data": data,
        });
        println!("{line}");
        seen += 1;
        if count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    Ok(())
}

/// A token cancelled on SIGTERM or Ctrl-C: services drain, then exit.
pub fn shutdown_on_signal() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("SIGTERM handler");
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {},
            _ = term.recv() => {},
        }
        tracing::info!("shutting down");
        t.cancel();
    });
    token
}
