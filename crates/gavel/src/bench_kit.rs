//! What the benches share: server child processes (`gavel edge`, `gavel bidder`,
//! `gavel ticker`, the floor) that die with the bench, readings from `/proc` (memory and CPU
//! per process, the machine's load), the clients' WebSocket settings and quantiles.
//!
//! Servers run as child processes so that their memory and CPU are read from
//! `/proc/<pid>/...` apart from the clients', which live in the bench process.

use crate::Conn;
use hdrhistogram::Histogram;
use std::net::SocketAddr;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

/// `gavel <args>` as a child that dies with this thread (setpriv's parent-death signal; the
/// benches run on the main thread, so not even a SIGKILL of the bench leaves a server behind)
/// and is killed when dropped. Logs at `warn` to the bench's stderr.
pub(crate) fn gavel_child(args: &[&str]) -> anyhow::Result<tokio::process::Command> {
    let exe = std::env::current_exe()?;
    let mut cmd = tokio::process::Command::new("setpriv");
    cmd.args(["--pdeathsig", "KILL", "--"])
        .arg(&exe)
        .args(args)
        .kill_on_drop(true)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .env("RUST_LOG", "warn");
    Ok(cmd)
}

/// The servers' environment for a service child.
pub(crate) fn with_conn(cmd: &mut tokio::process::Command, conn: &Conn) {
    cmd.env("NATS_URL", &conn.nats_url)
        .env("DATABASE_URL", &conn.database_url)
        .env("GAVEL_PARTITIONS", conn.partitions.to_string());
}

/// A loopback address with a port free a moment ago.
pub(crate) fn free_addr() -> anyhow::Result<SocketAddr> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    Ok(SocketAddr::from(([127, 0, 0, 1], port)))
}

/// Starts `gavel edge` on `addr` (no bid or auth rate limits: every client of a bench is
/// 127.0.0.1) and waits until it is ready.
pub(crate) async fn spawn_edge(
    conn: &Conn,
    secret: &str,
    addr: SocketAddr,
) -> anyhow::Result<(tokio::process::Child, u32)> {
    let mut cmd = gavel_child(&["edge"])?;
    with_conn(&mut cmd, conn);
    cmd.env("GAVEL_HTTP_ADDR", addr.to_string())
        .env("GAVEL_JWT_SECRET", secret)
        .env("GAVEL_AUTH_RATE", "0")
        .env("GAVEL_BID_RATE", "0");
    let mut child = cmd.spawn()?;
    let pid = child.id().ok_or_else(|| anyhow::anyhow!("no pid"))?;
    let until = Instant::now() + Duration::from_secs(30);
    while !ready(addr).await {
        if let Some(status) = child.try_wait()? {
            anyhow::bail!("gavel edge exited: {status}");
        }
        anyhow::ensure!(
            Instant::now() < until,
            "gavel edge not ready on {addr} in 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok((child, pid))
}

/// p50 / p90 / p99 / max of a histogram of µs, in ms.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub(crate) struct Quantiles {
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Quantiles {
    pub(crate) fn of_us(h: &Histogram<u64>) -> Self {
        if h.is_empty() {
            return Self::default();
        }
        let ms = |v: u64| v as f64 / 1_000.0;
        Quantiles {
            p50: ms(h.value_at_quantile(0.5)),
            p90: ms(h.value_at_quantile(0.9)),
            p99: ms(h.value_at_quantile(0.99)),
            max: ms(h.max()),
        }
    }
}

/// Busy and total jiffies of the whole machine (`/proc/stat`, every core).
pub(crate) fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let Some(line) = stat.lines().find(|l| l.starts_with("cpu ")) else {
        return (0, 0);
    };
    let f: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = f.iter().take(8).sum();
    // idle and iowait
    let idle = f.get(3).copied().unwrap_or(0) + f.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

/// The Postgres backends serving database `db` (their process title is
/// `postgres: [<cluster>:] <user> <db> <client> <state>`), and the cluster's background
/// processes (`postgres: [<cluster>:] walwriter`, …: shared with every other database on the
/// server), found in `/proc`: no SQL, and only their titles and stat are read.
pub(crate) fn postgres_processes(db: &str) -> (Vec<u32>, Vec<u32>) {
    let (mut backends, mut background) = (vec![], vec![]);
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return (backends, background);
    };
    for pid in dir
        .filter_map(|e| e.ok())
        .filter_map(|e| e.file_name().to_str()?.parse::<u32>().ok())
    {
        let Ok(c) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
            continue;
        };
        let title = String::from_utf8_lossy(&c);
        let Some(rest) = title.strip_prefix("postgres: ") else {
            continue;
        };
        let words: Vec<&str> = rest
            .split(|ch: char| ch.is_whitespace() || ch == '\0')
            .filter(|w| !w.is_empty())
            .collect();
        if words.contains(&db) {
            backends.push(pid);
        } else if !words
            .iter()
            .any(|w| w.starts_with("gavel") || w.contains('(') || w.starts_with('['))
        {
            // No database and no client address: a background process of the cluster.
            background.push(pid);
        }
    }
    (backends, background)
}

/// VmRSS of `pid`, in KiB.
pub(crate) fn rss_kib(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no VmRSS for {pid}"))
}

/// User + system CPU of `pid` so far, in ms (clock ticks of 10 ms).
pub(crate) fn cpu_ms(pid: u32) -> anyhow::Result<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let after = &stat[stat.rfind(')').map(|i| i + 1).unwrap_or(0)..];
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
    // After the command: state is 0, utime 11, stime 12.
    Ok((ticks(11) + ticks(12)) as f64 * 1000.0 / clock_ticks() as f64)
}

pub(crate) fn clock_ticks() -> u64 {
    static TICKS: std::sync::OnceLock<u64> = std::sync::OnceLock::new();
    *TICKS.get_or_init(|| {
        std::process::Command::new("getconf")
            .arg("CLK_TCK")
            .output()
            .ok()
            .and_then(|o| String::from_utf8(o.stdout).ok())
            .and_then(|s| s.trim().parse().ok())
            .unwrap_or(100)
    })
}

pub(crate) fn loadavg() -> f64 {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0.0)
}

/// Raises this process's soft limit of open files to its hard limit (children inherit it) and
/// returns the limit. `unsafe` (so `setrlimit`) is forbidden here: `prlimit(1)` does it.
pub(crate) fn raise_nofile() -> u64 {
    let read = || -> Option<(u64, u64)> {
        let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
        let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
        let mut f = line["Max open files".len()..].split_whitespace();
        let soft = f.next()?.parse().unwrap_or(u64::MAX);
        let hard = f.next()?.parse().unwrap_or(u64::MAX);
        Some((soft, hard))
    };
    let Some((soft, hard)) = read() else {
        return 1024;
    };
    if soft < hard && hard != u64::MAX {
        let raised = std::process::Command::new("prlimit")
            .arg(format!("--pid={}", std::process::id()))
            .arg(format!("--nofile={hard}:{hard}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        if !raised {
            tracing::warn!(soft, hard, "could not raise the open-file limit");
        }
    }
    read().map(|(soft, _)| soft).unwrap_or(soft)
}

/// 4 KiB read buffers on both ends (the clients', so 10,000 of them stay cheap).
pub(crate) fn ws_config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
}

/// Whether the edge answers `/readyz` with 200.
pub(crate) async fn ready(addr: SocketAddr) -> bool {
    let probe = async {
        let mut tcp = TcpStream::connect(addr).await?;
        tcp.write_all(b"GET /readyz HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n")
            .await?;
        let mut head = [0u8; 12];
        tcp.read_exact(&mut head).await?;
        Ok::<_, std::io::Error>(head.starts_with(b"HTTP/1.1 200"))
    };
    matches!(
        tokio::time::timeout(Duration::from_secs(2), probe).await,
        Ok(Ok(true))
    )
}
