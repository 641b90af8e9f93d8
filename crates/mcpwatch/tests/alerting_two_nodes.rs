//! Two `serve` nodes on one PostgreSQL database, through the real binary: both get the same
//! failed logins over the ingest API (each node its own copy, with ids and timestamps as capture
//! gives its events), so both detect the same 50 brute forces. Each becomes one alert that both
//! nodes' findings fold into, and each alert's webhook notification reaches the receiver exactly
//! once, whichever node sends it. Then one node is
//! killed (`kill -9`) while the receiver holds its deliveries unanswered: the other node sends
//! everything, and re-sends only the rows the killed node had claimed (at least once, with the
//! same notification id, so the receiver could drop them). Loopback only.

mod alerting_support;
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use alerting_support::{get, write_config, BRUTE};
use axum::extract::State;
use axum::http::{HeaderMap, Uri};
use common::{auth_event, post, Serve};
use mcpwatch_store::testing::TempPostgres;
use serde_json::Value;

/// Alerts fired on both nodes.
const ALERTS: usize = 50;

/// One request the receiver got: which node's URL, the notification id, the alert's fingerprint.
#[derive(Debug, Clone)]
struct Got {
    node: String,
    id: String,
    fingerprint: String,
}

#[derive(Clone, Default)]
struct Hooks {
    got: Arc<Mutex<Vec<Got>>>,
    /// Requests to node A's URL are recorded and never answered.
    stall_a: Arc<AtomicBool>,
}

/// A webhook receiver: records every request; `/hook/a` and `/hook/b` tell the nodes apart.
struct Receiver {
    addr: std::net::SocketAddr,
    hooks: Hooks,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start() -> Receiver {
        let hooks = Hooks::default();
        let app =
            axum::Router::new()
                .fallback(
                    |State(h): State<Hooks>,
                     uri: Uri,
                     headers: HeaderMap,
                     body: axum::body::Bytes| async move {
                        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                        let node = uri.path().trim_start_matches("/hook/").to_owned();
                        let got = Got {
                            node: node.clone(),
                            id: headers
                                .get("x-mcpwatch-notification-id")
                                .and_then(|v| v.to_str().ok())
                                .unwrap_or("")
                                .to_owned(),
                            fingerprint: body["alerts"][0]["fingerprint"]
                                .as_str()
                                .unwrap_or("")
                                .to_owned(),
                        };
                        h.got.lock().unwrap().push(got);
                        if node == "a" && h.stall_a.load(Ordering::SeqCst) {
                            // Sent but never answered: the node cannot record the attempt.
                            std::future::pending::<()>().await;
                        }
                        (axum::http::StatusCode::OK, "ok")
                    },
                )
                .with_state(hooks.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, hooks, task }
    }

    fn got(&self) -> Vec<Got> {
        self.hooks.got.lock().unwrap().clone()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A node on `db` whose webhook `siem` posts to the receiver's `/hook/{name}`; every alert goes
/// to it.
fn node(name: &str, dir: &Path, db: &str, rx: &Receiver) -> Serve {
    let home = dir.join(name);
    std::fs::create_dir_all(&home).unwrap();
    let config = write_config(
        &home,
        &format!(
            "[channels.siem]\ntype = \"webhook\"\nurl = \"http://{}/hook/{name}\"\n[[routes]]\nchannels = [\"siem\"]\n",
            rx.addr
        ),
    );
    Serve::start(
        &home.join("data"),
        &["--config", config.to_str().unwrap(), "--store", db],
    )
}

/// Five failed logins at `now` for each of `ALERTS` users, as node `node` would capture them (its
/// own event ids, the given timestamps): every node that gets these detects all 50 brute forces.
/// Both nodes must get events of their own: an id already in the shared store is not detected
/// again (the pipeline stages each stored event once).
fn failed_logins(run: &str, node: &str, now: mcpwatch_core::Timestamp) -> Vec<Value> {
    let mut out = Vec::new();
    for u in 0..ALERTS {
        for i in 0..5 {
            let mut e = auth_event(&format!("{run}-user{u:02}"), "failure");
            e["id"] = Value::String(format!("{run}-{node}-u{u:02}-e{i}"));
            let at = now.saturating_add(Duration::from_millis((u * 5 + i) as u64));
            e["timestamp"] = serde_json::to_value(at).unwrap();
            out.push(e);
        }
    }
    out
}

/// Posts the same failed logins to both nodes at once, each with its own event ids.
async fn ingest_on_both(a: &Serve, b: &Serve, run: &str) {
    let client = reqwest::Client::new();
    let now = mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock);
    let posts = [("a", a), ("b", b)].map(|(name, n)| {
        let (client, url) = (client.clone(), n.url.clone());
        let batch = Value::Array(failed_logins(run, name, now));
        async move {
            let (status, body) = post(&client, &url, &batch).await.unwrap();
            assert_eq!(status, 202, "{body}");
        }
    });
    futures_util::future::join_all(posts).await;
}

/// Every brute-force alert, from the API of the node at `base` (all pages).
async fn all_alerts(base: &str) -> Vec<Value> {
    let client = reqwest::Client::new();
    let page = get(&client, &format!("{base}/api/v1/alerts?{BRUTE}&limit=1000")).await;
    page["alerts"].as_array().cloned().unwrap_or_default()
}

/// Waits until `ALERTS` alerts exist, the webhook accepted every one of them and `also` holds
/// for each (or fails at the deadline with what it saw).
async fn wait_all_delivered(
    base: &str,
    within: Duration,
    also: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let alerts = all_alerts(base).await;
        let delivered = alerts
            .iter()
            .filter(|a| a["channels"]["siem"]["status"] == "delivered" && also(a))
            .count();
        if alerts.len() == ALERTS && delivered == ALERTS {
            return alerts;
        }
        assert!(
            Instant::now() < deadline,
            "{delivered} of {} alerts delivered (want {ALERTS}) after {within:?}",
            alerts.len()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// How many times each notification id arrived, per node.
fn counts(got: &[Got], node: &str) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for g in got.iter().filter(|g| g.node == node) {
        *out.entry(g.id.clone()).or_default() += 1;
    }
    out
}

/// The notification ids that reached the receiver for these alerts (other rules may fire on the
/// same traffic; their notifications are held to the same once-only check but not counted here).
fn brute_ids(got: &[Got], alerts: &[Value]) -> BTreeSet<String> {
    let fps = fingerprints(alerts);
    got.iter()
        .filter(|g| fps.contains(&g.fingerprint))
        .map(|g| g.id.clone())
        .collect()
}

fn fingerprints(alerts: &[Value]) -> BTreeSet<String> {
    alerts
        .iter()
        .map(|a| a["fingerprint"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_nodes_on_one_database_notify_each_alert_once() {
    let pg = TempPostgres::start();
    let db = pg.create_database("mcpwatch");
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    let a = node("a", dir.path(), &db, &rx);
    let b = node("b", dir.path(), &db, &rx);
    ingest_on_both(&a, &b, "once").await;

    // Both nodes fired every alert: the findings of both folded into one alert each.
    let alerts = wait_all_delivered(&b.url, Duration::from_secs(60), |a| a["count"] == 2).await;
    for alert in &alerts {
        assert_eq!(alert["status"], "sent", "{alert}");
        assert_eq!(
            alert["channels"]["siem"]["attempts"], 1,
            "sent once, by one node: {alert}"
        );
    }
    assert_eq!(
        fingerprints(&all_alerts(&a.url).await),
        fingerprints(&alerts),
        "both nodes show the same alerts"
    );
    // Every row is delivered, so every send has happened: nothing more can arrive.
    let got = rx.got();
    let mut per_id: BTreeMap<String, usize> = BTreeMap::new();
    for g in &got {
        assert!(!g.id.is_empty(), "every webhook carries a notification id");
        *per_id.entry(g.id.clone()).or_default() += 1;
    }
    assert!(
        per_id.values().all(|n| *n == 1),
        "each notification sent exactly once: {per_id:?}"
    );
    assert_eq!(
        brute_ids(&got, &alerts).len(),
        ALERTS,
        "one notification per alert, and every alert notified"
    );
    // Actions, silences and the dashboard on one node are what the other node shows.
    let client = reqwest::Client::new();
    let id = alerts[0]["id"].as_str().unwrap();
    let acked = client
        .post(format!("{}/api/v1/alerts/{id}/ack", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(acked.status().as_u16(), 200);
    let on_b = get(&client, &format!("{}/api/v1/alerts/{id}", b.url)).await;
    assert_eq!(on_b["status"], "acknowledged", "{on_b}");
    let silence = client
        .post(format!("{}/api/v1/silences", b.url))
        .json(&serde_json::json!({"matchers": ["name=brute_force_detection"], "duration": "1h", "comment": "pen test"}))
        .send()
        .await
        .unwrap();
    assert_eq!(silence.status().as_u16(), 201);
    let silences = get(&client, &format!("{}/api/v1/silences", a.url)).await;
    assert_eq!(
        silences["silences"].as_array().unwrap().len(),
        1,
        "{silences}"
    );
    let page = client
        .get(format!("{}/alerts/{id}", a.url))
        .send()
        .await
        .unwrap();
    assert_eq!(page.status().as_u16(), 200);
    let html = page.text().await.unwrap();
    assert!(
        html.contains("brute_force_detection") && html.contains("acknowledged"),
        "the dashboard's alert page reads the shared store"
    );
    let (from_a, from_b) = (counts(&got, "a").len(), counts(&got, "b").len());
    eprintln!("node a sent {from_a}, node b sent {from_b}");
    a.stop();
    b.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_delivery_loses_nothing_and_only_its_claimed_rows_are_sent_again() {
    let pg = TempPostgres::start();
    let db = pg.create_database("mcpwatch");
    let dir = tempfile::tempdir().unwrap();
    let rx = Receiver::start().await;
    rx.hooks.stall_a.store(true, Ordering::SeqCst);
    let a = node("a", dir.path(), &db, &rx);
    let b = node("b", dir.path(), &db, &rx);
    ingest_on_both(&a, &b, "kill").await;

    // Node A has sent at least one notification and is waiting for the answer: kill it there,
    // between the send and recording it.
    let deadline = Instant::now() + Duration::from_secs(30);
    while counts(&rx.got(), "a").is_empty() {
        assert!(
            Instant::now() < deadline,
            "node a never sent anything; got {:?}",
            rx.got()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    a.kill9();
    let sent_by_a = counts(&rx.got(), "a");

    // The claims of the killed node expire (twice the 2 s delivery timeout and 5 s) and node B
    // sends those rows too.
    let alerts = wait_all_delivered(&b.url, Duration::from_secs(90), |_| true).await;
    let got = rx.got();
    assert_eq!(
        counts(&got, "a"),
        sent_by_a,
        "nothing more came from the killed node"
    );
    let from_b = counts(&got, "b");
    assert!(
        from_b.values().all(|n| *n == 1),
        "the surviving node sent each notification once: {from_b:?}"
    );
    assert_eq!(
        brute_ids(&got, &alerts).len(),
        ALERTS,
        "one notification per alert"
    );
    assert!(
        sent_by_a.values().all(|n| *n == 1),
        "the killed node sent each of its rows once: {sent_by_a:?}"
    );
    for id in sent_by_a.keys() {
        assert!(
            from_b.contains_key(id),
            "{id}, sent by the killed node but never answered, was sent again"
        );
    }
    let resent: Vec<&String> = from_b
        .keys()
        .filter(|id| sent_by_a.contains_key(*id))
        .collect();
    assert_eq!(
        resent.len(),
        sent_by_a.len(),
        "re-sent: only the rows the killed node had claimed"
    );
    let from_b_fps: BTreeSet<String> = got
        .iter()
        .filter(|g| g.node == "b")
        .map(|g| g.fingerprint.clone())
        .collect();
    assert!(
        fingerprints(&alerts).is_subset(&from_b_fps),
        "no alert lost: the surviving node delivered every one"
    );
    for alert in &alerts {
        let count = alert["count"].as_u64().unwrap();
        assert!(
            (1..=2).contains(&count),
            "one fold per node that lived to detect it: {alert}"
        );
    }
    eprintln!(
        "killed node sent {} (unanswered), surviving node sent {} ({} of them again)",
        sent_by_a.len(),
        from_b.len(),
        resent.len()
    );
    b.stop();
}
