//! `GET /ws`: the apps' WebSocket, on a lean layer of its own.
//!
//! warp serves every other route; this upgrade is answered by the edge's own server
//! ([`crate::server`]) so the socket runs on tokio-tungstenite with a 4 KiB read buffer (warp's
//! WebSocket keeps 128 KiB per socket). An idle watcher then costs about 10 KiB of edge memory
//! (`gavel bench fanout`). hyper-util's auto server hands the upgrade over in a wrapper of its
//! own, so the socket runs over hyper's upgraded connection; [`start`] would take the bare TCP
//! stream when a server gives it back (a plain HTTP/1 server does, but it then keeps hyper's
//! 8 KiB read buffer alive unless that is dropped first).
//!
//! Each socket is one task: it reads client frames and writes what its queue holds, several
//! frames per socket write when they pile up. It never waits on another socket; the hub marks
//! it slow when its queue overflows and it closes itself with 1008.

use crate::auth::Caller;
use crate::error::ApiErr;
use crate::live::{self, Conn, Ending, MAX_QUEUED_FRAMES};
use crate::State;
use futures::{SinkExt, StreamExt};
use schemas::frames::{
    parse_client_frame, BidResult, ClientFrame, ErrorCode, FrameError, ServerFrame, MAX_FRAME_BYTES,
};
use schemas::lot::RejectReason;
use schemas::{EventId, LotId};
use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::tungstenite::error::{CapacityError, Error as WsError};
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::{CloseFrame, Role, WebSocketConfig};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::WebSocketStream;
use warp::http::{header, HeaderMap, HeaderValue, Request, StatusCode};
use warp::reply::Response;
use warp::Reply;

/// How long a socket may leave written frames unread before it is closed (1008).
const STALL: Duration = Duration::from_secs(10);
/// Most frames written per socket write.
const MAX_BATCH: usize = 64;

/// The socket's buffers: 4 KiB to read (client frames are small), writes gathered up to 16 KiB
/// before they go out, and the protocol's frame limit.
fn config() -> WebSocketConfig {
    WebSocketConfig::default()
        .read_buffer_size(4 * 1024)
        .write_buffer_size(16 * 1024)
        .max_write_buffer_size(MAX_QUEUED_FRAMES * 1024 + live::MAX_QUEUED_BYTES)
        .max_message_size(Some(MAX_FRAME_BYTES))
        .max_frame_size(Some(MAX_FRAME_BYTES))
}

/// Answers an upgrade request: checks it is a WebSocket handshake, its `Origin` and its token,
/// then switches protocols and hands the connection to a socket task.
pub(crate) fn upgrade<B>(state: Arc<State>, mut req: Request<B>) -> Response {
    match check(&state, &req) {
        Ok((caller, key)) => {
            let on_upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                match on_upgrade.await {
                    Ok(upgraded) => start(state, caller, upgraded).await,
                    Err(e) => tracing::debug!(error = %e, "upgrade failed"),
                }
            });
            let mut res = warp::reply().into_response();
            *res.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
            let h = res.headers_mut();
            h.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
            h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
            h.insert(
                header::SEC_WEBSOCKET_ACCEPT,
                HeaderValue::from_str(&derive_accept_key(key.as_bytes()))
                    .expect("base64 is a valid header value"),
            );
            res
        }
        Err(e) => e.into_response(),
    }
}

/// The caller and the handshake key of a valid upgrade request.
fn check<B>(state: &State, req: &Request<B>) -> Result<(Caller, String), ApiErr> {
    let h = req.headers();
    let is = |name: header::HeaderName, want: &str| {
        h.get_all(name).iter().any(|v| {
            v.to_str().is_ok_and(|v| {
                v.split(',')
                    .any(|part| part.trim().eq_ignore_ascii_case(want))
            })
        })
    };
    if req.method() != warp::http::Method::GET
        || !is(header::CONNECTION, "upgrade")
        || !is(header::UPGRADE, "websocket")
        || !is(header::SEC_WEBSOCKET_VERSION, "13")
    {
        return Err(ApiErr::Invalid(
            "/ws takes a WebSocket upgrade (GET, Upgrade: websocket, version 13)".into(),
        ));
    }
    let key = h
        .get(header::SEC_WEBSOCKET_KEY)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiErr::Invalid("missing Sec-WebSocket-Key".into()))?
        .to_owned();
    if let Some(origin) = h.get(header::ORIGIN) {
        let ok = origin
            .to_str()
            .is_ok_and(|o| state.allowed_origins.iter().any(|a| a == o));
        if !ok {
            return Err(ApiErr::Forbidden("this origin may not open a WebSocket"));
        }
    }
    let caller = state
        .tokens
        .caller(token_of(h, req.uri().query()).as_deref())?;
    Ok((caller, key))
}

/// The bearer token from the header, else `?token=` (browsers cannot set headers on sockets),
/// as an `Authorization` value.
fn token_of(h: &HeaderMap, query: Option<&str>) -> Option<String> {
    if let Some(v) = h.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        return Some(v.to_owned());
    }
    let query = query?;
    url_token(query).map(|t| format!("Bearer {t}"))
}

fn url_token(query: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=')?;
        (k == "token").then(|| v.to_owned())
    })
}

/// Runs the socket over the bare TCP stream when the upgrade gives it back, else over hyper's
/// upgraded connection (what hyper-util's auto server gives).
async fn start(state: Arc<State>, caller: Caller, upgraded: hyper::upgrade::Upgraded) {
    use hyper_util::rt::TokioIo;
    match upgraded.downcast::<TokioIo<tokio::net::TcpStream>>() {
        Ok(parts) => {
            let tcp = parts.io.into_inner();
            let ws = if parts.read_buf.is_empty() {
                WebSocketStream::from_raw_socket(tcp, Role::Server, Some(config())).await
            } else {
                WebSocketStream::from_partially_read(
                    tcp,
                    parts.read_buf.to_vec(),
                    Role::Server,
                    Some(config()),
                )
                .await
            };
            socket(ws, state, caller).await
        }
        Err(upgraded) => {
            let ws = WebSocketStream::from_raw_socket(
                TokioIo::new(upgraded),
                Role::Server,
                Some(config()),
            )
            .await;
            socket(ws, state, caller).await
        }
    }
}

/// Why the edge ends a socket.
type Close = Option<(CloseCode, &'static str)>;

const TOO_SLOW: (CloseCode, &str) = (CloseCode::Policy, "too slow: frames were waiting");
const STOPPING: (CloseCode, &str) = (CloseCode::Away, "the edge is stopping");

fn close_for(ending: Ending) -> Close {
    Some(match ending {
        Ending::Slow => TOO_SLOW,
        Ending::Stopping => STOPPING,
    })
}

async fn socket<S>(mut ws: WebSocketStream<S>, state: Arc<State>, caller: Caller)
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let hub = state.hub.clone();
    let conn = hub.connect(caller.user);
    let mut subscribed: HashSet<EventId> = HashSet::new();
    let close: Close = loop {
        tokio::select! {
            biased;
            // Frames to write, or the hub says the socket must end (it fell behind, or the
            // edge is stopping): either way the flag is read here, first.
            _ = conn.ready() => {
                if let Some(ending) = conn.ending() {
                    break close_for(ending);
                }
                match write_queued(&mut ws, &conn).await {
                    Written::Yes => {}
                    Written::Failed => break None,
                    Written::Stalled => {
                        hub.metrics.dropped.with_label_values(&["stalled"]).inc();
                        break None;
                    }
                    // Stuck in a write when it had to end: the close frame goes after what is
                    // already on its way, if the client ever reads it.
                    Written::Ending(ending) => break close_for(ending),
                }
            }
            msg = ws.next() => match msg {
                None => break None,
                Some(Ok(Message::Text(text))) => {
                    // Boxed: its Postgres read would otherwise sit in every idle socket's task.
                    Box::pin(read_frame(&state, &conn, &mut subscribed, text.as_str())).await;
                }
                Some(Ok(Message::Binary(_))) => {
                    push(&conn, &error(ErrorCode::BadFrame, "frames are JSON text, not binary"));
                }
                Some(Ok(Message::Close(_))) => {
                    let _ = ws.flush().await;
                    break None;
                }
                Some(Ok(_)) => {} // pings are answered by tungstenite
                Some(Err(WsError::Capacity(CapacityError::MessageTooLong { .. }))) => {
                    hub.metrics.dropped.with_label_values(&["too_large"]).inc();
                    break Some((CloseCode::Size, "frames are at most 16384 bytes"));
                }
                Some(Err(WsError::Protocol(_))) | Some(Err(WsError::Utf8(_))) => {
                    break Some((CloseCode::Protocol, "not a valid WebSocket frame"));
                }
                Some(Err(_)) => break None,
            }
        }
    };
    if let Some((code, reason)) = close {
        let frame = CloseFrame {
            code,
            reason: reason.into(),
        };
        // A slow client gets as long to take its close frame as it had to read at all.
        let grace = if code == CloseCode::Policy {
            STALL
        } else {
            Duration::from_secs(1)
        };
        let _ = tokio::time::timeout(grace, ws.close(Some(frame))).await;
    }
    for event in subscribed {
        hub.leave(event, &conn);
    }
    hub.disconnect(&conn);
}

/// How a write of the queued frames went.
enum Written {
    Yes,
    Failed,
    /// The client read nothing for [`STALL`].
    Stalled,
    /// The socket must end while the write waits.
    Ending(Ending),
}

/// Writes what is queued. Most writes finish at once (the kernel takes them); only one that
/// waits on the client gets a [`STALL`] timer and listens for the alarm.
async fn write_queued<S>(ws: &mut WebSocketStream<S>, conn: &Conn) -> Written
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let write = write_batch(ws, conn);
    tokio::pin!(write);
    let done = match futures::poll!(&mut write) {
        std::task::Poll::Ready(done) => done,
        std::task::Poll::Pending => tokio::select! {
            biased;
            done = &mut write => done,
            ending = conn.alarm() => return Written::Ending(ending),
            _ = tokio::time::sleep(STALL) => return Written::Stalled,
        },
    };
    match done {
        Ok(()) => Written::Yes,
        Err(_) => Written::Failed,
    }
}

/// Writes what is queued (up to [`MAX_BATCH`] frames, taken with one lock) with one flush.
async fn write_batch<S>(ws: &mut WebSocketStream<S>, conn: &Conn) -> Result<(), WsError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    for frame in conn.take(MAX_BATCH) {
        ws.feed(Message::Text(frame)).await?;
    }
    ws.flush().await
}

fn push(conn: &Conn, frame: &ServerFrame) {
    conn.push(&live::encode(frame));
}

fn error(code: ErrorCode, message: impl Into<String>) -> ServerFrame {
    ServerFrame::Error {
        code,
        message: message.into(),
    }
}

/// Acts on one client frame. Every bad frame gets its documented answer; the socket stays.
async fn read_frame(
    state: &Arc<State>,
    conn: &Arc<Conn>,
    subscribed: &mut HashSet<EventId>,
    text: &str,
) {
    let hub = &state.hub;
    match parse_client_frame(text) {
        Ok(ClientFrame::Subscribe { event_id }) => {
            match store::views::event(&state.pool, event_id).await {
                Ok(Some(e)) if e.status != "draft" => {}
                Ok(_) => {
                    return push(conn, &error(ErrorCode::NotFound, "no such event"));
                }
                // The room retries its own read; the client is not refused for our fault.
                Err(e) => tracing::warn!(error = %e, "event unreadable at subscribe"),
            }
            if !subscribed.insert(event_id) {
                // Subscribing again asks for a fresh snapshot.
                hub.leave(event_id, conn);
            }
            hub.join(event_id, conn);
        }
        Ok(ClientFrame::Unsubscribe { event_id }) => {
            if subscribed.remove(&event_id) {
                hub.leave(event_id, conn);
            } else {
                push(
                    conn,
                    &error(ErrorCode::NotSubscribed, "not subscribed to that event"),
                );
            }
        }
        Ok(ClientFrame::Ping { t }) => push(
            conn,
            &ServerFrame::Pong {
                t,
                server_time: schemas::now_ms(),
            },
        ),
        Ok(ClientFrame::Bid {
            lot_id,
            amount,
            seen_high,
            idem,
        }) => {
            if state
                .bid_limiter
                .as_ref()
                .is_some_and(|l| !l.allow(conn.user))
            {
                let r = live::refused(idem, lot_id, RejectReason::RateLimited);
                hub.count(&r);
                return push(conn, &ServerFrame::BidResult(r));
            }
            let state = state.clone();
            let conn = conn.clone();
            tokio::spawn(async move {
                let user = conn.user;
                match state
                    .hub
                    .place_bid(user, lot_id, amount.get(), seen_high, idem)
                    .await
                {
                    Ok(r) => push(&conn, &ServerFrame::BidResult(r)),
                    Err(e) => push(&conn, &error(ErrorCode::Unavailable, e.to_string())),
                }
            });
        }
        Err(FrameError::BadFrame(m)) => push(conn, &error(ErrorCode::BadFrame, m)),
        Err(FrameError::UnknownType(t)) => push(
            conn,
            &error(ErrorCode::UnknownType, format!("unknown frame type {t:?}")),
        ),
        Err(FrameError::InvalidBid {
            idem,
            lot_id,
            message,
        }) => {
            tracing::debug!(%message, "invalid bid");
            let r: BidResult = live::refused(
                idem,
                lot_id.unwrap_or(LotId(uuid::Uuid::nil())),
                RejectReason::Invalid,
            );
            hub.count(&r);
            push(conn, &ServerFrame::BidResult(r));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_comes_from_the_header_first_then_the_query() {
        let mut h = HeaderMap::new();
        assert_eq!(
            token_of(&h, Some("a=1&token=abc")),
            Some("Bearer abc".into())
        );
        assert_eq!(token_of(&h, Some("a=1")), None);
        assert_eq!(token_of(&h, None), None);
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_static("Bearer xyz"),
        );
        assert_eq!(token_of(&h, Some("token=abc")), Some("Bearer xyz".into()));
    }
}
