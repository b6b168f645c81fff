//! A strict OneSignal stand-in: an HTTP/1.1 server on 127.0.0.1 that accepts only the Create
//! Notification call as OneSignal documents it, records each notification it creates, and can be
//! told to fail the next requests in the ways the real service and the network do.
//!
//! Strict: `POST /notifications`, `Authorization: Key <API_KEY>` (else 403 with OneSignal's
//! message), a JSON body with our `app_id`, `target_channel: "push"`, only
//! `include_aliases.external_id` as targeting with 1 to 2,000 distinct ids, English `headings`
//! and `contents`, `data` with the event (and lot) ids, and a UUID `idempotency_key`. Anything
//! else is answered 400 and noted as a violation, which tests assert never happens.
//!
//! Idempotent like OneSignal: a request repeating an `idempotency_key` it has recorded is
//! answered like the first and not recorded again (a repeat with another body is a violation:
//! the notifier must never change a batch between retries).
//!
//! Written by hand on tokio's TCP (no HTTP server library) so a fault can stop at any byte:
//! drop the connection before or after recording, or hold the request without answering.
#![allow(dead_code)]

use serde_json::{json, Value};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Instant;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// The app the stand-in serves.
pub const APP_ID: &str = "8f7a6c1e-3b2d-4e5f-9a0b-1c2d3e4f5a6b";
/// Its REST API key.
pub const API_KEY: &str = "os_v2_app_standin_test_key";
/// OneSignal's answer to a bad key (with its double space).
pub const INVALID_API_KEY: &str = "Access denied.  Please include an 'Authorization: ...' header with a valid API key (https://documentation.onesignal.com/docs/en/keys-and-ids#api-keys).";
/// OneSignal's answer when no recipient has a subscription.
pub const NO_SUBSCRIBERS: &str = "All included players are not subscribed";

/// What to do with a request instead of (or after) answering it normally.
#[derive(Clone, Debug, PartialEq)]
pub enum Fault {
    /// Answer normally (lets a later fault hit a later request).
    Pass,
    /// 429 `{"errors": ["API rate limit exceeded."]}` with this `Retry-After`, nothing recorded.
    RateLimited(Option<String>),
    /// This status with an error body, nothing recorded.
    Status(u16),
    /// 400 with OneSignal's error shape and this message, nothing recorded.
    BadRequest(String),
    /// Never answer (until the stand-in is dropped), nothing recorded.
    Hang,
    /// Close the connection without an answer, nothing recorded.
    Drop,
    /// Record the notification, then close without an answer.
    RecordThenDrop,
    /// Record the notification, then never answer.
    RecordThenHang,
    /// Record the notification, then answer this error status.
    RecordThenStatus(u16),
}

/// A notification the stand-in created: what a phone would show.
#[derive(Clone, Debug)]
pub struct Delivery {
    pub key: String,
    pub kind: String,
    pub recipients: Vec<String>,
    pub heading: String,
    pub text: String,
    pub data: Value,
    pub id: String,
}

/// One request as it arrived, and what was done with it.
#[derive(Clone, Debug)]
pub struct Request {
    pub at: Instant,
    pub key: Option<String>,
    pub kind: Option<String>,
    pub recipients: usize,
    /// `recorded`, `repeat`, `not_subscribed`, `fault:<Fault>`, `403`, `violation`.
    pub handled: String,
}

#[derive(Default)]
struct State {
    faults: VecDeque<(Option<String>, Fault)>,
    deliveries: Vec<Delivery>,
    answers: HashMap<String, (Value, u16, String)>,
    requests: Vec<Request>,
    violations: Vec<String>,
    unsubscribed: HashSet<String>,
    hanging: usize,
}

/// A running stand-in; stops (and releases hung requests) when dropped.
pub struct StandIn {
    pub url: String,
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl StandIn {
    pub async fn start() -> StandIn {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let url = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State::default()));
        let stop = CancellationToken::new();
        let (s, st) = (state.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = st.cancelled() => return,
                    accepted = listener.accept() => {
                        let Ok((conn, _)) = accepted else { continue };
                        tokio::spawn(serve(conn, s.clone(), st.clone()));
                    }
                }
            }
        });
        StandIn { url, state, stop }
    }

    /// The next request gets `fault`.
    pub fn fail_next(&self, fault: Fault) {
        self.state.lock().unwrap().faults.push_back((None, fault));
    }

    /// The next request for a job of `kind` (`data.kind`) gets `fault`.
    pub fn fail_next_for(&self, kind: &str, fault: Fault) {
        self.state
            .lock()
            .unwrap()
            .faults
            .push_back((Some(kind.to_owned()), fault));
    }

    /// These external ids have no push subscription.
    pub fn unsubscribe(&self, ids: impl IntoIterator<Item = String>) {
        self.state.lock().unwrap().unsubscribed.extend(ids);
    }

    pub fn deliveries(&self) -> Vec<Delivery> {
        self.state.lock().unwrap().deliveries.clone()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        self.state.lock().unwrap().violations.clone()
    }

    /// Requests being held without an answer right now.
    pub fn hanging(&self) -> usize {
        self.state.lock().unwrap().hanging
    }

    /// Faults not used yet.
    pub fn faults_left(&self) -> usize {
        self.state.lock().unwrap().faults.len()
    }

    /// Every request carrying `key`.
    pub fn requests_with(&self, key: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.key.as_deref() == Some(key))
            .collect()
    }

    /// Asserts that every notification was created once: no key recorded twice, no recipient
    /// of one job kind and event or lot alerted twice, and no rule broken.
    pub fn assert_exactly_once(&self) {
        let violations = self.violations();
        assert!(
            violations.is_empty(),
            "stand-in saw violations: {violations:#?}"
        );
        let deliveries = self.deliveries();
        let mut keys = HashSet::new();
        let mut seen = HashSet::new();
        for d in &deliveries {
            assert!(keys.insert(d.key.clone()), "key {} recorded twice", d.key);
            let about = format!(
                "{}/{}/{}",
                d.kind,
                d.data["event_id"].as_str().unwrap_or(""),
                d.data["lot_id"].as_str().unwrap_or("")
            );
            for r in &d.recipients {
                assert!(
                    seen.insert((about.clone(), r.clone(), d.text.clone())),
                    "{r} got {about} twice"
                );
            }
        }
    }
}

/// Serves one connection: requests one after another (keep-alive) until it closes.
async fn serve(mut conn: TcpStream, state: Arc<Mutex<State>>, stop: CancellationToken) {
    let mut buf = Vec::new();
    loop {
        let Some((head, body)) = read_request(&mut conn, &mut buf).await else {
            return;
        };
        let action = handle(&head, &body, &state);
        match action {
            Action::Answer {
                status,
                body,
                retry_after,
            } => {
                let mut out = format!(
                    "HTTP/1.1 {status} {}\r\ncontent-type: application/json; charset=utf-8\r\ncontent-length: {}\r\n",
                    reason(status),
                    body.len()
                );
                if let Some(ra) = retry_after {
                    out.push_str(&format!("retry-after: {ra}\r\n"));
                }
                out.push_str("\r\n");
                out.push_str(&body);
                if conn.write_all(out.as_bytes()).await.is_err() {
                    return;
                }
            }
            Action::Drop => return,
            Action::Hang => {
                state.lock().unwrap().hanging += 1;
                stop.cancelled().await;
                state.lock().unwrap().hanging -= 1;
                return;
            }
        }
    }
}

struct Head {
    method: String,
    path: String,
    headers: HashMap<String, String>,
}

/// Reads one request: the head up to the blank line, then `content-length` bytes of body.
async fn read_request(conn: &mut TcpStream, buf: &mut Vec<u8>) -> Option<(Head, Vec<u8>)> {
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i;
        }
        let mut chunk = [0u8; 8192];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head_text = String::from_utf8_lossy(&buf[..head_end]).into_owned();
    let mut lines = head_text.split("\r\n");
    let mut first = lines.next()?.split_whitespace();
    let method = first.next()?.to_owned();
    let path = first.next()?.to_owned();
    let headers: HashMap<String, String> = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    let len: usize = headers
        .get("content-length")
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let start = head_end + 4;
    while buf.len() < start + len {
        let mut chunk = [0u8; 65536];
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    let body = buf[start..start + len].to_vec();
    buf.drain(..start + len);
    Some((
        Head {
            method,
            path,
            headers,
        },
        body,
    ))
}

enum Action {
    Answer {
        status: u16,
        body: String,
        retry_after: Option<String>,
    },
    Drop,
    Hang,
}

fn errors(msgs: &[&str]) -> String {
    json!({ "errors": msgs }).to_string()
}

fn answer(status: u16, body: String) -> Action {
    Action::Answer {
        status,
        body,
        retry_after: None,
    }
}

fn handle(head: &Head, body: &[u8], state: &Mutex<State>) -> Action {
    let mut st = state.lock().unwrap();
    let parsed: Option<Value> = serde_json::from_slice(body).ok();
    let key = parsed
        .as_ref()
        .and_then(|b| b["idempotency_key"].as_str())
        .map(str::to_owned);
    let kind = parsed
        .as_ref()
        .and_then(|b| b["data"]["kind"].as_str())
        .map(str::to_owned);
    let recipients = parsed
        .as_ref()
        .and_then(|b| b["include_aliases"]["external_id"].as_array())
        .map_or(0, Vec::len);
    let (k, kd) = (key.clone(), kind.clone());
    let log = move |st: &mut State, handled: String| {
        st.requests.push(Request {
            at: Instant::now(),
            key: k.clone(),
            kind: kd.clone(),
            recipients,
            handled,
        })
    };

    // The key first, like OneSignal's edge: a bad key is a 403 whatever the body.
    if head.headers.get("authorization").map(String::as_str) != Some(&format!("Key {API_KEY}")) {
        log(&mut st, "403".into());
        return answer(403, errors(&[INVALID_API_KEY]));
    }
    let problems = check(head, parsed.as_ref());
    if !problems.is_empty() {
        log(&mut st, "violation".into());
        st.violations.extend(problems.iter().cloned());
        let msgs: Vec<&str> = problems.iter().map(String::as_str).collect();
        return answer(400, errors(&msgs));
    }
    let body = parsed.expect("checked");
    let key = key.expect("checked");
    let kind = kind.expect("checked");

    let fault = match st
        .faults
        .iter()
        .position(|(only, _)| only.as_ref().is_none_or(|k| *k == kind))
    {
        Some(i) => st.faults.remove(i).map(|(_, f)| f),
        None => None,
    };
    let before = |st: &mut State, f: &Fault| log(st, format!("fault:{f:?}"));
    match &fault {
        Some(f @ Fault::RateLimited(ra)) => {
            before(&mut st, f);
            return Action::Answer {
                status: 429,
                body: errors(&["API rate limit exceeded."]),
                retry_after: ra.clone(),
            };
        }
        Some(f @ Fault::Status(status)) => {
            before(&mut st, f);
            return answer(*status, errors(&["Service temporarily unavailable"]));
        }
        Some(f @ Fault::BadRequest(msg)) => {
            before(&mut st, f);
            return answer(400, errors(&[msg]));
        }
        Some(f @ Fault::Hang) => {
            before(&mut st, f);
            return Action::Hang;
        }
        Some(f @ Fault::Drop) => {
            before(&mut st, f);
            return Action::Drop;
        }
        _ => {}
    }

    // Create the notification, or answer a repeat like the first time.
    let (status, response, handled) = match st.answers.get(&key).cloned() {
        Some((first_body, status, response)) => {
            if first_body != body {
                st.violations
                    .push(format!("idempotency key {key} repeated with another body"));
            }
            (status, response, "repeat".to_owned())
        }
        None => {
            let ids: Vec<String> = body["include_aliases"]["external_id"]
                .as_array()
                .expect("checked")
                .iter()
                .map(|v| v.as_str().expect("checked").to_owned())
                .collect();
            let (reachable, unreachable): (Vec<String>, Vec<String>) = ids
                .into_iter()
                .partition(|id| !st.unsubscribed.contains(id));
            let (response, handled) = if reachable.is_empty() {
                (
                    json!({ "id": "", "errors": [NO_SUBSCRIBERS] }).to_string(),
                    "not_subscribed",
                )
            } else {
                let id = uuid::Uuid::new_v4().to_string();
                st.deliveries.push(Delivery {
                    key: key.clone(),
                    kind: kind.clone(),
                    recipients: reachable,
                    heading: body["headings"]["en"].as_str().unwrap_or("").to_owned(),
                    text: body["contents"]["en"].as_str().unwrap_or("").to_owned(),
                    data: body["data"].clone(),
                    id: id.clone(),
                });
                let response = if unreachable.is_empty() {
                    json!({ "id": id, "external_id": key })
                } else {
                    json!({ "id": id, "external_id": key,
                            "errors": { "invalid_aliases": { "external_id": unreachable } } })
                };
                (response.to_string(), "recorded")
            };
            st.answers
                .insert(key.clone(), (body.clone(), 200, response.clone()));
            (200, response, handled.to_owned())
        }
    };
    match fault {
        Some(f @ Fault::RecordThenDrop) => {
            log(&mut st, format!("{handled}+fault:{f:?}"));
            Action::Drop
        }
        Some(f @ Fault::RecordThenHang) => {
            log(&mut st, format!("{handled}+fault:{f:?}"));
            Action::Hang
        }
        Some(f @ Fault::RecordThenStatus(s)) => {
            log(&mut st, format!("{handled}+fault:{f:?}"));
            answer(s, errors(&["Internal server error"]))
        }
        _ => {
            log(&mut st, handled);
            answer(status, response)
        }
    }
}

/// Everything OneSignal (and our contract) requires of a Create Notification call.
fn check(head: &Head, body: Option<&Value>) -> Vec<String> {
    let mut p = Vec::new();
    if head.method != "POST" {
        p.push(format!("method {} (want POST)", head.method));
    }
    if head.path.split('?').next() != Some("/notifications") {
        p.push(format!("path {} (want /notifications)", head.path));
    }
    if !head
        .headers
        .get("content-type")
        .is_some_and(|c| c.starts_with("application/json"))
    {
        p.push(format!(
            "content-type {:?}",
            head.headers.get("content-type")
        ));
    }
    let Some(b) = body.filter(|b| b.is_object()) else {
        p.push("body is not a JSON object".into());
        return p;
    };
    if b["app_id"] != APP_ID {
        p.push(format!("app_id {}", b["app_id"]));
    }
    if b["target_channel"] != "push" {
        p.push(format!("target_channel {}", b["target_channel"]));
    }
    for other in [
        "included_segments",
        "excluded_segments",
        "filters",
        "include_subscription_ids",
        "include_player_ids",
        "include_external_user_ids",
        "include_email_tokens",
        "include_phone_numbers",
    ] {
        if b.get(other).is_some() {
            p.push(format!("{other} mixed with include_aliases"));
        }
    }
    match b["include_aliases"].as_object() {
        Some(aliases) if aliases.len() == 1 => {
            match aliases.get("external_id").and_then(Value::as_array) {
                Some(ids) => {
                    if ids.is_empty() || ids.len() > 2_000 {
                        p.push(format!(
                            "{} external ids in one request (1 to 2,000)",
                            ids.len()
                        ));
                    }
                    let distinct: HashSet<&str> = ids.iter().filter_map(Value::as_str).collect();
                    if distinct.len() != ids.len() {
                        p.push("external ids repeated or not strings".into());
                    }
                }
                None => p.push("include_aliases.external_id is not a list".into()),
            }
        }
        _ => p.push(format!("include_aliases {}", b["include_aliases"])),
    }
    for field in ["headings", "contents"] {
        if b[field]["en"].as_str().is_none_or(|s| s.trim().is_empty()) {
            p.push(format!("{field}.en missing"));
        }
    }
    match b["idempotency_key"].as_str().map(uuid::Uuid::parse_str) {
        Some(Ok(u))
            if matches!(u.get_version_num(), 3 | 4)
                && u.get_variant() == uuid::Variant::RFC4122
                && b["idempotency_key"].as_str() == Some(u.hyphenated().to_string().as_str()) => {}
        _ => p.push(format!(
            "idempotency_key {} is not a v3/v4 UUID",
            b["idempotency_key"]
        )),
    }
    let data = &b["data"];
    let is_uuid = |v: &Value| v.as_str().is_some_and(|s| uuid::Uuid::parse_str(s).is_ok());
    match data["kind"].as_str() {
        Some("event_starting") => {}
        Some("outbid" | "won") => {
            if !is_uuid(&data["lot_id"]) {
                p.push("data.lot_id missing".into());
            }
        }
        other => p.push(format!("data.kind {other:?}")),
    }
    if !is_uuid(&data["event_id"]) {
        p.push("data.event_id missing".into());
    }
    p
}

fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    }
}
