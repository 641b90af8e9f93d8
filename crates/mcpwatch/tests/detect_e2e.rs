//! Detection live in `serve`: rules fire on ingested events; rule reloads are all or nothing.

mod common;

use std::time::{Duration, Instant};

use common::{auth_event, post, Serve};
use serde_json::Value;

async fn wait_for(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
    want: usize,
    within: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let page: Value = client
            .get(format!("{url}/api/v1/events"))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.len() >= want || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn five_failed_logins_trigger_brute_force_detection() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let four: Vec<Value> = (0..4).map(|_| auth_event("alice", "failure")).collect();
    post(&client, &serve.url, &Value::Array(four))
        .await
        .unwrap();
    // Detection runs after commit; two seconds is far longer than it takes.
    let none = wait_for(
        &client,
        &serve.url,
        &[("category", "security_alert")],
        1,
        Duration::from_secs(2),
    )
    .await;
    assert!(
        none.is_empty(),
        "four failures are below the threshold: {none:?}"
    );
    post(&client, &serve.url, &auth_event("alice", "failure"))
        .await
        .unwrap();
    let alerts = wait_for(
        &client,
        &serve.url,
        &[("category", "security_alert")],
        1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let m = &alerts[0]["metadata"];
    assert_eq!(m["rule_name"], "brute_force_detection");
    assert_eq!(m["severity"], "high");
    assert_eq!(alerts[0]["event_type"], "rule_trigger");
    assert_eq!(m["event_ids"].as_array().unwrap().len(), 5);
    serve.stop();
}

#[tokio::test]
async fn a_bad_rule_file_is_rejected_whole_and_the_running_rules_stay() {
    let dir = tempfile::tempdir().unwrap();
    let rules = dir.path().join("rules.yaml");
    std::fs::write(&rules, "rules:\n  - name: any_denied\n    when: metadata.result == \"denied\"\n    severity: low\n").unwrap();
    let cfg = dir.path().join("mcpwatch.toml");
    std::fs::write(
        &cfg,
        format!("[rules]\nfiles = [{:?}]\n", rules.display().to_string()),
    )
    .unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--config", cfg.to_str().unwrap()],
    );
    let client = reqwest::Client::new();
    let listed: Value = client
        .get(format!("{}/api/v1/rules", serve.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let names: Vec<&str> = listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"any_denied") && names.contains(&"brute_force_detection"),
        "{names:?}"
    );

    std::fs::write(
        &rules,
        "rules:\n  - name: broken\n    when: metadata.result ==\n    severity: low\n",
    )
    .unwrap();
    let resp = client
        .post(format!("{}/api/v1/rules/reload", serve.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let body: Value = resp.json().await.unwrap();
    let msg = body["error"]["message"].as_str().unwrap();
    assert!(
        msg.contains("rules.yaml:3") && msg.contains("rule broken"),
        "{msg}"
    );
    let listed: Value = client
        .get(format!("{}/api/v1/rules", serve.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "any_denied"));

    std::fs::write(
        &rules,
        "rules:\n  - name: renamed\n    when: metadata.result == \"denied\"\n    severity: low\n",
    )
    .unwrap();
    let resp = client
        .post(format!("{}/api/v1/rules/reload", serve.url))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let listed: Value = client
        .get(format!("{}/api/v1/rules", serve.url))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(listed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r["name"] == "renamed"));
    serve.stop();
}
