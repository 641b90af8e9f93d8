//! Tool listings and pins: pages of `tools/list` accumulated, compared with the [`PinStore`]
//! once complete, and the differences reported (`tools_listed`, `tool_definition_changed`,
//! `tool_added`, `tool_removed`).
//!
//! [`PinStore`]: crate::pins::PinStore

use mcpwatch_core::{Event, Level};
use serde_json::{json, Map, Value};

use super::SessionTracker;
use crate::pins::PinDiff;

/// Pages of one `tools/list` accumulated at most.
const MAX_LISTED_TOOLS: usize = 10_000;

impl SessionTracker {
    pub(super) fn tools_listed(&mut self, result: &Value, out: &mut Vec<Event>) {
        if let Some(tools) = result.get("tools").and_then(Value::as_array) {
            let room = MAX_LISTED_TOOLS.saturating_sub(self.listing.len());
            self.listing.extend(tools.iter().take(room).cloned());
        }
        if result.get("nextCursor").is_some_and(|c| !c.is_null()) {
            return;
        }
        let tools = std::mem::take(&mut self.listing);
        let server = self.cfg.server.clone();
        match self.pins.compare_and_pin(&server, &tools) {
            Ok(diff) => self.report_pins(diff, out),
            Err(e) => {
                // A failed save still says what changed (the old pins are kept).
                if let Some(diff) = e.diff {
                    self.report_pins(*diff, out);
                }
                let e = e.error;
                let mut m = Map::new();
                m.insert("error".into(), json!(e.to_string()));
                let msg = format!("Tool definitions of {server} could not be pinned: {e}");
                out.push(self.emit(Level::Error, "system", "pin_store_error", msg, m, &["pins"]));
            }
        }
    }

    pub(super) fn report_pins(&mut self, diff: PinDiff, out: &mut Vec<Event>) {
        if !diff.differs() {
            return;
        }
        let server = self.cfg.server.clone();
        let tools: Vec<Value> = diff
            .listed
            .iter()
            .map(|t| {
                let mut tool =
                    json!({"name": t.name, "description": t.description, "hash": t.pin.hash});
                if let Some(scan) = super::edge::description(&t.description) {
                    tool["edge_scan"] = scan;
                }
                tool
            })
            .collect();
        let mut m = Map::new();
        m.insert("tools".into(), Value::Array(tools));
        m.insert("first_listing".into(), json!(diff.first));
        let msg = format!("{server} lists {} tool(s)", diff.listed.len());
        out.push(self.emit(
            Level::Info,
            "session",
            "tools_listed",
            msg,
            m,
            &["tools", "listing"],
        ));
        for (name, old, new, parts) in diff.changed {
            let new_description = diff
                .listed
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.description.clone());
            let mut m = Map::new();
            m.insert("tool_name".into(), json!(name));
            m.insert("old_hash".into(), json!(old.hash));
            m.insert("new_hash".into(), json!(new.hash));
            m.insert("changed".into(), json!(parts));
            m.insert("old_description".into(), json!(old.description));
            if let Some(scan) = new_description
                .as_deref()
                .and_then(super::edge::description)
            {
                m.insert("edge_scan".into(), scan);
            }
            m.insert("new_description".into(), json!(new_description));
            let msg = format!(
                "Tool {name} of {server} changed its definition ({}) since it was pinned",
                parts.join(", ")
            );
            out.push(self.emit(
                Level::Warning,
                "security",
                "tool_definition_changed",
                msg,
                m,
                &["tools", "rug_pull"],
            ));
        }
        for name in diff.added {
            let hash = diff
                .listed
                .iter()
                .find(|t| t.name == name)
                .map(|t| t.pin.hash.clone());
            let mut m = Map::new();
            m.insert("tool_name".into(), json!(name));
            m.insert("new_hash".into(), json!(hash));
            let msg = format!("Tool {name} appeared on {server} after its tools were pinned");
            out.push(self.emit(Level::Warning, "security", "tool_added", msg, m, &["tools"]));
        }
        for (name, old) in diff.removed {
            let mut m = Map::new();
            m.insert("tool_name".into(), json!(name));
            m.insert("old_hash".into(), json!(old.hash));
            let msg = format!("Tool {name} disappeared from {server}");
            out.push(self.emit(Level::Info, "security", "tool_removed", msg, m, &["tools"]));
        }
    }
}
