//! Tests of the traffic metrics through the one public path: events into the stage, OpenMetrics
//! text out. `check` is the helper every test goes through.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_core::{Clock as _, Event, Level, ManualClock, Timestamp};
use serde_json::{json, Value};

use crate::{DetectorHealth, Metrics, MetricsConfig, MetricsSettings, Sources};

const T0: i64 = 1_800_000_000_000_000;

pub(crate) fn event(category: &str, event_type: &str, metadata: Value) -> Event {
    Event {
        id: "e".into(),
        timestamp: Timestamp::from_micros(T0),
        level: Level::Info,
        category: category.into(),
        source: "wrap:fs".into(),
        event_type: event_type.into(),
        message: String::new(),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        tags: vec![],
    }
}

pub(crate) fn tool(server: &str, tool: &str, outcome: &str, secs: f64, user: &str) -> Event {
    let mut m = json!({"server": server, "tool_name": tool, "outcome": outcome, "execution_time": secs,
                       "success": outcome == "success", "user_id": user, "execution_id": "x"});
    if outcome == "rpc_error" {
        m["error_code"] = json!(-32602);
    }
    event("tool_execution", "execution_complete", m)
}

fn request(server: &str, method: &str, outcome: &str, secs: f64) -> Event {
    event(
        "performance",
        "request_performance",
        json!({"server": server, "method": method, "outcome": outcome, "response_time": secs,
               "success": outcome == "success", "request_id": "1"}),
    )
}

/// Parses OpenMetrics text into `series → value` (HELP/TYPE/UNIT lines dropped).
pub(crate) fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// Feeds `events` to a stage built from `config`, rolls the windows 10 s later, and returns
/// the scraped series.
fn check(config: MetricsConfig, events: &[Event]) -> BTreeMap<String, f64> {
    let settings = config.build().expect("valid config");
    scrape(&settings, events)
}

fn scrape(settings: &MetricsSettings, events: &[Event]) -> BTreeMap<String, f64> {
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(T0)));
    let mut m = Metrics::build(
        settings,
        Sources {
            clock: clock.clone(),
            reader: None,
            detector: Arc::new(DetectorHealth::default()),
            data_dir: std::env::temp_dir(),
            otlp: None,
            extra: Vec::new(),
        },
    );
    for e in events {
        m.stage.observe(e);
    }
    clock.advance(Duration::from_secs(10));
    m.stage.roll(clock.now());
    parse(&m.endpoint.encode())
}

fn get(s: &BTreeMap<String, f64>, series: &str) -> f64 {
    *s.get(series).unwrap_or_else(|| {
        panic!(
            "no series {series} in:\n{:#?}",
            s.keys().collect::<Vec<_>>()
        )
    })
}

#[test]
fn a_tool_error_is_an_error_never_a_success() {
    let s = check(
        MetricsConfig::default(),
        &[
            tool("fs", "read_file", "success", 0.004, "alice"),
            tool("fs", "read_file", "success", 0.006, "alice"),
            tool("fs", "read_file", "tool_error", 0.002, "alice"),
            tool("fs", "read_file", "rpc_error", 0.001, "alice"),
        ],
    );
    let total = |o: &str| {
        get(
            &s,
            &format!("mcpwatch_tool_executions_total{{server=\"fs\",tool=\"read_file\",outcome=\"{o}\"}}"),
        )
    };
    assert_eq!(total("success"), 2.0);
    assert_eq!(total("tool_error"), 1.0);
    assert_eq!(total("rpc_error"), 1.0);
    assert_eq!(
        get(
            &s,
            "mcpwatch_tool_success_ratio{server=\"fs\",tool=\"read_file\"}"
        ),
        0.5
    );
    assert_eq!(
        get(
            &s,
            "mcpwatch_tool_error_ratio{server=\"fs\",tool=\"read_file\"}"
        ),
        0.5
    );
    // The OTel histogram: success has no error_type; isError is tool_error; JSON-RPC is the code.
    let op = |labels: &str| {
        get(
            &s,
            &format!("mcp_server_operation_duration_seconds_count{{{labels}}}"),
        )
    };
    assert_eq!(
        op("mcp_method_name=\"tools/call\",gen_ai_tool_name=\"read_file\""),
        2.0
    );
    assert_eq!(op("mcp_method_name=\"tools/call\",gen_ai_tool_name=\"read_file\",error_type=\"tool_error\""), 1.0);
    assert_eq!(
        op("mcp_method_name=\"tools/call\",gen_ai_tool_name=\"read_file\",error_type=\"-32602\""),
        1.0
    );
    assert_eq!(
        get(&s, "mcp_server_operation_duration_seconds_bucket{le=\"0.01\",mcp_method_name=\"tools/call\",gen_ai_tool_name=\"read_file\"}"),
        2.0
    );
}

#[test]
fn the_mcp_histogram_has_the_conventions_buckets() {
    let s = check(
        MetricsConfig::default(),
        &[request("fs", "tools/list", "success", 0.03)],
    );
    let les: Vec<String> = s
        .keys()
        .filter(|k| k.starts_with("mcp_server_operation_duration_seconds_bucket{"))
        .filter_map(|k| Some(k.split("le=\"").nth(1)?.split('"').next()?.to_owned()))
        .collect();
    let expected = [
        "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1.0", "2.0", "5.0", "10.0", "30.0", "60.0",
        "120.0", "300.0", "+Inf",
    ];
    for le in expected {
        assert!(
            les.iter().any(|l| l == le),
            "bucket {le} missing from {les:?}"
        );
    }
    assert_eq!(les.len(), expected.len());
    assert_eq!(
        get(&s, "mcp_server_operation_duration_seconds_bucket{le=\"0.05\",mcp_method_name=\"tools/list\"}"),
        1.0
    );
}

#[test]
fn requests_give_latency_throughput_error_rate_and_availability() {
    let mut events = vec![];
    for _ in 0..6 {
        events.push(request("fs", "tools/call", "success", 0.01));
    }
    events.push(request("fs", "tools/call", "tool_error", 0.01));
    events.push(request("fs", "tools/call", "timeout", 30.0));
    events.push(request("fs", "ping", "rpc_error", 0.01));
    events.push(request("fs", "ping", "transport_error", 0.01));
    let s = check(MetricsConfig::default(), &events);
    assert_eq!(
        get(
            &s,
            "mcpwatch_requests_total{server=\"fs\",method=\"tools/call\",outcome=\"success\"}"
        ),
        6.0
    );
    assert_eq!(
        get(
            &s,
            "mcpwatch_request_duration_seconds_count{server=\"fs\",method=\"tools/call\"}"
        ),
        8.0
    );
    assert_eq!(get(&s, "mcpwatch_request_error_ratio{server=\"fs\"}"), 0.4);
    assert_eq!(get(&s, "mcpwatch_availability_ratio{server=\"fs\"}"), 0.8);
    // 10 requests over the 10 s the window covers so far.
    assert!((get(&s, "mcpwatch_request_throughput_per_second{server=\"fs\"}") - 1.0).abs() < 1e-9);
    // tools/call's operation comes from execution_complete (which names the tool), not here.
    assert!(!s
        .keys()
        .any(|k| k.contains("mcp_method_name=\"tools/call\"")));
    assert_eq!(
        get(&s, "mcp_server_operation_duration_seconds_count{mcp_method_name=\"ping\",error_type=\"_OTHER\"}"),
        1.0
    );
    assert_eq!(
        get(&s, "mcp_server_operation_duration_seconds_count{mcp_method_name=\"ping\",error_type=\"transport_error\"}"),
        1.0
    );
}

#[test]
fn security_events_are_counted() {
    let s = check(
        MetricsConfig::default(),
        &[
            event(
                "security",
                "authentication",
                json!({"user_id": "a", "result": "success"}),
            ),
            event(
                "security",
                "authentication",
                json!({"user_id": "a", "result": "failure"}),
            ),
            event(
                "security",
                "authentication",
                json!({"user_id": "b", "result": "failure"}),
            ),
            event(
                "security",
                "authorization",
                json!({"user_id": "a", "resource": "r", "action": "x", "result": "denied"}),
            ),
            event(
                "security",
                "authorization",
                json!({"user_id": "a", "resource": "r", "action": "x", "result": "allowed"}),
            ),
            event(
                "security",
                "data_access",
                json!({"user_id": "a", "data_type": "t", "operation": "read", "data_classification": "pii"}),
            ),
            event("anomaly", "latency_spike", json!({})),
            event("security_alert", "rule_trigger", json!({})),
            event(
                "system",
                "capture_dropped",
                json!({"server": "fs", "dropped_lines": 3, "dropped_bytes": 300}),
            ),
            event(
                "system",
                "spool_overflow",
                json!({"server": "fs", "lost_events": 7}),
            ),
            event(
                "system",
                "protocol_error",
                json!({"server": "fs", "kind": "invalid_json"}),
            ),
            event("session", "session_start", json!({"server": "fs"})),
            event(
                "session",
                "session_end",
                json!({"server": "fs", "duration": 42.0}),
            ),
        ],
    );
    assert_eq!(
        get(
            &s,
            "mcpwatch_authentication_attempts_total{result=\"failure\"}"
        ),
        2.0
    );
    assert_eq!(
        get(
            &s,
            "mcpwatch_authentication_attempts_total{result=\"success\"}"
        ),
        1.0
    );
    assert_eq!(get(&s, "mcpwatch_authentication_failures_total"), 2.0);
    assert_eq!(get(&s, "mcpwatch_authorization_denials_total"), 1.0);
    assert_eq!(
        get(
            &s,
            "mcpwatch_authorization_decisions_total{result=\"allowed\"}"
        ),
        1.0
    );
    assert_eq!(
        get(
            &s,
            "mcpwatch_data_access_total{data_classification=\"pii\"}"
        ),
        1.0
    );
    assert_eq!(get(&s, "mcpwatch_suspicious_activities_total{category=\"anomaly\",event_type=\"latency_spike\",level=\"info\"}"), 1.0);
    assert_eq!(get(&s, "mcpwatch_suspicious_activities_total{category=\"security_alert\",event_type=\"rule_trigger\",level=\"info\"}"), 1.0);
    assert_eq!(
        get(&s, "mcpwatch_capture_dropped_lines_total{server=\"fs\"}"),
        3.0
    );
    assert_eq!(
        get(&s, "mcpwatch_capture_dropped_bytes_total{server=\"fs\"}"),
        300.0
    );
    assert_eq!(
        get(
            &s,
            "mcpwatch_capture_spool_lost_events_total{server=\"fs\"}"
        ),
        7.0
    );
    assert_eq!(
        get(
            &s,
            "mcpwatch_protocol_errors_total{server=\"fs\",kind=\"invalid_json\"}"
        ),
        1.0
    );
    assert_eq!(get(&s, "mcpwatch_sessions_total{server=\"fs\"}"), 1.0);
    assert_eq!(get(&s, "mcp_server_session_duration_seconds_count"), 1.0);
    assert_eq!(
        get(
            &s,
            "mcpwatch_events_total{category=\"security\",level=\"info\"}"
        ),
        6.0
    );
    assert!((get(&s, "mcpwatch_ingest_events_per_second") - 1.3).abs() < 1e-9);
}

fn many_users(n: usize) -> Vec<Event> {
    (0..n)
        .flat_map(|i| {
            let user = format!("user-{i}");
            [
                tool("fs", "read_file", "success", 0.001, &user),
                event(
                    "security",
                    "authentication",
                    json!({"user_id": user, "result": "success"}),
                ),
            ]
        })
        .collect()
}

fn user_values(s: &BTreeMap<String, f64>) -> std::collections::BTreeSet<String> {
    s.keys()
        .filter_map(|k| Some(k.split("user=\"").nth(1)?.split('"').next()?.to_owned()))
        .collect()
}

#[test]
fn one_hundred_thousand_users_make_no_user_series_unless_switched_on() {
    let events = many_users(100_000);
    let s = check(MetricsConfig::default(), &events);
    assert!(
        user_values(&s).is_empty(),
        "per-user series without metrics.per_user"
    );
    assert!(s.len() < 400, "{} series for 100,000 users", s.len());
    assert_eq!(
        get(
            &s,
            "mcpwatch_tool_executions_total{server=\"fs\",tool=\"read_file\",outcome=\"success\"}"
        ),
        100_000.0
    );
}

#[test]
fn with_per_user_on_users_are_bounded_and_the_overflow_is_counted() {
    let events = many_users(100_000);
    let config = MetricsConfig {
        per_user: true,
        max_users: 50,
        ..MetricsConfig::default()
    };
    let s = check(config, &events);
    let users = user_values(&s);
    assert_eq!(users.len(), 51, "50 users and `other`");
    assert!(users.contains("other"));
    assert_eq!(
        get(&s, "mcpwatch_metrics_label_limit{label=\"user\"}"),
        50.0
    );
    assert_eq!(
        get(&s, "mcpwatch_metrics_label_values{label=\"user\"}"),
        50.0
    );
    // Each of the 99,950 later users was refused twice: a tool call and a login.
    assert_eq!(
        get(&s, "mcpwatch_metrics_label_overflow_total{label=\"user\"}"),
        199_900.0
    );
    assert_eq!(
        get(&s, "mcpwatch_user_tool_executions_total{user=\"other\",server=\"fs\",tool=\"read_file\",outcome=\"success\"}"),
        99_950.0
    );
    assert!(s.len() < 600, "{} series", s.len());
}

#[test]
fn tool_names_from_traffic_are_bounded_too() {
    let events: Vec<Event> = (0..5_000)
        .map(|i| tool("fs", &format!("tool-{i}"), "success", 0.001, "a"))
        .collect();
    let config = MetricsConfig {
        max_tools: 10,
        ..MetricsConfig::default()
    };
    let s = check(config, &events);
    let tools: std::collections::BTreeSet<&str> = s
        .keys()
        .filter(|k| k.starts_with("mcpwatch_tool_executions_total"))
        .filter_map(|k| k.split("tool=\"").nth(1)?.split('"').next())
        .collect();
    assert_eq!(tools.len(), 11, "{tools:?}");
    assert_eq!(
        get(
            &s,
            "mcpwatch_tool_executions_total{server=\"fs\",tool=\"other\",outcome=\"success\"}"
        ),
        4_990.0
    );
}

#[test]
fn rates_forget_what_left_the_window() {
    let settings = MetricsSettings::default();
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(T0)));
    let mut m = Metrics::build(
        &settings,
        Sources {
            clock: clock.clone(),
            reader: None,
            detector: Arc::new(DetectorHealth::default()),
            data_dir: std::env::temp_dir(),
            otlp: None,
            extra: Vec::new(),
        },
    );
    m.stage.observe(&tool("fs", "t", "tool_error", 0.1, "a"));
    clock.advance(Duration::from_secs(400));
    m.stage.roll(clock.now());
    m.stage.observe(&tool("fs", "t", "success", 0.1, "a"));
    m.stage.roll(clock.now());
    let s = parse(&m.endpoint.encode());
    assert_eq!(
        get(&s, "mcpwatch_tool_success_ratio{server=\"fs\",tool=\"t\"}"),
        1.0
    );
    assert_eq!(get(&s, "mcpwatch_metrics_window_seconds"), 300.0);
}

#[test]
fn config_errors_name_their_keys() {
    let config: MetricsConfig =
        toml::from_str("max_users = 0\nwindow = \"1s\"\nhost_interval = \"10ms\"").unwrap();
    let errors: Vec<String> = config
        .build()
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("metrics.max_users"));
    assert!(errors[1].starts_with("metrics.window"));
    assert!(errors[2].starts_with("metrics.host_interval"));
    let unknown = toml::from_str::<MetricsConfig>("per_users = true").unwrap_err();
    assert!(unknown.to_string().contains("per_users"), "{unknown}");
}
