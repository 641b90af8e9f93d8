//! Monitor benchmark: the CPU `wrap` and `gateway` spend per message beside the relay.
//!
//! Feeds `MCPWATCH_BENCH_CALLS` (default 200,000) `tools/call` requests and their results
//! through a [`SessionTracker`] (parse, correlate, build events, classify, redact) and then
//! serialises the events the way delivery posts them, timing each stage on one thread.
//! These are the per-message costs that decide how much of a core monitoring takes while an
//! agent pipelines calls (`benches/relay.rs` measures the effect on the relay itself).
//!
//! Run: `cargo bench -p mcpwatch-capture --bench monitor`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_capture::pins::PinStore;
use mcpwatch_capture::session::{Direction, SessionConfig, SessionTracker};
use mcpwatch_core::{Event, SystemClock};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let calls: usize = std::env::var("MCPWATCH_BENCH_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let rounds = 5;
    let (mut track, mut ser, mut events_per_call) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..rounds {
        let (t, s, e) = round(calls);
        track.push(t);
        ser.push(s);
        events_per_call = e;
    }
    let per_call = |d: &[Duration]| {
        let mut ns: Vec<f64> = d
            .iter()
            .map(|d| d.as_nanos() as f64 / calls as f64)
            .collect();
        ns.sort_by(f64::total_cmp);
        ns[ns.len() / 2]
    };
    let (t, s) = (per_call(&track), per_call(&ser));
    println!("\nmonitor benchmark: {calls} tools/call round trips, median of {rounds} rounds, one thread\n");
    println!("{:<44}{:>10}", "stage", "µs/call");
    println!(
        "{:<44}{:>10.2}",
        "parse, correlate, build and redact events",
        t / 1e3
    );
    println!("{:<44}{:>10.2}", "serialise events for delivery", s / 1e3);
    println!("{:<44}{:>10.2}", "total", (t + s) / 1e3);
    println!(
        "\n{events_per_call:.1} events per call; {:.2} µs per event",
        (t + s) / 1e3 / events_per_call
    );
}

fn round(calls: usize) -> (Duration, Duration, f64) {
    let cfg = SessionConfig {
        server: "bench".into(),
        source: "wrap:bench".into(),
        user_id: "bench-user".into(),
        request_timeout: Duration::from_secs(60),
        max_pending: 10_000,
        classification: Default::default(),
        redactor: Default::default(),
    };
    let mut tracker = SessionTracker::new(cfg, Arc::new(SystemClock), PinStore::new(None));
    let requests: Vec<String> = (0..calls)
        .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"read_file","arguments":{{"path":"/srv/data/report-{i}.txt"}}}}}}"#))
        .collect();
    let responses: Vec<String> = (0..calls)
        .map(|i| format!(r#"{{"jsonrpc":"2.0","id":{i},"result":{{"content":[{{"type":"text","text":"Quarterly figures, page {i}: revenue up 4 %, costs flat."}}],"isError":false}}}}"#))
        .collect();
    // As the monitor works: a batch of frames through the tracker, then its events shipped.
    let mut out: Vec<Event> = Vec::with_capacity(2_000);
    let (mut tracked, mut serialised) = (Duration::ZERO, Duration::ZERO);
    let (mut bytes, mut events) = (0, 0);
    for (reqs, resps) in requests.chunks(500).zip(responses.chunks(500)) {
        let start = Instant::now();
        for (req, resp) in reqs.iter().zip(resps) {
            tracker.on_frame(Direction::ClientToServer, req.as_bytes(), &mut out);
            tracker.on_frame(Direction::ServerToClient, resp.as_bytes(), &mut out);
        }
        let mid = Instant::now();
        // As delivery writes a batch: a JSON array of events (`Event::write_json`).
        let mut body = Vec::with_capacity(out.len() * 512 + 2);
        body.push(b'[');
        for (i, e) in out.iter().enumerate() {
            if i > 0 {
                body.push(b',');
            }
            e.write_json(&mut body);
        }
        body.push(b']');
        bytes += body.len();
        events += out.len();
        out.clear();
        serialised += mid.elapsed();
        tracked += mid - start;
    }
    assert!(bytes > 0);
    (tracked, serialised, events as f64 / calls as f64)
}
