//! End-to-end tests of `mcpwatch serve` as users run it: crash durability, redaction on disk,
//! the live tail, the non-loopback refusal.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{acked_until_kill9, all_ids, assert_none_lost, auth_event, bin, post, Serve};
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_load_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    // Let load build up, then kill without warning.
    let acked = acked_until_kill9(serve, 20_000, Duration::from_secs(30)).await;

    let serve = Serve::start(dir.path(), &[]);
    let stored = all_ids(&reqwest::Client::new(), &serve.url).await;
    assert_none_lost(&acked, &stored);
    serve.stop();
}

#[tokio::test]
async fn a_secret_in_metadata_is_nowhere_in_the_database_files() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let secret = "ghp_S3cr3tT0k3nValue0123456789abcdefghij";
    let ev = json!({"category": "tool_execution", "event_type": "execution_start", "message": format!("using {secret}"),
                    "metadata": {"execution_id": "x", "tool_name": "git_push", "user_id": "alice",
                                 "parameters": {"remote": "origin", "api_key": "plain-key-value-42", "env": format!("GH={secret}")}}});
    let (status, body) = post(&client, &serve.url, &ev).await.unwrap();
    assert_eq!(status, 202, "{body}");
    let stored: serde_json::Value = client
        .get(format!(
            "{}/api/v1/events/{}",
            serve.url,
            body["ids"][0].as_str().unwrap()
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        stored["metadata"]["parameters"]["api_key"],
        "[REDACTED:api_key]"
    );
    assert_eq!(stored["metadata"]["parameters"]["remote"], "origin");
    assert!(serve.stop().success());
    for entry in std::fs::read_dir(dir.path()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        for needle in [secret.as_bytes(), b"plain-key-value-42"] {
            assert!(
                !bytes.windows(needle.len()).any(|w| w == needle),
                "secret found on disk"
            );
        }
    }
}

#[tokio::test]
async fn events_follow_prints_new_events_as_they_commit() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    post(&client, &serve.url, &auth_event("before", "success"))
        .await
        .unwrap();
    let mut tail = bin()
        .args([
            "events",
            "--follow",
            "--json",
            "--category",
            "security",
            "--collector",
            &serve.url,
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = tail.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let first: serde_json::Value =
        serde_json::from_str(&rx.recv_timeout(Duration::from_secs(20)).unwrap()).unwrap();
    assert_eq!(first["metadata"]["user_id"], "before");
    // The stream is subscribed once the past events are printed; give it a moment, then post.
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut got = None;
    while got.is_none() && Instant::now() < deadline {
        post(&client, &serve.url, &auth_event("after", "failure"))
            .await
            .unwrap();
        if let Ok(line) = rx.recv_timeout(Duration::from_millis(500)) {
            got = Some(line);
        }
    }
    let _ = tail.kill();
    let _ = tail.wait();
    let line: serde_json::Value =
        serde_json::from_str(&got.expect("no live event arrived")).unwrap();
    assert_eq!(line["metadata"]["user_id"], "after");
    serve.stop();
}

#[test]
fn serve_refuses_a_public_address_without_tokens() {
    let dir = tempfile::tempdir().unwrap();
    let out = bin()
        .args(["serve", "--listen", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("refusing to listen on 0.0.0.0:0 without API tokens")
            && err.contains("[[auth.tokens]]"),
        "{err}"
    );
}

#[tokio::test]
async fn serve_with_tokens_may_listen_publicly_and_enforces_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mcpwatch.toml");
    std::fs::write(
        &cfg,
        "[server]\nlisten = \"0.0.0.0:0\"\n\n[[auth.tokens]]\nname = \"ci\"\ntoken = \"${E2E_TOKEN}\"\nroles = [\"ingest\", \"read\"]\n",
    )
    .unwrap();
    std::env::set_var("E2E_TOKEN", "e2e-secret-token");
    let mut child = bin()
        .args(["serve", "--config"])
        .arg(&cfg)
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let line = lines.next().unwrap().unwrap();
    let port = line
        .split("0.0.0.0:")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .expect(&line)
        .to_owned();
    let url = format!("http://127.0.0.1:{port}");
    let client = reqwest::Client::new();
    let anon = client
        .get(format!("{url}/api/v1/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(anon.status(), 401);
    let ok = client
        .get(format!("{url}/api/v1/events"))
        .bearer_auth("e2e-secret-token")
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), 200);
    let _ = child.kill();
    let _ = child.wait();
}
