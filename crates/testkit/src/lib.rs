//! Real NATS and Postgres for Gavel's tests, owned by guard values that clean up on drop.
//!
//! Tests never mock the broker or the database: the bugs that matter live in how a service
//! behaves against the real thing (a JetStream ack, a constraint violation, a server that dies
//! mid-lot). Each guard gives one test its own private instance on a port of its own, so tests
//! run in parallel without seeing each other, and removes every trace of it when dropped.
//!
//! Read in this order:
//! - [`wait_until`] (this file): the one way tests wait, on a condition with a deadline.
//! - [`nats`]: [`NatsServer`], a private JetStream server that can be killed and restarted on
//!   the same port and store; [`nats_server_binary`] finds a server new enough (2.10+).
//! - [`cluster`]: [`NatsCluster`], three clustered JetStream servers, one of which a test kills.
//! - [`db`]: [`TestDb`], a fresh database per test on the machine's Postgres.
//! - [`pg`]: [`PgCluster`], a whole private Postgres for tests that stop or crash the database.
//! - [`NatsOptions`] and [`PgOptions`]: the same servers the way `gavel dev` runs them, with
//!   their data kept in a directory between runs and dying with the process that started them.
//! - `process` (private): free ports, signals and log tails shared by the guards.

use std::future::Future;
use std::time::{Duration, Instant};

pub mod cluster;
pub mod db;
pub mod nats;
pub mod pg;
mod process;

pub use cluster::NatsCluster;
pub use db::TestDb;
pub use nats::{
    nats_server_binary, nats_server_version, parse_nats_version, NatsOptions, NatsServer,
};
pub use pg::{postgres_bin_dir, PgCluster, PgOptions};

/// Polls `f` every 10 ms until it returns `true`, or fails once `deadline` has passed.
///
/// Tests wait on conditions, never on fixed sleeps: a fixed sleep is either too short on a
/// loaded CI machine (a flaky test) or too long everywhere else (a slow suite). The deadline is
/// measured on the wall clock, not tokio's clock, so a test that pauses tokio's clock still gets
/// a real deadline while it waits on real I/O. `what` names the condition in the error, so a
/// timeout says what never happened.
pub async fn wait_until<F, Fut>(deadline: Duration, what: &str, mut f: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let started = Instant::now();
    loop {
        if f().await {
            return Ok(());
        }
        if started.elapsed() >= deadline {
            anyhow::bail!("timed out after {deadline:?} waiting until {what}");
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    #[tokio::test]
    async fn wait_until_returns_once_the_condition_holds() {
        let calls = AtomicU32::new(0);
        wait_until(Duration::from_secs(5), "the third call", || async {
            calls.fetch_add(1, Ordering::SeqCst) >= 2
        })
        .await
        .unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 3);
    }

    #[tokio::test]
    async fn wait_until_names_the_condition_when_it_times_out() {
        let err = wait_until(Duration::from_millis(50), "pigs fly", || async { false })
            .await
            .unwrap_err();
        assert!(err.to_string().contains("pigs fly"), "{err}");
    }
}
