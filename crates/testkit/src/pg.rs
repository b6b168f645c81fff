//! A private Postgres cluster for tests that stop, restart or crash the database.
//!
//! The machine's Postgres must never be stopped, so a test of "Postgres went away mid-lot"
//! gets a whole cluster of its own: `initdb` into a temporary directory, one `postgres` process
//! on a free port. Postgres refuses to run as root, so when the tests run as root (CI does) the
//! binaries run as the `postgres` OS user via `setpriv`, which switches user and then execs:
//! the postmaster stays this process's own child. That matters because an orphan is reaped by
//! PID 1 only when PID 1 gets round to it (on this machine, a second or two later): a
//! postmaster daemonised by `pg_ctl` lingers as a zombie after a crash, and while it does, its
//! pid in `postmaster.pid` looks alive and the next start refuses to run. As our child it is
//! reaped at once by us, and the signals `pg_ctl` would send are sent directly: SIGINT for a
//! fast shutdown, SIGQUIT for an immediate one.

use std::fs::OpenOptions;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection};
use tempfile::TempDir;

use crate::process::{children_of, free_port, log_tail, process_gone, signal};

/// How long a start or a stop may take. Crash recovery after [`PgCluster::kill`] is included,
/// on a 2-core machine busy with the rest of the suite.
const DEADLINE: Duration = Duration::from_secs(30);

/// How often readiness and exit are polled.
const POLL: Duration = Duration::from_millis(10);

/// The OS user that owns the cluster when the tests run as root.
const PG_USER: &str = "postgres";

static BIN_DIR: OnceLock<Result<PathBuf, String>> = OnceLock::new();

/// The directory with `initdb` and `postgres`: the highest version under
/// `/usr/lib/postgresql/*/bin` (Debian's layout, where they are not on `PATH`), else
/// `pg_config --bindir`. A missing binary is an error naming the Debian package to install.
pub fn postgres_bin_dir() -> anyhow::Result<PathBuf> {
    BIN_DIR
        .get_or_init(|| find_bin_dir().map_err(|e| format!("{e:#}")))
        .clone()
        .map_err(anyhow::Error::msg)
}

fn find_bin_dir() -> anyhow::Result<PathBuf> {
    let has_binaries = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_binaries(bin))
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    let from_pg_config = Command::new("pg_config")
        .arg("--bindir")
        .stdin(Stdio::null())
        .output()
        .ok()
        .filter(|out| out.status.success())
        .map(|out| PathBuf::from(String::from_utf8_lossy(&out.stdout).trim()));
    match from_pg_config {
        Some(bin) if has_binaries(&bin) => Ok(bin),
        _ => anyhow::bail!(
            "no Postgres server binaries (initdb, postgres) in /usr/lib/postgresql/*/bin or \
             pg_config --bindir: install the Debian package `postgresql`"
        ),
    }
}

/// Whether this process runs as root, read from the owner of `/proc/self` because `unsafe`
/// (and so `libc::geteuid`) is forbidden here.
fn running_as_root() -> bool {
    use std::os::unix::fs::MetadataExt as _;
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// A command for a Postgres binary, run as the `postgres` user when we are root.
fn pg_command(bin: &Path, as_root: bool) -> Command {
    pg_command_with(bin, as_root, None)
}

/// [`pg_command`], optionally with a parent-death signal (`setpriv --pdeathsig`, which the
/// kernel keeps across the user switch because setpriv sets it last).
fn pg_command_with(bin: &Path, as_root: bool, pdeathsig: Option<&str>) -> Command {
    if !as_root && pdeathsig.is_none() {
        return Command::new(bin);
    }
    let mut cmd = Command::new("setpriv");
    if as_root {
        cmd.args(["--reuid", PG_USER, "--regid", PG_USER, "--init-groups"]);
    }
    if let Some(sig) = pdeathsig {
        cmd.args(["--pdeathsig", sig]);
    }
    cmd.arg("--").arg(bin);
    cmd
}

/// How to run a [`PgCluster`] other than the tests' way (a temporary cluster, deleted on drop).
/// `gavel dev` keeps its data between runs and must leave no server behind if it dies itself.
#[derive(Clone, Debug, Default)]
pub struct PgOptions {
    /// Keep the cluster here across runs: the data directory is `<dir>/data` (created by
    /// `initdb` on the first run only), with `<dir>/postgres.log` and the socket directory
    /// `<dir>/sock`. Never deleted; dropping the guard shuts the server down cleanly.
    pub dir: Option<PathBuf>,
    /// Make the postmaster shut down (SIGINT, a fast shutdown) when the thread that started it
    /// dies, so a parent killed with SIGKILL leaves no orphan. Start it from a thread that
    /// lives as long as the process (the main thread): the signal follows the thread.
    pub kill_with_parent: bool,
}

/// A private Postgres cluster, removed with the guard.
///
/// Dropping it shuts the server down immediately (what `pg_ctl stop -m immediate` does), waits
/// for it, and deletes the data directory. In between a test can [`stop`](PgCluster::stop) it
/// cleanly, [`kill`](PgCluster::kill) it like a crash, and [`start_again`](PgCluster::start_again)
/// on the same port with the same data, which is what a service sees when its database restarts.
pub struct PgCluster {
    bin_dir: PathBuf,
    as_root: bool,
    port: u16,
    child: Option<Child>,
    data_dir: PathBuf,
    socket_dir: PathBuf,
    log_path: PathBuf,
    /// The cluster's own directory (data, sockets, log): the working directory of its
    /// processes, which the `postgres` user can always read.
    base: PathBuf,
    /// Ask for a parent-death signal (see [`PgOptions::kill_with_parent`]).
    kill_with_parent: bool,
    /// The temporary directory of a test's cluster, `None` for a kept one ([`PgOptions::dir`]).
    /// Declared last: removed after the server has stopped (Drop stops it first anyway).
    temp: Option<TempDir>,
}

impl PgCluster {
    /// Creates a cluster with `initdb` (trust authentication, superuser `postgres`, UTF8, C
    /// locale) and starts it on a free port of 127.0.0.1, waiting until it accepts connections.
    pub async fn start() -> anyhow::Result<PgCluster> {
        PgCluster::start_with(PgOptions::default()).await
    }

    /// Starts a cluster as [`PgCluster::start`] does, with kept data and the other
    /// [`PgOptions`]. A kept cluster is initialised on its first start only.
    pub async fn start_with(options: PgOptions) -> anyhow::Result<PgCluster> {
        let bin_dir = postgres_bin_dir()?;
        let as_root = running_as_root();
        let (temp, base) = match &options.dir {
            Some(dir) => {
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                (None, std::path::absolute(dir)?)
            }
            None => {
                let temp = tempfile::Builder::new()
                    .prefix("gavel-pg-")
                    .tempdir()
                    .context("creating a temporary directory for Postgres")?;
                let base = temp.path().to_path_buf();
                (Some(temp), base)
            }
        };
        let socket_dir = base.join("sock");
        if !socket_dir.is_dir() {
            std::fs::create_dir(&socket_dir)?;
        }
        if as_root {
            // tempdir() makes the directory 0700 and owned by root: hand it to postgres.
            use std::os::unix::fs::PermissionsExt as _;
            std::fs::set_permissions(&base, std::fs::Permissions::from_mode(0o755))?;
            let mut chown = Command::new("chown");
            chown
                .args(["-R", &format!("{PG_USER}:{PG_USER}")])
                .arg(&base);
            run(chown)
                .await
                .context("handing the cluster directory to the postgres user")?;
            if temp.is_none() {
                // A kept directory may sit below one the postgres user cannot enter (/root).
                let mut probe = pg_command(Path::new("/usr/bin/test"), true);
                probe.args(["-w"]).arg(&base).current_dir("/");
                run(probe).await.with_context(|| {
                    format!(
                        "the postgres user cannot write to {}: a directory above it is not \
                         open to other users; choose a data directory it can reach",
                        base.display()
                    )
                })?;
            }
        }
        let mut cluster = PgCluster {
            data_dir: base.join("data"),
            log_path: base.join("postgres.log"),
            socket_dir,
            bin_dir,
            as_root,
            port: 0,
            child: None,
            base,
            kill_with_parent: options.kill_with_parent,
            temp,
        };
        if !cluster.data_dir.join("PG_VERSION").is_file() {
            cluster.initdb().await?;
        }
        // The port is free when chosen but could be taken before Postgres binds it: retry.
        let mut attempts = 0;
        loop {
            attempts += 1;
            cluster.port = free_port()?;
            match cluster.spawn_and_wait().await {
                Ok(()) => break,
                Err(e)
                    if attempts < 5 && log_tail(&cluster.log_path).contains("could not bind") =>
                {
                    tracing::debug!(error = %format!("{e:#}"), "postgres port taken, retrying");
                }
                Err(e) => return Err(e),
            }
        }
        tracing::debug!(port = cluster.port, pid = ?cluster.pid(), "postgres cluster started");
        Ok(cluster)
    }

    /// The superuser URL of the `postgres` database, for creating databases and roles.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// The port; it stays the same across [`PgCluster::start_again`].
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The postmaster's process id while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// The data directory, kept across stop, kill and start again.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The server log, appended across restarts, for diagnosing a failing test.
    pub fn log_path(&self) -> &Path {
        &self.log_path
    }

    /// The URL of database `name` on this cluster, as the superuser (whether or not it exists).
    pub fn url_of(&self, name: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{name}", self.port)
    }

    /// Creates database `name` and returns its URL. The database lives as long as the cluster.
    pub async fn create_db(&self, name: &str) -> anyhow::Result<String> {
        anyhow::ensure!(
            !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "database names are letters, digits and underscores: {name:?}"
        );
        let mut admin = PgConnection::connect(&self.admin_url()).await?;
        let created = sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"));
        let _ = admin.close().await;
        created?;
        Ok(format!(
            "postgres://postgres@127.0.0.1:{}/{name}",
            self.port
        ))
    }

    /// Stops the server cleanly (a fast shutdown, like `pg_ctl stop -m fast`: sessions are
    /// ended, a checkpoint is written) and waits until it has exited.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        signal(pid, "INT")?;
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().context("no child")?;
            if child.try_wait()?.is_some() {
                self.child = None;
                tracing::debug!(port = self.port, "postgres cluster stopped");
                return Ok(());
            }
            if started.elapsed() >= DEADLINE {
                self.kill();
                anyhow::bail!(
                    "postgres did not stop within {DEADLINE:?} and was killed; its log ends \
                     with:\n{}",
                    log_tail(&self.log_path)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Starts the server again on the same port with the same data directory, after
    /// [`stop`](PgCluster::stop) or [`kill`](PgCluster::kill), and waits until it accepts
    /// connections (after a kill, that includes crash recovery).
    pub async fn start_again(&mut self) -> anyhow::Result<()> {
        anyhow::ensure!(
            self.child.is_none(),
            "the postgres cluster is already running"
        );
        self.spawn_and_wait()
            .await
            .with_context(|| format!("starting postgres again on port {}", self.port))?;
        tracing::debug!(port = self.port, pid = ?self.pid(), "postgres cluster started again");
        Ok(())
    }

    /// Crashes the server: SIGKILL to the postmaster and to every backend, like the database
    /// host losing power (except that the OS page cache survives).
    ///
    /// The backends are killed too, not left to notice their postmaster died, so that
    /// [`start_again`](PgCluster::start_again) never finds an orphaned backend still attached to
    /// the old shared memory. The postmaster is frozen first so it cannot fork a backend between
    /// listing its children and being killed. Waits until they are all gone. Does nothing if the
    /// server is not running.
    pub fn kill(&mut self) {
        let Some(mut child) = self.child.take() else {
            return;
        };
        let pid = child.id();
        let _ = signal(pid, "STOP");
        let backends = children_of(pid);
        let _ = child.kill();
        let _ = child.wait();
        for backend in &backends {
            let _ = signal(*backend, "KILL");
        }
        let started = Instant::now();
        while !backends.iter().all(|b| process_gone(*b)) && started.elapsed() < DEADLINE {
            std::thread::sleep(POLL);
        }
        tracing::debug!(port = self.port, pid, "postgres cluster killed");
    }

    async fn initdb(&self) -> anyhow::Result<()> {
        let mut cmd = pg_command(&self.bin_dir.join("initdb"), self.as_root);
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-A", "trust", "-U", "postgres", "-E", "UTF8", "--locale=C"])
            .args(["--no-sync", "--no-instructions"])
            // The postgres user may not be able to read the caller's working directory.
            .current_dir(&self.base);
        run(cmd).await.context("initdb")
    }

    /// Spawns the postmaster on `self.port` and waits until it accepts connections; on failure
    /// it is killed and the error carries the end of the log.
    async fn spawn_and_wait(&mut self) -> anyhow::Result<()> {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log_path)
            .with_context(|| format!("opening {}", self.log_path.display()))?;
        let mut cmd = pg_command_with(
            &self.bin_dir.join("postgres"),
            self.as_root,
            self.kill_with_parent.then_some("INT"),
        );
        cmd.arg("-D")
            .arg(&self.data_dir)
            .args(["-p", &self.port.to_string(), "-k"])
            .arg(&self.socket_dir)
            .args(["-c", "listen_addresses=127.0.0.1", "-c", "fsync=on"])
            .current_dir(&self.base)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        let child = cmd.spawn().context("spawning postgres")?;
        self.child = Some(child);
        match self.wait_ready().await {
            Ok(()) => Ok(()),
            Err(e) => {
                self.kill();
                Err(e.context(format!(
                    "postgres did not start; its log ends with:\n{}",
                    log_tail(&self.log_path)
                )))
            }
        }
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let url = self.admin_url();
        let started = Instant::now();
        loop {
            let child = self.child.as_mut().context("no child")?;
            if let Some(status) = child.try_wait()? {
                self.child = None;
                anyhow::bail!("postgres exited during start-up: {status}");
            }
            let last_error = match PgConnection::connect(&url).await {
                Ok(conn) => {
                    let _ = conn.close().await;
                    return Ok(());
                }
                Err(e) => e,
            };
            if started.elapsed() >= DEADLINE {
                anyhow::bail!("not accepting connections after {DEADLINE:?}: {last_error}");
            }
            tokio::time::sleep(POLL).await;
        }
    }
}

impl Drop for PgCluster {
    /// Shuts down immediately (SIGQUIT, like `pg_ctl stop -m immediate`: no checkpoint, the
    /// data is about to be deleted) and waits, falling back to [`PgCluster::kill`] if it hangs.
    /// A kept cluster ([`PgOptions::dir`]) gets a fast shutdown (SIGINT) instead: its data
    /// stays, so it is worth a checkpoint.
    fn drop(&mut self) {
        let kept = self.temp.is_none();
        let Some(child) = self.child.as_mut() else {
            return;
        };
        let (sig, patience) = if kept {
            ("INT", DEADLINE)
        } else {
            ("QUIT", Duration::from_secs(10))
        };
        if signal(child.id(), sig).is_ok() {
            let started = Instant::now();
            while started.elapsed() < patience {
                match child.try_wait() {
                    Ok(Some(_)) | Err(_) => {
                        self.child = None;
                        return;
                    }
                    Ok(None) => std::thread::sleep(POLL),
                }
            }
            eprintln!(
                "testkit: postgres on port {} ignored SIG{sig}; killing it",
                self.port
            );
        }
        self.kill();
    }
}

impl std::fmt::Debug for PgCluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgCluster")
            .field("admin_url", &self.admin_url())
            .field("pid", &self.pid())
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

/// Runs a command to completion, failing with its output when it fails.
async fn run(cmd: Command) -> anyhow::Result<()> {
    let mut cmd = tokio::process::Command::from(cmd);
    let output = cmd.stdin(Stdio::null()).output().await?;
    anyhow::ensure!(
        output.status.success(),
        "{:?} failed ({}):\n{}{}",
        cmd.as_std(),
        output.status,
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}
