//! Events of a request as it starts: `execution_start` (and a `data_access` when a tool
//! argument is classified) for `tools/call`, `data_access` for `resources/read`.

use mcpwatch_core::{Event, Level};
use serde_json::{json, Map, Value};

use super::correlate::{Carried, ToolCall};
use super::summary::{parameter_shape, parameter_sizes, MAX_PARAMETERS_BYTES};
use super::{bounded_parameters, SessionTracker};

/// Bytes of parameters a session's pending calls carry towards their `execution_complete` at
/// most; beyond it a call carries the shape of its parameters instead.
pub(super) const MAX_CARRIED_BYTES: usize = 4 * 1024 * 1024;
use crate::jsonrpc::id_display;

impl SessionTracker {
    pub(super) fn tool_call_started(
        &mut self,
        id: &Value,
        params: &Value,
        out: &mut Vec<Event>,
    ) -> ToolCall {
        let tool_name = params
            .get("name")
            .and_then(Value::as_str)
            .unwrap_or("unknown")
            .to_string();
        let arguments = params.get("arguments").cloned().unwrap_or(Value::Null);
        let execution_id = self.ids.next(self.clock.now());
        let mut m = Map::new();
        m.insert("execution_id".into(), json!(execution_id));
        m.insert("tool_name".into(), json!(tool_name));
        m.insert("request_id".into(), json!(id_display(id)));
        let (bounded, size) = bounded_parameters(&arguments);
        m.insert("parameters".into(), bounded);
        if let Some(scan) = super::edge::parameters(&arguments, size) {
            m.insert("edge_scan".into(), scan);
        }
        let msg = format!("Tool {tool_name} execution started");
        out.push(self.emit(
            Level::Info,
            "tool_execution",
            "execution_start",
            msg,
            m,
            &["tool", "execution", "start"],
        ));
        let parameters = self.carry(out.last(), size);
        let sizes = parameter_sizes(&arguments);
        let classified = self
            .cfg
            .classification
            .classify_tool_call(&tool_name, &arguments)
            .map(|(c, arg, v)| (c.to_string(), arg.to_string(), v.to_string()));
        if let Some((classification, argument, value)) = classified {
            let mut m = Map::new();
            m.insert("data_type".into(), json!("tool_argument"));
            m.insert("operation".into(), json!(tool_name));
            m.insert("tool_name".into(), json!(tool_name));
            m.insert("execution_id".into(), json!(execution_id));
            m.insert("argument".into(), json!(argument));
            m.insert("value".into(), json!(value));
            m.insert("data_classification".into(), json!(classification));
            let msg =
                format!("Tool {tool_name} called on {classification} data ({argument}={value})");
            out.push(self.emit(
                Level::Info,
                "security",
                "data_access",
                msg,
                m,
                &["data_access", "tool"],
            ));
        }
        ToolCall {
            execution_id,
            tool_name,
            parameters,
            sizes,
        }
    }

    /// What `execution_complete` will repeat of the parameters just emitted on `started` (as
    /// redacted there): all of them while the session's pending calls hold less than
    /// [`MAX_CARRIED_BYTES`], else their shape, so that pending calls stay bounded in memory.
    /// (Parameters over [`MAX_PARAMETERS_BYTES`] are a shape already.)
    fn carry(&mut self, started: Option<&Event>, size: usize) -> Carried {
        let Some(p) = started.and_then(|e| e.metadata.get("parameters")) else {
            return Carried::default();
        };
        if size > MAX_PARAMETERS_BYTES {
            // Already their (small) shape.
            return Carried {
                value: p.clone(),
                bytes: 0,
            };
        }
        if self.carried_bytes.saturating_add(size) <= MAX_CARRIED_BYTES {
            self.carried_bytes += size;
            return Carried {
                value: p.clone(),
                bytes: size,
            };
        }
        Carried {
            value: parameter_shape(p, size),
            bytes: 0,
        }
    }

    pub(super) fn resource_read(&mut self, params: &Value, out: &mut Vec<Event>) {
        let uri = params
            .get("uri")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string();
        let classification = self.cfg.classification.classify_uri(&uri).to_string();
        let mut m = Map::new();
        m.insert("data_type".into(), json!("resource"));
        m.insert("operation".into(), json!("read"));
        m.insert("uri".into(), json!(uri));
        m.insert("data_classification".into(), json!(classification));
        let msg = format!("Resource {uri} read ({classification})");
        out.push(self.emit(
            Level::Info,
            "security",
            "data_access",
            msg,
            m,
            &["data_access", "resource"],
        ));
    }
}
