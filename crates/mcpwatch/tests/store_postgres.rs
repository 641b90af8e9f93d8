//! `mcpwatch serve` on PostgreSQL, through the real binary and a real PostgreSQL: ingest over
//! HTTP and query back, the dashboard, retention, no acknowledged event lost to `kill -9`, and
//! one clear error for a wrong database or login.

mod common;

use std::time::{Duration, Instant};

use common::{acked_until_kill9, all_ids, assert_none_lost, auth_event, bin, post, Serve};
use mcpwatch_store::testing::TempPostgres;
use serde_json::{json, Value};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_on_postgres_loses_no_acknowledged_event() {
    let pg = TempPostgres::start();
    let db = pg.create_database("mcpwatch");
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &["--store", &db]);
    let acked = acked_until_kill9(serve, 10_000, Duration::from_secs(60)).await;
    // A fresh data directory: the events must come from PostgreSQL, not from a local file.
    let other = tempfile::tempdir().unwrap();
    let serve = Serve::start(other.path(), &["--store", &db]);
    let stored = all_ids(&reqwest::Client::new(), &serve.url).await;
    assert_none_lost(&acked, &stored);
    eprintln!(
        "{} acknowledged before the kill, {} stored, all acknowledged found",
        acked.len(),
        stored.len()
    );
    assert!(
        !other.path().join("events.db").exists(),
        "no SQLite event file"
    );
    serve.stop();
}

async fn get(client: &reqwest::Client, url: &str) -> (u16, Value) {
    let resp = client.get(url).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

fn execution(tool: &str, user: &str, secs: f64, outcome: &str) -> Value {
    json!({"category": "tool_execution", "event_type": "execution_complete", "source": "e2e",
           "message": format!("{tool} done"),
           "metadata": {"tool_name": tool, "server": "fs", "user_id": user, "execution_id": "x",
                        "execution_time": secs, "success": outcome == "success", "outcome": outcome}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_with_a_config_url_ingests_queries_serves_the_dashboard_and_retains() {
    let pg = TempPostgres::start();
    pg.create_database("mcpwatch");
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcpwatch.toml");
    let url = format!(
        "postgres://{}:${{MCPWATCH_TEST_PGPASSWORD}}@127.0.0.1:{}/mcpwatch",
        TempPostgres::USER,
        pg.port()
    );
    std::fs::write(
        &config,
        format!("[store]\nurl = \"{url}\"\n\n[retention]\nmax_age = \"1h\"\ninterval = \"1s\"\n"),
    )
    .unwrap();
    let serve = Serve::start_with_env(
        "127.0.0.1:0",
        dir.path(),
        &["--config", config.to_str().unwrap()],
        &[("MCPWATCH_TEST_PGPASSWORD", TempPostgres::PASSWORD)],
    );
    let client = reqwest::Client::new();
    let base = serve.url.clone();
    let batch = json!([
        execution("read_file", "alice", 0.01, "success"),
        execution("read_file", "bob", 0.03, "tool_error"),
        execution("write_file", "alice", 0.2, "success"),
        auth_event("mallory", "failure"),
    ]);
    let (status, body) = post(&client, &base, &batch).await.unwrap();
    assert_eq!(status, 202, "{body}");
    // Two hours old: past max_age, so retention deletes it within a few intervals.
    let now = mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock);
    let mut old = auth_event("old", "success");
    old["timestamp"] = serde_json::to_value(now.saturating_sub(Duration::from_secs(7200))).unwrap();
    let (status, body) = post(&client, &base, &json!([old])).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let old_id = body["ids"][0].as_str().unwrap().to_owned();

    let (_, tools) = get(&client, &format!("{base}/api/v1/tools")).await;
    let tools = tools["tools"].as_array().unwrap();
    let read = tools.iter().find(|t| t["tool"] == "read_file").unwrap();
    assert_eq!(
        (read["count"].as_u64(), read["successes"].as_u64()),
        (Some(2), Some(1))
    );
    let (_, users) = get(&client, &format!("{base}/api/v1/users")).await;
    let alice = users["users"]
        .as_array()
        .unwrap()
        .iter()
        .find(|u| u["user"] == "alice")
        .unwrap();
    assert_eq!(alice["count"], 2);
    let (_, page) = get(
        &client,
        &format!("{base}/api/v1/events?event_type=authentication&limit=10"),
    )
    .await;
    assert!(!page["events"].as_array().unwrap().is_empty());
    let (status, summary) = get(&client, &format!("{base}/api/v1/summary")).await;
    assert_eq!(status, 200, "{summary}");
    assert!(summary["total_events"].as_u64().unwrap() >= 4, "{summary}");
    let page = client.get(format!("{base}/tools")).send().await.unwrap();
    assert_eq!(page.status().as_u16(), 200);
    assert!(page.text().await.unwrap().contains("read_file"));

    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, _) = get(&client, &format!("{base}/api/v1/events/{old_id}")).await;
        if status == 404 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the event past max_age is still there after 30s"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (status, _) = get(&client, &format!("{base}/api/v1/events?limit=10")).await;
    assert_eq!(status, 200);
    serve.stop();
}

fn serve_fails(store: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path())
        .args(["--store", store])
        .output()
        .unwrap();
    assert!(!out.status.success(), "serve started with {store}");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_wrong_database_login_or_url_is_one_clear_error() {
    let pg = TempPostgres::start();
    let err = serve_fails(&pg.url("missing"));
    assert!(
        err.contains("does not exist") && err.contains("createdb"),
        "{err}"
    );
    assert!(
        !err.contains(TempPostgres::PASSWORD),
        "password shown: {err}"
    );
    pg.create_database("mcpwatch");
    let err = serve_fails(&format!(
        "postgres://postgres:badpw@127.0.0.1:{}/mcpwatch",
        pg.port()
    ));
    assert!(
        err.contains("refused the login") && err.contains("password"),
        "{err}"
    );
    assert!(!err.contains("badpw"), "password shown: {err}");
    let err = serve_fails("/var/lib/mcpwatch");
    assert!(err.contains("--store takes a PostgreSQL URL"), "{err}");
}
