//! All of Gavel's SQL. Services call typed functions here and never write SQL themselves.
//!
//! Read [`error`] first (how Postgres failures become answers), then [`bidding`] (the bidder's
//! batch transaction, leases and replays), then [`users`]. [`catalog`], [`views`], [`clock`] and
//! [`admin`] are the admins', buyers' and ticker's tables. [`audit`] checks the bid path's
//! invariants over what is stored (fault tests and benches run it afterwards).
//!
//! Queries use sqlx's unchecked functions so the workspace builds without a database; every
//! query is covered by an integration test against a real Postgres.

pub mod admin;
pub mod audit;
pub mod bidding;
pub mod catalog;
pub mod clock;
pub mod error;
pub mod health;
pub mod push;
pub mod users;
pub mod views;

pub use error::StoreError;
pub use sqlx::PgPool;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use std::str::FromStr;
use std::time::Duration;

/// The migrations of `migrations/`, embedded in the binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Opens a pool. `max` connections; a checkout waits at most 10 s.
pub async fn connect(url: &str, max: u32) -> Result<PgPool, StoreError> {
    let opts = PgConnectOptions::from_str(url)
        .map_err(StoreError::internal)?
        .application_name("gavel");
    PgPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(opts)
        .await
        .map_err(StoreError::internal)
}

/// Applies every pending migration.
pub async fn migrate(pool: &PgPool) -> Result<(), StoreError> {
    MIGRATOR
        .run(pool)
        .await
        .map_err(|e| StoreError::Internal(e.into()))
}

/// Creates the database named in `url` when it does not exist yet (for `gavel migrate` and
/// `gavel dev` on a fresh machine), connecting to the `postgres` database of the same server.
pub async fn ensure_database(url: &str) -> Result<(), StoreError> {
    use sqlx::ConnectOptions;
    let opts = PgConnectOptions::from_str(url).map_err(StoreError::internal)?;
    let Some(name) = opts.get_database().map(str::to_owned) else {
        return Ok(());
    };
    let mut admin = opts
        .database("postgres")
        .connect()
        .await
        .map_err(StoreError::internal)?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(&name)
            .fetch_one(&mut admin)
            .await?;
    if !exists {
        let quoted = format!("\"{}\"", name.replace('"', "\"\""));
        sqlx::query(&format!("CREATE DATABASE {quoted}"))
            .execute(&mut admin)
            .await?;
    }
    Ok(())
}
