//! The demo's MCP traffic on the real capture path: a small built-in MCP server answers real
//! JSON-RPC frames from an in-process client, and every frame goes through the same
//! [`SessionTracker`] that `wrap` and `gateway` feed. What comes out is exactly what capture
//! emits in production (`session_start`, `tools_listed`, `execution_start`,
//! `execution_complete` with the call's parameters, `request_performance`, `data_access`,
//! `tool_definition_changed`), timed against a clock the generator moves.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_capture::classify::ClassificationConfig;
use mcpwatch_capture::pins::PinStore;
use mcpwatch_capture::session::{Direction, SessionConfig, SessionTracker};
use mcpwatch_core::{Event, ManualClock, Redactor, Timestamp};
use serde_json::{json, Value};

const C: Direction = Direction::ClientToServer;
const S: Direction = Direction::ServerToClient;

/// Sessions open at once; the least recently used is closed beyond it.
const MAX_SESSIONS: usize = 256;

/// How a demo tool call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Success,
    /// The tool ran and reported an error (`isError: true`).
    ToolError,
    /// The server rejected the request with a JSON-RPC error.
    RpcError,
}

/// One `tools/call`: the tool, its arguments and how the server answers.
pub struct ToolCall<'a> {
    pub tool: &'a str,
    pub args: &'a Value,
    /// Seconds between request and answer.
    pub latency: f64,
    pub outcome: Outcome,
    /// The answer's text content.
    pub text: &'a str,
}

/// One open session: its tracker and the next request id its client uses.
struct Session {
    tracker: SessionTracker,
    next_id: u64,
    used: u64,
}

/// All demo sessions, their shared clock and tool pins.
pub struct Wire {
    clock: ManualClock,
    start: Timestamp,
    pins: PinStore,
    sessions: HashMap<String, Session>,
    uses: u64,
    out: Vec<Event>,
}

impl Wire {
    /// Sessions timed from `start` (the generator's elapsed time is added to it).
    pub fn new(start: Timestamp) -> Self {
        Self {
            clock: ManualClock::new(start),
            start,
            pins: PinStore::new(None),
            sessions: HashMap::new(),
            uses: 0,
            out: Vec::new(),
        }
    }

    fn at(&self, elapsed: Duration) -> Timestamp {
        self.start.saturating_add(elapsed)
    }

    /// Whether the session named `key` is open.
    pub fn is_open(&self, key: &str) -> bool {
        self.sessions.contains_key(key)
    }

    /// Opens session `key` for `user` on `server` at `elapsed`: `initialize`, its answer and
    /// `notifications/initialized`. An open session of that name is closed first.
    pub fn open(
        &mut self,
        elapsed: Duration,
        key: &str,
        user: &str,
        server: (&str, &str),
        client: (&str, &str),
    ) {
        self.close(elapsed, key);
        if self.sessions.len() >= MAX_SESSIONS {
            if let Some(oldest) = self
                .sessions
                .iter()
                .min_by_key(|(_, s)| s.used)
                .map(|(k, _)| k.clone())
            {
                self.close(elapsed, &oldest);
            }
        }
        self.clock.set(self.at(elapsed));
        let cfg = SessionConfig {
            server: server.0.to_owned(),
            source: format!("wrap:{}", server.0),
            user_id: user.to_owned(),
            request_timeout: Duration::from_secs(60),
            max_pending: 64,
            classification: ClassificationConfig::default(),
            redactor: Redactor::default(),
        };
        let tracker = SessionTracker::new(cfg, Arc::new(self.clock.clone()), self.pins.clone());
        self.uses += 1;
        self.sessions.insert(
            key.to_owned(),
            Session {
                tracker,
                next_id: 0,
                used: self.uses,
            },
        );
        let init = json!({"protocolVersion": "2025-06-18", "capabilities": {},
                          "clientInfo": {"name": client.0, "version": client.1}});
        let answer = json!({"protocolVersion": "2025-06-18",
                            "capabilities": {"tools": {"listChanged": false}, "resources": {}},
                            "serverInfo": {"name": server.0, "version": server.1}});
        self.exchange(key, elapsed, 0.002, "initialize", init, Ok(answer));
        self.frame(
            key,
            C,
            &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        );
    }

    /// `tools/list` on session `key`, answered with `tools` (name, description).
    pub fn list_tools(&mut self, elapsed: Duration, key: &str, tools: &[(&str, &str)]) {
        let tools: Vec<Value> = tools
            .iter()
            .map(|(name, description)| {
                json!({"name": name, "description": description,
                       "inputSchema": {"type": "object"}})
            })
            .collect();
        self.exchange(
            key,
            elapsed,
            0.003,
            "tools/list",
            json!({}),
            Ok(json!({"tools": tools})),
        );
    }

    /// `tools/call` on session `key`, answered `latency` seconds after it was sent; the
    /// answer arrives at `elapsed`.
    pub fn call_tool(&mut self, elapsed: Duration, key: &str, call: &ToolCall<'_>) {
        let answer = match call.outcome {
            Outcome::Success | Outcome::ToolError => Ok(json!({
                "content": [{"type": "text", "text": call.text}],
                "isError": call.outcome == Outcome::ToolError})),
            Outcome::RpcError => Err(json!({"code": -32602,
                "message": "Invalid params: missing required argument"})),
        };
        let params = json!({"name": call.tool, "arguments": call.args});
        self.exchange(key, elapsed, call.latency, "tools/call", params, answer);
    }

    /// `resources/read` of `uri` on session `key`.
    pub fn read_resource(&mut self, elapsed: Duration, key: &str, uri: &str, latency: f64) {
        let answer = json!({"contents": [{"uri": uri, "mimeType": "text/plain",
                                          "text": "# notes\n"}]});
        self.exchange(
            key,
            elapsed,
            latency,
            "resources/read",
            json!({"uri": uri}),
            Ok(answer),
        );
    }

    /// Ends session `key` (the server exits cleanly), if it is open.
    pub fn close(&mut self, elapsed: Duration, key: &str) {
        if let Some(mut s) = self.sessions.remove(key) {
            self.clock.set(self.at(elapsed));
            s.tracker
                .on_close("client closed the session", Some(0), &mut self.out);
        }
    }

    /// Events emitted and not yet taken.
    pub fn pending(&self) -> usize {
        self.out.len()
    }

    /// The events capture emitted since the last call, oldest first.
    pub fn take(&mut self) -> Vec<Event> {
        std::mem::take(&mut self.out)
    }

    /// One request and its answer: sent `latency` seconds before `elapsed`, answered at it.
    fn exchange(
        &mut self,
        key: &str,
        elapsed: Duration,
        latency: f64,
        method: &str,
        params: Value,
        answer: Result<Value, Value>,
    ) {
        let Some(s) = self.sessions.get_mut(key) else {
            return;
        };
        s.next_id += 1;
        self.uses += 1;
        s.used = self.uses;
        let id = s.next_id;
        let sent = elapsed.saturating_sub(Duration::from_secs_f64(latency.clamp(0.0, 3600.0)));
        self.clock.set(self.at(sent));
        let request = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.frame(key, C, &request);
        self.clock.set(self.at(elapsed));
        let response = match answer {
            Ok(result) => json!({"jsonrpc": "2.0", "id": id, "result": result}),
            Err(error) => json!({"jsonrpc": "2.0", "id": id, "error": error}),
        };
        self.frame(key, S, &response);
    }

    fn frame(&mut self, key: &str, dir: Direction, message: &Value) {
        if let Some(s) = self.sessions.get_mut(key) {
            let bytes = serde_json::to_vec(message).unwrap_or_default();
            s.tracker.on_frame(dir, &bytes, &mut self.out);
        }
    }
}
