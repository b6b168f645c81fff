//! `gavel dev` on a machine where no server answers: it starts a private nats-server and
//! Postgres with their data in its data directory, seeds the demo, serves, and on Ctrl-C
//! (SIGINT) stops everything it started. A second run on the same data reuses the kept
//! servers' data: one more event, no duplicate users.
//!
//! The probes are pointed at ports nobody listens on, so the machine's own servers are never
//! used, let alone stopped.

use std::io::{BufRead as _, BufReader};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// Start-up includes `initdb` on the first run and argon2 hashes for the demo logins, on a
/// 2-core machine that may be compiling at the same time.
const STARTUP: Duration = Duration::from_secs(120);

/// Draining the services (the edge waits up to 3 s for requests in flight) and stopping both
/// servers cleanly.
const SHUTDOWN: Duration = Duration::from_secs(60);

/// A port on 127.0.0.1 that nobody listens on (bound a moment ago, then released).
fn unused_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running `gavel dev`, SIGKILLed on drop if the test fails half-way (its private servers
/// die with it: they get a parent-death signal).
struct Dev {
    child: Option<Child>,
    lines: mpsc::Receiver<String>,
    log: std::path::PathBuf,
    /// Every stdout line so far, for failure messages.
    seen: Vec<String>,
}

impl Dev {
    fn start(data_dir: &Path, run: u32) -> Dev {
        let log = data_dir.join(format!("gavel-{run}.log"));
        let stderr = std::fs::File::create(&log).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_gavel"))
            .arg("dev")
            .arg("--probe-nats")
            .arg(format!("127.0.0.1:{}", unused_port()))
            .arg("--probe-postgres")
            .arg(format!("127.0.0.1:{}", unused_port()))
            .env_remove("NATS_URL")
            .env_remove("DATABASE_URL")
            .env_remove("GAVEL_JWT_SECRET")
            .env_remove("GAVEL_PARTITIONS")
            .env("GAVEL_DEV_DIR", data_dir)
            .env("GAVEL_HTTP_ADDR", "127.0.0.1:0")
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Dev {
            child: Some(child),
            lines,
            log,
            seen: Vec::new(),
        }
    }

    fn pid(&self) -> u32 {
        self.child.as_ref().unwrap().id()
    }

    /// Waits for a stdout line containing `needle`, and returns it.
    fn wait_line(&mut self, needle: &str, deadline: Duration) -> String {
        let started = Instant::now();
        loop {
            let left = deadline.saturating_sub(started.elapsed());
            match self.lines.recv_timeout(left.max(Duration::from_millis(1))) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(e) => panic!(
                    "no line with {needle:?} from gavel dev ({e}); stdout:\n{}\nstderr ends:\n{}",
                    self.seen.join("\n"),
                    tail(&self.log)
                ),
            }
        }
    }

    /// The value of a `  NAME=value` line of the banner.
    fn banner_value(&self, name: &str) -> String {
        let prefix = format!("{name}=");
        self.seen
            .iter()
            .find_map(|l| l.trim().strip_prefix(&prefix).map(str::to_owned))
            .unwrap_or_else(|| panic!("no {name} in the banner:\n{}", self.seen.join("\n")))
    }

    /// Sends SIGINT (what Ctrl-C sends) and waits for a clean exit.
    fn interrupt(&mut self) {
        let status = Command::new("kill")
            .args(["-s", "INT", &self.pid().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let started = Instant::now();
        let child = self.child.as_mut().unwrap();
        let exit = loop {
            if let Some(exit) = child.try_wait().unwrap() {
                break exit;
            }
            assert!(
                started.elapsed() < SHUTDOWN,
                "gavel dev still runs {SHUTDOWN:?} after SIGINT; stderr ends:\n{}",
                tail(&self.log)
            );
            std::thread::sleep(Duration::from_millis(20));
        };
        self.child = None;
        while let Ok(line) = self.lines.recv_timeout(Duration::from_secs(5)) {
            self.seen.push(line);
        }
        assert!(
            exit.success(),
            "gavel dev exited with {exit}; stderr ends:\n{}",
            tail(&self.log)
        );
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn tail(path: &Path) -> String {
    let bytes = std::fs::read(path).unwrap_or_default();
    let start = bytes.len().saturating_sub(6000);
    String::from_utf8_lossy(&bytes[start..]).into_owned()
}

/// `(pid, command name)` of every process whose parent is `parent`, from `/proc`.
fn children_of(parent: u32) -> Vec<(u32, String)> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = stat[open + 1..close].to_owned();
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if ppid == Some(parent.to_string().as_str()) {
            found.push((pid, name));
        }
    }
    found
}

/// Gone from `/proc`, or a zombie nobody has reaped yet (it holds no port, memory or files).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat
            .rfind(')')
            .and_then(|i| stat[i + 1..].split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X"),
    }
}

fn port_of(url: &str) -> u16 {
    let authority = url.split("://").nth(1).unwrap().split('/').next().unwrap();
    authority.rsplit(':').next().unwrap().parse().unwrap()
}

/// One run: start, check it serves the demo, interrupt, check nothing it started is left.
/// Returns the events the feed listed.
async fn one_run(data_dir: &Path, run: u32, http: &reqwest::Client) -> Vec<serde_json::Value> {
    let mut dev = Dev::start(data_dir, run);
    let url_line = dev.wait_line("Gavel is running: http://", STARTUP);
    let base = url_line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .trim_end_matches('/')
        .to_owned();
    dev.wait_line("Ctrl-C stops everything", Duration::from_secs(5));
    let nats_url = dev.banner_value("NATS_URL");
    let database_url = dev.banner_value("DATABASE_URL");
    let (nats_port, pg_port) = (port_of(&nats_url), port_of(&database_url));
    assert!(
        dev.seen.iter().any(|l| l.contains("private nats-server")),
        "{:?}",
        dev.seen
    );
    assert!(
        dev.seen.iter().any(|l| l.contains("private Postgres")),
        "{:?}",
        dev.seen
    );

    let health = http.get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    let events: Vec<serde_json::Value> = http
        .get(format!("{base}/api/events"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let demo = events
        .iter()
        .find(|e| e["name"].as_str().is_some_and(|n| n.contains("Northgate")))
        .unwrap_or_else(|| panic!("no demo event in {events:?}"));
    assert_eq!(demo["lanes"], 2, "{demo}");
    let detail: serde_json::Value = http
        .get(format!(
            "{base}/api/events/{}",
            demo["id"].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let lots = detail["lots"].as_array().unwrap();
    assert_eq!(lots.len(), 12, "{detail}");
    assert!(lots.iter().all(
        |l| l["vehicle"]["vin"].as_str().is_some_and(|v| v.len() == 17)
            && l["vehicle"]["photos"][0]
                .as_str()
                .is_some_and(|p| p.starts_with("/assets/cars/"))
    ));

    // The admin logs in with the printed password; the demo users exist once.
    let login: serde_json::Value = http
        .post(format!("{base}/api/auth/login"))
        .json(&serde_json::json!({"email": "admin@gavel.test", "password": "gavel-demo"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let token = login["token"].as_str().unwrap_or_else(|| panic!("{login}"));
    let users: Vec<serde_json::Value> = http
        .get(format!("{base}/api/admin/users"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut emails: Vec<&str> = users.iter().filter_map(|u| u["email"].as_str()).collect();
    emails.sort();
    assert_eq!(
        emails,
        [
            "ada@gavel.test",
            "admin@gavel.test",
            "ben@gavel.test",
            "cy@gavel.test"
        ]
    );

    // What it started: a nats-server and a postmaster (with its backends), its own children.
    let children = children_of(dev.pid());
    let nats_pid = children
        .iter()
        .find(|(_, name)| name == "nats-server")
        .unwrap_or_else(|| panic!("no nats-server child in {children:?}"))
        .0;
    let postmaster = children
        .iter()
        .find(|(_, name)| name == "postgres")
        .unwrap_or_else(|| panic!("no postgres child in {children:?}"))
        .0;
    let backends: Vec<u32> = children_of(postmaster)
        .into_iter()
        .map(|(p, _)| p)
        .collect();
    assert!(!backends.is_empty());

    dev.interrupt();
    for pid in [nats_pid, postmaster].iter().chain(&backends) {
        assert!(gone(*pid), "process {pid} outlived gavel dev");
    }
    for port in [nats_port, pg_port] {
        assert!(
            std::net::TcpStream::connect(("127.0.0.1", port)).is_err(),
            "port {port} still answers"
        );
    }
    let base_port = port_of(&base);
    assert!(std::net::TcpStream::connect(("127.0.0.1", base_port)).is_err());
    assert!(
        dev.seen
            .iter()
            .any(|l| l.contains("private Postgres stopped")),
        "{:?}",
        dev.seen
    );
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dev_starts_private_servers_seeds_the_demo_and_cleans_up_on_sigint() {
    let dir = tempfile::Builder::new()
        .prefix("gavel-dev-test-")
        .tempdir()
        .unwrap();
    // Postgres runs as the postgres user when the tests run as root: it must reach the data.
    {
        use std::os::unix::fs::PermissionsExt as _;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();

    let first = one_run(dir.path(), 1, &http).await;
    assert_eq!(first.len(), 1, "{first:?}");
    assert!(dir.path().join("pg/data/PG_VERSION").is_file());
    assert!(dir.path().join("nats/jetstream").is_dir());

    // Again on the same data: the kept cluster and store come back, one more event, the same
    // four users (checked inside).
    let second = one_run(dir.path(), 2, &http).await;
    assert_eq!(second.len(), 2, "{second:?}");
}
