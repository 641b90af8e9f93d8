//! The edge's periodic health report: how full its delivery spool is and what it lost, so the
//! collector sees an edge falling behind before its spool overflows (`system/edge_health`).

use mcpwatch_core::{Event, Level};
use serde_json::{json, Map, Value};

use super::SessionTracker;
use crate::health::CaptureHealth;

/// What a `system/edge_health` event says about one edge's capture: level, message, metadata.
/// `wrap` sends it through its session's tracker; the gateway, one edge for all its
/// upstreams, on its own (see `gateway::monitor`).
pub fn edge_health_report(health: &CaptureHealth) -> (Level, String, Map<String, Value>) {
    let get = CaptureHealth::get;
    let (bytes, max) = (get(&health.spool_bytes), get(&health.spool_max_bytes));
    let lost = get(&health.spool_overflow_events);
    let mut m = Map::new();
    m.insert("spool_bytes".into(), json!(bytes));
    m.insert(
        "spool_pending_bytes".into(),
        json!(get(&health.spool_pending_bytes)),
    );
    m.insert("spool_max_bytes".into(), json!(max));
    m.insert("spooled_events".into(), json!(get(&health.spooled_events)));
    m.insert(
        "delivered_events".into(),
        json!(get(&health.delivered_events)),
    );
    m.insert("lost_events".into(), json!(lost));
    m.insert("dropped_lines".into(), json!(get(&health.dropped_lines)));
    // Behind: more than three quarters of the spool used, or events already lost.
    let behind = lost > 0 || (max > 0 && bytes > max / 4 * 3);
    let level = if behind { Level::Warning } else { Level::Info };
    let msg =
        format!("edge health: spool holds {bytes} of {max} bytes, {lost} event(s) lost so far");
    (level, msg, m)
}

impl SessionTracker {
    /// One `system/edge_health` event from the counters of this edge's capture.
    pub fn on_edge_health(&mut self, health: &CaptureHealth, out: &mut Vec<Event>) {
        let (level, msg, m) = edge_health_report(health);
        out.push(self.emit(
            level,
            "system",
            "edge_health",
            msg,
            m,
            &["capture", "health"],
        ));
    }
}
