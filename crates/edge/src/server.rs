//! The edge's HTTP server: hyper, with warp's routes as the service for everything but `/ws`,
//! which [`crate::ws`] upgrades itself. Running hyper here (rather than `warp::serve`) is what
//! lets the socket leave warp's WebSocket and its 128 KiB buffer behind.

use crate::ws;
use crate::State;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tower_service::Service as _;
use warp::reply::Response;
use warp::Filter;

/// The client's address, put on every request (warp's own is private to `warp::serve`).
#[derive(Clone, Copy, Debug)]
pub(crate) struct ClientAddr(pub(crate) SocketAddr);

/// `ClientAddr` as a filter.
pub(crate) fn client_addr(
) -> impl Filter<Extract = (Option<SocketAddr>,), Error = std::convert::Infallible> + Clone {
    warp::ext::optional::<ClientAddr>().map(|a: Option<ClientAddr>| a.map(|a| a.0))
}

/// The kernel send buffer of each connection (Linux doubles it for its bookkeeping).
const SEND_BUFFER: usize = 64 * 1024;

type Answer = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

/// Serves until `shutdown`, then stops accepting and waits up to `drain` for HTTP requests in
/// flight (sockets close themselves on the same signal).
pub(crate) async fn serve<F>(
    listener: TcpListener,
    filter: F,
    state: Arc<State>,
    shutdown: tokio_util::sync::CancellationToken,
    drain: Duration,
) where
    F: Filter<Extract = (Response,), Error = Infallible> + Clone + Send + Sync + 'static,
{
    let graceful = GracefulShutdown::new();
    loop {
        let (tcp, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(pair) => pair,
                Err(e) => {
                    // Out of file descriptors and the like: back off instead of spinning.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        // Frames are small and latency is the product.
        let _ = tcp.set_nodelay(true);
        // A bounded kernel send buffer: what a client has not read stays in the edge's queue,
        // where the protocol's limits (1,000 frames, 1 MiB) can see it and close a slow socket,
        // instead of megabytes hiding in the kernel.
        let _ = socket2::SockRef::from(&tcp).set_send_buffer_size(SEND_BUFFER);
        let warp_svc = warp::service(filter.clone());
        let state = state.clone();
        let service =
            hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
                req.extensions_mut().insert(ClientAddr(addr));
                if req.uri().path() == "/ws" {
                    let res = ws::upgrade(state.clone(), req);
                    Box::pin(async move { Ok(res) }) as Answer
                } else {
                    let mut svc = warp_svc.clone();
                    Box::pin(svc.call(req)) as Answer
                }
            });
        let conn = auto::Builder::new(TokioExecutor::new())
            .serve_connection_with_upgrades(TokioIo::new(tcp), service)
            .into_owned();
        let conn = graceful.watch(conn);
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "http connection ended with an error");
            }
        });
    }
    drop(listener);
    if tokio::time::timeout(drain, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!("edge drain deadline passed; requests cut off");
    }
}
