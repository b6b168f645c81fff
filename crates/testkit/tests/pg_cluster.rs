//! PgCluster: a private Postgres that a test may stop, restart and crash, and that leaves no
//! process or file behind.

use std::path::Path;
use std::time::Duration;

use sqlx::{Connection as _, PgConnection};
use testkit::{wait_until, PgCluster, TestDb};

fn pid_running(pid: u32) -> bool {
    // An orphaned backend that exits is a zombie until PID 1 reaps it: not running.
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        !stat
            .rsplit(')')
            .next()
            .unwrap_or("")
            .trim_start()
            .starts_with('Z')
    })
}

async fn count_bids(url: &str) -> i64 {
    let mut conn = PgConnection::connect(url).await.unwrap();
    let n = sqlx::query_scalar("SELECT count(*) FROM bid")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    conn.close().await.unwrap();
    n
}

#[tokio::test]
async fn a_cluster_survives_stop_start_and_a_crash_then_cleans_up() {
    let mut cluster = PgCluster::start().await.unwrap();
    let port = cluster.port();
    assert_ne!(port, 5432, "never the machine's own Postgres");
    assert_eq!(
        cluster.admin_url(),
        format!("postgres://postgres@127.0.0.1:{port}/postgres")
    );
    let data_dir = cluster.data_dir().to_path_buf();

    let url = cluster.create_db("auction").await.unwrap();
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("CREATE TABLE bid (id bigint PRIMARY KEY, cents bigint NOT NULL)")
        .execute(&mut conn)
        .await
        .unwrap();
    sqlx::query("INSERT INTO bid VALUES (1, 100)")
        .execute(&mut conn)
        .await
        .unwrap();
    let fsync: String = sqlx::query_scalar("SHOW fsync")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(fsync, "on");

    // A clean stop ends open sessions and frees the port.
    let first_pid = cluster.pid().unwrap();
    cluster.stop().await.unwrap();
    assert_eq!(cluster.pid(), None);
    assert!(!pid_running(first_pid));
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());
    assert!(PgConnection::connect(&url).await.is_err());

    cluster.start_again().await.unwrap();
    assert_eq!(cluster.port(), port);
    assert_eq!(count_bids(&url).await, 1);

    // A crash: committed rows survive it, open connections do not.
    let mut conn = PgConnection::connect(&url).await.unwrap();
    sqlx::query("INSERT INTO bid VALUES (2, 200)")
        .execute(&mut conn)
        .await
        .unwrap();
    let postmaster = cluster.pid().unwrap();
    let pid_file = std::fs::read_to_string(data_dir.join("postmaster.pid")).unwrap();
    assert_eq!(
        pid_file.lines().next(),
        Some(postmaster.to_string().as_str())
    );
    cluster.kill();
    assert!(!pid_running(postmaster));
    assert!(sqlx::query("SELECT 1").execute(&mut conn).await.is_err());

    cluster.start_again().await.unwrap();
    assert_eq!(count_bids(&url).await, 2);

    // Databases of its own via TestDb, too.
    let db = TestDb::new_on(&cluster.admin_url()).await.unwrap();
    let one: i32 = sqlx::query_scalar("SELECT 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(one, 1);
    drop(db);

    let last_pid = cluster.pid().unwrap();
    drop(cluster);
    assert!(
        !Path::new(&format!("/proc/{last_pid}")).exists(),
        "the postmaster was not reaped"
    );
    assert!(!data_dir.exists(), "the data directory was not deleted");
    wait_until(Duration::from_secs(5), "the port is free", || async {
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok()
    })
    .await
    .unwrap();
}

#[tokio::test]
async fn a_running_cluster_refuses_to_start_again() {
    let mut cluster = PgCluster::start().await.unwrap();
    assert!(cluster.start_again().await.is_err());
    let one: i32 = {
        let mut conn = PgConnection::connect(&cluster.admin_url()).await.unwrap();
        sqlx::query_scalar("SELECT 1")
            .fetch_one(&mut conn)
            .await
            .unwrap()
    };
    assert_eq!(one, 1);
}
