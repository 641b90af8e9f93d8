//! Query benchmark (SPEC 11): per-tool stats and the last-hour series over a store of
//! 10 million events must each answer within 100 ms.
//!
//! Both backends side by side: the embedded SQLite store and PostgreSQL (a throwaway cluster,
//! the test harness's), filled with the same events through each store's own writer.
//!
//! Run: `cargo bench -p mcpwatch-store --bench query` (BENCH_EVENTS=N to change the size;
//! BENCH_STORE=sqlite or postgres for one backend; BENCH_LOCK=FILE to hold FILE's lock only
//! while timing, not while loading). The SQLite store is built once and kept
//! under `target/bench-data/` for later runs; the PostgreSQL one is loaded anew each run.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_core::config::Durability;
use mcpwatch_core::{Event, Level, Timestamp};
use mcpwatch_store::postgres::PgStore;
use mcpwatch_store::sqlite::SqliteStore;
use mcpwatch_store::{EventQuery, EventReader, PreparedEvent, SeriesQuery, StatsQuery, Store};
use serde_json::json;

const SPAN_SECS: i64 = 7 * 86_400;
const START: i64 = 1_790_000_000;

fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000_000);
    let only = std::env::var("BENCH_STORE").ok();
    let mut backends: Vec<(&str, Box<dyn Store>)> = Vec::new();
    if only.as_deref() != Some("postgres") {
        backends.push(("SQLite", Box::new(sqlite_store(n))));
    }
    // Kept until the end of the run: the cluster is deleted when this drops.
    let mut _cluster = None;
    if only.as_deref() != Some("sqlite") {
        let pg = mcpwatch_store::testing::TempPostgres::start();
        let url = pg.create_database("query");
        let store = PgStore::open(&url, "bench").unwrap();
        fill(&store, n);
        _cluster = Some(pg);
        backends.push(("PostgreSQL", Box::new(store)));
    }
    let readers: Vec<(&str, Arc<dyn EventReader>)> = backends
        .iter()
        .map(|(name, s)| (*name, s.reader()))
        .collect();
    for (name, reader) in &readers {
        let stats = reader.stats().unwrap();
        println!(
            "{name} store: {} events, {:.1} GB used",
            stats.events,
            stats.used_bytes as f64 / 1e9
        );
    }
    // BENCH_LOCK=FILE: load unlocked (and niced), take FILE's lock only for the timings.
    let _lock = std::env::var_os("BENCH_LOCK").map(|path| {
        let f = std::fs::File::open(&path).unwrap();
        f.lock().unwrap();
        f
    });
    let now = Timestamp::from_micros((START + SPAN_SECS) * 1_000_000);
    let hour_ago = now.saturating_sub(Duration::from_secs(3600));

    print!("\n{:<44}", "query (median of 7, ms)");
    for (name, _) in &readers {
        print!(" {name:>11}");
    }
    println!("  target");
    let mut all_met = true;
    let mut report = |name: &str, target_ms: Option<f64>, f: &dyn Fn(&dyn EventReader)| {
        print!("{name:<44}");
        let mut met = true;
        for (_, reader) in &readers {
            f(reader.as_ref()); // warm the caches
            let mut times: Vec<f64> = (0..7)
                .map(|_| {
                    let t = Instant::now();
                    f(reader.as_ref());
                    t.elapsed().as_secs_f64() * 1000.0
                })
                .collect();
            times.sort_by(f64::total_cmp);
            let median = times[times.len() / 2];
            met &= target_ms.is_none_or(|t| median <= t);
            print!(" {median:>11.1}");
        }
        match target_ms {
            Some(t) => {
                all_met &= met;
                println!("  <= {t} {}", if met { "MET" } else { "NOT MET" });
            }
            None => println!(),
        }
    };
    report("GET /tools: per-tool stats, all time", Some(100.0), &|r| {
        r.tool_stats(&StatsQuery::default()).unwrap();
    });
    report("GET /tools?since=1h", Some(100.0), &|r| {
        r.tool_stats(&StatsQuery {
            since: Some(hour_ago),
            ..Default::default()
        })
        .unwrap();
    });
    report(
        "GET /series: last hour, 1-minute buckets",
        Some(100.0),
        &|r| {
            r.series(&SeriesQuery {
                since: hour_ago,
                until: now,
                bucket_minutes: 1,
                category: None,
                tool: None,
            })
            .unwrap();
        },
    );
    report("GET /series: last 7 days, 1-hour buckets", None, &|r| {
        let since = now.saturating_sub(Duration::from_secs(SPAN_SECS as u64));
        r.series(&SeriesQuery {
            since,
            until: now,
            bucket_minutes: 60,
            category: None,
            tool: None,
        })
        .unwrap();
    });
    report("GET /summary", None, &|r| {
        r.summary(now).unwrap();
    });
    report("GET /users (top 100)", None, &|r| {
        r.users(&StatsQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    });
    report("GET /events?limit=100 (newest page)", None, &|r| {
        r.events(&EventQuery {
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    });
    report("GET /events?tool=tool_7&since=1h&limit=100", None, &|r| {
        r.events(&EventQuery {
            tool: Some("tool_7".into()),
            since: Some(hour_ago),
            limit: 100,
            ..Default::default()
        })
        .unwrap();
    });
    println!(
        "\n{}",
        if all_met {
            "all targets MET"
        } else {
            "some targets NOT MET"
        }
    );
}

/// The SQLite store of `n` events, built once and kept under `target/bench-data/`.
fn sqlite_store(n: usize) -> SqliteStore {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../target/bench-data")
        .join(format!("query-{n}"));
    if dir.join("complete").exists() {
        println!(
            "reusing the SQLite store of {n} events in {}",
            dir.display()
        );
        return SqliteStore::open(&dir, Durability::Normal).unwrap();
    }
    let _ = std::fs::remove_dir_all(&dir);
    let store = SqliteStore::open(&dir, Durability::Normal).unwrap();
    fill(&store, n);
    std::fs::write(dir.join("complete"), b"").unwrap();
    store
}

/// Appends `n` events through the store's own writer (so the rollups are the ones ingest
/// makes), 10,000 per batch, generated on another thread meanwhile.
fn fill(store: &dyn Store, n: usize) {
    let mut writer = store.writer().unwrap();
    let started = Instant::now();
    let batch = 10_000;
    let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<PreparedEvent>>(4);
    let producer = std::thread::spawn(move || {
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
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
            if tx.send(events).is_err() {
                return;
            }
        }
    });
    let mut last_report = Instant::now();
    let mut done = 0;
    for events in rx {
        let refs: Vec<&PreparedEvent> = events.iter().collect();
        writer.append(&refs, false).unwrap();
        done += events.len();
        if last_report.elapsed() > Duration::from_secs(10) {
            eprintln!(
                "filling: {done}/{n} events ({:.0}/s)",
                done as f64 / started.elapsed().as_secs_f64()
            );
            last_report = Instant::now();
        }
    }
    producer.join().unwrap();
    writer.settle().unwrap();
    drop(writer);
    println!(
        "filled {n} events in {:.0} s",
        started.elapsed().as_secs_f64()
    );
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
