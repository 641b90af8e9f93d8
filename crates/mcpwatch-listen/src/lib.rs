//! The HTTP/1.1 listener `mcpwatch serve` and `mcpwatch gateway` share, hardened against slow and
//! greedy clients: a header read timeout (which also closes idle keep-alive connections), a
//! deadline for the whole request body, a cap on open connections and a cap per address.
//!
//! `axum::serve` has none of these (its hyper builder has no timer, so hyper's own header
//! timeout never fires), and a few thousand half-open connections exhaust the file descriptors.
//! Here each accepted connection first takes a [`gate::Permit`]; one that cannot is answered
//! `503` (collector full) or `429` (this address full) and closed at once, without reading, so a
//! flood costs an accept and a write, never a task that waits. Handlers see the peer as
//! `axum::extract::ConnectInfo<SocketAddr>`, as with `into_make_service_with_connect_info`.
//!
//! Architecture Invariant: open connections never exceed `max_connections`, and a connection
//! that has not sent a whole request head within `header_read_timeout` is closed.

#![forbid(unsafe_code)]

pub mod body;
pub mod gate;

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::extract::ConnectInfo;
use axum::Router;
use hyper::body::Incoming;
use hyper::Request;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpStream};
use tower::ServiceExt;

pub use body::{BodyTimeout, DeadlineBody};
pub use gate::{Gate, Refusal};

/// How long and how many: the bounds a listener keeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// A connection must deliver a whole request head within this, also while idle between
    /// requests; otherwise it is closed.
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this of its head; otherwise reading it fails.
    pub body_read_timeout: Duration,
    /// Most connections open at once.
    pub max_connections: usize,
    /// Most connections open at once from one address (an IPv6 /64 counts as one).
    pub max_connections_per_address: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_connections_per_address: 128,
        }
    }
}

/// What a listener has turned away, for logs and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Connections refused because `max_connections` were open.
    pub refused_full: AtomicU64,
    /// Connections refused because their address had `max_connections_per_address` open.
    pub refused_address: AtomicU64,
}

/// Serves `app` on `listener` within `limits` until `shutdown` resolves, then lets open
/// requests finish. Wrap the returned future in a timeout to bound the wait for those; dropping
/// it closes the connections still open.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    limits: Limits,
    stats: Arc<Stats>,
    shutdown: impl Future<Output = ()> + Send,
) {
    let gate = Gate::new(limits.max_connections, limits.max_connections_per_address);
    let graceful = GracefulShutdown::new();
    // Connections are owned here: when the caller gives up waiting and drops this future, the
    // ones still open (live streams never end by themselves) are cut with it, and what they
    // hold (a subscription to the pipeline, say) is released.
    let mut conns = tokio::task::JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        while conns.try_join_next().is_some() {}
        let (stream, peer) = tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(a) => a,
                Err(e) => {
                    // Out of descriptors or memory: let some connections close before retrying.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let permit = match gate.admit(peer.ip()) {
            Ok(p) => p,
            Err(why) => {
                refuse(&stream, why, &stats);
                continue;
            }
        };
        let conn = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .serve_connection(TokioIo::new(stream), service(app.clone(), peer, limits));
        let conn = graceful.watch(conn);
        conns.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %peer, "connection ended with an error");
            }
            drop(permit);
        });
    }
    drop(listener);
    graceful.shutdown().await;
}

/// The per-connection service: the peer address in the extensions, the body under a deadline.
fn service(
    app: Router,
    peer: SocketAddr,
    limits: Limits,
) -> impl hyper::service::Service<
    Request<Incoming>,
    Response = axum::response::Response,
    Error = std::convert::Infallible,
    Future = impl Future<Output = Result<axum::response::Response, std::convert::Infallible>> + Send,
> + Clone {
    hyper::service::service_fn(move |req: Request<Incoming>| {
        let mut req =
            req.map(|b| axum::body::Body::new(DeadlineBody::new(b, limits.body_read_timeout)));
        req.extensions_mut().insert(ConnectInfo(peer));
        app.clone().oneshot(req)
    })
}

/// Answers a connection that cannot be admitted and closes it, without waiting on the client.
fn refuse(stream: &TcpStream, why: Refusal, stats: &Stats) {
    let (counter, answer): (&AtomicU64, &[u8]) = match why {
        Refusal::Full => (
            &stats.refused_full,
            b"HTTP/1.1 503 Service Unavailable\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        ),
        Refusal::AddressFull => (
            &stats.refused_address,
            b"HTTP/1.1 429 Too Many Requests\r\nretry-after: 1\r\nconnection: close\r\ncontent-length: 0\r\n\r\n",
        ),
    };
    let n = counter.fetch_add(1, Ordering::Relaxed);
    if n.is_power_of_two() || n == 0 {
        tracing::warn!(refused = n + 1, reason = ?why, "refusing connections: too many open");
    }
    // A fresh socket's send buffer is empty, so this does not block; if it fails, closing says enough.
    let _ = stream.try_write(answer);
}
