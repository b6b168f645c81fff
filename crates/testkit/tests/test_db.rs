//! TestDb on the machine's Postgres: a database of its own that is gone after the test, however
//! the guard is dropped.

use sqlx::{Connection as _, PgConnection};
use testkit::TestDb;

const ADMIN_URL: &str = testkit::db::DEFAULT_ADMIN_URL;

fn admin_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| ADMIN_URL.to_owned())
}

async fn database_exists(name: &str) -> bool {
    let mut admin = PgConnection::connect(&admin_url()).await.unwrap();
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(name)
            .fetch_one(&mut admin)
            .await
            .unwrap();
    admin.close().await.unwrap();
    exists
}

#[tokio::test]
async fn a_test_database_can_be_queried_and_is_dropped_with_the_guard() {
    let db = TestDb::new().await.unwrap();
    assert!(db.name.starts_with("gavel_test_"), "{}", db.name);
    assert!(db.url.ends_with(&format!("/{}", db.name)), "{}", db.url);
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    let current: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(current, db.name);
    // A connection the test still holds does not stop the drop.
    let mut held = PgConnection::connect(&db.url).await.unwrap();
    sqlx::query("SELECT 1").execute(&mut held).await.unwrap();

    let name = db.name.clone();
    assert!(database_exists(&name).await);
    drop(db);
    assert!(!database_exists(&name).await, "{name} is still there");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_now_reports_and_removes_the_database() {
    let db = TestDb::new().await.unwrap();
    let name = db.name.clone();
    sqlx::query("CREATE TABLE lot (id bigint PRIMARY KEY)")
        .execute(&db.pool)
        .await
        .unwrap();
    db.drop_now().await.unwrap();
    assert!(!database_exists(&name).await, "{name} is still there");
}

#[test]
fn a_guard_dropped_after_its_runtime_is_gone_still_drops_the_database() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let db = runtime.block_on(TestDb::new()).unwrap();
    let name = db.name.clone();
    drop(runtime);
    drop(db);
    let check = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    assert!(
        !check.block_on(database_exists(&name)),
        "{name} is still there"
    );
}

#[tokio::test]
async fn databases_created_together_are_distinct() {
    let (a, b, c) = tokio::join!(TestDb::new(), TestDb::new(), TestDb::new());
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    assert_ne!(a.name, b.name);
    assert_ne!(b.name, c.name);
    sqlx::query("CREATE TABLE only_in_a (x int)")
        .execute(&a.pool)
        .await
        .unwrap();
    let seen_in_b: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_tables WHERE tablename = 'only_in_a')")
            .fetch_one(&b.pool)
            .await
            .unwrap();
    assert!(!seen_in_b);
}
