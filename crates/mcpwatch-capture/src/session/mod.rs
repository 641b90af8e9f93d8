//! MCP session tracking: from JSON-RPC frames with a direction to monitoring events.
//!
//! Transport-independent: the stdio relay feeds it lines, the HTTP gateway will feed it request
//! and response bodies. It correlates requests and responses per direction by id (servers send
//! requests too), times them against the injected [`Clock`], follows tool listings into the
//! [`PinStore`], and emits the SPEC section 2 events. It never sees the relay's bytes before the
//! peer does: it works on copies, so nothing here can slow or alter a session.
//!
//! Architecture Invariant: every event leaves through [`SessionTracker::emit`], which stamps the
//! common metadata and runs the core `Redactor`.

mod summary;
#[cfg(test)]
mod tests;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::{Event, Level, Outcome, Redactor, Timestamp};
use serde_json::{json, Map, Value};

use crate::classify::ClassificationConfig;
use crate::jsonrpc::{id_display, id_key, parse_frame, FrameError, Message};
use crate::pins::{PinDiff, PinStore};
pub use summary::{bounded_parameters, is_tool_error, result_summary};

/// Which way a message travels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// From the client (agent) to the server.
    ClientToServer,
    /// From the server to the client.
    ServerToClient,
}

impl Direction {
    fn index(self) -> usize {
        self as usize
    }

    fn opposite(self) -> Direction {
        match self {
            Direction::ClientToServer => Direction::ServerToClient,
            Direction::ServerToClient => Direction::ClientToServer,
        }
    }

    /// As written in event metadata.
    pub fn as_str(self) -> &'static str {
        match self {
            Direction::ClientToServer => "client_to_server",
            Direction::ServerToClient => "server_to_client",
        }
    }
}

/// What the tracker needs to know about its session.
#[derive(Debug, Clone)]
pub struct SessionConfig {
    /// The server's name (`--name`), `metadata.server`.
    pub server: String,
    /// `source` of every event, e.g. `wrap:filesystem`.
    pub source: String,
    /// Who is using the session (`metadata.user_id`).
    pub user_id: String,
    /// A request without a response after this long is a `timeout`.
    pub request_timeout: Duration,
    /// The most requests tracked per direction; the oldest is evicted beyond it.
    pub max_pending: usize,
    /// Which resources and tool arguments are sensitive.
    pub classification: ClassificationConfig,
    /// Removes secrets from every event.
    pub redactor: Redactor,
}

/// A request waiting for its response.
#[derive(Debug)]
struct Pending {
    id: Value,
    method: String,
    started: Timestamp,
    /// Position in the order of arrival (see [`SessionTracker::arrivals`]).
    seq: u64,
    /// For `tools/call`: execution id and tool name.
    tool: Option<(String, String)>,
}

/// How a request ended.
enum Ending {
    Result(Value, usize),
    RpcError(i64, String),
    Cancelled(Option<String>),
    Timeout,
    TransportError(String),
    Denied(String),
}

/// Timed-out ids remembered so a late response is not mistaken for a stray one.
const MAX_TIMED_OUT: usize = 1024;
/// Pages of one `tools/list` accumulated at most.
const MAX_LISTED_TOOLS: usize = 10_000;

/// Tracks one MCP session.
pub struct SessionTracker {
    cfg: SessionConfig,
    clock: SharedClock,
    ids: IdGenerator,
    session_id: String,
    started: Timestamp,
    pins: PinStore,
    client: Option<Value>,
    shared: SharedMetadata,
    pending: [HashMap<String, Pending>; 2],
    /// Keys of `pending` in order of arrival, oldest first, so that eviction is O(1) amortised
    /// instead of a scan of the whole map per request once it is full. Entries whose request has
    /// since completed (or whose key was reused, told apart by `seq`) are skipped lazily and
    /// compacted away when they outnumber the live ones.
    arrivals: [VecDeque<(u64, String)>; 2],
    next_seq: u64,
    timed_out: [VecDeque<String>; 2],
    listing: Vec<Value>,
    requests: u64,
    evicted: u64,
}

impl SessionTracker {
    /// A tracker for a new session.
    pub fn new(cfg: SessionConfig, clock: SharedClock, pins: PinStore) -> Self {
        let ids = IdGenerator::new();
        let started = clock.now();
        let session_id = ids.next(started);
        let shared = SharedMetadata::build(&cfg, &session_id, None);
        Self {
            cfg,
            clock,
            ids,
            session_id,
            started,
            pins,
            client: None,
            shared,
            pending: [HashMap::new(), HashMap::new()],
            arrivals: [VecDeque::new(), VecDeque::new()],
            next_seq: 0,
            timed_out: [VecDeque::new(), VecDeque::new()],
            listing: Vec::new(),
            requests: 0,
            evicted: 0,
        }
    }

    /// This session's id (`metadata.session_id`).
    pub fn session_id(&self) -> &str {
        &self.session_id
    }

    /// Requests still waiting for a response.
    pub fn pending_count(&self) -> usize {
        self.pending.iter().map(HashMap::len).sum()
    }

    /// One frame (a line without its newline) travelling in `dir`.
    pub fn on_frame(&mut self, dir: Direction, bytes: &[u8], out: &mut Vec<Event>) {
        match parse_frame(bytes) {
            Ok(frame) => {
                for message in frame.messages {
                    self.on_message(dir, message, out);
                }
            }
            Err(e) => self.protocol_error(dir, &e, bytes, out),
        }
    }

    /// A client request (a JSON-RPC body) that a gateway refused by policy and never forwarded:
    /// each request in it is recorded, and completed at once with outcome `denied`.
    pub fn on_denied(&mut self, bytes: &[u8], reason: &str, out: &mut Vec<Event>) {
        let dir = Direction::ClientToServer;
        let Ok(frame) = parse_frame(bytes) else {
            return;
        };
        for message in frame.messages {
            if let Message::Request { id, method, params } = message {
                let key = id_key(&id);
                self.on_request(dir, id, method, params, out);
                if let Some(p) = self.pending[dir.index()].remove(&key) {
                    self.complete(dir, p, Ending::Denied(reason.to_string()), out);
                }
            }
        }
    }

    /// The requests in a client body (already seen through [`Self::on_frame`]) will get no
    /// response because the transport failed (a gateway could not reach the server): each is
    /// completed with outcome `transport_error`.
    pub fn on_request_failed(&mut self, bytes: &[u8], reason: &str, out: &mut Vec<Event>) {
        let dir = Direction::ClientToServer;
        let Ok(frame) = parse_frame(bytes) else {
            return;
        };
        for message in frame.messages {
            if let Message::Request { id, .. } = message {
                if let Some(p) = self.pending[dir.index()].remove(&id_key(&id)) {
                    self.complete(dir, p, Ending::TransportError(reason.to_string()), out);
                }
            }
        }
    }

    /// A line too long to parse (relayed unchanged).
    pub fn on_oversized(&mut self, dir: Direction, len: usize, limit: usize, out: &mut Vec<Event>) {
        let mut m = Map::new();
        m.insert("kind".into(), json!("line_too_long"));
        m.insert("direction".into(), json!(dir.as_str()));
        m.insert("size".into(), json!(len));
        m.insert("limit".into(), json!(limit));
        let msg = format!("A {len}-byte line ({}) exceeds the {limit}-byte parse limit; relayed unchanged, not inspected", dir.as_str());
        out.push(self.emit(
            Level::Warning,
            "system",
            "protocol_error",
            msg,
            m,
            &["protocol"],
        ));
    }

    /// Lines the relay could not hand over because the queue was full.
    pub fn on_dropped(&mut self, lines: u64, bytes: u64, out: &mut Vec<Event>) {
        let mut m = Map::new();
        m.insert("dropped_lines".into(), json!(lines));
        m.insert("dropped_bytes".into(), json!(bytes));
        let msg = format!("{lines} line(s) relayed but not inspected: the capture queue was full");
        out.push(self.emit(
            Level::Warning,
            "system",
            "capture_dropped",
            msg,
            m,
            &["capture", "dropped"],
        ));
    }

    /// Events lost because the collector was away and the spool was full.
    pub fn on_spool_overflow(&mut self, events: u64, out: &mut Vec<Event>) {
        let mut m = Map::new();
        m.insert("lost_events".into(), json!(events));
        let msg =
            format!("{events} event(s) lost: the collector was unreachable and the spool was full");
        out.push(self.emit(
            Level::Error,
            "system",
            "spool_overflow",
            msg,
            m,
            &["capture", "spool", "overflow"],
        ));
    }

    /// Periodic check: requests older than the timeout end as `timeout`.
    pub fn on_tick(&mut self, out: &mut Vec<Event>) {
        let now = self.clock.now();
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let expired: Vec<String> = self.pending[dir.index()]
                .iter()
                .filter(|(_, p)| p.started.saturating_add(self.cfg.request_timeout) <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                if let Some(p) = self.pending[dir.index()].remove(&key) {
                    let ring = &mut self.timed_out[dir.index()];
                    if ring.len() == MAX_TIMED_OUT {
                        ring.pop_front();
                    }
                    ring.push_back(key);
                    self.complete(dir, p, Ending::Timeout, out);
                }
            }
        }
    }

    /// The transport closed: pending requests end as `transport_error`, then `session_end`.
    pub fn on_close(&mut self, reason: &str, exit_code: Option<i32>, out: &mut Vec<Event>) {
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            self.arrivals[dir.index()].clear();
            let mut all: Vec<Pending> = self.pending[dir.index()].drain().map(|(_, p)| p).collect();
            all.sort_by_key(|p| p.started);
            for p in all {
                self.complete(dir, p, Ending::TransportError(reason.to_string()), out);
            }
        }
        let now = self.clock.now();
        let mut m = Map::new();
        m.insert("reason".into(), json!(reason));
        m.insert("exit_code".into(), json!(exit_code));
        m.insert("duration".into(), json!(secs_between(self.started, now)));
        m.insert("requests".into(), json!(self.requests));
        m.insert("evicted_requests".into(), json!(self.evicted));
        let msg = format!("MCP session with {} ended: {reason}", self.cfg.server);
        out.push(self.emit(
            Level::Info,
            "session",
            "session_end",
            msg,
            m,
            &["session", "end"],
        ));
    }

    fn on_message(&mut self, dir: Direction, message: Message, out: &mut Vec<Event>) {
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

    fn on_request(
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
        if method == "resources/read" {
            self.resource_read(&params, out);
        }
        if method == "tools/list" && params.get("cursor").is_none() {
            self.listing.clear();
        }
        let seq = self.next_seq;
        self.next_seq += 1;
        let pending = Pending {
            id,
            method,
            started: now,
            seq,
            tool,
        };
        self.arrivals[dir.index()].push_back((seq, key.clone()));
        if let Some(old) = self.pending[dir.index()].insert(key, pending) {
            let mut m = Map::new();
            m.insert("kind".into(), json!("duplicate_request_id"));
            m.insert("direction".into(), json!(dir.as_str()));
            m.insert("request_id".into(), json!(id_display(&old.id)));
            m.insert("method".into(), json!(old.method));
            if let Some((execution_id, _)) = &old.tool {
                m.insert("execution_id".into(), json!(execution_id));
            }
            let msg = format!("Request id {} reused while the earlier request ({}) was still pending; tracking the new one", id_display(&old.id), old.method);
            out.push(self.emit(
                Level::Warning,
                "system",
                "protocol_error",
                msg,
                m,
                &["protocol"],
            ));
        }
        self.evict_if_full(dir, out);
    }

    fn evict_if_full(&mut self, dir: Direction, out: &mut Vec<Event>) {
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

    fn tool_call_started(
        &mut self,
        id: &Value,
        params: &Value,
        out: &mut Vec<Event>,
    ) -> (String, String) {
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
        m.insert("parameters".into(), bounded_parameters(&arguments));
        let msg = format!("Tool {tool_name} execution started");
        out.push(self.emit(
            Level::Info,
            "tool_execution",
            "execution_start",
            msg,
            m,
            &["tool", "execution", "start"],
        ));
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
        (execution_id, tool_name)
    }

    fn resource_read(&mut self, params: &Value, out: &mut Vec<Event>) {
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

    fn on_cancelled(&mut self, dir: Direction, params: &Value, out: &mut Vec<Event>) {
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

    fn on_response(&mut self, dir: Direction, id: Value, ending: Ending, out: &mut Vec<Event>) {
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
        out.push(self.emit(
            Level::Warning,
            "system",
            "protocol_error",
            msg,
            m,
            &["protocol"],
        ));
    }

    fn complete(
        &mut self,
        request_dir: Direction,
        p: Pending,
        ending: Ending,
        out: &mut Vec<Event>,
    ) {
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
        let msg = format!(
            "{} answered in {:.1} ms ({})",
            p.method,
            elapsed * 1e3,
            outcome.as_str()
        );
        out.push(self.emit(
            Level::Info,
            "performance",
            "request_performance",
            msg,
            m,
            &["performance", "request"],
        ));

        if let Some((execution_id, tool_name)) = &p.tool {
            let mut m = detail;
            m.insert("execution_id".into(), json!(execution_id));
            m.insert("tool_name".into(), json!(tool_name));
            m.insert("request_id".into(), Value::String(request_id));
            m.insert("execution_time".into(), json!(elapsed));
            m.insert("success".into(), json!(success));
            if let Ending::Result(result, size) = &ending {
                m.insert(
                    "result".into(),
                    result_summary(result, *size, &self.cfg.redactor),
                );
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
            out.push(self.emit(
                level,
                "tool_execution",
                "execution_complete",
                msg,
                m,
                &["tool", "execution", "complete"],
            ));
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

    fn session_started(&mut self, result: &Value, out: &mut Vec<Event>) {
        let server_info = result.get("serverInfo").cloned().unwrap_or(Value::Null);
        let capabilities: Vec<Value> = result
            .get("capabilities")
            .and_then(Value::as_object)
            .map(|c| c.keys().map(|k| json!(k)).collect())
            .unwrap_or_default();
        let mut m = Map::new();
        m.insert(
            "server_info".into(),
            json!({"name": server_info.get("name"), "version": server_info.get("version")}),
        );
        m.insert(
            "protocol_version".into(),
            result
                .get("protocolVersion")
                .cloned()
                .unwrap_or(Value::Null),
        );
        m.insert("server_capabilities".into(), Value::Array(capabilities));
        let msg = format!(
            "MCP session with {} started ({} {})",
            self.cfg.server,
            server_info
                .get("name")
                .and_then(Value::as_str)
                .unwrap_or("unknown server"),
            server_info
                .get("version")
                .and_then(Value::as_str)
                .unwrap_or(""),
        );
        out.push(self.emit(
            Level::Info,
            "session",
            "session_start",
            msg,
            m,
            &["session", "start"],
        ));
    }

    fn tools_listed(&mut self, result: &Value, out: &mut Vec<Event>) {
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
                    self.report_pins(diff, out);
                }
                let e = e.error;
                let mut m = Map::new();
                m.insert("error".into(), json!(e.to_string()));
                let msg = format!("Tool definitions of {server} could not be pinned: {e}");
                out.push(self.emit(Level::Error, "system", "pin_store_error", msg, m, &["pins"]));
            }
        }
    }

    fn report_pins(&mut self, diff: PinDiff, out: &mut Vec<Event>) {
        if !diff.differs() {
            return;
        }
        let server = self.cfg.server.clone();
        let tools: Vec<Value> = diff
            .listed
            .iter()
            .map(|t| json!({"name": t.name, "description": t.description, "hash": t.pin.hash}))
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

    fn protocol_error(
        &mut self,
        dir: Direction,
        e: &FrameError,
        bytes: &[u8],
        out: &mut Vec<Event>,
    ) {
        let mut m = Map::new();
        m.insert("kind".into(), json!(e.kind()));
        m.insert("error".into(), json!(e.to_string()));
        m.insert("direction".into(), json!(dir.as_str()));
        m.insert("size".into(), json!(bytes.len()));
        m.insert("excerpt".into(), json!(summary::excerpt(bytes)));
        let msg = format!(
            "Frame {} is not valid JSON-RPC ({}); relayed unchanged",
            dir.as_str(),
            e.kind()
        );
        out.push(self.emit(
            Level::Warning,
            "system",
            "protocol_error",
            msg,
            m,
            &["protocol"],
        ));
    }

    /// Builds an event with the session's common metadata, then redacts it.
    fn emit(
        &self,
        level: Level,
        category: &str,
        event_type: &str,
        message: String,
        mut metadata: Map<String, Value>,
        tags: &[&str],
    ) -> Event {
        let timestamp = self.clock.now();
        if !self.shared.clean {
            self.shared.add_to(&mut metadata);
        }
        let mut event = Event {
            id: self.ids.next(timestamp),
            timestamp,
            level,
            category: category.into(),
            source: self.cfg.source.clone(),
            event_type: event_type.into(),
            message,
            metadata,
            tags: tags.iter().map(|t| (*t).to_string()).collect(),
        };
        self.cfg.redactor.redact_event(&mut event);
        if self.shared.clean {
            // The redactor leaves these as they are (checked when they were built), and it
            // treats every metadata key on its own: adding them afterwards gives the same event
            // without scanning the same strings again for every event of the session.
            self.shared.add_to(&mut event.metadata);
        }
        event
    }
}

/// The metadata every event of a session carries (`server`, `session_id`, `user_id` and, once
/// the client has introduced itself, `client`), built once rather than per event.
struct SharedMetadata {
    fields: Vec<(String, Value)>,
    /// Whether the redactor leaves these fields unchanged, so that they can be added after an
    /// event is redacted instead of being redacted again with every event.
    clean: bool,
}

impl SharedMetadata {
    fn build(cfg: &SessionConfig, session_id: &str, client: Option<&Value>) -> Self {
        let mut fields = vec![
            ("server".to_string(), json!(cfg.server)),
            ("session_id".to_string(), json!(session_id)),
            ("user_id".to_string(), json!(cfg.user_id)),
        ];
        if let Some(client) = client {
            fields.push(("client".to_string(), client.clone()));
        }
        let mut probe = Event {
            id: String::new(),
            timestamp: Timestamp::from_micros(0),
            level: Level::Info,
            category: String::new(),
            source: String::new(),
            event_type: String::new(),
            message: String::new(),
            metadata: fields.iter().cloned().collect(),
            tags: Vec::new(),
        };
        cfg.redactor.redact_event(&mut probe);
        let clean = probe.metadata.len() == fields.len()
            && fields.iter().all(|(k, v)| probe.metadata.get(k) == Some(v));
        Self { fields, clean }
    }

    fn add_to(&self, metadata: &mut Map<String, Value>) {
        for (key, value) in &self.fields {
            metadata.insert(key.clone(), value.clone());
        }
    }
}

fn secs_between(from: Timestamp, to: Timestamp) -> f64 {
    (to.as_micros() - from.as_micros()).max(0) as f64 / 1e6
}
