//! `mcpwatch replay`: a recorded stream next to the alerts and summary it must produce
//! (snapshots under `fixtures/replay/`; set `MCPWATCH_UPDATE_SNAPSHOTS=1` to rewrite them after
//! an intended change), determinism, errors that name file and line, atomic `--alerts-out`,
//! and agreement with live detection in `serve` (SPEC 6: replay and live give the same alerts).

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use serde_json::Value;

fn fixtures() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures")
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `mcpwatch replay ARGS` from the fixtures directory, so relative paths in the output
/// are the same on every machine.
fn replay(args: &[&str]) -> Output {
    let out = common::bin()
        .current_dir(fixtures())
        .arg("replay")
        .args(args)
        .output()
        .expect("run mcpwatch replay");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

/// Compares `actual` with the snapshot file, or rewrites it when asked to.
fn assert_snapshot(name: &str, actual: &str) {
    let path = fixtures().join("replay").join(name);
    if std::env::var_os("MCPWATCH_UPDATE_SNAPSHOTS").is_some() {
        std::fs::write(&path, actual).expect("write snapshot");
        return;
    }
    let expected = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        expected == actual,
        "{} differs from the output; if the change is intended, rerun with MCPWATCH_UPDATE_SNAPSHOTS=1\n--- expected\n{expected}\n--- actual\n{actual}",
        path.display()
    );
}

const ATTACKS: [&str; 4] = [
    "--events",
    "replay/attacks.jsonl",
    "--rules",
    "rules/good.yaml",
];

#[test]
fn the_attack_fixture_gives_the_expected_alerts_and_summary_twice() {
    let dir = tempfile::tempdir().unwrap();
    let mut runs = Vec::new();
    for i in 0..2 {
        let out_file = dir.path().join(format!("alerts{i}.jsonl"));
        let mut args = ATTACKS.to_vec();
        let out_arg = out_file.display().to_string();
        args.extend(["--alerts-out", &out_arg]);
        let out = replay(&args);
        assert_eq!(out.code, 0, "{}", out.stderr);
        let alerts = std::fs::read_to_string(&out_file).unwrap();
        let stdout = out.stdout.replace(&out_arg, "ALERTS_OUT");
        runs.push((alerts, stdout));
    }
    assert_eq!(runs[0], runs[1], "two replays of the same stream differ");
    let (alerts, stdout) = &runs[0];
    assert_snapshot("attacks.alerts.jsonl", alerts);
    assert_snapshot("attacks.summary.txt", stdout);

    // The boundaries the fixture encodes, stated here so a snapshot update cannot hide them.
    let names: Vec<(String, String)> = alerts
        .lines()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .map(|a| (a["name"].as_str().unwrap().to_owned(), group(&a["group"])))
        .collect();
    for want in [
        ("brute_force_detection", "metadata.user_id=alice"),
        ("credential_stuffing", "metadata.ip_address=203.0.113.9"),
        ("privilege_escalation", "metadata.user_id=mallory"),
        ("unusual_data_access", "metadata.user_id=eve"),
        ("many_denied_deletes", "metadata.user_id=frank"),
    ] {
        assert!(
            names.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} missing from {names:?}"
        );
    }
    for (name, g) in &names {
        assert!(
            !g.contains("dave") && !g.contains("oscar"),
            "{name} fired below its threshold or outside its window: {g}"
        );
    }
}

fn group(g: &Value) -> String {
    g.as_object()
        .map(|m| {
            m.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

#[test]
fn a_config_turns_the_default_rules_off_and_adds_rule_files() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mcpwatch.toml");
    let rules = fixtures().join("rules/good.yaml");
    std::fs::write(
        &cfg,
        format!(
            "[detection]\ndefault_rules = false\n\n[rules]\nfiles = [{:?}]\n",
            rules.display().to_string()
        ),
    )
    .unwrap();
    let out = replay(&[
        "--events",
        "replay/attacks.jsonl",
        "--config",
        cfg.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(out.stdout.contains("many_denied_deletes"), "{}", out.stdout);
    assert!(
        !out.stdout.contains("brute_force_detection"),
        "{}",
        out.stdout
    );
    let out = replay(&["--events", "replay/attacks.jsonl", "--no-default-rules"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        !out.stdout.contains("rule       brute_force_detection"),
        "{}",
        out.stdout
    );
}

#[test]
fn a_bad_line_names_the_file_and_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("bad.jsonl");
    let good = std::fs::read_to_string(fixtures().join("replay/attacks.jsonl")).unwrap();
    let mut lines: Vec<&str> = good.lines().take(2).collect();
    lines.push("");
    lines.push("{\"id\": \"x\", \"timestamp\": \"yesterday\"}");
    std::fs::write(&events, lines.join("\n")).unwrap();
    let out = replay(&["--events", events.to_str().unwrap()]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains(&format!("{}:4: not a valid event", events.display())),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("fix or remove that line"));

    let out = replay(&["--events", "replay/no-such-file.jsonl"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains("cannot open replay/no-such-file.jsonl"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_failed_alerts_out_leaves_no_partial_file() {
    let dir = tempfile::tempdir().unwrap();
    // A directory where the file should go: the rename fails after the temp file is written.
    let target = dir.path().join("alerts.jsonl");
    std::fs::create_dir(&target).unwrap();
    std::fs::write(target.join("keep"), "x").unwrap();
    let mut args = ATTACKS.to_vec();
    let target_arg = target.display().to_string();
    args.extend(["--alerts-out", &target_arg]);
    let out = replay(&args);
    assert_eq!(out.code, 1, "{}", out.stdout);
    assert!(out.stderr.contains("alerts not written"), "{}", out.stderr);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("alerts.jsonl")]);

    let missing = dir.path().join("nope/alerts.jsonl");
    let missing_arg = missing.display().to_string();
    let mut args = ATTACKS.to_vec();
    args.extend(["--alerts-out", &missing_arg]);
    let out = replay(&args);
    assert_eq!(out.code, 1);
    assert!(out.stderr.contains("does not exist"), "{}", out.stderr);
}

/// Rule triggers keyed by (rule, group), each with its triggering event ids.
type Triggers = BTreeMap<(String, String), Vec<String>>;

fn replay_triggers(config: &Path) -> Triggers {
    let dir = tempfile::tempdir().unwrap();
    let out_file = dir.path().join("alerts.jsonl");
    let out = replay(&[
        "--events",
        "replay/attacks.jsonl",
        "--config",
        config.to_str().unwrap(),
        "--alerts-out",
        out_file.to_str().unwrap(),
    ]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    let mut triggers = Triggers::new();
    for line in std::fs::read_to_string(&out_file).unwrap().lines() {
        let a: Value = serde_json::from_str(line).unwrap();
        if a["source"] != "rule" {
            continue;
        }
        let ids = a["event_ids"].as_array().unwrap();
        let mut ids: Vec<String> = ids.iter().map(|i| i.as_str().unwrap().into()).collect();
        ids.sort();
        let key = (a["name"].as_str().unwrap().into(), group(&a["group"]));
        triggers.insert(key, ids);
    }
    triggers
}

async fn live_triggers(config: &Path, want: usize) -> Triggers {
    let dir = tempfile::tempdir().unwrap();
    let serve = common::Serve::start(dir.path(), &["--config", config.to_str().unwrap()]);
    let client = reqwest::Client::new();
    let stream = std::fs::read_to_string(fixtures().join("replay/attacks.jsonl")).unwrap();
    let resp = client
        .post(format!("{}/api/v1/events", serve.url))
        .header("content-type", "application/x-ndjson")
        .body(stream)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 202, "{:?}", resp.text().await);
    let deadline = Instant::now() + Duration::from_secs(20);
    let events = loop {
        let page: Value = client
            .get(format!("{}/api/v1/events", serve.url))
            .query(&[("event_type", "rule_trigger"), ("limit", "1000")])
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.len() >= want || Instant::now() > deadline {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    serve.stop();
    let mut triggers = Triggers::new();
    for e in events {
        let m = &e["metadata"];
        let ids = m["event_ids"].as_array().unwrap();
        let mut ids: Vec<String> = ids.iter().map(|i| i.as_str().unwrap().into()).collect();
        ids.sort();
        let key = (m["rule_name"].as_str().unwrap().into(), group(&m["group"]));
        assert!(
            triggers.insert(key.clone(), ids).is_none(),
            "{key:?} fired twice live"
        );
    }
    triggers
}

#[tokio::test]
async fn replay_and_live_serve_give_the_same_rule_triggers() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("mcpwatch.toml");
    // Keep the fixture's old events: retention would otherwise delete them by age.
    std::fs::write(
        &cfg,
        format!(
            "[retention]\nmax_age = \"36500d\"\n\n[rules]\nfiles = [{:?}]\n",
            fixtures().join("rules/good.yaml").display().to_string()
        ),
    )
    .unwrap();
    let offline = replay_triggers(&cfg);
    assert_eq!(offline.len(), 5, "{offline:?}");
    let live = live_triggers(&cfg, offline.len()).await;
    assert_eq!(live, offline);
}
