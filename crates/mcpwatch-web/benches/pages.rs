//! Server time of every dashboard page over a store of 10 million events (SPEC 11: ≤ 100 ms).
//!
//! Builds the store once (events shaped like the recorded trace in
//! `crates/mcpwatch/tests/fixtures/replay/attacks.jsonl`, spread over 7 days, 50 users, 5
//! servers, 20 tools) under `$MCPWATCH_BENCH_DIR` (default: a temp dir, removed after), then
//! renders each page through the router, as `serve` does, and prints the median and the worst
//! of several runs. Not run in CI: `cargo bench -p mcpwatch-web --bench pages`.
//! `MCPWATCH_BENCH_EVENTS` changes the size.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use mcpwatch_core::auth::Authenticator;
use mcpwatch_core::clock::{ManualClock, SharedClock};
use mcpwatch_core::config::{AuthConfig, Config};
use mcpwatch_core::{Event, Redactor, Timestamp};
use mcpwatch_server::{Pipeline, PipelineConfig};
use mcpwatch_store::sqlite::SqliteStore;
use mcpwatch_store::{PreparedEvent, RetentionPolicy, Store};
use tower::ServiceExt;

const DAYS: i64 = 7;
const BATCH: usize = 10_000;
const RUNS: usize = 7;

fn shapes() -> Vec<Event> {
    let trace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mcpwatch/tests/fixtures/replay/attacks.jsonl");
    let all = mcpwatch_detect::load_events_jsonl(&trace).expect("fixture");
    let mut out: Vec<Event> = Vec::new();
    for kind in [
        "execution_complete",
        "authentication",
        "authorization",
        "data_access",
    ] {
        if let Some(e) = all.iter().find(|e| e.event_type == kind) {
            out.push(e.clone());
        }
    }
    out
}

fn build(dir: &Path, n: u64, end: Timestamp) {
    let store = SqliteStore::open(dir, Default::default()).expect("store");
    let mut w = store.writer().expect("writer");
    let shapes = shapes();
    let span = DAYS * 86_400_000_000;
    let start = end.as_micros() - span;
    let servers = ["filesystem", "github", "postgres", "slack", "web-fetch"];
    let mut i: u64 = 0;
    let t0 = Instant::now();
    while i < n {
        let mut batch = Vec::with_capacity(BATCH);
        for _ in 0..BATCH.min((n - i) as usize) {
            // 70 % tool executions, the rest security events.
            let shape = if i % 10 < 7 {
                &shapes[0]
            } else {
                &shapes[1 + (i as usize % (shapes.len() - 1))]
            };
            let mut e = shape.clone();
            e.id = format!("bench-{i:010}");
            e.timestamp =
                Timestamp::from_micros(start + (span as u128 * i as u128 / n as u128) as i64);
            let m = &mut e.metadata;
            m.insert("user_id".into(), format!("user{:02}", i % 50).into());
            if e.event_type == "execution_complete" {
                let tool = i % 20;
                m.insert("tool_name".into(), format!("tool_{tool:02}").into());
                m.insert("server".into(), servers[(tool % 5) as usize].into());
                m.insert(
                    "execution_time".into(),
                    (0.001 + (i % 997) as f64 / 1000.0).into(),
                );
                let ok = !i.is_multiple_of(23);
                m.insert("success".into(), ok.into());
                m.insert(
                    "outcome".into(),
                    if ok { "success" } else { "tool_error" }.into(),
                );
            }
            batch.push(PreparedEvent::new(e));
            i += 1;
        }
        let refs: Vec<&PreparedEvent> = batch.iter().collect();
        w.append(&refs, false).expect("append");
        if i % 1_000_000 < BATCH as u64 {
            eprintln!("  {i} events written ({:.0} s)", t0.elapsed().as_secs_f64());
        }
    }
    w.settle().expect("settle");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let n: u64 = std::env::var("MCPWATCH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let end = mcpwatch_core::time_fmt::parse_rfc3339("2026-11-08T00:00:00Z").expect("time");
    let (tmp, dir) = match std::env::var_os("MCPWATCH_BENCH_DIR") {
        Some(d) => (None, std::path::PathBuf::from(d)),
        None => {
            let t = tempfile::tempdir().expect("dir");
            let p = t.path().to_owned();
            (Some(t), p)
        }
    };
    if !dir.join("events.db").exists() {
        eprintln!("building a store of {n} events in {} (once)", dir.display());
        build(&dir, n, end);
    }
    let clock: SharedClock = Arc::new(ManualClock::new(end));
    let store = SqliteStore::open(&dir, Default::default()).expect("store");
    let settings = mcpwatch_alert::build(&Config::default(), &|_| None).expect("settings");
    let alerting = mcpwatch_alert::Alerting::open(&dir, settings, clock.clone()).expect("alerts");
    let config = PipelineConfig {
        max_pending_events: 10_000,
        retention: RetentionPolicy {
            max_age: Duration::from_secs(3650 * 86_400),
            max_size: None,
        },
        retention_interval: Duration::from_secs(86_400),
    };
    let (pipeline, _writer) = Pipeline::start(
        store.writer().expect("writer"),
        Redactor::default(),
        clock.clone(),
        config,
        vec![],
    )
    .expect("pipeline");
    let auth = Arc::new(Authenticator::build(&AuthConfig::default(), &|_| None).expect("auth"));
    let state = mcpwatch_web::WebState::new(
        store.reader(),
        pipeline,
        alerting,
        auth,
        clock,
        Arc::new(Vec::new),
    );
    let app = mcpwatch_web::router(state);
    println!("{:<44} {:>10} {:>10}", "page", "median ms", "worst ms");
    let last_event = format!("/events/bench-{:010}", n.saturating_sub(1));
    for path in [
        "/",
        "/overview/widgets",
        "/alerts",
        "/events?range=1h",
        "/events?range=7d",
        "/events?range=24h&tool=tool_03",
        "/events?range=1h&user=user07",
        last_event.as_str(),
        "/tools?range=24h",
        "/tools?range=7d",
        "/users?range=24h",
        "/users/user07",
        "/rules",
        "/live",
    ] {
        let mut times = Vec::new();
        for _ in 0..RUNS {
            let t = Instant::now();
            let resp = app
                .clone()
                .oneshot(Request::get(path).body(Body::empty()).expect("req"))
                .await
                .expect("resp");
            let status = resp.status();
            let _ = axum::body::to_bytes(resp.into_body(), 1 << 26)
                .await
                .expect("body");
            times.push(t.elapsed());
            assert!(status.is_success(), "{path}: {status}");
        }
        times.sort();
        let ms = |d: Duration| d.as_secs_f64() * 1e3;
        println!(
            "{path:<44} {:>10.1} {:>10.1}",
            ms(times[RUNS / 2]),
            ms(times[RUNS - 1])
        );
    }
    drop(tmp);
}
