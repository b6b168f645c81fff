//! Whether Postgres answers, for readiness probes.

use crate::StoreError;
use sqlx::PgPool;

/// Runs `SELECT 1`.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}

/// Process ids of the server backends connected to this database (benches read their CPU time
/// from `/proc` when Postgres runs on the same machine).
pub async fn backend_pids(pool: &PgPool) -> Result<Vec<u32>, StoreError> {
    let pids: Vec<i32> =
        sqlx::query_scalar("SELECT pid FROM pg_stat_activity WHERE datname = current_database()")
            .fetch_all(pool)
            .await?;
    Ok(pids.into_iter().map(|p| p as u32).collect())
}
