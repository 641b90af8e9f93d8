//! Cluster benchmark (SPEC 10, 11): `serve --cluster` with 1, 2 and 3 nodes on a real 3-node
//! nats-server cluster (R3) and a real PostgreSQL, all on this machine.
//!
//! For each node count, on a fresh database and stream:
//! - throughput: a burst of events published as fast as the edge publisher goes, then the time
//!   until every event is stored and every task has read its partition to the stream's end
//!   (`cluster status --nats`), in events/s end to end;
//! - lag under a paced load: events at `BENCH_RATE`/s for `BENCH_SECONDS`, the largest number
//!   of stream messages any task is behind and the age of the oldest message not yet detected
//!   on, sampled twice a second;
//! - failover (2 and 3 nodes): one node is killed (`kill -9`), failed sign-ins of users whose
//!   tasks it held are published, and the time from the kill to the first alert raised by a
//!   new owner is measured (lease `BENCH_LEASE` seconds, default 5).
//!
//! Run: `cargo bench -p mcpwatch --bench cluster`. `BENCH_EVENTS` (default 60000) sets the
//! burst, `BENCH_NODES=1,2,3` the node counts. The edge publisher against raw async-nats
//! publishes is `cargo bench -p mcpwatch-capture --bench nats_publish`.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::validate::{parse_batch, BodyFormat, Defaults};
use mcpwatch_core::{Event, SystemClock};
use mcpwatch_nats::testing::TempNatsCluster;
use mcpwatch_nats::Publisher;
use mcpwatch_store::testing::TempPostgres;
use serde_json::{json, Value};

fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn bin() -> std::ffi::OsString {
    std::env::var_os("MCPWATCH_BIN").unwrap_or_else(|| env!("CARGO_BIN_EXE_mcpwatch").into())
}

struct Node {
    child: Child,
    url: String,
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_node(
    dir: &std::path::Path,
    name: &str,
    config: &std::path::Path,
    db: &str,
    nats: &str,
) -> Node {
    let mut child = Command::new(bin())
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join(name))
        .arg("--config")
        .arg(config)
        .args(["--store", db, "--nats", nats, "--cluster"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("mcpwatch serve");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut sent = false;
        let mut said = Vec::new();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if !sent {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let _ = tx.send(Ok(rest.split_whitespace().next().unwrap_or("").to_owned()));
                    sent = true;
                } else {
                    said.push(line);
                }
            }
        }
        if !sent {
            let _ = tx.send(Err(said.join("\n")));
        }
    });
    let url = match rx.recv_timeout(Duration::from_secs(60)) {
        Ok(Ok(url)) => url,
        Ok(Err(said)) => panic!("serve {name} exited before listening:\n{said}"),
        Err(e) => panic!("serve {name} did not report its address: {e}"),
    };
    Node { child, url }
}

fn status(db: &str, nats: &str, stream: &str) -> Value {
    let out = Command::new(bin())
        .args([
            "cluster", "status", "--json", "--store", db, "--nats", nats, "--stream", stream,
        ])
        .output()
        .expect("cluster status");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

fn balanced(s: &Value, nodes: usize) -> bool {
    let Some(live) = s["nodes"].as_array() else {
        return false;
    };
    let live: Vec<&Value> = live.iter().filter(|n| n["alive"] == true).collect();
    let owned: usize = live
        .iter()
        .map(|n| n["tasks"].as_array().map_or(0, Vec::len))
        .sum();
    let share = 52usize.div_ceil(nodes);
    live.len() == nodes
        && owned == 52
        && live
            .iter()
            .all(|n| n["tasks"].as_array().map_or(0, Vec::len) <= share)
}

/// The largest number of stream messages a task is behind, and the oldest unread message's age.
fn lag(s: &Value) -> Option<(u64, i64)> {
    let tasks = s["tasks"].as_array()?;
    let behind = tasks
        .iter()
        .filter_map(|t| t["lag"]["behind"].as_u64())
        .max()?;
    let age = tasks
        .iter()
        .filter_map(|t| t["lag"]["oldest_ms"].as_i64())
        .max()
        .unwrap_or(0);
    Some((behind, age))
}

/// `n` events shaped as capture and applications send them (tool calls, performance, sign-ins,
/// data access), through ingest's own parsing so they carry ids and timestamps.
fn events(n: usize, run: &str) -> Vec<Event> {
    let tools = [
        "read_file",
        "write_file",
        "search",
        "list_dir",
        "query",
        "fetch",
    ];
    let servers = ["filesystem", "postgres", "web", "git"];
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut rnd = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    let body: Vec<Value> = (0..n)
        .map(|i| {
            let r = rnd();
            let user = format!("{run}-user{}", r % 200);
            let tool = tools[(r >> 8) as usize % tools.len()];
            let server = servers[(r >> 16) as usize % servers.len()];
            let latency = 0.002 + ((r >> 24) % 5000) as f64 / 10_000.0;
            let ok = (r >> 40) % 20 != 0;
            match (r >> 32) % 20 {
                0..=13 => json!({
                    "id": format!("{run}-{i}"), "level": if ok { "info" } else { "error" }, "category": "tool_execution",
                    "event_type": "execution_complete", "source": format!("wrap:{server}"),
                    "message": format!("Tool {tool} execution completed"),
                    "metadata": {"execution_id": format!("{run}-ex-{i}"), "tool_name": tool, "server": server, "user_id": user,
                                 "session_id": format!("s-{}", r % 977), "execution_time": latency, "success": ok,
                                 "outcome": if ok { "success" } else { "tool_error" },
                                 "parameters": {"path": format!("/home/{user}/project/src/module_{}.rs", r % 91)},
                                 "result": {"size": (r >> 20) % 40_000, "content_types": ["text"]}},
                    "tags": ["tool", "execution", "complete"]}),
                14..=16 => json!({
                    "id": format!("{run}-{i}"), "category": "performance", "event_type": "request_performance", "source": format!("wrap:{server}"),
                    "message": "request completed",
                    "metadata": {"request_id": format!("rq-{i}"), "response_time": latency, "success": ok, "method": "tools/call", "server": server}}),
                17..=18 => json!({
                    "id": format!("{run}-{i}"), "level": if ok { "info" } else { "warning" }, "category": "security", "event_type": "authentication",
                    "source": "app:login", "message": "authentication attempt",
                    "metadata": {"user_id": user, "result": if ok { "success" } else { "failure" }, "ip_address": format!("10.0.{}.{}", r % 255, (r >> 8) % 255)}}),
                _ => json!({
                    "id": format!("{run}-{i}"), "category": "security", "event_type": "data_access", "source": format!("wrap:{server}"),
                    "message": "resource read",
                    "metadata": {"user_id": user, "data_type": "resource", "operation": "read", "data_classification": "internal",
                                 "uri": format!("file:///srv/data/{}.csv", r % 300), "server": server}}),
            }
        })
        .collect();
    let ids = IdGenerator::new();
    let defaults = Defaults {
        ids: &ids,
        clock: &SystemClock,
        source: "bench",
        max_events: usize::MAX,
        max_future_skew: Duration::from_secs(300),
    };
    parse_batch(
        serde_json::to_string(&body).unwrap().as_bytes(),
        BodyFormat::Json,
        &defaults,
    )
    .expect("valid events")
}

async fn publish_all(urls: &str, events: &[Event], per_second: Option<f64>) {
    let client = mcpwatch_nats::connect(urls, "bench-edge", true)
        .await
        .expect("connect");
    let mut p = Publisher::new(client, 256);
    let start = Instant::now();
    for (i, chunk) in events.chunks(500).enumerate() {
        while p.publish(chunk).await.is_err() {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        if let Some(rate) = per_second {
            let due = Duration::from_secs_f64(((i + 1) * 500) as f64 / rate);
            if let Some(w) = due.checked_sub(start.elapsed()) {
                tokio::time::sleep(w).await;
            }
        }
    }
}

async fn stored(pg: &tokio_postgres::Client, run: &str) -> i64 {
    pg.query_one(
        "SELECT count(*) FROM events WHERE id LIKE $1",
        &[&format!("{run}-%")],
    )
    .await
    .map(|r| r.get(0))
    .unwrap_or(0)
}

fn main() {
    let burst: usize = env_or("BENCH_EVENTS", 60_000);
    let rate: f64 = env_or("BENCH_RATE", 2_000.0);
    let seconds: u64 = env_or("BENCH_SECONDS", 15);
    let lease: u64 = env_or("BENCH_LEASE", 5);
    let counts: Vec<usize> = std::env::var("BENCH_NODES")
        .unwrap_or_else(|_| "1,2,3".into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let nats = TempNatsCluster::start();
    let pg = TempPostgres::start();
    let dir = tempfile::tempdir().expect("temp dir");
    println!("cluster benchmark: {burst}-event burst, {rate}/s paced for {seconds}s, lease {lease}s; NATS R3 (3 nodes), PostgreSQL, all on this machine");
    println!(
        "{:>5} {:>14} {:>14} {:>16} {:>16} {:>12}",
        "nodes", "burst ev/s", "publish ev/s", "paced max lag", "oldest unread", "failover"
    );
    for &n in &counts {
        let db = pg.create_database(&format!("bench{n}"));
        let stream = format!("BENCH{n}");
        let config = dir.path().join(format!("bench{n}.toml"));
        std::fs::write(
            &config,
            format!(
                "[metrics]\nhost_events = false\n[nats]\nstream = \"{stream}\"\nmax_bytes = \"512MB\"\n[cluster]\nlease_seconds = {lease}\nsnapshot_seconds = 10\n"
            ),
        )
        .expect("config");
        let urls = nats.urls();
        let mut nodes: Vec<Node> = (0..n)
            .map(|i| start_node(dir.path(), &format!("n{n}-{i}"), &config, &db, &urls))
            .collect();
        let deadline = Instant::now() + Duration::from_secs(120);
        while !balanced(&status(&db, &urls, &stream), n) {
            assert!(Instant::now() < deadline, "{n} node(s) did not balance");
            std::thread::sleep(Duration::from_millis(250));
        }
        let (pgc, conn) = rt
            .block_on(tokio_postgres::connect(&db, tokio_postgres::NoTls))
            .expect("pg");
        rt.spawn(conn);
        // Burst.
        let run = format!("b{n}");
        let evs = events(burst, &run);
        let start = Instant::now();
        rt.block_on(publish_all(&urls, &evs, None));
        let published = start.elapsed();
        let deadline = Instant::now() + Duration::from_secs(600);
        loop {
            let all_stored = rt.block_on(stored(&pgc, &run)) as usize >= burst;
            let caught_up = lag(&status(&db, &urls, &stream)).is_some_and(|(b, _)| b == 0);
            if all_stored && caught_up {
                break;
            }
            assert!(Instant::now() < deadline, "the burst was not processed");
            std::thread::sleep(Duration::from_millis(200));
        }
        let burst_rate = burst as f64 / start.elapsed().as_secs_f64();
        let publish_rate = burst as f64 / published.as_secs_f64();
        // Paced.
        let run = format!("p{n}");
        let evs = events((rate * seconds as f64) as usize, &run);
        let urls2 = urls.clone();
        let load = rt.spawn(async move { publish_all(&urls2, &evs, Some(rate)).await });
        let (mut max_behind, mut max_age) = (0, 0);
        while !load.is_finished() {
            if let Some((b, a)) = lag(&status(&db, &urls, &stream)) {
                max_behind = max_behind.max(b);
                max_age = max_age.max(a);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        // Failover: kill the node holding user/0's task, then fail a user of that partition.
        let failover = (n > 1).then(|| {
            let s = status(&db, &urls, &stream);
            let owner = s["tasks"]
                .as_array()
                .and_then(|t| t.iter().find(|t| t["task"] == "user/0"))
                .and_then(|t| t["owner"].as_str())
                .unwrap_or("")
                .to_owned();
            let info = s["nodes"]
                .as_array()
                .and_then(|ns| ns.iter().find(|x| x["node"] == owner.as_str()))
                .and_then(|x| x["info"].as_str())
                .unwrap_or("")
                .to_owned();
            let victim = nodes
                .iter()
                .position(|x| info.contains(&format!("pid {} ", x.child.id())))
                .expect("the owner of user/0");
            let survivor_url = nodes[(victim + 1) % n].url.clone();
            let user = (0..)
                .map(|i| format!("failover{n}-{i}"))
                .find(|u| mcpwatch_nats::subject::partition(u) == 0)
                .expect("a user of partition 0");
            drop(nodes.remove(victim));
            let killed = Instant::now();
            let evs: Vec<Event> = {
                let body: Vec<Value> = (0..5)
                    .map(|i| json!({"id": format!("{user}-{i}"), "category": "security", "event_type": "authentication",
                                    "source": "app:login", "level": "warning", "message": "sign-in failed",
                                    "metadata": {"user_id": user, "result": "failure", "ip_address": "10.9.9.9"}}))
                    .collect();
                let ids = IdGenerator::new();
                parse_batch(
                    serde_json::to_string(&body).unwrap().as_bytes(),
                    BodyFormat::Json,
                    &Defaults {
                        ids: &ids,
                        clock: &SystemClock,
                        source: "bench",
                        max_events: 10,
                        max_future_skew: Duration::from_secs(300),
                    },
                )
                .expect("valid")
            };
            rt.block_on(publish_all(&urls, &evs, None));
            let http = reqwest::Client::new();
            let deadline = Instant::now() + Duration::from_secs(120);
            loop {
                let page: Value = rt.block_on(async {
                    let r = http
                        .get(format!(
                            "{survivor_url}/api/v1/alerts?name=brute_force_detection&limit=1000"
                        ))
                        .send()
                        .await;
                    match r {
                        Ok(r) => r.json().await.unwrap_or(Value::Null),
                        Err(_) => Value::Null,
                    }
                });
                let found = page["alerts"].as_array().is_some_and(|a| {
                    a.iter()
                        .any(|a| a["group"]["metadata.user_id"] == user.as_str())
                });
                if found {
                    break killed.elapsed();
                }
                assert!(Instant::now() < deadline, "no alert after the kill");
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        println!(
            "{n:>5} {burst_rate:>14.0} {publish_rate:>14.0} {:>16} {:>16} {:>12}",
            format!("{max_behind} msgs"),
            format!("{max_age} ms"),
            failover.map_or_else(|| "-".to_owned(), |d| format!("{:.1} s", d.as_secs_f64()))
        );
        drop(nodes);
        // Streams may not share subjects: the next node count gets a stream of its own.
        rt.block_on(async {
            let client = mcpwatch_nats::connect(&urls, "bench-cleanup", true)
                .await
                .expect("nats");
            mcpwatch_nats::async_nats::jetstream::new(client)
                .delete_stream(&stream)
                .await
                .expect("delete the stream");
        });
    }
}
