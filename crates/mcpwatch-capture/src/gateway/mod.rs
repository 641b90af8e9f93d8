//! `mcpwatch gateway`: a Streamable HTTP proxy in front of one or more MCP servers, with
//! authentication, policy and rate limits, its sessions tracked like `wrap`'s.
//!
//! Wiring, inside out: [`config`] builds the [`auth`], [`policy`] and [`limits`] parts; the
//! [`monitor`] runs on its own thread (like `wrap`'s parser, see [`crate::wrap`]) with the
//! [`delivery`](crate::delivery) worker beside it; the [`proxy`] (axum in front, reqwest to the
//! upstreams) serves `/mcp/{name}` and hands copies of every body and stream chunk to the
//! monitor without waiting; [`batch`] judges each message of a body (policy, per-tool limits)
//! and [`rewrite`] changes what the client gets back (list filtering, the gateway's own errors
//! merged into a batch's answer). [`sse`] splits event streams for the proxy and the monitor.
//!
//! Architecture Invariant: the proxy never waits on the monitoring; a full tap queue drops the
//! copy (counted, reported as an event), never the request.

pub mod auth;
mod batch;
pub mod config;
pub mod limits;
pub mod listener;
mod login;
pub mod monitor;
pub mod owners;
pub mod policy;
#[cfg(test)]
mod properties;
pub mod proxy;
mod refuse;
mod rewrite;
mod server_requests;
pub mod sse;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::AtomicU64;
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::Redactor;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::classify::ClassificationConfig;
use crate::delivery::DeliveryConfig;
use crate::error::CaptureError;
use crate::health::CaptureHealth;
pub use config::{Built, GatewayConfig};
use monitor::{Monitor, MonitorConfig};
use proxy::Shared;

/// Everything the gateway runs with, resolved by the CLI.
pub struct GatewayRun {
    /// Upstreams, auth, policy, limits.
    pub built: Built,
    /// Sizes and times.
    pub limits: config::LimitsSection,
    /// Where events go.
    pub delivery: DeliveryConfig,
    /// Where pins and the spool live (`None`: memory only, no spool).
    pub data_dir: Option<PathBuf>,
    /// Which data is sensitive.
    pub classification: ClassificationConfig,
    /// Removes secrets from events.
    pub redactor: Redactor,
}

/// Copies waiting for the monitor at most.
const TAP_QUEUE: usize = 65_536;

/// Serves on `listener` until `shutdown` resolves, then ends the sessions and flushes events.
pub async fn serve(
    listener: TcpListener,
    run: GatewayRun,
    clock: SharedClock,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), CaptureError> {
    let health = Arc::new(CaptureHealth::default());
    let mut delivery = run.delivery.clone();
    delivery.spool_dir = run
        .data_dir
        .as_ref()
        .map(|d| d.join("spool").join("gateway"));
    let (events_tx, worker) = delivery.build(health.clone())?;
    let monitor_cfg = MonitorConfig {
        max_sessions: run.limits.max_sessions.max(1),
        request_timeout: run.limits.request_timeout(),
        session_idle: Duration::from_secs(run.limits.session_idle_secs.max(1)),
        max_body: run.limits.max_body_bytes,
        classification: run.classification,
        redactor: run.redactor,
        pins_dir: run.data_dir.as_ref().map(|d| d.join("pins")),
        queue: TAP_QUEUE,
        health_interval: crate::wrap::env_duration(
            "MCPWATCH_HEALTH_INTERVAL",
            crate::wrap::HEALTH_INTERVAL,
        ),
    };
    let (taps, monitor) = Monitor::new(monitor_cfg, clock.clone(), events_tx, health);
    let grace = run.delivery.shutdown_grace + Duration::from_secs(1);
    let (monitor_done_tx, monitor_done) = oneshot::channel();
    // Normal priority: see `wrap`'s module docs.
    crate::wrap::start_monitor(0, move || async move {
        let delivered = tokio::spawn(worker.run());
        monitor.run().await;
        let _ = tokio::time::timeout(grace, delivered).await;
        let _ = monitor_done_tx.send(());
    })?;

    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(Duration::from_secs(5))
        .pool_max_idle_per_host(256)
        .tcp_nodelay(true)
        .build()
        .map_err(|e| CaptureError::Config(format!("cannot build the upstream HTTP client: {e}")))?;
    let built = run.built;
    let shared = Arc::new(Shared {
        upstreams: built
            .upstreams
            .into_iter()
            .map(|(name, url)| {
                let shared_name: Arc<str> = Arc::from(name.as_str());
                (name, (shared_name, url))
            })
            .collect(),
        auth: built.auth,
        policy: Arc::new(built.policy),
        limiter: built.limiter,
        client,
        taps,
        clock,
        max_body: run.limits.max_body_bytes,
        next_id: AtomicU64::new(1),
        owners: owners::SessionOwners::new(run.limits.max_sessions.max(1)),
        failures: login::FailureThrottle::default(),
        body_timeout: Duration::from_secs(run.limits.body_read_timeout_secs.max(1)),
    });
    // Open SSE streams would hold a graceful shutdown forever: the listener gives them a
    // moment, then closes them.
    listener::serve(
        listener,
        proxy::router(shared),
        run.limits.listener(),
        shutdown,
    )
    .await;
    // The router (and with it the last tap sender) is gone: the monitor ends the sessions.
    let _ = tokio::time::timeout(grace + Duration::from_secs(5), monitor_done).await;
    Ok(())
}
