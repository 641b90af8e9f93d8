//! The gateway reports its health as an edge (issue 16, item 3): the real `mcpwatch gateway`
//! in front of two upstreams, delivering into a real `serve`, sends `system/edge_health` every
//! `MCPWATCH_HEALTH_INTERVAL` as one edge (`source` `gateway`) for the whole process, whatever
//! its upstreams and sessions, with its spool and its tap queue; `serve` shows it on `/metrics`
//! as the `mcpwatch_edge_*` gauges with the one bounded `edge` label.

mod common;

use std::process::Command;

use common::detect::{free_port, gateway, get, wait_until};
use common::{edge_gauge, Serve};
use serde_json::Value;

/// `GET url` as text (empty when it fails).
fn text(url: &str) -> String {
    let out = Command::new("curl")
        .args(["-sf", url])
        .output()
        .expect("curl runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_gateway_reports_its_spool_and_queue_as_one_edge_on_metrics() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("serve"), &[]);
    // Nothing listens upstream: the calls below fail, but each opens a session tracker.
    let down = format!("http://127.0.0.1:{}/mcp", free_port());
    let config = format!("[gateway.upstreams]\nalpha = \"{down}\"\nbeta = \"{down}\"\n");
    let (_gw, gw) = gateway(
        &config,
        &serve.url,
        tmp.path(),
        &[("MCPWATCH_HEALTH_INTERVAL", "1s")],
    );
    for upstream in ["alpha", "beta"] {
        let out = Command::new("curl")
            .args(["-s", "-o", "/dev/null", "-w", "%{http_code}", "-X", "POST"])
            .args(["-H", "content-type: application/json", "-d"])
            .arg(r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#)
            .arg(format!("{gw}/mcp/{upstream}"))
            .output()
            .expect("curl runs");
        assert_eq!(String::from_utf8_lossy(&out.stdout), "502");
    }

    let url = &serve.url;
    let reports = || -> Vec<Value> {
        get(&format!(
            "{url}/api/v1/events?event_type=edge_health&limit=100"
        ))["events"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    };
    let (reports, metrics) = wait_until(
        || (reports(), text(&format!("{url}/metrics"))),
        |(r, m)| {
            r.len() >= 2 && edge_gauge(m, "mcpwatch_edge_spool_max_bytes", "gateway").is_some()
        },
    );
    assert!(reports.len() >= 2, "{reports:#?}");
    for r in &reports {
        assert_eq!(r["source"], "gateway", "one edge per process: {r:#?}");
        assert_eq!(r["category"], "system");
        let m = &r["metadata"];
        assert_eq!(m["queue_capacity"], 65_536, "{r:#?}");
        assert!(m["queue_depth"].as_u64().is_some(), "{r:#?}");
        assert_eq!(m["dropped_lines"], 0, "{r:#?}");
        assert_eq!(m["lost_events"], 0, "{r:#?}");
        assert_eq!(m["spool_max_bytes"], 64u64 << 20, "{r:#?}");
    }
    // Reports come at the interval, not once per upstream or session.
    let mut times: Vec<&str> = reports
        .iter()
        .filter_map(|r| r["timestamp"].as_str())
        .collect();
    times.sort();
    times.dedup();
    assert_eq!(times.len(), reports.len(), "{reports:#?}");

    assert_eq!(
        edge_gauge(&metrics, "mcpwatch_edge_spool_max_bytes", "gateway"),
        Some((64u64 << 20) as f64),
        "{metrics}"
    );
    assert_eq!(
        edge_gauge(&metrics, "mcpwatch_edge_lost_events", "gateway"),
        Some(0.0)
    );
    assert!(edge_gauge(&metrics, "mcpwatch_edge_spool_bytes", "gateway").is_some());
    assert!(edge_gauge(&metrics, "mcpwatch_edge_spool_pending_bytes", "gateway").is_some());
    let reported = edge_gauge(
        &metrics,
        "mcpwatch_edge_health_timestamp_seconds",
        "gateway",
    )
    .expect("a report time");
    assert!(reported > 1.7e9, "{reported}");
    // The edge label holds the process, never an upstream or a session.
    let edges: Vec<&str> = metrics
        .lines()
        .filter(|l| l.starts_with("mcpwatch_edge_spool_max_bytes{"))
        .collect();
    assert_eq!(edges.len(), 1, "{metrics}");
    assert!(edges[0].contains("{edge=\"gateway\"}"), "{metrics}");
    serve.stop();
}
