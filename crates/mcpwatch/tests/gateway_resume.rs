//! Resumed streams through the gateway (issue 16, item 6): a call whose response stream breaks
//! off and is resumed with `Last-Event-ID` is recorded with its true outcome, once, and
//! `mcpwatch replay` counts that one outcome.
//!
//! The real `mcpwatch gateway`, into a real `serve`, in front of `peers/resumable_server.py` (a
//! small resumable Streamable HTTP server: the official SDK's cannot be made to break a stream
//! off mid-call) and `peers/resume_client.py` (a client that resumes with `Last-Event-ID`).
//! Three calls: the upstream breaks the stream and the client resumes it; the client drops the
//! stream and resumes it; the upstream breaks it and nobody resumes (that one alone ends as
//! `transport_error`, at the request timeout).

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::detect::{await_listener, free_port, gateway, get, wait_until, Proc};
use common::{bin, peer, Serve};
use serde_json::Value;

fn events(url: &str, event_type: &str) -> Vec<Value> {
    get(&format!(
        "{url}/api/v1/events?event_type={event_type}&limit=1000"
    ))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

fn script(name: &str) -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers")
        .join(name)
        .to_string_lossy()
        .into_owned()
}

#[test]
fn a_resumed_stream_records_the_calls_true_outcome_once_and_replay_agrees() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("serve"), &[]);
    let port = free_port();
    let _up = Proc(
        Command::new(peer("venv/bin/python"))
            .arg(script("resumable_server.py"))
            .arg(port.to_string())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the Python server runs"),
    );
    await_listener("resumable_server.py", port);
    let config = format!(
        "[gateway.upstreams]\nresumable = \"http://127.0.0.1:{port}/mcp\"\n[gateway.limits]\nrequest_timeout_secs = 3\n"
    );
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[]);
    let out = Command::new(peer("venv/bin/python"))
        .arg(script("resume_client.py"))
        .arg(format!("{gw}/mcp/resumable"))
        .arg(format!("http://127.0.0.1:{port}/control/break"))
        .stderr(Stdio::inherit())
        .output()
        .expect("the client runs");
    assert!(out.status.success(), "the client failed: {}", out.status);
    let calls: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("JSON lines"))
        .collect();
    let seen: Vec<(&str, &str)> = calls
        .iter()
        .map(|c| {
            (
                c["stream"].as_str().unwrap_or_default(),
                c["result"].as_str().unwrap_or("-"),
            )
        })
        .collect();
    assert_eq!(
        seen,
        [
            ("broke off", "done after break"),
            ("dropped by the client", "done after hold"),
            ("broke off", "-"),
        ],
        "the gateway relayed the breaks and the resumed streams"
    );

    let url = &serve.url;
    let done = wait_until(|| events(url, "execution_complete"), |v| v.len() >= 3);
    let mut outcomes: Vec<(String, String)> = done
        .iter()
        .map(|e| {
            let m = &e["metadata"];
            (
                m["request_id"].as_str().unwrap_or_default().to_owned(),
                m["outcome"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    outcomes.sort();
    let pair = |a: &str, b: &str| (a.to_owned(), b.to_owned());
    assert_eq!(
        outcomes,
        [
            pair("2", "success"),
            pair("3", "success"),
            pair("4", "transport_error"),
        ],
        "{done:#?}"
    );
    let broken = done
        .iter()
        .find(|e| e["metadata"]["request_id"] == "4")
        .expect("the unresumed call");
    let reason = broken["metadata"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.contains("broke off") && reason.contains("Last-Event-ID"),
        "{reason}"
    );
    let resumed = done
        .iter()
        .find(|e| e["metadata"]["request_id"] == "2")
        .expect("the resumed call");
    assert_eq!(
        resumed["metadata"]["result"]["text"], "done after break",
        "{resumed:#?}"
    );
    // One outcome per call: nothing recorded twice, no late answer left unmatched.
    let calls_done: Vec<Value> = events(url, "request_performance")
        .into_iter()
        .filter(|e| e["metadata"]["method"] == "tools/call")
        .collect();
    assert_eq!(calls_done.len(), 3, "{calls_done:#?}");
    let stray: Vec<Value> = events(url, "protocol_error")
        .into_iter()
        .chain(events(url, "late_response"))
        .collect();
    assert!(stray.is_empty(), "{stray:#?}");

    // Replay reads what was stored and counts each call once, as live detection did.
    let all = get(&format!("{url}/api/v1/events?limit=1000"))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let recorded = tmp.path().join("recorded.jsonl");
    let lines: Vec<String> = all.iter().map(Value::to_string).collect();
    std::fs::write(&recorded, lines.join("\n") + "\n").expect("write the recording");
    let replayed = bin()
        .arg("replay")
        .arg("--events")
        .arg(&recorded)
        .output()
        .expect("replay runs");
    let summary = String::from_utf8_lossy(&replayed.stdout);
    assert!(replayed.status.success(), "{summary}");
    let matched = |name: &str| -> Option<u64> {
        summary.lines().find_map(|l| {
            let cols: Vec<&str> = l.split_whitespace().collect();
            (cols.first() == Some(&"anomaly") && cols.get(1) == Some(&name))
                .then(|| cols.get(2)?.parse().ok())
                .flatten()
        })
    };
    assert_eq!(matched("error_rate"), Some(3), "{summary}");
    serve.stop();
}
