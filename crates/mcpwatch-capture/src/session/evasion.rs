//! Frames built to slip past inspection. A frame nested deeper than `serde_json` reads is
//! still parsed (with deep subtrees replaced by markers, see [`crate::depth`]) and its calls
//! recorded as usual; this adds the `security` / `nesting_evasion` event that says so, which
//! the default rule `nesting_evasion` turns into an alert.

use mcpwatch_core::{Event, Level};
use serde_json::{json, Map, Value};

use super::{Direction, SessionTracker};
use crate::depth::{Cut, CUT_DEPTH, MAX_READABLE_DEPTH};
use crate::jsonrpc::{id_display, id_key, Message};

/// Requests of one frame named in a `nesting_evasion` event at most.
const MAX_NAMED: usize = 16;

/// What the evasion event names of a request, taken before the tracker consumes it.
pub(super) struct Named {
    id: Value,
    method: String,
    tool_name: Option<String>,
}

/// The requests of a frame, as far as the evasion event names them.
pub(super) fn named(messages: &[Message]) -> Vec<Named> {
    messages
        .iter()
        .filter_map(|m| match m {
            Message::Request { id, method, params } => Some(Named {
                id: id.clone(),
                method: method.clone(),
                tool_name: params
                    .get("name")
                    .and_then(Value::as_str)
                    .map(str::to_string),
            }),
            _ => None,
        })
        .take(MAX_NAMED)
        .collect()
}

impl SessionTracker {
    /// A frame that nested past the readable depth was read down to [`CUT_DEPTH`]; its
    /// requests (`named`) have been tracked already.
    pub(super) fn nesting_evasion(
        &mut self,
        dir: Direction,
        cut: &Cut,
        named: Vec<Named>,
        size: usize,
        out: &mut Vec<Event>,
    ) {
        let mut requests = Vec::new();
        for n in &named {
            let mut r = Map::new();
            r.insert("method".into(), json!(n.method));
            r.insert("request_id".into(), json!(id_display(&n.id)));
            if let Some(t) = &n.tool_name {
                r.insert("tool_name".into(), json!(t));
            }
            let pending = self.pending[dir.index()].get(&id_key(&n.id));
            if let Some(call) = pending.and_then(|p| p.tool.as_ref()) {
                r.insert("execution_id".into(), json!(call.execution_id));
            }
            requests.push(Value::Object(r));
        }
        let mut m = Map::new();
        m.insert("kind".into(), json!("nesting_too_deep"));
        m.insert("direction".into(), json!(dir.as_str()));
        m.insert("size".into(), json!(size));
        m.insert("readable_depth".into(), json!(MAX_READABLE_DEPTH));
        m.insert("cut_depth".into(), json!(CUT_DEPTH));
        m.insert("cut_subtrees".into(), json!(cut.subtrees));
        m.insert("kept_strings".into(), json!(cut.strings));
        m.insert("strings_dropped".into(), json!(cut.strings_dropped));
        // The first request's fields at the top level, for rules and grouping.
        if let Some(Value::Object(first)) = requests.first() {
            for (k, v) in first {
                m.insert(k.clone(), v.clone());
            }
        }
        m.insert("requests".into(), Value::Array(requests));
        let what = match named.first() {
            Some(Named {
                tool_name: Some(t), ..
            }) => format!("a call of tool {t}"),
            Some(n) => format!("a {} request", n.method),
            None => "a message".to_string(),
        };
        let msg = format!(
            "Frame {} nests deeper than the {MAX_READABLE_DEPTH} levels a JSON parser commonly reads: {what} shaped to evade inspection (recorded with subtrees below {CUT_DEPTH} levels cut)",
            dir.as_str()
        );
        out.push(self.emit(
            Level::Warning,
            "security",
            "nesting_evasion",
            msg,
            m,
            &["security", "evasion", "protocol"],
        ));
    }
}
