//! Ingest benchmark (SPEC 11): events/s over HTTP into `mcpwatch serve`, side by side with the
//! raw SQLite insert rate of the same rows with the same indexes, measured in the same run; then
//! the acknowledgement latency under a paced load of 50,000 events/s.
//!
//! Run: `cargo bench -p mcpwatch --bench ingest` (BENCH_EVENTS=N to change the volume).
//! `BENCH_ONLY=stages` prints the per-stage breakdown only, `BENCH_ONLY=http` the HTTP rate only,
//! `BENCH_ONLY=rss` the idle resident memory of `serve` only (target SPEC 11: <= 40 MB).
//! `MCPWATCH_BIN=PATH` runs another build of the binary (e.g. the one before a change).
//! `BENCH_STORE=postgres` measures the PostgreSQL store instead: a throwaway cluster (the test
//! harness's), HTTP ingest into `serve --store`, side by side with the raw multi-row UNNEST
//! insert of the same rows into the same schema, and the store's writer alone in between
//! (`BENCH_ONLY=writer` or `http` for that one alone, e.g. under a profiler).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_core::config::Durability;
use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::validate::{parse_batch, BodyFormat, Defaults};
use mcpwatch_core::{ManualClock, Timestamp};
use mcpwatch_store::sqlite::SqliteStore;
use mcpwatch_store::PreparedEvent;
use serde_json::{json, Value};

const BATCH: usize = 1000;

/// The same allocator as the binary, so the stage breakdown measures what `serve` runs (with
/// glibc malloc the stages took about a third longer, most of it in malloc and free).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let n: usize = std::env::var("BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(300_000);
    let n = n.div_ceil(BATCH) * BATCH;
    let events = generate(n);
    let bodies: Vec<String> = events
        .chunks(BATCH)
        .map(|c| Value::Array(c.to_vec()).to_string())
        .collect();
    let avg_bytes = bodies.iter().map(String::len).sum::<usize>() / n;
    println!("ingest benchmark: {n} realistic events in batches of {BATCH}, ~{avg_bytes} bytes each, durability=full");

    if std::env::var("BENCH_ONLY").as_deref() == Ok("rss") {
        idle_rss();
        return;
    }
    if std::env::var("BENCH_STORE").as_deref() == Ok("postgres") {
        postgres(&bodies);
        return;
    }
    if std::env::var("BENCH_ONLY").as_deref() == Ok("http") {
        println!("http ingest: {:.0} events/s", http_ingest(&bodies));
        return;
    }
    stages(&bodies);
    if std::env::var("BENCH_ONLY").as_deref() == Ok("stages") {
        return;
    }
    let raw = raw_sqlite(&bodies);
    let http = http_ingest(&bodies);
    println!();
    println!("{:<44} {:>12}", "path", "events/s");
    println!(
        "{:<44} {:>12.0}",
        "raw SQLite insert (same rows, same indexes)", raw
    );
    println!(
        "{:<44} {:>12.0}",
        "mcpwatch serve over HTTP (validate+redact+rollups)", http
    );
    let ratio = http / raw;
    println!(
        "ratio: {:.1} % of raw (target >= 70 %) {}",
        ratio * 100.0,
        verdict(ratio >= 0.70)
    );

    let refused_before = REFUSED.load(std::sync::atomic::Ordering::Relaxed);
    let (p50, p99, max, achieved) = ack_latency(&bodies, 50_000.0, Duration::from_secs(8));
    let refused = REFUSED.load(std::sync::atomic::Ordering::Relaxed) - refused_before;
    println!();
    println!("ack latency at a paced {achieved:.0} events/s (target rate 50,000), from each batch's first attempt: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms, {refused} attempts told to retry (target p99 <= 50 ms) {}", verdict(p99 <= 50.0 && achieved >= 45_000.0));
    println!();
    idle_rss();
}

/// Resident memory of a freshly started, idle `serve` once it has settled (SPEC 11).
fn idle_rss() {
    let s = serve();
    let status = format!("/proc/{}/status", s.child.id());
    let rss_kb = || -> u64 {
        std::fs::read_to_string(&status)
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    };
    // Idle means the start-up work (first retention pass, detector load) is over: wait until
    // the figure stops moving for a second, at most ten seconds.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut last = rss_kb();
    loop {
        std::thread::sleep(Duration::from_secs(1));
        let now = rss_kb();
        if now == last || Instant::now() >= deadline {
            last = now;
            break;
        }
        last = now;
    }
    let mb = last as f64 / 1024.0;
    println!(
        "serve idle RSS: {mb:.1} MB (target <= 40 MB) {}",
        verdict(mb <= 40.0)
    );
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "MET"
    } else {
        "NOT MET"
    }
}

/// Deterministic mixed traffic: tool executions, request timings, authentications, data access.
fn generate(n: usize) -> Vec<Value> {
    let tools = [
        "read_file",
        "write_file",
        "list_directory",
        "search_files",
        "get_file_info",
        "run_query",
        "fetch",
        "git_status",
    ];
    let servers = ["filesystem", "postgres", "web", "git"];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let start = 1_790_000_000.0;
    (0..n)
        .map(|i| {
            let r = rnd();
            let user = format!("user{}", r % 200);
            let tool = tools[(r >> 8) as usize % tools.len()];
            let server = servers[(r >> 16) as usize % servers.len()];
            let ts = start + i as f64 * 0.0005;
            let latency = 0.002 + ((r >> 24) % 5000) as f64 / 10_000.0;
            let ok = (r >> 40) % 20 != 0;
            match (r >> 32) % 20 {
                0..=13 => json!({
                    "timestamp": ts, "level": if ok { "info" } else { "error" }, "category": "tool_execution",
                    "event_type": "execution_complete", "source": format!("wrap:{server}"),
                    "message": format!("Tool {tool} execution completed"),
                    "metadata": {"execution_id": format!("ex-{i}"), "tool_name": tool, "server": server, "user_id": user,
                                 "session_id": format!("s-{}", r % 977), "execution_time": latency, "success": ok,
                                 "outcome": if ok { "success" } else { "tool_error" },
                                 "parameters": {"path": format!("/home/{user}/project/src/module_{}.rs", r % 91), "encoding": "utf-8"},
                                 "result": {"size": (r >> 20) % 40_000, "content_types": ["text"], "text": "fn main() { println!(\"hello\"); }"},
                                 "client": {"name": "claude-desktop", "version": "1.4.2"}},
                    "tags": ["tool", "execution", "complete"]}),
                14..=16 => json!({
                    "timestamp": ts, "category": "performance", "event_type": "request_performance", "source": format!("wrap:{server}"),
                    "message": "request completed",
                    "metadata": {"request_id": format!("rq-{i}"), "response_time": latency, "success": ok, "method": "tools/call", "server": server}}),
                17..=18 => json!({
                    "timestamp": ts, "level": if ok { "info" } else { "warning" }, "category": "security", "event_type": "authentication",
                    "source": "gateway", "message": "authentication attempt",
                    "metadata": {"user_id": user, "result": if ok { "success" } else { "failure" }, "ip_address": format!("10.0.{}.{}", r % 255, (r >> 8) % 255),
                                 "user_agent": "mcp-client/1.0"}}),
                _ => json!({
                    "timestamp": ts, "category": "security", "event_type": "data_access", "source": format!("wrap:{server}"),
                    "message": "resource read",
                    "metadata": {"user_id": user, "data_type": "resource", "operation": "read", "data_classification": "internal",
                                 "uri": format!("file:///srv/data/{}.csv", r % 300), "server": server}}),
            }
        })
        .collect()
}

/// Where the time goes, stage by stage on one thread, one batch at a time as the server
/// handles them (holding every event at once would measure page faults instead), in
/// microseconds per event.
fn stages(bodies: &[String]) {
    let ids = IdGenerator::new();
    let clock = ManualClock::new(Timestamp::from_micros(1_790_000_000_000_000));
    let defaults = Defaults {
        ids: &ids,
        clock: &clock,
        source: "api",
        max_events: BATCH,
        max_future_skew: mcpwatch_core::validate::bounds::DEFAULT_MAX_FUTURE_SKEW,
    };
    let redactor = mcpwatch_core::Redactor::default();
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
    let mut writer = mcpwatch_store::Store::writer(&store).unwrap();
    // A second store that settles the statistics with every batch, as `serve` does whenever
    // nothing else is waiting: the difference is what settling costs per event.
    let dir2 = tempfile::tempdir().unwrap();
    let store2 = SqliteStore::open(dir2.path(), Durability::Full).unwrap();
    let mut settling = mcpwatch_store::Store::writer(&store2).unwrap();
    let mut spent = [Duration::ZERO; 5];
    for body in bodies {
        let t = Instant::now();
        let mut batch = parse_batch(body.as_bytes(), BodyFormat::Json, &defaults).unwrap();
        spent[0] += t.elapsed();
        let t = Instant::now();
        batch.iter_mut().for_each(|e| redactor.redact_event(e));
        spent[1] += t.elapsed();
        let t = Instant::now();
        let prepared: Vec<PreparedEvent> = batch.into_iter().map(PreparedEvent::new).collect();
        spent[2] += t.elapsed();
        let t = Instant::now();
        writer
            .append(&prepared.iter().collect::<Vec<_>>(), false)
            .unwrap();
        spent[3] += t.elapsed();
        let t = Instant::now();
        settling
            .append(&prepared.iter().collect::<Vec<_>>(), true)
            .unwrap();
        spent[4] += t.elapsed();
    }
    let per = |d: Duration| d.as_secs_f64() * 1e6 / (bodies.len() * BATCH) as f64;
    println!(
        "stages (µs/event, one thread, batch by batch): parse+validate {:.2}, redact {:.2}, serialise {:.2}, store append with rollups {:.2} (settling every batch {:.2})",
        per(spent[0]),
        per(spent[1]),
        per(spent[2]),
        per(spent[3]),
        per(spent[4])
    );
}

/// The batches as `serve` would store them, stamped by `clock`.
fn prepared(bodies: &[String], clock: &ManualClock) -> Vec<Vec<PreparedEvent>> {
    let ids = IdGenerator::new();
    let defaults = Defaults {
        ids: &ids,
        clock,
        source: "api",
        max_events: BATCH,
        max_future_skew: mcpwatch_core::validate::bounds::DEFAULT_MAX_FUTURE_SKEW,
    };
    bodies
        .iter()
        .map(|b| {
            parse_batch(b.as_bytes(), BodyFormat::Json, &defaults)
                .unwrap()
                .into_iter()
                .map(PreparedEvent::new)
                .collect()
        })
        .collect()
}

/// Inserts the same rows as `serve` would, with the same schema and pragmas, and nothing else.
fn raw_sqlite(bodies: &[String]) -> f64 {
    let dir = tempfile::tempdir().unwrap();
    // Opening through the store creates the same schema, indexes and pragmas.
    let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
    let clock = ManualClock::new(Timestamp::from_micros(1_790_000_000_000_000));
    let batches = prepared(bodies, &clock);
    let mut conn = rusqlite::Connection::open(store.path()).unwrap();
    conn.pragma_update(None, "journal_mode", "WAL").unwrap();
    conn.pragma_update(None, "synchronous", "FULL").unwrap();
    let started = Instant::now();
    for batch in &batches {
        let tx = conn.transaction().unwrap();
        {
            let mut st = tx
                .prepare_cached(
                    "INSERT INTO events(id, ts, level, category, event_type, server, tool, user, session, outcome, body)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
                )
                .unwrap();
            for p in batch {
                let e = &p.event;
                st.execute(rusqlite::params![
                    e.id,
                    e.timestamp.as_micros(),
                    e.level.rank(),
                    e.category,
                    e.event_type,
                    e.server(),
                    e.tool(),
                    e.user(),
                    e.session(),
                    e.metadata.get("outcome").and_then(Value::as_str),
                    p.body
                ])
                .unwrap();
            }
        }
        tx.commit().unwrap();
    }
    let n: usize = batches.iter().map(Vec::len).sum();
    n as f64 / started.elapsed().as_secs_f64()
}

struct Serve {
    child: Child,
    url: String,
    _dir: tempfile::TempDir,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn serve() -> Serve {
    serve_with(&[])
}

fn serve_with(extra: &[&str]) -> Serve {
    let dir = tempfile::tempdir().unwrap();
    let bin =
        std::env::var_os("MCPWATCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_mcpwatch").into());
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(extra)
        .env("MCPWATCH_LOG", "warn")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let url = loop {
        let line = lines.next().expect("serve exited").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    Serve {
        child,
        url,
        _dir: dir,
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap()
}

/// Posts told to come back later (503 while starting, 429 when the collector sheds load, a
/// connection over the listener's limit).
static REFUSED: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Posts `body` until it is acknowledged, backing off when told to; the time from the first
/// attempt to the acknowledgement.
async fn post(client: &reqwest::Client, url: &str, body: String) -> Duration {
    let t = Instant::now();
    loop {
        let sent = client
            .post(format!("{url}/api/v1/events"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await;
        // The listener answers a connection over its limit at once and closes it (hyper sees
        // an unexpected message): that too is "come back later".
        let resp = match sent {
            Ok(r) => r,
            Err(e) if e.is_request() || e.is_connect() => {
                REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tokio::time::sleep(Duration::from_millis(5)).await;
                continue;
            }
            Err(e) => panic!("post failed: {e}"),
        };
        match resp.status().as_u16() {
            202 => return t.elapsed(),
            429 | 503 => {
                REFUSED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let wait = resp
                    .headers()
                    .get("retry-after")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse::<u64>().ok())
                    .map_or(Duration::from_millis(5), |s| {
                        Duration::from_secs(s).min(Duration::from_secs(1))
                    });
                tokio::time::sleep(wait).await;
            }
            s => panic!(
                "unexpected status {s}: {}",
                resp.text().await.unwrap_or_default()
            ),
        }
    }
}

/// Closed loop: a few connections post as fast as the collector acknowledges.
fn http_ingest(bodies: &[String]) -> f64 {
    http_ingest_with(bodies, &[])
}

fn http_ingest_with(bodies: &[String], extra: &[&str]) -> f64 {
    // BENCH_COLLECTOR points the load at a collector started by hand (e.g. under a profiler).
    let external = std::env::var("BENCH_COLLECTOR").ok();
    let s = external.is_none().then(|| serve_with(extra));
    let rt = runtime();
    let bodies = Arc::new(bodies.to_vec());
    let url = external.unwrap_or_else(|| s.as_ref().map(|s| s.url.clone()).unwrap_or_default());
    rt.block_on(async move {
        let client = reqwest::Client::new();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let started = Instant::now();
        let mut tasks = Vec::new();
        for _ in 0..4 {
            let (client, url, bodies, next) =
                (client.clone(), url.clone(), bodies.clone(), next.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let Some(body) = bodies.get(i) else { return };
                    post(&client, &url, body.clone()).await;
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        (bodies.len() * BATCH) as f64 / started.elapsed().as_secs_f64()
    })
}

/// Open loop: one batch every BATCH/rate seconds, whatever the answers; latency of each ack.
fn ack_latency(bodies: &[String], rate: f64, duration: Duration) -> (f64, f64, f64, f64) {
    let s = serve();
    let rt = runtime();
    let interval = Duration::from_secs_f64(BATCH as f64 / rate);
    let count = (duration.as_secs_f64() / interval.as_secs_f64()) as usize;
    let bodies: Vec<String> = (0..count)
        .map(|i| bodies[i % bodies.len()].clone())
        .collect();
    let url = s.url.clone();
    rt.block_on(async move {
        let client = reqwest::Client::new();
        let mut ticker = tokio::time::interval(interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
        let started = Instant::now();
        let mut tasks = Vec::new();
        for body in bodies {
            ticker.tick().await;
            let (client, url) = (client.clone(), url.clone());
            tasks.push(tokio::spawn(async move { post(&client, &url, body).await }));
        }
        let mut lat: Vec<f64> = Vec::new();
        for t in tasks {
            lat.push(t.await.unwrap().as_secs_f64() * 1000.0);
        }
        let achieved = (count * BATCH) as f64 / started.elapsed().as_secs_f64();
        lat.sort_by(f64::total_cmp);
        let pct = |q: f64| lat[((q * lat.len() as f64).ceil() as usize).clamp(1, lat.len()) - 1];
        (pct(0.5), pct(0.99), lat[lat.len() - 1], achieved)
    })
}

/// PostgreSQL: HTTP ingest into `serve --store` against the raw multi-row insert of the same rows
/// into the same schema (same partitions, primary key and indexes), on one throwaway cluster.
fn postgres(bodies: &[String]) {
    let pg = mcpwatch_store::testing::TempPostgres::start();
    let (raw_url, http_url) = (pg.create_database("raw"), pg.create_database("http"));
    let writer_url = pg.create_database("writer");
    match std::env::var("BENCH_ONLY").as_deref() {
        Ok("writer") => {
            let w = writer_postgres(bodies, &writer_url);
            return println!("store writer alone: {w:.0} events/s");
        }
        Ok("http") => {
            let h = http_ingest_with(bodies, &["--store", &http_url]);
            return println!("serve --store postgres over HTTP: {h:.0} events/s");
        }
        _ => {}
    }
    // Each phase starts from a checkpoint, so that none pays for the dirty pages of the one
    // before.
    pg.sql("CHECKPOINT");
    let raw = raw_postgres(bodies, &raw_url);
    pg.sql("CHECKPOINT");
    let writer = writer_postgres(bodies, &writer_url);
    pg.sql("CHECKPOINT");
    let http = http_ingest_with(bodies, &["--store", &http_url]);
    println!();
    println!("{:<52} {:>12}", "path", "events/s");
    println!(
        "{:<52} {:>12.0}",
        "raw PostgreSQL UNNEST insert (same rows, same schema)", raw
    );
    println!(
        "{:<52} {:>12.0} ({:.1} % of raw)",
        "store writer alone (no HTTP, parse, redact)",
        writer,
        writer / raw * 100.0
    );
    println!(
        "{:<52} {:>12.0}",
        "mcpwatch serve --store postgres over HTTP", http
    );
    let ratio = http / raw;
    println!(
        "ratio: {:.1} % of raw (target >= 70 %) {}",
        ratio * 100.0,
        verdict(ratio >= 0.70)
    );
}

/// The store's own writer on the batches `serve` would hand it (four requests to a group, as
/// the pipeline groups what waits), statistics settled at the end: what the store costs without
/// the HTTP, parsing and redaction in front of it.
fn writer_postgres(bodies: &[String], url: &str) -> f64 {
    use mcpwatch_store::Store;
    let now = mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock);
    let store = mcpwatch_store::postgres::PgStore::open(url, "bench").unwrap();
    let mut writer = store.writer().unwrap();
    let batches = prepared(bodies, &ManualClock::new(now));
    let started = Instant::now();
    for group in batches.chunks(4) {
        let refs: Vec<&PreparedEvent> = group.iter().flatten().collect();
        writer.append(&refs, false).unwrap();
    }
    writer.settle().unwrap();
    let n: usize = batches.iter().map(Vec::len).sum();
    n as f64 / started.elapsed().as_secs_f64()
}

fn raw_postgres(bodies: &[String], url: &str) -> f64 {
    use mcpwatch_store::Store;
    let now = mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock);
    // Opening the store and its writer makes the schema and today's partitions.
    let store = mcpwatch_store::postgres::PgStore::open(url, "bench").unwrap();
    drop(store.writer().unwrap());
    let batches = prepared(bodies, &ManualClock::new(now));
    let rt = runtime();
    let url = url.to_owned();
    rt.block_on(async move {
        let (client, conn) = tokio_postgres::connect(&url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        // The days of the rows get their partitions first, as the store's writer makes them.
        const DAY: i64 = 86_400_000_000;
        let days: std::collections::BTreeSet<i64> = batches
            .iter()
            .flatten()
            .map(|p| p.event.timestamp.as_micros().div_euclid(DAY))
            .collect();
        for d in days {
            client
                .batch_execute(&format!(
                    "CREATE TABLE IF NOT EXISTS events_d{d} PARTITION OF events FOR VALUES FROM ({}) TO ({})",
                    d * DAY,
                    (d + 1) * DAY
                ))
                .await
                .unwrap();
        }
        let st = client
            .prepare(
                r#"INSERT INTO events(id, ts, level, category, event_type, server, tool, "user", session, outcome, body)
                   SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
                   ON CONFLICT DO NOTHING"#,
            )
            .await
            .unwrap();
        let started = Instant::now();
        for batch in &batches {
            let col = |f: &dyn Fn(&PreparedEvent) -> Option<String>| -> Vec<Option<String>> {
                batch.iter().map(f).collect()
            };
            let ids: Vec<&str> = batch.iter().map(|p| p.event.id.as_str()).collect();
            let ts: Vec<i64> = batch.iter().map(|p| p.event.timestamp.as_micros()).collect();
            let level: Vec<i64> = batch.iter().map(|p| p.event.level.rank()).collect();
            let category: Vec<&str> = batch.iter().map(|p| p.event.category.as_str()).collect();
            let kind: Vec<&str> = batch.iter().map(|p| p.event.event_type.as_str()).collect();
            let server = col(&|p| p.event.server().map(str::to_owned));
            let tool = col(&|p| p.event.tool().map(str::to_owned));
            let user = col(&|p| p.event.user().map(str::to_owned));
            let session = col(&|p| p.event.session().map(str::to_owned));
            let outcome = col(&|p| {
                p.event
                    .metadata
                    .get("outcome")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            });
            let body: Vec<&str> = batch.iter().map(|p| p.body.as_str()).collect();
            client
                .execute(
                    &st,
                    &[
                        &ids, &ts, &level, &category, &kind, &server, &tool, &user, &session,
                        &outcome, &body,
                    ],
                )
                .await
                .unwrap();
        }
        let n: usize = batches.iter().map(Vec::len).sum();
        n as f64 / started.elapsed().as_secs_f64()
    })
}
