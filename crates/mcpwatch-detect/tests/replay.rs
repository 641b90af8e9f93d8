//! Replay: deterministic, equal to the live path, alerts folded by fingerprint; thresholds and
//! threats through the whole engine; bad input files name the line.

mod common;

use std::fmt::Write;

use expect_test::expect_file;
use mcpwatch_core::Event;
use mcpwatch_detect::{replay, Alert, AlertBook, DetectSettings, Engine, RuleSet};

/// Every fixture stream, concatenated: rules, thresholds and threats together.
fn all_events() -> Vec<Event> {
    [
        "rules/threshold_boundary.jsonl",
        "rules/window_edge.jsonl",
        "rules/distinct.jsonl",
        "rules/suppress_multi_group.jsonl",
        "rules/privilege_escalation.jsonl",
        "replay/mixed.jsonl",
    ]
    .iter()
    .flat_map(|f| common::events(f))
    .collect()
}

fn render(alerts: &[Alert]) -> String {
    let mut s = String::new();
    for a in alerts {
        let group: Vec<String> = a.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            s,
            "{} {} {} x{} {{{}}} {}..{} [{}]\n  {}",
            a.source.as_str(),
            a.name,
            a.severity,
            a.count,
            group.join(", "),
            a.first_seen,
            a.last_seen,
            a.event_ids.join(" "),
            a.description
        );
    }
    s
}

#[test]
fn replay_alerts_snapshot() {
    let (alerts, summary) = replay(
        all_events(),
        RuleSet::defaults(),
        &DetectSettings::default(),
    );
    let mut text = render(&alerts);
    for r in summary
        .rows
        .iter()
        .filter(|r| r.findings > 0 || r.matched.unwrap_or(0) > 0)
    {
        let _ = writeln!(
            text,
            "summary {} {}: matched={:?} findings={} suppressed={} alerts={}",
            r.source.as_str(),
            r.name,
            r.matched,
            r.findings,
            r.suppressed,
            r.alerts
        );
    }
    expect_file!["fixtures/replay/mixed.expected"].assert_eq(&text);
}

#[test]
fn replay_is_deterministic_and_equals_the_live_path() {
    let settings = DetectSettings::default();
    let (first, _) = replay(all_events(), RuleSet::defaults(), &settings);
    let (second, _) = replay(all_events(), RuleSet::defaults(), &settings);
    let json = |a: &[Alert]| serde_json::to_string(a).expect("alerts serialise");
    assert_eq!(json(&first), json(&second));
    assert!(!first.is_empty());

    // Live: the same events in arrival (= event-time) order through Engine and AlertBook.
    let mut events = all_events();
    events.sort_by_key(|e| e.timestamp);
    let mut engine = Engine::new(RuleSet::defaults(), &settings);
    let mut book = AlertBook::new(settings.max_event_ids_per_alert);
    let mut out = Vec::new();
    for e in &events {
        engine.process(e, &mut out);
        out.drain(..).for_each(|f| {
            book.fold(&f);
        });
    }
    assert_eq!(json(book.alerts()), json(&first));
}

#[test]
fn a_bad_event_line_is_named() {
    let path = common::fixture("replay/bad_line.jsonl");
    let err = mcpwatch_detect::load_events_jsonl(&path).expect_err("line 3 is bad");
    let text = err.to_string();
    assert!(text.contains("bad_line.jsonl:3:"), "{text}");
    assert!(text.contains("RFC 3339"), "{text}");
}

#[test]
fn config_reports_every_error() {
    let cfg: mcpwatch_detect::DetectConfig = serde_json::from_value(serde_json::json!({
        "anomaly": {"enabled": ["latency", "telepathy"], "learning_period": "soon"},
        "thresholds": {"cpu_usage": {"warning": 99, "critical": 90}, "window": "0s"}
    }))
    .expect("shape is valid");
    let errors = cfg.build().expect_err("values are not");
    let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(errors.len(), 4, "{text:#?}");
    assert!(text
        .iter()
        .any(|t| t.contains("unknown detector `telepathy`")));
    assert!(text
        .iter()
        .any(|t| t.contains("learning_period") && t.contains("30s, 5m")));
    assert!(text
        .iter()
        .any(|t| t.contains("cpu_usage") && t.contains("at or below")));
    let unknown = serde_json::from_value::<mcpwatch_detect::DetectConfig>(
        serde_json::json!({"tresholds": {}}),
    );
    assert!(unknown.is_err(), "unknown fields are refused");
}
