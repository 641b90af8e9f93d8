//! MCP session tracking: from JSON-RPC frames with a direction to monitoring events.
//!
//! Transport-independent: the stdio relay (`wrap`) feeds it lines, the HTTP gateway feeds it
//! request and response bodies. It never sees the relay's bytes before the peer does: it works
//! on copies, so nothing here can slow or alter a session. The parts:
//! - this file: the tracker, its entry points and the frames it cannot read;
//! - [`correlate`]: requests matched to responses per direction by id (servers send requests
//!   too), cancellations, timeouts and eviction, timed against the injected clock;
//! - [`calls`]: the events of a request as it starts (`execution_start`, `data_access`);
//! - [`outcome`]: how a request ended, and its `request_performance` / `execution_complete`;
//! - [`resume`]: requests whose response stream broke off held while the client may resume it;
//! - [`listing`]: tool listings followed into the [`PinStore`], rug pulls reported;
//! - [`server_requests`]: what a server asks of the client (sampling, elicitation, roots) and
//!   how it was answered, as events of their own;
//! - [`meta`]: the metadata every event carries, `session_start`, and `emit`.
//!
//! Architecture Invariant: every event leaves through [`SessionTracker::emit`], which stamps the
//! common metadata and runs the core `Redactor`.

mod calls;
mod correlate;
mod edge;
mod edge_health;
mod evasion;
mod listing;
mod meta;
mod outcome;
mod resume;
mod server_requests;
mod summary;
#[cfg(test)]
mod tests;
mod trace;

use std::collections::{HashMap, VecDeque};
use std::time::Duration;

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::{Event, Level, Redactor, Timestamp};
use serde_json::{json, Map, Value};

use crate::classify::ClassificationConfig;
use crate::jsonrpc::{id_key, parse_frame, FrameError, Message};
use crate::pins::PinStore;
use correlate::{Pending, MAX_TIMED_OUT};
pub use edge_health::edge_health_report;
use meta::{secs_between, SharedMetadata};
use outcome::Ending;
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
    pub(super) fn index(self) -> usize {
        self as usize
    }

    pub(super) fn opposite(self) -> Direction {
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
    /// Bytes of parameters the pending calls carry (see `calls::MAX_CARRIED_BYTES`).
    carried_bytes: usize,
    /// The `traceparent` of the HTTP request being fed (see `trace`).
    transport_trace: Option<String>,
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
            carried_bytes: 0,
            transport_trace: None,
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
                let named = frame.cut.as_ref().map(|_| evasion::named(&frame.messages));
                for message in frame.messages {
                    self.on_message(dir, message, out);
                }
                if let (Some(cut), Some(named)) = (&frame.cut, named) {
                    self.nesting_evasion(dir, cut, named, bytes.len(), out);
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
        out.push(self.protocol_warning(msg, m));
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

    /// Periodic check: requests older than the timeout end as `timeout` (or, held for a resume
    /// that did not come, as `transport_error`).
    pub fn on_tick(&mut self, out: &mut Vec<Event>) {
        let now = self.clock.now();
        for dir in [Direction::ClientToServer, Direction::ServerToClient] {
            let expired: Vec<String> = self.pending[dir.index()]
                .iter()
                .filter(|(_, p)| p.started.saturating_add(self.cfg.request_timeout) <= now)
                .map(|(k, _)| k.clone())
                .collect();
            for key in expired {
                if let Some(mut p) = self.pending[dir.index()].remove(&key) {
                    let ring = &mut self.timed_out[dir.index()];
                    if ring.len() == MAX_TIMED_OUT {
                        ring.pop_front();
                    }
                    ring.push_back(key);
                    let ending = match p.held.take() {
                        Some(reason) => Ending::TransportError(reason),
                        None => Ending::Timeout,
                    };
                    self.complete(dir, p, ending, out);
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
        out.push(self.protocol_warning(msg, m));
    }
}
