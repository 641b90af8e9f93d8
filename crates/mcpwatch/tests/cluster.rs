//! `serve --cluster` end to end: real `mcpwatch serve` nodes on a real 3-node nats-server
//! cluster (`TempNatsCluster`) and a real PostgreSQL (`TempPostgres`), with a recording webhook
//! receiver. Events enter as edges send them: through the edges' JetStream publisher
//! (`mcpwatch_nats::Publisher`, what `wrap --nats` and the gateway use), shaped as applications
//! report sign-ins (SPEC 2). Loopback only; waits are conditions with deadlines.

mod alerting_support;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alerting_support::{get, write_config, BRUTE};
use common::{bin, Serve};
use mcpwatch_core::{Event, Timestamp};
use mcpwatch_nats::testing::TempNatsCluster;
use mcpwatch_nats::Publisher;
use mcpwatch_store::testing::TempPostgres;
use serde_json::Value;

const STREAM: &str = "MCPWATCH_EVENTS";
const TASKS: usize = 3 * 17 + 1;

/// A webhook receiver that records each notification id it gets.
struct Receiver {
    addr: std::net::SocketAddr,
    got: Arc<Mutex<Vec<(String, String)>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let got: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let rec = got.clone();
        let app = axum::Router::new().fallback(
            move |headers: axum::http::HeaderMap, body: axum::body::Bytes| {
                let rec = rec.clone();
                async move {
                    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                    let id = headers
                        .get("x-mcpwatch-notification-id")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or("")
                        .to_owned();
                    let fp = body["alerts"][0]["fingerprint"]
                        .as_str()
                        .unwrap_or("")
                        .to_owned();
                    rec.lock().unwrap().push((id, fp));
                    "ok"
                }
            },
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, got, task }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// NATS, PostgreSQL, a receiver and a config the nodes share.
struct World {
    nats: TempNatsCluster,
    _pg: TempPostgres,
    db: String,
    dir: tempfile::TempDir,
    config: PathBuf,
    rx: Receiver,
}

/// The last warnings and errors each node logged.
fn warnings(nodes: &[Serve]) -> String {
    let mut out = String::new();
    for n in nodes {
        let log = n.log.lock().unwrap_or_else(|p| p.into_inner());
        let said: Vec<&String> = log
            .iter()
            .filter(|l| l.contains("WARN") || l.contains("ERROR"))
            .collect();
        out += &format!("node {} warned {} time(s); the last:\n", n.url, said.len());
        for l in said.iter().rev().take(20).rev() {
            out += &format!("  {l}\n");
        }
    }
    out
}

impl World {
    async fn start() -> World {
        World::start_with("").await
    }

    /// With `extra` appended to the nodes' config.
    async fn start_with(extra: &str) -> World {
        let nats = TempNatsCluster::start();
        let pg = TempPostgres::start();
        let db = pg.create_database("cluster");
        let dir = tempfile::tempdir().unwrap();
        let rx = Receiver::start().await;
        let config = write_config(
            dir.path(),
            &format!(
                "[nats]\nmax_bytes = \"256MB\"\n[cluster]\nlease_seconds = 3\nsnapshot_seconds = 2\n\
                 [channels.siem]\ntype = \"webhook\"\nurl = \"http://{}/hook\"\n[[routes]]\nchannels = [\"siem\"]\n{extra}",
                rx.addr
            ),
        );
        World {
            nats,
            _pg: pg,
            db,
            dir,
            config,
            rx,
        }
    }

    fn node(&self, name: &str) -> Serve {
        let data = self.dir.path().join(name);
        Serve::start(
            &data,
            &[
                "--config",
                self.config.to_str().unwrap(),
                "--store",
                &self.db,
                "--nats",
                &self.nats.urls(),
                "--cluster",
            ],
        )
    }

    /// `mcpwatch cluster status --json`.
    fn status(&self) -> Value {
        let out = bin()
            .args(["cluster", "status", "--json", "--store", &self.db, "--nats"])
            .arg(self.nats.urls())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster status: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Waits until every task has a live owner among exactly `nodes` nodes, none above its
    /// share; returns the status, or fails with what the `serves` warned of.
    async fn wait_balanced(&self, serves: &[Serve], nodes: usize, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let s = self.status();
            let live: Vec<&Value> = s["nodes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|n| n["alive"] == true)
                .collect();
            let owned: usize = live
                .iter()
                .map(|n| n["tasks"].as_array().unwrap().len())
                .sum();
            let share = TASKS.div_ceil(nodes);
            let fair = live
                .iter()
                .all(|n| n["tasks"].as_array().unwrap().len() <= share);
            let leased = s["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .all(|t| t["lease_expires_in_ms"].as_i64().is_some_and(|ms| ms >= 0));
            if live.len() == nodes && owned == TASKS && fair && leased {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "the cluster did not settle on {nodes} node(s) within {within:?}: {s:#}\n{}",
                warnings(serves)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until every task has read its subjects to the stream's end; says what the
    /// `nodes` warned of if they do not.
    async fn wait_caught_up(&self, nodes: &[Serve], within: Duration) {
        let deadline = Instant::now() + within;
        loop {
            let last = last_sequence(&self.nats.urls()).await;
            let s = self.status();
            let tasks = s["tasks"].as_array().unwrap();
            let global = tasks.iter().find(|t| t["task"] == "global").unwrap();
            let done = global["position"].as_u64() == Some(last)
                && tasks.iter().all(|t| t["lag"]["behind"] == 0);
            if last > 0 && done {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "tasks did not reach the stream's end ({last}) within {within:?}:\n{}\n{}",
                compact(&s),
                warnings(nodes)
            );
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The ids of the derived events the cluster stored.
    async fn derived_ids(&self) -> BTreeSet<String> {
        let (client, conn) = tokio_postgres::connect(&self.db, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(conn);
        client
            .query(
                "SELECT id FROM events WHERE body::jsonb->>'source' = 'mcpwatch:detect'",
                &[],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get::<_, String>(0))
            .collect()
    }
}

/// A status as one line per task: name, owner, epoch, position, lag.
fn compact(s: &Value) -> String {
    s["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            format!(
                "{} {} e{} @{} lag {} lease {}",
                t["task"].as_str().unwrap_or("?"),
                t["owner"].as_str().unwrap_or("-"),
                t["epoch"],
                t["position"],
                t["lag"]["behind"],
                t["lease_expires_in_ms"]
            )
        })
        .collect::<Vec<_>>()
        .join("\n")
}

async fn last_sequence(urls: &str) -> u64 {
    common::stream_state(urls, STREAM)
        .await
        .map_or(0, |state| state.last_sequence)
}

/// A failed sign-in of `user` as an application reports it.
fn failed_login(run: &str, user: &str, i: usize, at: Timestamp) -> Event {
    serde_json::from_value(serde_json::json!({
        "id": format!("{run}-{user}-{i}"),
        "timestamp": at,
        "level": "warning",
        "category": "security",
        "source": "app:login",
        "event_type": "authentication",
        "message": "sign-in failed",
        "metadata": {"user_id": user, "result": "failure", "ip_address": format!("10.1.0.{}", i % 200)},
        "tags": []
    }))
    .unwrap()
}

/// `n` failures (numbered from `first`) for each of `users`, published and acknowledged.
async fn publish_failures(urls: &str, run: &str, users: &[String], first: usize, n: usize) {
    let client = mcpwatch_nats::connect(urls, "test-edge", true)
        .await
        .unwrap();
    let mut publisher = Publisher::new(client, 256);
    let now = mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock);
    let mut events = Vec::new();
    for (u, user) in users.iter().enumerate() {
        for i in first..first + n {
            let at = now.saturating_add(Duration::from_millis((u * 10 + i) as u64));
            events.push(failed_login(run, user, i, at));
        }
    }
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(e) = publisher.publish(&events).await {
        assert!(Instant::now() < deadline, "publishing failed: {e}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn users(run: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{run}-user{i:02}")).collect()
}

/// Every brute-force alert, from the API of a node.
async fn brute_alerts(base: &str) -> Vec<Value> {
    brute_alerts_as(base, None).await
}

/// The brute-force alerts `base` lists, asked with `token` when the node requires one.
async fn brute_alerts_as(base: &str, token: Option<&str>) -> Vec<Value> {
    let client = reqwest::Client::new();
    let url = format!("{base}/api/v1/alerts?{BRUTE}&limit=1000");
    let page = match token {
        Some(token) => {
            let req = client.get(url).bearer_auth(token);
            req.send().await.unwrap().json().await.unwrap()
        }
        None => get(&client, &url).await,
    };
    page["alerts"].as_array().cloned().unwrap_or_default()
}

/// Waits until `n` brute-force alerts exist and the receiver got a notification for each.
async fn wait_notified(world: &World, base: &str, n: usize, within: Duration) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let alerts = brute_alerts(base).await;
        let fps: BTreeSet<String> = alerts
            .iter()
            .filter_map(|a| a["fingerprint"].as_str().map(str::to_owned))
            .collect();
        let notified: BTreeSet<String> = world
            .rx
            .got
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, fp)| fps.contains(fp))
            .map(|(_, fp)| fp.clone())
            .collect();
        if alerts.len() >= n && notified.len() >= n {
            return alerts;
        }
        assert!(
            Instant::now() < deadline,
            "{} alert(s), {} notified, want {n}, after {within:?}",
            alerts.len(),
            notified.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Each notification id arrived once, and one alert per fingerprint was notified.
fn assert_notified_once(world: &World, alerts: &[Value]) {
    let fps: BTreeSet<&str> = alerts
        .iter()
        .filter_map(|a| a["fingerprint"].as_str())
        .collect();
    assert_eq!(fps.len(), alerts.len(), "one alert per group: {alerts:#?}");
    let got = world.rx.got.lock().unwrap().clone();
    let mut per_id: BTreeMap<&str, usize> = BTreeMap::new();
    for (id, _) in &got {
        *per_id.entry(id.as_str()).or_default() += 1;
    }
    let twice: Vec<_> = per_id.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "notified more than once: {twice:?}");
    let notified: BTreeSet<&str> = got
        .iter()
        .map(|(_, fp)| fp.as_str())
        .filter(|fp| fps.contains(fp))
        .collect();
    assert_eq!(notified.len(), fps.len(), "every alert notified");
    for a in alerts {
        assert_eq!(a["count"], 1, "folded once: {a:#}");
    }
}

/// The node owning the most user tasks, by its `cluster status` info (`pid N on ADDR`).
fn owner_of_user_tasks<'a>(status: &Value, nodes: &'a [Serve]) -> &'a Serve {
    let best = status["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .max_by_key(|n| {
            n["tasks"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|t| t.as_str().unwrap().starts_with("user/"))
                .count()
        })
        .unwrap();
    let info = best["info"].as_str().unwrap();
    nodes
        .iter()
        .find(|s| info.contains(&format!("pid {} ", s.child.id())))
        .unwrap_or_else(|| panic!("no node is {info}"))
}

/// Runs `mcpwatch cluster export` and `replay --stream`, returning the replay's finding ids.
fn replay_findings(world: &World) -> BTreeSet<String> {
    let export = world.dir.path().join("stream.jsonl");
    let out = bin()
        .args(["cluster", "export", "--nats", &world.nats.urls(), "--out"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "cluster export: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let findings = world.dir.path().join("findings.jsonl");
    let out = bin()
        .args([
            "replay",
            "--config",
            world.config.to_str().unwrap(),
            "--stream",
        ])
        .arg(&export)
        .arg("--findings-out")
        .arg(&findings)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "replay --stream: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    read_ids(&findings)
}

fn read_ids(path: &Path) -> BTreeSet<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).unwrap()["id"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// 50 users fail three times; the node owning the user tasks is killed; they fail twice more.
/// The other node takes the tasks over from their snapshots, so each brute force (5 in 5
/// minutes) is detected once and notified once. Then the cluster's findings equal `replay`
/// over an export of the stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_owner_s_tasks_are_taken_over_and_each_alert_fires_once() {
    let world = World::start().await;
    let nodes = vec![world.node("a"), world.node("b")];
    let status = world
        .wait_balanced(&nodes, 2, Duration::from_secs(60))
        .await;
    // Each node says on /metrics how many tasks it runs.
    let mut running = 0.0;
    for n in &nodes {
        let text = reqwest::get(format!("{}/metrics", n.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        running += text
            .lines()
            .find_map(|l| l.strip_prefix("mcpwatch_cluster_tasks "))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no mcpwatch_cluster_tasks in {text}"));
    }
    assert_eq!(running, TASKS as f64);
    let run = "kill";
    let who = users(run, 50);
    publish_failures(&world.nats.urls(), run, &who, 0, 3).await;
    world.wait_caught_up(&nodes, Duration::from_secs(60)).await;
    // Snapshots are taken every 2 s: wait for one at every user task's position, so the
    // take-over loads state rather than reading from the stream's start.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let s = world.status();
        let snapped = s["tasks"].as_array().unwrap().iter().all(|t| {
            !t["task"].as_str().unwrap().starts_with("user/")
                || t["snapshot_position"] == t["position"]
        });
        if snapped {
            break;
        }
        assert!(Instant::now() < deadline, "no snapshots:\n{}", compact(&s));
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let victim = owner_of_user_tasks(&status, &nodes);
    let victim_pid = victim.child.id();
    let mut nodes = nodes;
    let idx = nodes
        .iter()
        .position(|s| s.child.id() == victim_pid)
        .unwrap();
    let killed_at = Instant::now();
    nodes.remove(idx).kill9();
    let survivor = &nodes[0];
    publish_failures(&world.nats.urls(), run, &who, 3, 2).await;
    // The first finding by the new owner.
    let deadline = Instant::now() + Duration::from_secs(60);
    while brute_alerts(&survivor.url).await.is_empty() {
        assert!(Instant::now() < deadline, "no alert after the kill");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    eprintln!(
        "failover: first finding by the new owner {:?} after the kill (lease 3 s)",
        killed_at.elapsed()
    );
    let alerts = wait_notified(&world, &survivor.url, 50, Duration::from_secs(60)).await;
    assert_eq!(alerts.len(), 50);
    world
        .wait_balanced(&nodes, 1, Duration::from_secs(30))
        .await;
    world.wait_caught_up(&nodes, Duration::from_secs(60)).await;
    assert_notified_once(&world, &alerts);
    // Determinism: what the cluster derived is what replay over the stream derives.
    let live = world.derived_ids().await;
    let replayed = replay_findings(&world);
    assert!(live.len() >= 50, "{live:?}");
    assert_eq!(live, replayed, "the cluster's findings equal replay's");
}

/// A node stopped with SIGSTOP past its leases: the other takes its tasks over and alerts;
/// when the stopped node continues, the fence refuses its writes and it stands down, and no
/// alert is raised twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_owner_is_fenced_when_it_wakes_and_no_alert_is_doubled() {
    let world = World::start().await;
    let nodes = [world.node("a"), world.node("b")];
    world
        .wait_balanced(&nodes, 2, Duration::from_secs(60))
        .await;
    let (paused, other) = (&nodes[0], &nodes[1]);
    let pid = paused.child.id().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    };
    signal("-STOP");
    // Published while it is stopped: its consumers' pull requests still deliver these to its
    // socket, so it has work in hand when it wakes.
    let run = "pause";
    let who = users(run, 20);
    publish_failures(&world.nats.urls(), run, &who, 0, 5).await;
    world
        .wait_balanced(&nodes, 1, Duration::from_secs(30))
        .await;
    let alerts = wait_notified(&world, &other.url, 20, Duration::from_secs(60)).await;
    signal("-CONT");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !paused.log_has("stands down") {
        assert!(
            Instant::now() < deadline,
            "the woken node did not stand down: {:?}",
            paused.log.lock().unwrap()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // It rejoins and gets its share again; what it detects from then on is new.
    world
        .wait_balanced(&nodes, 2, Duration::from_secs(60))
        .await;
    let more = users("pause2", 20);
    publish_failures(&world.nats.urls(), "pause2", &more, 0, 5).await;
    let all = wait_notified(&world, &other.url, 40, Duration::from_secs(60)).await;
    assert!(alerts.len() == 20 && all.len() == 40, "{}", all.len());
    world.wait_caught_up(&nodes, Duration::from_secs(60)).await;
    assert_notified_once(&world, &all);
}

/// A sign-in of one of 1,000 users, succeeding or failing, as an application reports it.
fn sign_in(run: &str, n: usize, at: Timestamp) -> Event {
    let user = format!("{run}-u{:03}", n % 1_000);
    let mut e = failed_login(run, &user, n, at);
    if !n.is_multiple_of(7) {
        e.metadata
            .insert("result".into(), Value::String("success".into()));
    }
    e
}

/// 200,000 events published at a modest pace (everything shares two cores); the stream's
/// leader is killed at one third, a `serve` node at two thirds, and both restart. Every id
/// JetStream acknowledged is stored exactly once, and every task reaches the stream's end.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_acknowledged_event_is_lost_or_stored_twice_through_leader_and_node_kills() {
    const TOTAL: usize = 200_000;
    const BATCH: usize = 500;
    const PER_SECOND: f64 = 6_000.0;
    let mut world = World::start().await;
    let mut nodes = vec![world.node("a"), world.node("b")];
    world
        .wait_balanced(&nodes, 2, Duration::from_secs(60))
        .await;
    let client = mcpwatch_nats::connect(&world.nats.urls(), "test-edge", true)
        .await
        .unwrap();
    let mut publisher = Publisher::new(client, 512);
    let run = "noloss";
    let started = Instant::now();
    let mut acked: Vec<String> = Vec::with_capacity(TOTAL);
    let (mut leader_killed, mut node_killed) = (None, false);
    // A stall is no acknowledgement for a minute, not a slow machine: on a loaded 2-core runner
    // the whole run has taken over five minutes.
    let mut progressed = Instant::now();
    let mut next = 0;
    while next < TOTAL {
        assert!(
            progressed.elapsed() < Duration::from_secs(60),
            "publishing stalled at {next}: nothing acknowledged for 60 s"
        );
        let now = mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock);
        let batch: Vec<Event> = (next..(next + BATCH).min(TOTAL))
            .map(|n| sign_in(run, n, now))
            .collect();
        match publisher.publish(&batch).await {
            Ok(()) => {
                acked.extend(batch.iter().map(|e| e.id.clone()));
                next += batch.len();
                progressed = Instant::now();
            }
            // Unacknowledged: the edge re-sends (its spool would); the stream's duplicate
            // window and the store's ids keep each event once.
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
        if leader_killed.is_none() && next >= TOTAL / 3 {
            let leader = TempNatsCluster::stream_leader(&world.nats.urls(), STREAM)
                .await
                .unwrap();
            let i = world.nats.index_of(&leader).unwrap();
            world.nats.kill9(i);
            eprintln!("killed the stream leader {leader} at {next}");
            leader_killed = Some((i, Instant::now()));
        }
        if let Some((i, at)) = leader_killed {
            if at.elapsed() > Duration::from_secs(3) && !world.nats.is_running(i) {
                world.nats.restart(i);
            }
        }
        if !node_killed && next >= 2 * TOTAL / 3 {
            nodes.remove(0).kill9();
            eprintln!("killed serve node a at {next}");
            nodes.push(world.node("a"));
            node_killed = true;
        }
        // Pace: at most PER_SECOND on average.
        let ahead = Duration::from_secs_f64(next as f64 / PER_SECOND);
        if let Some(wait) = ahead.checked_sub(started.elapsed()) {
            tokio::time::sleep(wait).await;
        }
    }
    if let Some((i, _)) = leader_killed {
        if !world.nats.is_running(i) {
            world.nats.restart(i);
        }
    }
    eprintln!(
        "published {TOTAL} events in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // Every acknowledged id stored, once.
    let (pg, conn) = tokio_postgres::connect(&world.db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let row = pg
            .query_one(
                "SELECT count(*), count(DISTINCT id) FROM events WHERE id LIKE 'noloss-%'",
                &[],
            )
            .await
            .unwrap();
        let (rows, distinct): (i64, i64) = (row.get(0), row.get(1));
        assert_eq!(rows, distinct, "an event is stored twice");
        if distinct as usize >= TOTAL {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{distinct} of {TOTAL} stored after 240 s"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let stored: BTreeSet<String> = pg
        .query("SELECT id FROM events WHERE id LIKE 'noloss-%'", &[])
        .await
        .unwrap()
        .iter()
        .map(|r| r.get::<_, String>(0))
        .collect();
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} acknowledged but not stored",
        missing.len()
    );
    world
        .wait_balanced(&nodes, 2, Duration::from_secs(60))
        .await;
    world.wait_caught_up(&nodes, Duration::from_secs(240)).await;
}

/// What a cluster node's ingest API takes goes to the stream, redacted and with the relay MAC:
/// an application's failed sign-ins (source `api:<token>`) are stored once and detected by the
/// tasks. The same `api:` source published straight to NATS, without the MAC or with a wrong
/// one, is neither stored nor detected: an edge cannot pass its events off as a token's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ingest_on_a_node_reaches_the_tasks_and_forged_relays_reach_nothing() {
    const TOKEN: &str = "app-token-0123456789";
    let world = World::start_with(&format!(
        "[[auth.tokens]]\nname = \"app\"\ntoken = \"{TOKEN}\"\nroles = [\"ingest\", \"read\", \"admin\"]\n"
    ))
    .await;
    let nodes = [world.node("a"), world.node("b")];
    world
        .wait_balanced(&nodes, 2, Duration::from_secs(60))
        .await;
    let http = reqwest::Client::new();
    // Forged first: straight to the stream as an edge could, claiming the token's source.
    let forged = |user: &str, i: usize| {
        let mut e = failed_login(
            "forged",
            user,
            i,
            mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock),
        );
        e.source = "api:app".into();
        e
    };
    let client = mcpwatch_nats::connect(&world.nats.urls(), "test-edge", true)
        .await
        .unwrap();
    let plain: Vec<Event> = (0..5).map(|i| forged("mallory", i)).collect();
    Publisher::new(client.clone(), 64)
        .publish(&plain)
        .await
        .unwrap();
    let wrong: Vec<Event> = (0..5).map(|i| forged("trudy", i)).collect();
    Publisher::new(client, 64)
        .relaying(mcpwatch_nats::relay::RelayKey::new([9; 32]))
        .publish(&wrong)
        .await
        .unwrap();
    // Then the application, through node a's API: five failures for each of ten users, one of
    // them carrying a password the stream must not see.
    let mut batch = Vec::new();
    for u in 0..10 {
        for _ in 0..5 {
            let mut e = common::auth_event(&format!("app-user{u}"), "failure");
            e.as_object_mut().unwrap().remove("source");
            batch.push(e);
        }
    }
    batch[0]["metadata"]["password"] = Value::String("hunter2-correct-horse".into());
    let resp = http
        .post(format!("{}/api/v1/events", nodes[0].url))
        .bearer_auth(TOKEN)
        .json(&batch)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{}", resp.text().await.unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    let alerts = loop {
        let alerts = brute_alerts_as(&nodes[1].url, Some(TOKEN)).await;
        if alerts.len() >= 10 {
            break alerts;
        }
        assert!(Instant::now() < deadline, "{} alert(s)", alerts.len());
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    world.wait_caught_up(&nodes, Duration::from_secs(60)).await;
    let users: BTreeSet<String> = alerts
        .iter()
        .map(|a| {
            a["group"]["metadata.user_id"]
                .as_str()
                .unwrap_or("?")
                .to_owned()
        })
        .collect();
    let want: BTreeSet<String> = (0..10).map(|u| format!("app-user{u}")).collect();
    assert_eq!(
        users, want,
        "the application's brute forces, and no forged one"
    );
    let (pg, conn) = tokio_postgres::connect(&world.db, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(conn);
    let rows = pg
        .query(
            "SELECT body::jsonb->>'source', body::jsonb->'metadata'->>'user_id', count(*) FROM events \
             WHERE event_type = 'authentication' GROUP BY 1, 2",
            &[],
        )
        .await
        .unwrap();
    let stored: BTreeMap<(String, String), i64> = rows
        .iter()
        .map(|r| ((r.get(0), r.get(1)), r.get(2)))
        .collect();
    for u in &want {
        assert_eq!(
            stored.get(&("api:app".to_owned(), u.clone())),
            Some(&5),
            "{stored:?}"
        );
    }
    assert_eq!(stored.len(), 10, "nothing forged is stored: {stored:?}");
    // The stream holds the application's events redacted.
    let export = world.dir.path().join("relay.jsonl");
    let out = bin()
        .args(["cluster", "export", "--nats", &world.nats.urls(), "--out"])
        .arg(&export)
        .output()
        .unwrap();
    assert!(out.status.success());
    let text = std::fs::read_to_string(&export).unwrap();
    assert!(
        text.contains("app-user0") && text.contains("REDACTED"),
        "{text}"
    );
    assert!(
        !text.contains("hunter2-correct-horse"),
        "a secret reached the stream"
    );
}
