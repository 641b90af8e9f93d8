//! Shared helpers for the integration tests: fixture loading and the one rendering of findings
//! that snapshots compare.

#![allow(
    dead_code,
    reason = "each test binary uses a different part of this module"
)]

use std::fmt::Write;
use std::path::PathBuf;

use mcpwatch_core::Event;
use mcpwatch_detect::Finding;

pub fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel)
}

pub fn events(rel: &str) -> Vec<Event> {
    mcpwatch_detect::replay::load_events_jsonl(&fixture(rel))
        .unwrap_or_else(|e| panic!("fixture {rel}: {e}"))
}

/// One finding per paragraph: time, source, name, severity, group, event ids, description.
pub fn render(findings: &[Finding]) -> String {
    let mut s = String::new();
    for f in findings {
        let group: Vec<String> = f.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let _ = writeln!(
            s,
            "{} {} {} {} {{{}}} [{}]\n  {}",
            f.at,
            f.source.as_str(),
            f.name,
            f.severity,
            group.join(", "),
            f.event_ids.join(" "),
            f.description
        );
    }
    s
}
