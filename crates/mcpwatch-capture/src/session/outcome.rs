//! How a request ended, and the events that say so: `request_performance` for every request,
//! `execution_complete` for a `tools/call`, then what a result means for the session (its start,
//! a finished tool listing).

use mcpwatch_core::{Event, Level, Outcome};
use serde_json::{json, Map, Value};

use super::correlate::Pending;
use super::meta::secs_between;
use super::{is_tool_error, result_summary, Direction, SessionTracker};
use crate::jsonrpc::id_display;

/// How a request ended.
pub(super) enum Ending {
    Result(Value, usize),
    RpcError(i64, String),
    Cancelled(Option<String>),
    Timeout,
    TransportError(String),
    Denied(String),
}

impl SessionTracker {
    pub(super) fn complete(
        &mut self,
        request_dir: Direction,
        mut p: Pending,
        ending: Ending,
        out: &mut Vec<Event>,
    ) {
        self.release(&p);
        let now = self.clock.now();
        let elapsed = secs_between(p.started, now);
        let outcome = match &ending {
            Ending::Result(r, _) if p.tool.is_some() && is_tool_error(r) => Outcome::ToolError,
            Ending::Result(..) => Outcome::Success,
            Ending::RpcError(..) => Outcome::RpcError,
            Ending::Cancelled(_) => Outcome::Cancelled,
            Ending::Timeout => Outcome::Timeout,
            Ending::TransportError(_) => Outcome::TransportError,
            Ending::Denied(_) => Outcome::Denied,
        };
        let success = outcome == Outcome::Success;
        let mut detail = Map::new();
        detail.insert("outcome".into(), json!(outcome.as_str()));
        match &ending {
            Ending::RpcError(code, message) => {
                detail.insert("error_code".into(), json!(code));
                detail.insert("error_message".into(), json!(message));
            }
            Ending::Cancelled(Some(reason)) => {
                detail.insert("reason".into(), json!(reason));
            }
            Ending::TransportError(reason) | Ending::Denied(reason) => {
                detail.insert("reason".into(), json!(reason));
            }
            _ => {}
        }

        let request_id = id_display(&p.id);
        // `execution_complete` shares the detail; without a tool, it need not be copied.
        let mut m = if p.tool.is_some() {
            detail.clone()
        } else {
            std::mem::take(&mut detail)
        };
        m.insert("request_id".into(), json!(request_id));
        m.insert("method".into(), json!(p.method));
        m.insert("direction".into(), json!(request_dir.as_str()));
        m.insert("response_time".into(), json!(elapsed));
        m.insert("success".into(), json!(success));
        if let Ending::Result(result, _) = &ending {
            if let Some(scan) = super::edge::content(&p.method, result) {
                m.insert("edge_scan".into(), scan);
            }
        }
        let msg = format!(
            "{} answered in {:.1} ms ({})",
            p.method,
            elapsed * 1e3,
            outcome.as_str()
        );
        let mut event = self.emit(
            Level::Info,
            "performance",
            "request_performance",
            msg,
            m,
            &["performance", "request"],
        );
        // Validated hex and dashes (`trace::parse_traceparent`): nothing to redact.
        if let Some(t) = &p.trace {
            event.metadata.insert("traceparent".into(), json!(t));
        }
        out.push(event);
        if let Some(asked) = p.asked.take() {
            self.server_request_answered(&p, asked, &ending, out);
        }

        if let Some(call) = p.tool.take() {
            let (execution_id, tool_name) = (call.execution_id, call.tool_name);
            let mut m = detail;
            m.insert("execution_id".into(), json!(execution_id));
            m.insert("tool_name".into(), json!(tool_name));
            m.insert("request_id".into(), Value::String(request_id));
            m.insert("execution_time".into(), json!(elapsed));
            m.insert("parameter_sizes".into(), Value::Object(call.sizes));
            m.insert("success".into(), json!(success));
            if let Ending::Result(result, size) = &ending {
                m.insert(
                    "result".into(),
                    result_summary(result, *size, &self.cfg.redactor),
                );
                if let Some(scan) = super::edge::tool_result(result) {
                    m.insert("edge_scan".into(), scan);
                }
            }
            let level = match outcome {
                Outcome::Success | Outcome::Cancelled => Level::Info,
                Outcome::ToolError | Outcome::RpcError | Outcome::Denied => Level::Warning,
                Outcome::Timeout | Outcome::TransportError => Level::Error,
            };
            let msg = if success {
                format!("Tool {tool_name} execution completed")
            } else {
                format!("Tool {tool_name} execution failed ({})", outcome.as_str())
            };
            let mut event = self.emit(
                level,
                "tool_execution",
                "execution_complete",
                msg,
                m,
                &["tool", "execution", "complete"],
            );
            // Detectors read completed calls, so the call's parameters come along: as
            // `execution_start` carried them, redacted there (redacting again would change
            // nothing and cost a second scan).
            event
                .metadata
                .insert("parameters".into(), call.parameters.value);
            if let Some(t) = &p.trace {
                event.metadata.insert("traceparent".into(), json!(t));
            }
            out.push(event);
        }

        if let Ending::Result(result, _) = ending {
            match p.method.as_str() {
                "initialize" if request_dir == Direction::ClientToServer => {
                    self.session_started(&result, out)
                }
                "tools/list" if request_dir == Direction::ClientToServer => {
                    self.tools_listed(&result, out)
                }
                _ => {}
            }
        }
    }
}
