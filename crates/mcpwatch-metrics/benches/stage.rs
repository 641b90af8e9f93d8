//! Cost of the metrics stage's `on_commit` per event, on a realistic mix (70 % tool
//! executions over 20 tools and 3 servers, 20 % request_performance, 10 % security events),
//! with the per-user label off and on, side by side. Run: `cargo bench -p mcpwatch-metrics`.

use std::sync::Arc;
use std::time::Instant;

use mcpwatch_core::{Event, Level, SystemClock, Timestamp};
use mcpwatch_metrics::{DetectorHealth, Metrics, MetricsConfig, Sources};
use mcpwatch_server::Stage;
use mcpwatch_store::PreparedEvent;
use serde_json::json;

fn event(category: &str, event_type: &str, metadata: serde_json::Value) -> Event {
    Event {
        id: "e".into(),
        timestamp: Timestamp::from_micros(1_800_000_000_000_000),
        level: Level::Info,
        category: category.into(),
        source: "wrap:fs".into(),
        event_type: event_type.into(),
        message: String::new(),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        tags: vec![],
    }
}

fn mix(n: usize) -> Vec<PreparedEvent> {
    let outcomes = [
        "success",
        "success",
        "success",
        "success",
        "tool_error",
        "rpc_error",
    ];
    (0..n)
        .map(|i| {
            let server = format!("server-{}", i % 3);
            let user = format!("user-{}", i % 500);
            let e = match i % 10 {
                0..=6 => {
                    let outcome = outcomes[i % outcomes.len()];
                    event("tool_execution", "execution_complete", json!({
                        "server": server, "tool_name": format!("tool-{}", i % 20), "outcome": outcome,
                        "success": outcome == "success", "execution_time": (i % 100) as f64 / 1000.0,
                        "user_id": user, "execution_id": "x", "error_code": -32602}))
                }
                7 | 8 => event("performance", "request_performance", json!({
                    "server": server, "method": if i % 2 == 0 { "tools/call" } else { "tools/list" },
                    "outcome": "success", "success": true, "response_time": 0.01, "request_id": "1"})),
                _ => event("security", "authentication", json!({"user_id": user, "result": "failure"})),
            };
            PreparedEvent { event: e, body: String::new() }
        })
        .collect()
}

fn ns_per_event(per_user: bool, batch: &[PreparedEvent], rounds: usize) -> f64 {
    let settings = MetricsConfig {
        per_user,
        host_interval: std::time::Duration::ZERO,
        ..MetricsConfig::default()
    }
    .build()
    .expect("valid");
    let mut m = Metrics::build(
        &settings,
        Sources {
            clock: Arc::new(SystemClock),
            reader: None,
            detector: Arc::new(DetectorHealth::default()),
            data_dir: std::env::temp_dir(),
            otlp: None,
            extra: Vec::new(),
        },
    );
    let mut emit = Vec::new();
    m.stage.on_commit(batch, &mut emit); // warm the caches
    let start = Instant::now();
    for _ in 0..rounds {
        m.stage.on_commit(batch, &mut emit);
    }
    start.elapsed().as_nanos() as f64 / (rounds * batch.len()) as f64
}

fn main() {
    let batch = mix(10_000);
    let rounds = 100;
    let off = ns_per_event(false, &batch, rounds);
    let on = ns_per_event(true, &batch, rounds);
    println!(
        "metrics on_commit, {} events x {rounds} rounds",
        batch.len()
    );
    println!("  per_user off: {off:8.1} ns/event");
    println!("  per_user on:  {on:8.1} ns/event   ({:.2}x)", on / off);
}
