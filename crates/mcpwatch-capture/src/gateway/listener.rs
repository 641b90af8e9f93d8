//! The gateway's HTTP listener, bounded against slow and many clients: a header read timeout
//! (which also ends idle keep-alive connections), a cap on open connections and a cap per
//! source address. A connection over a cap gets a 503 written without reading its request,
//! and is closed, so the listen backlog never fills with them. (Request bodies are timed by
//! the handlers, which know when they read one.)
//!
//! It knows nothing of the gateway: [`serve`] takes any axum `Router` (with `ConnectInfo`
//! for its handlers) and [`ListenerLimits`], so `serve` could use it as it is, given a place
//! that both crates depend on.

use std::collections::HashMap;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::ConnectInfo;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Bounds on the connections one listener holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerLimits {
    /// A request's headers must arrive within this, and an idle connection ends after it.
    pub header_timeout: Duration,
    /// Open connections at most.
    pub max_connections: usize,
    /// Open connections from one source address at most.
    pub per_address: usize,
}

/// How long open connections get to finish after shutdown is asked.
const DRAIN: Duration = Duration::from_secs(2);

/// Open connections, in all and per address.
#[derive(Default)]
struct Counts {
    total: usize,
    by_address: HashMap<IpAddr, usize>,
}

/// One open connection's place in [`Counts`], given back on drop.
struct Slot {
    counts: Arc<Mutex<Counts>>,
    ip: IpAddr,
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut c = self.counts.lock().unwrap_or_else(|p| p.into_inner());
        c.total = c.total.saturating_sub(1);
        if let Some(n) = c.by_address.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                c.by_address.remove(&self.ip);
            }
        }
    }
}

/// Why a connection was not taken.
fn admit(
    counts: &Arc<Mutex<Counts>>,
    ip: IpAddr,
    limits: &ListenerLimits,
) -> Result<Slot, &'static str> {
    let mut c = counts.lock().unwrap_or_else(|p| p.into_inner());
    if c.total >= limits.max_connections {
        return Err("the gateway has as many connections open as it takes");
    }
    let mine = c.by_address.get(&ip).copied().unwrap_or(0);
    if mine >= limits.per_address {
        return Err("too many connections from your address");
    }
    c.total += 1;
    *c.by_address.entry(ip).or_insert(0) += 1;
    Ok(Slot {
        counts: counts.clone(),
        ip,
    })
}

/// Serves `app` on `listener` until `shutdown` resolves; then open connections get
/// [`DRAIN`] to finish and the rest are closed.
pub async fn serve(
    listener: TcpListener,
    app: axum::Router,
    limits: ListenerLimits,
    shutdown: impl Future<Output = ()>,
) {
    let counts = Arc::new(Mutex::new(Counts::default()));
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut conns = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            Some(_) = conns.join_next(), if !conns.is_empty() => {}
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => match admit(&counts, peer.ip(), &limits) {
                    Ok(slot) => {
                        conns.spawn(connection(stream, peer, app.clone(), limits, slot, stop_rx.clone()));
                    }
                    Err(why) => refuse(stream, why),
                },
                Err(e) => {
                    // Out of file descriptors, most likely: give connections time to end.
                    tracing::warn!("mcpwatch gateway: cannot accept a connection: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
        }
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained =
        tokio::time::timeout(DRAIN, async { while conns.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::info!("mcpwatch gateway: closing streams still open at shutdown");
        conns.shutdown().await;
    }
}

/// A 503 for a connection over a cap, written if the socket takes it at once; then closed.
fn refuse(stream: TcpStream, why: &str) {
    let body = format!("{{\"error\":\"{why}; try again shortly\"}}");
    let answer = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\ncontent-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let _ = stream.try_write(answer.as_bytes());
}

async fn connection(
    stream: TcpStream,
    peer: SocketAddr,
    app: axum::Router,
    limits: ListenerLimits,
    _slot: Slot,
    mut stop: watch::Receiver<bool>,
) {
    let _ = stream.set_nodelay(true);
    let service = TowerToHyperService::new(app.layer(axum::Extension(ConnectInfo(peer))));
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout);
    let conn = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => return,
        _ = stop.wait_for(|s| *s) => conn.as_mut().graceful_shutdown(),
    }
    let _ = conn.await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connections_are_capped_in_all_and_per_address_and_slots_come_back() {
        let limits = ListenerLimits {
            header_timeout: Duration::from_secs(1),
            max_connections: 3,
            per_address: 2,
        };
        let counts = Arc::new(Mutex::new(Counts::default()));
        let (a, b): (IpAddr, IpAddr) = ([10, 0, 0, 1].into(), [10, 0, 0, 2].into());
        let a1 = admit(&counts, a, &limits).expect("first");
        let _a2 = admit(&counts, a, &limits).expect("second");
        assert_eq!(
            admit(&counts, a, &limits).err(),
            Some("too many connections from your address")
        );
        let _b1 = admit(&counts, b, &limits).expect("another address");
        assert_eq!(
            admit(&counts, b, &limits).err(),
            Some("the gateway has as many connections open as it takes")
        );
        drop(a1);
        assert!(
            admit(&counts, b, &limits).is_ok(),
            "a closed connection frees its slot"
        );
    }
}
