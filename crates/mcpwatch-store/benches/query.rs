//! Query benchmark (SPEC 11): per-tool stats and the last-hour series over a store of
//! 10 million events must each answer within 100 ms.
//!
//! Run: `cargo bench -p mcpwatch-store --bench query` (BENCH_EVENTS=N to change the size). The
//! store is built once and kept under `target/bench-data/` for later runs.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use mcpwatch_core::config::Durability;
use mcpwatch_core::{Event, Level, Timestamp};
use mcpwatch_store::sqlite::SqliteStore;
use mcpwatch_store::{EventQuery, PreparedEvent, SeriesQuery, StatsQuery, Store};
use serde_json::json;

const SPAN_SECS: i64 = 7 * 86_400;
const START: i64 = 1_790_000_000;

fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/bench-data")
        .join(format!("query-{n}"));
    let store = if dir.join("complete").exists() {
        println!("reusing the store of {n} events in {}", dir.display());
        SqliteStore::open(&dir, Durability::Normal).unwrap()
    } else {
        let _ = std::fs::remove_dir_all(&dir);
        fill(&dir, n)
    };
    let reader = store.reader();
    let stats = reader.stats().unwrap();
    println!(
        "store: {} events, {:.1} GB used",
        stats.events,
        stats.used_bytes as f64 / 1e9
    );
    let now = Timestamp::from_micros((START + SPAN_SECS) * 1_000_000);
    let hour_ago = now.saturating_sub(Duration::from_secs(3600));

    println!(
        "\n{:<52} {:>9} {:>9} {:>8}",
        "query", "median ms", "max ms", "target"
    );
    let mut all_met = true;
    let mut report = |name: &str, target_ms: Option<f64>, f: &mut dyn FnMut()| {
        f(); // warm the page cache
        let mut times: Vec<f64> = (0..7)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed().as_secs_f64() * 1000.0
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let (median, max) = (times[times.len() / 2], times[times.len() - 1]);
        let verdict = match target_ms {
            Some(t) if median <= t => format!("<= {t} MET"),
            Some(t) => {
                all_met = false;
                format!("<= {t} NOT MET")
            }
            None => String::new(),
        };
        println!("{name:<52} {median:>9.1} {max:>9.1} {verdict}");
    };
    report(
        "GET /tools: per-tool stats, all time",
        Some(100.0),
        &mut || {
            reader.tool_stats(&StatsQuery::default()).unwrap();
        },
    );
    report("GET /tools?since=1h", Some(100.0), &mut || {
        reader
            .tool_stats(&StatsQuery {
                since: Some(hour_ago),
                ..Default::default()
            })
            .unwrap();
    });
    report(
        "GET /series: last hour, 1-minute buckets",
        Some(100.0),
        &mut || {
            reader
                .series(&SeriesQuery {
                    since: hour_ago,
                    until: now,
                    bucket_minutes: 1,
                    category: None,
                    tool: None,
                })
                .unwrap();
        },
    );
    report(
        "GET /series: last 7 days, 1-hour buckets",
        None,
        &mut || {
            let since = now.saturating_sub(Duration::from_secs(SPAN_SECS as u64));
            reader
                .series(&SeriesQuery {
                    since,
                    until: now,
                    bucket_minutes: 60,
                    category: None,
                    tool: None,
                })
                .unwrap();
        },
    );
    report("GET /summary", None, &mut || {
        reader.summary(now).unwrap();
    });
    report("GET /users (top 100)", None, &mut || {
        reader
            .users(&StatsQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
    });
    report("GET /events?limit=100 (newest page)", None, &mut || {
        reader
            .events(&EventQuery {
                limit: 100,
                ..Default::default()
            })
            .unwrap();
    });
    report(
        "GET /events?tool=tool_7&since=1h&limit=100",
        None,
        &mut || {
            reader
                .events(&EventQuery {
                    tool: Some("tool_7".into()),
                    since: Some(hour_ago),
                    limit: 100,
                    ..Default::default()
                })
                .unwrap();
        },
    );
    println!(
        "\n{}",
        if all_met {
            "all targets MET"
        } else {
            "some targets NOT MET"
        }
    );
}

fn fill(dir: &std::path::Path, n: usize) -> SqliteStore {
    let store = SqliteStore::open(dir, Durability::Normal).unwrap();
    let mut writer = store.writer().unwrap();
    let started = Instant::now();
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    let mut last_report = Instant::now();
    let batch = 10_000;
    for chunk in 0..n.div_ceil(batch) {
        let events: Vec<PreparedEvent> = (0..batch.min(n - chunk * batch))
            .map(|i| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let k = chunk * batch + i;
                let ts = START * 1_000_000 + (k as i64 * SPAN_SECS * 1_000_000) / n as i64;
                event(k, ts, x)
            })
            .collect();
        let refs: Vec<&PreparedEvent> = events.iter().collect();
        writer.append(&refs, false).unwrap();
        if last_report.elapsed() > Duration::from_secs(5) {
            let done = (chunk + 1) * batch;
            eprintln!(
                "filling: {done}/{n} events ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    writer.settle().unwrap();
    drop(writer);
    std::fs::write(dir.join("complete"), b"").unwrap();
    println!(
        "filled {n} events in {:.0} s",
        started.elapsed().as_secs_f64()
    );
    store
}

fn event(k: usize, ts: i64, r: u64) -> PreparedEvent {
    let tool = format!("tool_{}", r % 50);
    let server = format!("server_{}", r % 5);
    let user = format!("user_{}", (r >> 8) % 2000);
    let ok = !(r >> 20).is_multiple_of(25);
    let (category, event_type, metadata) = match (r >> 32) % 10 {
        0..=6 => (
            "tool_execution",
            "execution_complete",
            json!({"execution_id": format!("x{k}"), "tool_name": tool, "server": server, "user_id": user,
                   "session_id": format!("s{}", r % 5000), "execution_time": 0.001 + ((r >> 40) % 2000) as f64 / 1000.0,
                   "success": ok, "outcome": if ok { "success" } else { "tool_error" },
                   "parameters": {"path": format!("/srv/{}", r % 1000), "mode": "r"}}),
        ),
        7..=8 => (
            "performance",
            "request_performance",
            json!({"request_id": format!("r{k}"), "response_time": ((r >> 40) % 500) as f64 / 1000.0, "success": ok, "server": server}),
        ),
        _ => (
            "security",
            "authentication",
            json!({"user_id": user, "result": if ok { "success" } else { "failure" }}),
        ),
    };
    PreparedEvent::new(Event {
        id: format!("{ts:016x}-{k:08x}"),
        timestamp: Timestamp::from_micros(ts),
        level: if ok { Level::Info } else { Level::Warning },
        category: category.into(),
        source: format!("wrap:{server}"),
        event_type: event_type.into(),
        message: format!("{event_type} {tool}"),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        tags: vec![],
    })
}
