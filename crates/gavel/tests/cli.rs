//! The command line as an operator runs it: `migrate`, `user add`, `tail`.

use schemas::nats::{AuctionMsg, NatsMessage};
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use testkit::{NatsServer, TestDb};

fn gavel(nats: &NatsServer, db_url: &str) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_gavel"));
    c.env("NATS_URL", nats.url())
        .env("DATABASE_URL", db_url)
        .env("RUST_LOG", "warn");
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migrate_creates_the_database_and_streams_then_user_add_and_tail_work() {
    let nats = NatsServer::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    // A database that does not exist yet: migrate creates it.
    let fresh = format!("{}_fresh", db.name);
    let fresh_url = db.url.replace(&db.name, &fresh);
    let out = gavel(&nats, &fresh_url).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = gavel(&nats, &fresh_url).arg("migrate").output().unwrap();
    assert!(again.status.success(), "migrate is idempotent");

    let client = bus::connect(&nats.url(), "t").await.unwrap();
    let js = bus::jetstream(client.clone());
    for s in ["BIDS", "AUCTION", "USERS", "NOTIFY"] {
        js.get_stream(s)
            .await
            .unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    assert_eq!(bus::partitions_of(&js).await.unwrap(), Some(16));
    let wrong = gavel(&nats, &fresh_url)
        .args(["migrate", "--partitions", "8"])
        .output()
        .unwrap();
    assert!(
        !wrong.status.success(),
        "the partition count is fixed once BIDS exists"
    );
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("partitions"));

    let add = |email: &str| {
        gavel(&nats, &fresh_url)
            .args([
                "user",
                "add",
                "--email",
                email,
                "--password",
                "long enough",
                "--name",
                "Root",
                "--admin",
                "--verified",
            ])
            .output()
            .unwrap()
    };
    let ok = add("root@example.com");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let user: serde_json::Value = serde_json::from_slice(&ok.stdout).unwrap();
    assert_eq!(
        (user["role"].as_str(), user["verified"].as_bool()),
        (Some("admin"), Some(true))
    );
    let dup = add("ROOT@example.com");
    assert!(!dup.status.success());
    assert!(String::from_utf8_lossy(&dup.stderr).contains("in use"));

    // tail decodes MessagePack into JSON lines.
    let mut tail = gavel(&nats, &fresh_url)
        .args(["tail", "auction.>", "--count", "1"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut ready = BufReader::new(tail.stderr.take().unwrap());
    let mut line = String::new();
    while !line.contains("tailing") {
        line.clear();
        assert!(ready.read_line(&mut line).unwrap() > 0, "tail exited early");
    }
    let msg = AuctionMsg::TimerUpdate(schemas::frames::TimerUpdate {
        lot_id: schemas::LotId::new(),
        lane: 2,
        state: schemas::LotState::Open,
        ends_at: 5,
        remaining_ms: 4,
        server_time: 1,
        version: 7,
    });
    let out = bus::Outgoing::new(
        "auction.e.2.tick".into(),
        &msg,
        None,
        schemas::trace::TraceParent::new_root(),
    );
    out.send_core(&client).await.unwrap();
    client.flush().await.unwrap();
    let output = tokio::task::spawn_blocking(move || tail.wait_with_output())
        .await
        .unwrap()
        .unwrap();
    let printed: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(printed["subject"], "auction.e.2.tick");
    assert_eq!(printed["type"], msg.gavel_type());
    assert_eq!(printed["data"]["version"], 7);
    assert_eq!(printed["data"]["type"], "timer_update.v1");

    drop(client);
    sqlx::query(&format!("DROP DATABASE \"{fresh}\" WITH (FORCE)"))
        .execute(&db.pool)
        .await
        .unwrap();
}

/// A raw HTTP/1.0 GET: the status line's code, or None while nothing answers.
async fn http_status(port: u16, path: &str) -> Option<u16> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .ok()?;
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .ok()?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.ok()?;
    String::from_utf8_lossy(&buf)
        .split(' ')
        .nth(1)?
        .parse()
        .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gavel_edge_serves_and_refuses_a_short_secret() {
    let nats = NatsServer::start().await.unwrap();
    let db = TestDb::new().await.unwrap();
    let out = gavel(&nats, &db.url).arg("migrate").output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let short = gavel(&nats, &db.url)
        .arg("edge")
        .env("GAVEL_JWT_SECRET", "short")
        .output()
        .unwrap();
    assert!(!short.status.success());
    assert!(String::from_utf8_lossy(&short.stderr).contains("at least 32 bytes"));

    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut edge = gavel(&nats, &db.url)
        .arg("edge")
        .env("GAVEL_JWT_SECRET", "a-secret-of-at-least-thirty-two-bytes")
        .env("GAVEL_HTTP_ADDR", format!("127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    testkit::wait_until(std::time::Duration::from_secs(20), "edge ready", || async {
        http_status(port, "/readyz").await == Some(200)
    })
    .await
    .unwrap();
    assert_eq!(http_status(port, "/api/me").await, Some(401));
    assert_eq!(http_status(port, "/no/such/route").await, Some(404));
    // SIGTERM drains and exits cleanly.
    Command::new("kill")
        .args(["-TERM", &edge.id().to_string()])
        .status()
        .unwrap();
    let status = tokio::task::spawn_blocking(move || edge.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "{status}");
}
