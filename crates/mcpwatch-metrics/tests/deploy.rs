//! The shipped Prometheus rules and Grafana dashboard: `promtool check rules` accepts the rules
//! (promtool must be installed: `scripts/install-peers`), and every metric they query, and
//! every metric `/metrics` shows, is documented in `docs/metrics.md`.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::Arc;

use mcpwatch_metrics::{DetectorHealth, Metrics, MetricsConfig, OtlpConfig, Sources};

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Metric names (`mcpwatch_…`, `mcp_…`) in `text`, with histogram suffixes removed.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        let starts = (text[i..].starts_with("mcpwatch_") || text[i..].starts_with("mcp_"))
            && (i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_'));
        if !starts {
            i += 1;
            continue;
        }
        let end = text[i..]
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .map_or(text.len(), |n| i + n);
        let n = &text[i..end];
        // A label matcher (`mcp_method_name="tools/call"`), not a metric.
        if text[end..].starts_with(['=', '!', '~']) {
            i = end;
            continue;
        }
        let base = ["_bucket", "_sum", "_count"]
            .iter()
            .fold(n, |n, s| n.strip_suffix(s).unwrap_or(n));
        out.insert(base.to_owned());
        i = end;
    }
    out
}

fn documented() -> BTreeSet<String> {
    let doc = std::fs::read_to_string(repo().join("docs/metrics.md")).expect("docs/metrics.md");
    doc.lines()
        .filter(|l| l.starts_with("| `"))
        .filter_map(|l| Some(l.split('`').nth(1)?.to_owned()))
        .collect()
}

#[test]
fn promtool_accepts_the_alerting_rules() {
    let rules = repo().join("deploy/prometheus/alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .expect("promtool is not installed; run scripts/install-peers as root (Debian's `prometheus` package)");
    assert!(
        out.status.success(),
        "promtool check rules {}:\n{}{}",
        rules.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn the_rules_and_the_dashboard_query_only_documented_metrics() {
    let docs = documented();
    let rules = std::fs::read_to_string(repo().join("deploy/prometheus/alerts.yml")).unwrap();
    let dash = std::fs::read_to_string(repo().join("deploy/grafana/mcpwatch.json")).unwrap();
    let parsed: serde_json::Value =
        serde_json::from_str(&dash).expect("the dashboard is valid JSON");
    assert!(parsed["panels"].as_array().is_some_and(|p| p.len() > 10));
    for (file, text) in [("alerts.yml", &rules), ("mcpwatch.json", &dash)] {
        let used = names(text);
        assert!(used.len() > 5, "{file} uses {used:?}");
        let missing: Vec<_> = used.difference(&docs).collect();
        assert!(
            missing.is_empty(),
            "{file} queries undocumented (or misspelt) metrics: {missing:?}"
        );
    }
}

#[test]
fn every_metric_served_is_documented() {
    let settings = MetricsConfig {
        per_user: true,
        ..MetricsConfig::default()
    }
    .build()
    .unwrap();
    let otlp: OtlpConfig = toml::from_str("endpoint = \"http://127.0.0.1:9\"").unwrap();
    let mut m = Metrics::build(
        &settings,
        Sources {
            clock: Arc::new(mcpwatch_core::SystemClock),
            reader: None,
            detector: Arc::new(DetectorHealth::default()),
            data_dir: std::env::temp_dir(),
            otlp: Some(otlp.build().unwrap()),
            extra: Vec::new(),
        },
    );
    for e in every_kind_of_event() {
        m.stage.observe(&e);
    }
    m.stage
        .roll(mcpwatch_core::Timestamp::from_micros(1_800_000_010_000_000));
    let text = m.endpoint.encode();
    let families: BTreeSet<String> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| {
            let mut p = l.split(' ');
            let (name, kind) = (p.next()?, p.next()?);
            Some(if kind == "counter" {
                format!("{name}_total")
            } else {
                name.to_owned()
            })
        })
        .collect();
    assert!(families.len() > 40, "{families:?}");
    let docs = documented();
    let missing: Vec<_> = families.difference(&docs).collect();
    assert!(
        missing.is_empty(),
        "served but not in docs/metrics.md: {missing:?}"
    );
}

fn every_kind_of_event() -> Vec<mcpwatch_core::Event> {
    use serde_json::json;
    let e = |category: &str, event_type: &str, metadata: serde_json::Value| mcpwatch_core::Event {
        id: "0193a5b2-0000-7000-8000-000000000001".into(),
        timestamp: mcpwatch_core::Timestamp::from_micros(1_800_000_000_000_000),
        level: mcpwatch_core::Level::Info,
        category: category.into(),
        source: "wrap:fs".into(),
        event_type: event_type.into(),
        message: String::new(),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        tags: vec![],
    };
    vec![
        e(
            "tool_execution",
            "execution_complete",
            json!({"server": "fs", "tool_name": "t", "outcome": "success", "execution_time": 0.1, "user_id": "u"}),
        ),
        e(
            "performance",
            "request_performance",
            json!({"server": "fs", "method": "ping", "outcome": "success", "response_time": 0.1}),
        ),
        e(
            "security",
            "authentication",
            json!({"user_id": "u", "result": "failure"}),
        ),
        e(
            "security",
            "authorization",
            json!({"user_id": "u", "result": "denied"}),
        ),
        e(
            "security",
            "data_access",
            json!({"user_id": "u", "data_classification": "pii"}),
        ),
        e("anomaly", "latency_spike", json!({})),
        e("session", "session_start", json!({"server": "fs"})),
        e(
            "session",
            "session_end",
            json!({"server": "fs", "duration": 1.0}),
        ),
        e(
            "system",
            "protocol_error",
            json!({"server": "fs", "kind": "invalid_json"}),
        ),
        e(
            "system",
            "capture_dropped",
            json!({"server": "fs", "dropped_lines": 1, "dropped_bytes": 1}),
        ),
        e(
            "system",
            "spool_overflow",
            json!({"server": "fs", "lost_events": 1}),
        ),
        e(
            "system",
            "edge_health",
            json!({"spool_bytes": 10, "spool_pending_bytes": 5, "spool_max_bytes": 100, "lost_events": 0}),
        ),
    ]
}
