//! Shared harness of the gateway's in-process tests: the gateway as `mcpwatch gateway` runs
//! it, a collector that keeps what it is sent, and a listener for test upstreams.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use mcpwatch_capture::delivery::DeliveryConfig;
use mcpwatch_capture::gateway::config::LimitsSection;
use mcpwatch_capture::gateway::{Built, GatewayRun};
use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::SystemClock;
use serde_json::Value;

/// Serves `app` on a free loopback port; its address.
pub async fn listen(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

/// The gateway as `mcpwatch gateway` runs it, delivering to `collector`; its address.
pub async fn start_gateway(
    built: Built,
    collector: SocketAddr,
    limits: LimitsSection,
) -> SocketAddr {
    start_gateway_at(built, collector, limits, Arc::new(SystemClock)).await
}

/// [`start_gateway`] on a clock of the test's choosing.
pub async fn start_gateway_at(
    built: Built,
    collector: SocketAddr,
    limits: LimitsSection,
    clock: SharedClock,
) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw = listener.local_addr().expect("addr");
    let run = GatewayRun {
        built,
        limits,
        delivery: DeliveryConfig::new(format!("http://{collector}")),
        data_dir: None,
        classification: Default::default(),
        redactor: Default::default(),
    };
    tokio::spawn(mcpwatch_capture::gateway::serve(
        listener,
        run,
        clock,
        std::future::pending::<()>(),
    ));
    gw
}

/// Events the collector got.
pub type Seen = Arc<Mutex<Vec<Value>>>;

/// A collector that keeps every event it is sent.
pub async fn collector() -> (SocketAddr, Seen) {
    let seen: Seen = Arc::default();
    let collected = seen.clone();
    let addr = listen(axum::Router::new().route(
        "/api/v1/events",
        axum::routing::post(move |body: Bytes| {
            let collected = collected.clone();
            async move {
                let events: Vec<Value> = serde_json::from_slice(&body).expect("event batch");
                let n = events.len();
                collected.lock().expect("lock").extend(events);
                let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
                (
                    axum::http::StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({"accepted": n, "ids": ids})),
                )
            }
        }),
    ))
    .await;
    (addr, seen)
}

/// Waits (20 s at most) until `count` events satisfy `pick`; returns how many do.
pub async fn await_events(seen: &Seen, count: usize, pick: impl Fn(&Value) -> bool) -> usize {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let n = seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| pick(e))
            .count();
        if n >= count || Instant::now() > deadline {
            return n;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
