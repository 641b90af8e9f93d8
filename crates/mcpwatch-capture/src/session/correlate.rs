//! Request correlation: pending requests per direction, matched to their responses by id,
//! cancelled, timed out or evicted in order of arrival; each ending goes to
//! [`SessionTracker::complete`](super::outcome).

use mcpwatch_core::{Event, Level, Timestamp};
use serde_json::{json, Map, Value};

use super::meta::SharedMetadata;
use super::outcome::Ending;
use super::server_requests::{Asked, ServerRequest};
use super::{Direction, SessionTracker};
use crate::jsonrpc::{id_display, id_key, Message};

/// A request waiting for its response.
#[derive(Debug)]
pub(super) struct Pending {
    pub(super) id: Value,
    pub(super) method: String,
    pub(super) started: Timestamp,
    /// Position in the order of arrival (see [`SessionTracker::arrivals`]).
    pub(super) seq: u64,
    /// For `tools/call`: what its `execution_complete` repeats.
    pub(super) tool: Option<ToolCall>,
    /// The caller's trace, when it sent one (see `trace`).
    pub(super) trace: Option<String>,
    /// For a server's sampling, elicitation or roots request: what its answer names.
    pub(super) asked: Option<Asked>,
    /// Its response stream broke off, but the client may resume it (see `resume`): why, for
    /// the `transport_error` it ends with if no response comes before its timeout.
    pub(super) held: Option<String>,
}

/// A `tools/call` waiting for its result.
#[derive(Debug)]
pub(super) struct ToolCall {
    pub(super) execution_id: String,
    pub(super) tool_name: String,
    pub(super) parameters: Carried,
    /// Bytes per top-level argument as sent.
    pub(super) sizes: Map<String, Value>,
}

/// Parameters a pending call carries to its `execution_complete`, already redacted.
#[derive(Debug, Default)]
pub(super) struct Carried {
    pub(super) value: Value,
    /// What they count against [`MAX_CARRIED_BYTES`](super::calls::MAX_CARRIED_BYTES).
    pub(super) bytes: usize,
}

/// Timed-out ids remembered so a late response is not mistaken for a stray one.
pub(super) const MAX_TIMED_OUT: usize = 1024;

impl SessionTracker {
    pub(super) fn on_message(&mut self, dir: Direction, message: Message, out: &mut Vec<Event>) {
        match message {
            Message::Request { id, method, params } => {
                self.on_request(dir, id, method, params, out)
            }
            Message::Notification { method, params } => {
                if method == "notifications/cancelled" {
                    self.on_cancelled(dir, &params, out);
                }
            }
            Message::Result { id, result, size } => {
                self.on_response(dir, id, Ending::Result(result, size), out);
            }
            Message::Error { id, code, message } => {
                self.on_response(dir, id, Ending::RpcError(code, message), out);
            }
        }
    }

    pub(super) fn on_request(
        &mut self,
        dir: Direction,
        id: Value,
        method: String,
        params: Value,
        out: &mut Vec<Event>,
    ) {
        self.requests += 1;
        let now = self.clock.now();
        let key = id_key(&id);
        if method == "initialize" && dir == Direction::ClientToServer {
            if let Some(info) = params.get("clientInfo") {
                self.client =
                    Some(json!({"name": info.get("name"), "version": info.get("version")}));
                self.shared =
                    SharedMetadata::build(&self.cfg, &self.session_id, self.client.as_ref());
            }
        }
        let tool = if method == "tools/call" {
            Some(self.tool_call_started(&id, &params, out))
        } else {
            None
        };
        let asked = match ServerRequest::of(&method) {
            Some(kind) if dir == Direction::ServerToClient => {
                Some(self.server_request_started(kind, &id, &params, out))
            }
            _ => None,
        };
        if method == "resources/read" {
            self.resource_read(&params, out);
        }
        if method == "tools/list" && params.get("cursor").is_none() {
            self.listing.clear();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let trace = self.trace_of(&params);
        let pending = Pending {
            id,
            method,
            started: now,
            seq,
            tool,
            trace,
            asked,
            held: None,
        };
        self.arrivals[dir.index()].push_back((seq, key.clone()));
        if let Some(old) = self.pending[dir.index()].insert(key, pending) {
            let mut m = Map::new();
            m.insert("kind".into(), json!("duplicate_request_id"));
            m.insert("direction".into(), json!(dir.as_str()));
            m.insert("request_id".into(), json!(id_display(&old.id)));
            m.insert("method".into(), json!(old.method));
            if let Some(call) = &old.tool {
                m.insert("execution_id".into(), json!(call.execution_id));
            }
            self.release(&old);
            let msg = format!("Request id {} reused while the earlier request ({}) was still pending; tracking the new one", id_display(&old.id), old.method);
            out.push(self.protocol_warning(msg, m));
        }
        self.evict_if_full(dir, out);
    }

    pub(super) fn evict_if_full(&mut self, dir: Direction, out: &mut Vec<Event>) {
        let map = &mut self.pending[dir.index()];
        let arrivals = &mut self.arrivals[dir.index()];
        if arrivals.len() > 2 * map.len() + 64 {
            arrivals.retain(|(seq, key)| map.get(key).is_some_and(|p| p.seq == *seq));
        }
        if map.len() <= self.cfg.max_pending {
            return;
        }
        let mut oldest = None;
        while let Some((seq, key)) = arrivals.pop_front() {
            if map.get(&key).is_some_and(|p| p.seq == seq) {
                oldest = Some(key);
                break;
            }
        }
        let Some(oldest) = oldest else {
            return;
        };
        if let Some(p) = map.remove(&oldest) {
            self.release(&p);
            self.evicted += 1;
            let mut m = Map::new();
            m.insert("direction".into(), json!(dir.as_str()));
            m.insert("request_id".into(), json!(id_display(&p.id)));
            m.insert("method".into(), json!(p.method));
            m.insert("max_pending".into(), json!(self.cfg.max_pending));
            m.insert("evicted_total".into(), json!(self.evicted));
            let msg = format!(
                "More than {} requests pending; stopped tracking the oldest ({})",
                self.cfg.max_pending, p.method
            );
            out.push(self.emit(
                Level::Warning,
                "system",
                "pending_evicted",
                msg,
                m,
                &["capture", "evicted"],
            ));
        }
    }

    pub(super) fn on_cancelled(&mut self, dir: Direction, params: &Value, out: &mut Vec<Event>) {
        let Some(request_id) = params.get("requestId") else {
            return;
        };
        let reason = params
            .get("reason")
            .and_then(Value::as_str)
            .map(str::to_string);
        if let Some(p) = self.pending[dir.index()].remove(&id_key(request_id)) {
            self.complete(dir, p, Ending::Cancelled(reason), out);
        }
    }

    pub(super) fn on_response(
        &mut self,
        dir: Direction,
        id: Value,
        ending: Ending,
        out: &mut Vec<Event>,
    ) {
        let request_dir = dir.opposite();
        let key = id_key(&id);
        if let Some(p) = self.pending[request_dir.index()].remove(&key) {
            self.complete(request_dir, p, ending, out);
            return;
        }
        let late = self.timed_out[request_dir.index()].contains(&key);
        let mut m = Map::new();
        m.insert("direction".into(), json!(dir.as_str()));
        m.insert("request_id".into(), json!(id_display(&id)));
        if let Ending::RpcError(code, message) = &ending {
            m.insert("error_code".into(), json!(code));
            m.insert("error_message".into(), json!(message));
        }
        if late {
            let msg = format!(
                "Response to request {} arrived after it timed out",
                id_display(&id)
            );
            out.push(self.emit(
                Level::Info,
                "system",
                "late_response",
                msg,
                m,
                &["protocol"],
            ));
            return;
        }
        m.insert("kind".into(), json!("unmatched_response"));
        let msg = format!(
            "Response with id {} ({}) matches no pending request",
            id_display(&id),
            dir.as_str()
        );
        out.push(self.protocol_warning(msg, m));
    }

    /// A pending request is gone: what its parameters counted is free again.
    pub(super) fn release(&mut self, p: &Pending) {
        if let Some(call) = &p.tool {
            self.carried_bytes = self.carried_bytes.saturating_sub(call.parameters.bytes);
        }
    }
}
