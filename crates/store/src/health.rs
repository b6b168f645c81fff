//! Whether Postgres answers, for readiness probes.

use crate::StoreError;
use sqlx::PgPool;

/// Runs `SELECT 1`.
pub async fn ping(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query("SELECT 1").execute(pool).await?;
    Ok(())
}
