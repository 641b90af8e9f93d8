//! `mcpwatch demo` end to end: within a 30-second run the collector holds rule triggers and
//! threat events for the injected attacks; the run ends on its own (or on Ctrl-C) and removes
//! its temporary data; a busy port is a clear error.

mod common;

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use serde_json::Value;

struct Demo {
    child: Child,
    url: String,
    data_dir: PathBuf,
    /// Every stderr line after the address line.
    lines: Receiver<String>,
}

fn start_demo(args: &[&str]) -> Demo {
    let mut child = common::bin()
        .arg("demo")
        .args(args)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn mcpwatch demo");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("demo printed nothing within 30s");
    // "mcpwatch demo: collector listening on http://ADDR (data in DIR)"
    let rest = line
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no address in {line:?}"));
    let url = rest.split_whitespace().next().unwrap().to_owned();
    let dir = rest
        .split("(data in ")
        .nth(1)
        .and_then(|d| d.strip_suffix(')'))
        .unwrap_or_else(|| panic!("no data dir in {line:?}"));
    Demo {
        child,
        url,
        data_dir: PathBuf::from(dir),
        lines: rx,
    }
}

async fn names(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
    key: &str,
) -> BTreeSet<String> {
    let Ok(resp) = client
        .get(format!("{url}/api/v1/events"))
        .query(query)
        .query(&[("limit", "1000")])
        .send()
        .await
    else {
        return BTreeSet::new();
    };
    let page: Value = resp.json().await.unwrap_or(Value::Null);
    page["events"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|e| e["metadata"][key].as_str().map(str::to_owned))
        .collect()
}

fn wait_exit(child: &mut Child, within: Duration) -> std::process::ExitStatus {
    let deadline = Instant::now() + within;
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("demo did not exit within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[tokio::test]
async fn a_45_second_demo_shows_the_attacks_as_alerts_threats_and_anomalies() {
    let mut demo = start_demo(&["--duration", "45s", "--listen", "127.0.0.1:0"]);
    let client = reqwest::Client::new();
    let want_rules: BTreeSet<String> = [
        "brute_force_detection",
        "privilege_escalation",
        "credential_stuffing",
    ]
    .map(String::from)
    .into();
    let want_threats: BTreeSet<String> = ["path_traversal", "tool_poisoning"]
        .map(String::from)
        .into();
    // After the demo's 20 s learning period, from the session tracker's events.
    let want_anomalies: BTreeSet<String> = ["repetition", "unusual_parameters"]
        .map(String::from)
        .into();
    let deadline = Instant::now() + Duration::from_secs(45);
    let (mut rules, mut threats, mut anomalies) =
        (BTreeSet::new(), BTreeSet::new(), BTreeSet::new());
    while Instant::now() < deadline {
        rules = names(
            &client,
            &demo.url,
            &[("category", "security_alert")],
            "rule_name",
        )
        .await;
        threats = names(
            &client,
            &demo.url,
            &[("category", "security"), ("event_type", "threat_detected")],
            "threat_type",
        )
        .await;
        anomalies = names(
            &client,
            &demo.url,
            &[("category", "anomaly")],
            "anomaly_type",
        )
        .await;
        if rules.is_superset(&want_rules)
            && threats.is_superset(&want_threats)
            && anomalies.is_superset(&want_anomalies)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(
        rules.is_superset(&want_rules),
        "rule triggers during the run: {rules:?}"
    );
    assert!(
        threats.is_superset(&want_threats),
        "threats during the run: {threats:?}"
    );
    assert!(
        anomalies.is_superset(&want_anomalies),
        "anomalies during the run: {anomalies:?}"
    );
    let status = wait_exit(&mut demo.child, Duration::from_secs(40));
    assert!(status.success(), "{status:?}");
    let said: Vec<String> = demo.lines.try_iter().collect();
    assert!(
        said.iter()
            .any(|l| l.contains("events sent; detections so far: ")
                && l.contains("brute_force_detection")),
        "no progress line naming the alerts: {said:#?}"
    );
    assert!(
        said.iter().any(|l| l.contains("mcpwatch events --follow")),
        "{said:#?}"
    );
    assert!(
        !demo.data_dir.exists(),
        "{} left behind",
        demo.data_dir.display()
    );
}

#[test]
fn ctrl_c_stops_the_demo_and_removes_its_data() {
    let mut demo = start_demo(&["--duration", "5m", "--listen", "127.0.0.1:0"]);
    assert!(demo.data_dir.exists());
    std::thread::sleep(Duration::from_secs(2));
    let sent = std::process::Command::new("kill")
        .args(["-INT", &demo.child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let status = wait_exit(&mut demo.child, Duration::from_secs(20));
    assert!(status.success(), "{status:?}");
    assert!(
        !demo.data_dir.exists(),
        "{} left behind",
        demo.data_dir.display()
    );
}

#[test]
fn a_busy_port_says_so_and_suggests_listen() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let out = common::bin()
        .args(["demo", "--duration", "5s", "--listen", &addr])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(&format!("could not start on {addr}"))
            && stderr.contains("--listen 127.0.0.1:0"),
        "{stderr}"
    );
}
