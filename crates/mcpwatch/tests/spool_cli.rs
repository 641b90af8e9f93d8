//! End-to-end tests of `mcpwatch spool status | flush` and of `wrap` delivering the spools other
//! server names left behind, with the real binary: the official MCP Python SDK drives
//! `@modelcontextprotocol/server-everything` through `wrap` while no collector listens, so the
//! events are spooled; then they must be listed, survive a flush against a dead collector, and
//! reach a real `mcpwatch serve`, once each. Peers come from `scripts/install-peers`; a missing
//! peer fails the test with that instruction, it never skips.

mod common;

use std::collections::HashSet;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

use common::{bin, edge_gauge, peer, Serve};

/// An address nothing listens on.
fn dead_collector() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    format!("http://{}", l.local_addr().expect("an address"))
}

/// Runs the Python SDK client's `everything` scenario through `mcpwatch wrap --name NAME`.
fn wrapped_session(name: &str, collector: &str, data_dir: &Path) {
    wrapped_session_with_token(name, collector, data_dir, None);
}

/// [`wrapped_session`] with `$MCPWATCH_TOKEN` set to `token`; returns wrap's stderr.
fn wrapped_session_with_token(
    name: &str,
    collector: &str,
    data_dir: &Path,
    token: Option<&str>,
) -> String {
    let mut cmd = Command::new(peer("venv/bin/python"));
    if let Some(t) = token {
        cmd.env("MCPWATCH_TOKEN", t);
    }
    let out = cmd
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/client.py"))
        .args(["everything", "--", env!("CARGO_BIN_EXE_mcpwatch"), "wrap"])
        .args(["--name", name, "--user", "tester", "--collector", collector])
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--")
        .arg(peer("node/node_modules/.bin/mcp-server-everything"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("the Python client runs");
    let stderr = text(&out.stderr);
    assert!(out.status.success(), "the wrapped session failed: {stderr}");
    stderr
}

/// `mcpwatch spool ARGS…`.
fn spool(args: &[&str], data_dir: &Path) -> Output {
    bin()
        .arg("spool")
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .output()
        .expect("mcpwatch spool runs")
}

fn text(out: &[u8]) -> String {
    String::from_utf8_lossy(out).into_owned()
}

/// The ids in one server's spool, read straight from its segment files.
fn spooled_ids(data_dir: &Path, server: &str) -> HashSet<String> {
    let mut ids = HashSet::new();
    let Ok(entries) = std::fs::read_dir(data_dir.join("spool").join(server)) else {
        return ids;
    };
    for entry in entries {
        let path = entry.expect("an entry").path();
        if path.extension().is_none_or(|e| e != "ndjson") {
            continue;
        }
        let body = std::fs::read_to_string(path).unwrap_or_default();
        for line in body.lines() {
            if let Ok(event) = serde_json::from_str::<Value>(line) {
                ids.insert(event["id"].as_str().unwrap_or_default().to_owned());
            }
        }
    }
    ids
}

/// The row of `server` in `spool status`: (events, owner), once its wrap has exited.
fn wait_until_orphaned(data_dir: &Path, server: &str) -> (u64, String) {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let out = spool(&["status"], data_dir);
        assert!(out.status.success(), "status failed: {}", text(&out.stderr));
        let stdout = text(&out.stdout);
        let row = stdout
            .lines()
            .find(|l| l.split_whitespace().next() == Some(server))
            .map(|l| {
                let cells: Vec<&str> = l.split_whitespace().collect();
                let events = cells[2].parse().expect("an event count");
                (events, cells.last().copied().unwrap_or_default().to_owned())
            });
        if let Some((events, owner)) = row {
            if owner == "gone" {
                return (events, owner);
            }
        }
        assert!(
            Instant::now() < deadline,
            "{server}'s spool never showed up as orphaned:\n{stdout}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Every event id the collector stores.
fn stored_ids(serve: &Serve) -> HashSet<String> {
    let body = http_get(&serve.url, "/api/v1/events?limit=10000").unwrap_or_default();
    let page: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
    page["events"]
        .as_array()
        .map(|events| {
            events
                .iter()
                .filter_map(|e| e["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

fn http_get(url: &str, path: &str) -> Option<String> {
    http_get_as(url, path, None)
}

/// A GET with `token` as the bearer token, when given.
fn http_get_as(url: &str, path: &str, token: Option<&str>) -> Option<String> {
    let addr = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let ok = text.starts_with("HTTP/1.1 200") || text.starts_with("HTTP/1.0 200");
    ok.then(|| text.split_once("\r\n\r\n").map(|(_, b)| b.to_string()))?
}

#[test]
fn spooled_events_are_listed_kept_when_the_collector_is_down_and_flushed_once_it_is_up() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let data = tmp.path().join("wrap");
    let dead = dead_collector();
    wrapped_session("renamed", &dead, &data);

    // status: the spool is there, its wrap is gone.
    let (events, _) = wait_until_orphaned(&data, "renamed");
    let ids = spooled_ids(&data, "renamed");
    assert!(events >= 10, "a whole session was spooled, got {events}");
    assert_eq!(
        events,
        ids.len() as u64,
        "status counts every spooled event"
    );
    let by_env = bin()
        .args(["spool", "status"])
        .env("MCPWATCH_DATA_DIR", &data)
        .output()
        .expect("mcpwatch spool status runs");
    assert!(
        text(&by_env.stdout).contains("renamed"),
        "the data dir defaults as for wrap: {}",
        text(&by_env.stdout)
    );

    // flush with the collector down: a clear failure, nothing lost.
    let failed = spool(&["flush", "--collector", &dead], &data);
    assert!(
        !failed.status.success(),
        "flush must fail without a collector"
    );
    let stderr = text(&failed.stderr);
    assert!(
        stderr.contains(&format!("cannot reach the collector at {dead}"))
            && stderr.contains("mcpwatch serve")
            && stderr.contains("still wait"),
        "the error says what is wrong and what to do: {stderr}"
    );
    assert_eq!(spooled_ids(&data, "renamed"), ids, "the spool is intact");
    assert_eq!(wait_until_orphaned(&data, "renamed").0, events);

    // flush with the collector up: everything delivered once, and queryable.
    let serve = Serve::start(&tmp.path().join("serve"), &[]);
    let flushed = spool(&["flush", "--collector", &serve.url], &data);
    let stdout = text(&flushed.stdout);
    assert!(
        flushed.status.success(),
        "flush failed: {stdout}{}",
        text(&flushed.stderr)
    );
    assert!(
        stdout.contains(&format!("renamed: delivered {events} events")),
        "per-server count: {stdout}"
    );
    let stored = stored_ids(&serve);
    let missing: Vec<&String> = ids.difference(&stored).collect();
    assert!(missing.is_empty(), "not in the collector: {missing:?}");
    let calls = http_get(
        &serve.url,
        "/api/v1/events?event_type=execution_complete&server=renamed",
    )
    .unwrap_or_default();
    let calls: Value = serde_json::from_str(&calls).unwrap_or(Value::Null);
    assert_eq!(
        calls["events"].as_array().map(Vec::len),
        Some(3),
        "the session's three tool calls: {calls:#}"
    );
    assert!(
        spooled_ids(&data, "renamed").is_empty(),
        "delivered events are removed"
    );

    let again = spool(&["flush", "--collector", &serve.url], &data);
    assert!(again.status.success());
    assert!(
        text(&again.stdout).starts_with("nothing to flush"),
        "{}",
        text(&again.stdout)
    );
    let status = spool(&["status"], &data);
    assert!(
        text(&status.stdout).starts_with("no spooled events"),
        "{}",
        text(&status.stdout)
    );
    serve.stop();
}

#[test]
fn a_wrap_of_another_name_delivers_what_a_renamed_server_left_behind() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let data = tmp.path().join("wrap");
    wrapped_session("old-name", &dead_collector(), &data);
    wait_until_orphaned(&data, "old-name");
    let ids = spooled_ids(&data, "old-name");
    assert!(!ids.is_empty());

    let serve = Serve::start(&tmp.path().join("serve"), &[]);
    wrapped_session("new-name", &serve.url, &data);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let stored = stored_ids(&serve);
        if ids.is_subset(&stored) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "old-name's spool did not arrive: {} of {} missing",
            ids.difference(&stored).count(),
            ids.len()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(spooled_ids(&data, "old-name").is_empty());
    serve.stop();
}

#[test]
fn a_refused_token_keeps_the_events_until_a_valid_one_delivers_them() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let data = tmp.path().join("wrap");
    let config = tmp.path().join("mcpwatch.toml");
    std::fs::write(
        &config,
        "[[auth.tokens]]\nname = \"ci\"\ntoken = \"good-token\"\nroles = [\"ingest\", \"read\"]\n",
    )
    .expect("write the config");
    let config = config.to_string_lossy().into_owned();
    let serve = Serve::start(&tmp.path().join("serve"), &["--config", &config]);

    // The collector is up and refuses the token: every event stays in the spool.
    let stderr = wrapped_session_with_token("authz", &serve.url, &data, Some("rotated-away"));
    assert_eq!(
        stderr.matches("refused the token (HTTP 401)").count(),
        1,
        "said once on stderr: {stderr}"
    );
    assert!(stderr.contains("spool flush --token"), "{stderr}");
    let (events, _) = wait_until_orphaned(&data, "authz");
    let ids = spooled_ids(&data, "authz");
    assert!(events >= 10, "a whole session was kept, got {events}");
    assert_eq!(events, ids.len() as u64);
    let status = text(&spool(&["status"], &data).stdout);
    assert!(
        status.contains("authz: the collector refused the token (HTTP 401); the events are kept"),
        "{status}"
    );

    // The wrong token again: flush stops and keeps them.
    let refused = spool(
        &["flush", "--collector", &serve.url, "--token", "wrong"],
        &data,
    );
    assert!(!refused.status.success());
    assert!(text(&refused.stderr).contains("refused the token (HTTP 401)"));
    assert_eq!(spooled_ids(&data, "authz"), ids);

    // A valid token delivers every one of them, and the refusal is no longer reported.
    let flushed = spool(
        &["flush", "--collector", &serve.url, "--token", "good-token"],
        &data,
    );
    assert!(flushed.status.success(), "{}", text(&flushed.stderr));
    let body = http_get_as(&serve.url, "/api/v1/events?limit=10000", Some("good-token"))
        .expect("the collector answers with the token");
    let page: Value = serde_json::from_str(&body).expect("JSON");
    let stored: HashSet<String> = page["events"]
        .as_array()
        .expect("events")
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    let missing: Vec<&String> = ids.difference(&stored).collect();
    assert!(missing.is_empty(), "not delivered: {missing:?}");
    assert!(spooled_ids(&data, "authz").is_empty());
    let status = text(&spool(&["status"], &data).stdout);
    assert!(status.starts_with("no spooled events"), "{status}");
    serve.stop();
}

/// A `mcpwatch wrap` killed on drop.
struct Wrap(std::process::Child);

impl Drop for Wrap {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_collector_sees_an_edges_spool_backlog_and_its_drain_on_metrics() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let data = tmp.path().join("wrap");
    let collector = dead_collector();
    // The edge starts while nothing listens; its health reports are spooled with the rest.
    let child = bin()
        .args([
            "wrap",
            "--name",
            "edge",
            "--collector",
            &collector,
            "--data-dir",
        ])
        .arg(&data)
        .args(["--", "cat"])
        .env("MCPWATCH_HEALTH_INTERVAL", "1s")
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("wrap starts");
    let _wrap = Wrap(child);
    let deadline = Instant::now() + Duration::from_secs(30);
    // Two reports spooled: the second was made while the first waited in the spool.
    while spooled_ids(&data, "edge").len() < 2 {
        assert!(Instant::now() < deadline, "wrap spooled no health reports");
        std::thread::sleep(Duration::from_millis(100));
    }
    let serve = Serve::start_on(
        collector.trim_start_matches("http://"),
        &tmp.path().join("serve"),
        &[],
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    let (reports, metrics) = loop {
        let body = http_get(
            &serve.url,
            "/api/v1/events?event_type=edge_health&limit=1000",
        )
        .unwrap_or_default();
        let page: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        let reports: Vec<Value> = page["events"].as_array().cloned().unwrap_or_default();
        let metrics = http_get(&serve.url, "/metrics").unwrap_or_default();
        let drained = reports.iter().any(|e| {
            e["metadata"]["spool_pending_bytes"] == 0
                && e["metadata"]["spooled_events"].as_u64() >= Some(2)
        });
        let shown =
            edge_gauge(&metrics, "mcpwatch_edge_spool_pending_bytes", "wrap:edge") == Some(0.0);
        if drained && shown {
            break (reports, metrics);
        }
        assert!(
            Instant::now() < deadline,
            "no drained health report on /metrics; reports: {reports:?}\n{metrics}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    // A report made while the collector was away says how much was waiting.
    let behind = reports
        .iter()
        .filter_map(|e| e["metadata"]["spool_pending_bytes"].as_u64())
        .max()
        .unwrap_or(0);
    assert!(behind > 0, "a report shows the backlog: {reports:?}");
    assert!(reports
        .iter()
        .all(|e| e["source"] == "wrap:edge" && e["category"] == "system"));
    let cap = edge_gauge(&metrics, "mcpwatch_edge_spool_max_bytes", "wrap:edge");
    assert_eq!(cap, Some((64u64 << 20) as f64), "{metrics}");
    assert!(edge_gauge(&metrics, "mcpwatch_edge_spool_bytes", "wrap:edge").is_some());
    assert_eq!(
        edge_gauge(&metrics, "mcpwatch_edge_lost_events", "wrap:edge"),
        Some(0.0)
    );
    let reported = edge_gauge(
        &metrics,
        "mcpwatch_edge_health_timestamp_seconds",
        "wrap:edge",
    )
    .expect("a report time");
    // Unix seconds of event time (after 2023-11), not a count or a duration.
    assert!(reported > 1.7e9, "{reported}");
}
