//! A fresh database per test on the machine's Postgres.
//!
//! A database of its own lets every test run migrations and write rows without cleaning up
//! after itself or seeing another test's rows, while sharing one Postgres server keeps it
//! cheap (a `CREATE DATABASE` takes milliseconds; a cluster takes a second). Tests that must
//! stop or crash Postgres use [`crate::PgCluster`] instead.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection as _, PgConnection, PgPool};

/// Where test databases are created when `TEST_DATABASE_URL` is not set: the machine's Postgres
/// with trust authentication.
pub const DEFAULT_ADMIN_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// How long dropping a database may take before the guard gives up and leaves it behind.
const DROP_DEADLINE: Duration = Duration::from_secs(30);

/// A database created for one test, dropped with the guard.
///
/// It is empty: the caller runs the migrations, because testkit must not depend on the `store`
/// crate that owns them (store's own tests use testkit). Dropping the guard drops the database
/// `WITH (FORCE)`, which also ends every connection still open to it, including those of pools
/// cloned from [`TestDb::pool`] by services the test started.
pub struct TestDb {
    /// Connection URL of this database, for services under test that open their own pool.
    pub url: String,
    /// The database name, `gavel_test_<uuid>`.
    pub name: String,
    /// A pool on this database (at most 10 connections).
    pub pool: PgPool,
    admin_url: String,
    dropped: bool,
}

impl TestDb {
    /// Creates a fresh database on the server named by `TEST_DATABASE_URL`, or on
    /// [`DEFAULT_ADMIN_URL`] when that is unset.
    pub async fn new() -> anyhow::Result<TestDb> {
        let admin_url = std::env::var("TEST_DATABASE_URL")
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| DEFAULT_ADMIN_URL.to_owned());
        TestDb::new_on(&admin_url).await
    }

    /// Creates a fresh database on the server that `admin_url` connects to (as a role allowed
    /// to create and drop databases), for example a [`crate::PgCluster`]'s admin URL.
    pub async fn new_on(admin_url: &str) -> anyhow::Result<TestDb> {
        let name = format!("gavel_test_{}", uuid::Uuid::new_v4().simple());
        let url = with_database(admin_url, &name)?;
        let mut admin = PgConnection::connect(admin_url)
            .await
            .with_context(|| format!("connecting to {admin_url} to create a test database"))?;
        let created = sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut admin)
            .await
            .with_context(|| format!("CREATE DATABASE {name}"));
        let _ = admin.close().await;
        created?;
        let pool = PgPoolOptions::new()
            .max_connections(10)
            .acquire_timeout(Duration::from_secs(10))
            .connect(&url)
            .await;
        let pool = match pool {
            Ok(pool) => pool,
            Err(e) => {
                drop_database(admin_url, &name).await.ok();
                return Err(e).with_context(|| format!("connecting to {url}"));
            }
        };
        tracing::debug!(db = %name, "test database created");
        Ok(TestDb {
            url,
            name,
            pool,
            admin_url: admin_url.to_owned(),
            dropped: false,
        })
    }

    /// Closes the pool and drops the database now, reporting any error.
    ///
    /// Dropping the guard does the same, but can only log what went wrong; a test that wants to
    /// know (or to free the database before its end) calls this.
    pub async fn drop_now(mut self) -> anyhow::Result<()> {
        self.dropped = true;
        // close() waits for checked-out connections; a service the test left running may hold
        // one forever, and FORCE ends those sessions anyway.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pool.close()).await;
        tokio::time::timeout(DROP_DEADLINE, drop_database(&self.admin_url, &self.name))
            .await
            .with_context(|| format!("dropping {} took longer than {DROP_DEADLINE:?}", self.name))?
    }
}

impl Drop for TestDb {
    /// Drops the database on a thread of its own with its own runtime.
    ///
    /// `Drop` is synchronous and may run inside a runtime (where `block_on` would panic), outside
    /// any runtime, or while a current-thread runtime shuts down, so the caller's runtime cannot
    /// be used; a fresh thread works in all three. The pool is not closed first (closing is
    /// async and would wait on connections held elsewhere); `WITH (FORCE)` ends its sessions.
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        self.dropped = true;
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let joined = std::thread::Builder::new()
            .name("testkit-drop-db".to_owned())
            .spawn(move || -> anyhow::Result<()> {
                let runtime = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()?;
                runtime.block_on(async {
                    tokio::time::timeout(DROP_DEADLINE, drop_database(&admin_url, &name))
                        .await
                        .context("timed out")?
                })
            })
            .map(|handle| handle.join());
        let outcome = match joined {
            Ok(Ok(result)) => result,
            Ok(Err(_panic)) => Err(anyhow::anyhow!("the dropping thread panicked")),
            Err(e) => Err(anyhow::Error::from(e).context("spawning the dropping thread")),
        };
        if let Err(e) = outcome {
            eprintln!("testkit: could not drop test database {}: {e:#}", self.name);
        }
    }
}

impl std::fmt::Debug for TestDb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestDb")
            .field("name", &self.name)
            .field("url", &self.url)
            .finish()
    }
}

/// Drops `name` on the server behind `admin_url`, ending its sessions.
async fn drop_database(admin_url: &str, name: &str) -> anyhow::Result<()> {
    let mut admin = PgConnection::connect(admin_url)
        .await
        .with_context(|| format!("connecting to {admin_url} to drop {name}"))?;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)"))
        .execute(&mut admin)
        .await
        .with_context(|| format!("DROP DATABASE {name}"));
    let _ = admin.close().await;
    dropped?;
    tracing::debug!(db = %name, "test database dropped");
    Ok(())
}

/// `url` with its database (the path) replaced by `database`, keeping user, host, port and the
/// query string (`sslmode` and the like).
pub(crate) fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let scheme_end = url
        .find("://")
        .with_context(|| format!("not a database URL: {url:?}"))?
        + 3;
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let after_authority = &rest[authority_end..];
    let query = after_authority.find('?').map(|i| &after_authority[i..]);
    Ok(format!(
        "{}{}/{database}{}",
        &url[..scheme_end],
        &rest[..authority_end],
        query.unwrap_or("")
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replaces_the_database_of_a_url() {
        let cases = [
            (
                "postgres://postgres@127.0.0.1:5432/postgres",
                "postgres://postgres@127.0.0.1:5432/db",
            ),
            (
                "postgres://u:p@h/postgres?sslmode=disable",
                "postgres://u:p@h/db?sslmode=disable",
            ),
            ("postgres://h:5432", "postgres://h:5432/db"),
            (
                "postgresql://h?sslmode=disable",
                "postgresql://h/db?sslmode=disable",
            ),
            ("postgres://h/", "postgres://h/db"),
        ];
        for (url, want) in cases {
            assert_eq!(with_database(url, "db").unwrap(), want, "{url}");
        }
        assert!(with_database("127.0.0.1:5432", "db").is_err());
    }
}
