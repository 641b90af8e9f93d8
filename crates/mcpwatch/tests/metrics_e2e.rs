//! End-to-end: a real Prometheus (Debian's `prometheus`, started here on loopback) scrapes the
//! real `mcpwatch serve` with a read token; after known traffic, PromQL over Prometheus's HTTP
//! API returns the expected per-tool counts and error counts.
//!
//! Needs `prometheus` on PATH (`scripts/install-peers` installs it); without it the test fails.

mod common;

use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::Serve;

const INGEST: &str = "e2e-ingest-token";
const READ: &str = "e2e-read-token";

/// A running Prometheus, killed on drop.
struct Prometheus {
    child: Child,
    url: String,
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("bind a free port");
    l.local_addr().unwrap().port()
}

fn start_prometheus(dir: &Path, target: &str) -> Prometheus {
    let found = Command::new("prometheus").arg("--version").output();
    assert!(
        found.is_ok_and(|o| o.status.success()),
        "prometheus is not installed; run scripts/install-peers as root (it installs Debian's `prometheus` package)"
    );
    let config = dir.join("prometheus.yml");
    std::fs::write(
        &config,
        format!(
            "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n  - job_name: mcpwatch\n    metrics_path: /metrics\n    authorization:\n      type: Bearer\n      credentials: {READ}\n    static_configs:\n      - targets: ['{target}']\n"
        ),
    )
    .unwrap();
    let port = free_port();
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", config.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("tsdb").display()
        ))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start prometheus");
    Prometheus {
        child,
        url: format!("http://127.0.0.1:{port}"),
    }
}

/// `query` as `{labels of `by`} → value`, once Prometheus answers.
async fn query(
    client: &reqwest::Client,
    prom: &str,
    q: &str,
    by: &[&str],
) -> Vec<(Vec<String>, f64)> {
    let Ok(resp) = client
        .get(format!("{prom}/api/v1/query"))
        .query(&[("query", q)])
        .send()
        .await
    else {
        return vec![];
    };
    let body: Value = resp.json().await.unwrap_or(Value::Null);
    let mut out: Vec<(Vec<String>, f64)> = body["data"]["result"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| {
            let labels = by
                .iter()
                .map(|l| r["metric"][*l].as_str().unwrap_or_default().to_owned())
                .collect();
            let v = r["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .unwrap_or(f64::NAN);
            (labels, v)
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// Polls `q` until it returns `expected` (or fails after 60 s with what it last saw).
async fn expect_query(
    client: &reqwest::Client,
    prom: &str,
    q: &str,
    by: &[&str],
    expected: &[(&[&str], f64)],
) {
    let want: Vec<(Vec<String>, f64)> = expected
        .iter()
        .map(|(l, v)| (l.iter().map(|s| (*s).to_owned()).collect(), *v))
        .collect();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let got = query(client, prom, q, by).await;
        if got == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "PromQL {q}\n  expected {want:?}\n  got      {got:?}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn tool_event(tool: &str, outcome: &str, user: &str) -> Value {
    let mut m = json!({"execution_id": "x", "tool_name": tool, "user_id": user, "server": "filesystem",
                       "execution_time": 0.012, "success": outcome == "success", "outcome": outcome});
    if outcome == "rpc_error" {
        m["error_code"] = json!(-32602);
    }
    json!({"category": "tool_execution", "event_type": "execution_complete", "source": "wrap:filesystem", "metadata": m})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_serve_and_promql_sees_tool_counts_and_errors() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcpwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[[auth.tokens]]\nname = \"ingest\"\ntoken = \"{INGEST}\"\nroles = [\"ingest\"]\n\n[[auth.tokens]]\nname = \"prometheus\"\ntoken = \"{READ}\"\nroles = [\"read\"]\n\n[metrics]\nhost_interval = \"0s\"\n"
        ),
    )
    .unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let client = reqwest::Client::new();

    // /metrics needs the read role once tokens are configured.
    let metrics = format!("{}/metrics", serve.url);
    assert_eq!(client.get(&metrics).send().await.unwrap().status(), 401);
    let ingest_only = client
        .get(&metrics)
        .bearer_auth(INGEST)
        .send()
        .await
        .unwrap();
    assert_eq!(ingest_only.status(), 403);

    let mut events = vec![];
    for (tool, outcome, n) in [
        ("read_file", "success", 5),
        ("read_file", "tool_error", 2),
        ("read_file", "rpc_error", 1),
        ("write_file", "success", 3),
        ("write_file", "timeout", 1),
    ] {
        for i in 0..n {
            events.push(tool_event(tool, outcome, &format!("user-{i}")));
        }
    }
    for result in ["success", "failure", "failure"] {
        events.push(
            json!({"category": "security", "event_type": "authentication", "source": "app",
                           "metadata": {"user_id": "mallory", "result": result}}),
        );
    }
    let resp = client
        .post(format!("{}/api/v1/events", serve.url))
        .bearer_auth(INGEST)
        .json(&Value::Array(events))
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "ingest: {}", resp.status());

    let scraped = client.get(&metrics).bearer_auth(READ).send().await.unwrap();
    assert_eq!(scraped.status(), 200);
    let ctype = scraped.headers()["content-type"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(ctype.starts_with("application/openmetrics-text"), "{ctype}");

    let prom = start_prometheus(dir.path(), serve.url.trim_start_matches("http://"));
    expect_query(
        &client,
        &prom.url,
        "up{job=\"mcpwatch\"}",
        &["job"],
        &[(&["mcpwatch"], 1.0)],
    )
    .await;
    expect_query(
        &client,
        &prom.url,
        "sum by (tool, outcome) (mcpwatch_tool_executions_total{server=\"filesystem\"})",
        &["tool", "outcome"],
        &[
            (&["read_file", "rpc_error"], 1.0),
            (&["read_file", "success"], 5.0),
            (&["read_file", "tool_error"], 2.0),
            (&["write_file", "success"], 3.0),
            (&["write_file", "timeout"], 1.0),
        ],
    )
    .await;
    // Errors per tool: a tool_error (isError: true) is an error, never a success.
    expect_query(
        &client,
        &prom.url,
        "sum by (tool) (mcpwatch_tool_executions_total{outcome!=\"success\"})",
        &["tool"],
        &[(&["read_file"], 3.0), (&["write_file"], 1.0)],
    )
    .await;
    expect_query(
        &client,
        &prom.url,
        "sum by (error_type) (mcp_server_operation_duration_seconds_count{gen_ai_tool_name=\"read_file\"})",
        &["error_type"],
        &[(&[""], 5.0), (&["-32602"], 1.0), (&["tool_error"], 2.0)],
    )
    .await;
    expect_query(
        &client,
        &prom.url,
        "mcpwatch_authentication_failures_total",
        &[],
        &[(&[], 2.0)],
    )
    .await;
    // Health: every posted event was committed, and the store's size is known.
    expect_query(
        &client,
        &prom.url,
        "mcpwatch_pipeline_committed_events_total >= bool 15",
        &[],
        &[(&[], 1.0)],
    )
    .await;
    expect_query(
        &client,
        &prom.url,
        "mcpwatch_store_size_bytes > bool 0",
        &[],
        &[(&[], 1.0)],
    )
    .await;
    drop(prom);
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_host_sampler_feeds_gauges_and_system_performance_events() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcpwatch.toml");
    std::fs::write(&config, "[metrics]\nhost_interval = \"1s\"\n").unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut names = std::collections::BTreeSet::new();
    while names.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "only {names:?} arrived as system_performance events"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
        let page: Value = client
            .get(format!("{}/api/v1/events", serve.url))
            .query(&[
                ("category", "performance"),
                ("event_type", "system_performance"),
                ("limit", "100"),
            ])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in page["events"].as_array().unwrap() {
            assert_eq!(e["source"], "mcpwatch:host");
            names.insert(e["metadata"]["metric_name"].as_str().unwrap().to_owned());
        }
    }
    assert_eq!(
        names.into_iter().collect::<Vec<_>>(),
        [
            "cpu_usage",
            "disk_usage",
            "memory_usage",
            "network_throughput"
        ]
    );
    let text = client
        .get(format!("{}/metrics", serve.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    for series in [
        "mcpwatch_host_cpu_usage_ratio ",
        "mcpwatch_host_memory_total_bytes ",
        "mcpwatch_host_disk_used_bytes ",
        "mcpwatch_process_resident_memory_bytes ",
    ] {
        assert!(text.contains(series), "{series} missing from /metrics");
    }
    serve.stop();
}
