//! Turns committed events into the traffic metrics of [`Families`], on the stage thread.
//!
//! Which events feed what (the table in `docs/metrics.md` says the same):
//! `tool_execution/execution_complete` → tool executions, durations and the MCP `tools/call`
//! operation; `performance/request_performance` → requests, latency, throughput, error rate,
//! availability and the MCP operation of every method but `tools/call` (whose operation comes
//! from its `execution_complete`, which names the tool); `security/*` → authentication,
//! authorization and data access; `anomaly/*` and `security_alert/*` → suspicious activities;
//! `session/*`, `system/*` → sessions, protocol errors, capture drops.
//!
//! Hot path: handles (counters, histograms) are cached per server and tool, looked up by
//! borrowed `&str`, so a known series costs two hash lookups and no allocation.

use std::collections::HashMap;

use mcpwatch_core::{Event, Level, Outcome};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use serde_json::Value;

use crate::config::MetricsSettings;
use crate::families::Families;
use crate::labels::{labels, LabelBound};
use crate::window::{Slots, Tally, Window};

/// Outcome slots: the seven [`Outcome`]s, then `error` (failed, no outcome given).
const OUTCOMES: usize = 8;
const GENERIC_ERROR: usize = 7;

/// How an event's call ended, as a slot and a label value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Ending {
    slot: usize,
    label: &'static str,
    outcome: Option<Outcome>,
}

impl Ending {
    fn of(e: &Event) -> Ending {
        if let Some(o) = e.outcome() {
            let slot = Outcome::ALL
                .iter()
                .position(|x| *x == o)
                .unwrap_or(GENERIC_ERROR);
            return Ending {
                slot,
                label: o.as_str(),
                outcome: Some(o),
            };
        }
        match e.metadata.get("success").and_then(Value::as_bool) {
            Some(true) => Ending {
                slot: 0,
                label: "success",
                outcome: Some(Outcome::Success),
            },
            _ => Ending {
                slot: GENERIC_ERROR,
                label: "error",
                outcome: None,
            },
        }
    }

    fn ok(self) -> bool {
        self.outcome == Some(Outcome::Success)
    }

    /// Got an answer: anything but timeout and transport error.
    fn answered(self) -> bool {
        !matches!(
            self.outcome,
            Some(Outcome::Timeout | Outcome::TransportError)
        )
    }
}

#[derive(Debug)]
struct ToolEntry {
    by_outcome: [Option<(Counter, Histogram)>; OUTCOMES],
    /// The `tools/call` MCP operation histogram per outcome (not for `rpc_error`, whose
    /// `error_type` is the code).
    mcp_by_outcome: [Option<Histogram>; OUTCOMES],
    window: Window,
}

#[derive(Debug)]
struct MethodEntry {
    by_outcome: [Option<Counter>; OUTCOMES],
    duration: Histogram,
}

#[derive(Debug)]
struct ServerEntry {
    methods: HashMap<String, MethodEntry>,
    window: Window,
}

/// The label bounds, one per open label.
#[derive(Debug)]
struct Bounds {
    servers: LabelBound,
    tools: LabelBound,
    users: LabelBound,
    methods: LabelBound,
    error_codes: LabelBound,
    event_types: LabelBound,
    classifications: LabelBound,
    kinds: LabelBound,
    categories: LabelBound,
    edges: LabelBound,
}

impl Bounds {
    fn new(f: &Families, s: &MetricsSettings) -> Bounds {
        let b = |name: &str, cap: usize| {
            let key = labels([("label", name)]);
            f.label_limit.get_or_create(&key).set(cap as i64);
            LabelBound::new(
                cap,
                f.label_overflow.get_or_create_owned(&key),
                f.label_values.get_or_create_owned(&key),
            )
        };
        let n = s.max_label_values;
        Bounds {
            servers: b("server", s.max_servers),
            tools: b("tool", s.max_tools),
            users: b("user", s.max_users),
            methods: b("method", n),
            error_codes: b("error_type", n),
            event_types: b("event_type", n),
            classifications: b("data_classification", n),
            kinds: b("kind", n),
            categories: b("category", n),
            edges: b("edge", n),
        }
    }
}

/// The traffic metrics and the state behind them.
#[derive(Debug)]
pub struct Traffic {
    f: Families,
    per_user: bool,
    bounds: Bounds,
    tools: HashMap<String, HashMap<String, ToolEntry>>,
    servers: HashMap<String, ServerEntry>,
    events: HashMap<String, [Option<Counter>; 5]>,
    ingest: Window,
    slots: Slots,
    epoch: u64,
}

impl Traffic {
    /// Metrics into `f`; rates over `s.window`, starting at `now_us`.
    pub fn new(f: Families, s: &MetricsSettings, now_us: i64) -> Traffic {
        let slots = Slots::new(s.window, now_us);
        let epoch = slots.epoch(now_us);
        f.window_seconds.set(s.window.as_secs_f64());
        Traffic {
            bounds: Bounds::new(&f, s),
            f,
            per_user: s.per_user,
            tools: HashMap::new(),
            servers: HashMap::new(),
            events: HashMap::new(),
            ingest: Window::new(epoch),
            slots,
            epoch,
        }
    }

    /// Counts one committed event.
    pub fn observe(&mut self, e: &Event) {
        self.count_event(e);
        match (e.category.as_str(), e.event_type.as_str()) {
            ("tool_execution", "execution_complete") => self.tool_execution(e),
            ("performance", "request_performance") => self.request(e),
            ("security", "authentication") => self.authentication(e),
            ("security", "authorization") => self.authorization(e),
            ("security", "data_access") => {
                let c = str_meta(e, "data_classification").unwrap_or("unclassified");
                let c = self.bounds.classifications.admit(c);
                self.f
                    .data_access
                    .get_or_create(&labels([("data_classification", c)]))
                    .inc();
            }
            ("anomaly" | "security_alert", t) => {
                let t = self.bounds.event_types.admit(t);
                let key = labels([
                    ("category", e.category.as_str()),
                    ("event_type", t),
                    ("level", e.level.as_str()),
                ]);
                self.f.suspicious.get_or_create(&key).inc();
            }
            ("session", "session_start") => {
                let server = self.server(e);
                self.f
                    .sessions
                    .get_or_create(&labels([("server", server)]))
                    .inc();
            }
            ("session", "session_end") => {
                if let Some(d) = e.metadata.get("duration").and_then(Value::as_f64) {
                    self.f
                        .mcp_session_duration
                        .get_or_create(&labels([("error_type", "")]))
                        .observe(d);
                }
            }
            ("system", "protocol_error") => {
                let kind = str_meta(e, "kind").unwrap_or("unknown");
                let kind = self.bounds.kinds.admit(kind);
                let server = self.bounds.servers.admit(e.server().unwrap_or("unknown"));
                let key = labels([("server", server), ("kind", kind)]);
                self.f.protocol_errors.get_or_create(&key).inc();
            }
            ("system", "capture_dropped") => {
                let server = self.bounds.servers.admit(e.server().unwrap_or("unknown"));
                let key = labels([("server", server)]);
                self.f
                    .capture_dropped_lines
                    .get_or_create(&key)
                    .inc_by(u64_meta(e, "dropped_lines"));
                self.f
                    .capture_dropped_bytes
                    .get_or_create(&key)
                    .inc_by(u64_meta(e, "dropped_bytes"));
            }
            ("system", "edge_health") => {
                let edge = self.bounds.edges.admit(&e.source);
                let key = labels([("edge", edge)]);
                let f = &self.f;
                for (family, field) in [
                    (&f.edge_spool_bytes, "spool_bytes"),
                    (&f.edge_spool_pending_bytes, "spool_pending_bytes"),
                    (&f.edge_spool_max_bytes, "spool_max_bytes"),
                    (&f.edge_lost_events, "lost_events"),
                ] {
                    family.get_or_create(&key).set(u64_meta(e, field) as f64);
                }
                f.edge_health_timestamp
                    .get_or_create(&key)
                    .set(e.timestamp.as_secs_f64());
            }
            ("system", "spool_overflow") => {
                let server = self.bounds.servers.admit(e.server().unwrap_or("unknown"));
                self.f
                    .spool_lost_events
                    .get_or_create(&labels([("server", server)]))
                    .inc_by(u64_meta(e, "lost_events"));
            }
            _ => {}
        }
    }

    fn server<'a>(&mut self, e: &'a Event) -> &'a str {
        self.bounds.servers.admit(e.server().unwrap_or("unknown"))
    }

    fn count_event(&mut self, e: &Event) {
        let level = Level::ALL.iter().position(|l| *l == e.level).unwrap_or(0);
        self.ingest.slot(self.epoch).add(true, true);
        if let Some(c) = self
            .events
            .get(e.category.as_str())
            .and_then(|c| c[level].as_ref())
        {
            c.inc();
            return;
        }
        let category = self.bounds.categories.admit(&e.category);
        let counter = self.f.events.get_or_create_owned(&labels([
            ("category", category),
            ("level", e.level.as_str()),
        ]));
        counter.inc();
        let slot = self.events.entry(category.to_owned()).or_default();
        slot[level] = Some(counter);
    }

    fn tool_execution(&mut self, e: &Event) {
        let ending = Ending::of(e);
        let duration = e.duration_secs().filter(|d| d.is_finite() && *d >= 0.0);
        let server = self.bounds.servers.admit(e.server().unwrap_or("unknown"));
        let tool = self.bounds.tools.admit(e.tool().unwrap_or("unknown"));
        let epoch = self.epoch;
        let entry = match self.tools.get_mut(server).and_then(|m| m.get_mut(tool)) {
            Some(entry) => entry,
            None => self
                .tools
                .entry(server.to_owned())
                .or_default()
                .entry(tool.to_owned())
                .or_insert_with(|| ToolEntry {
                    by_outcome: Default::default(),
                    mcp_by_outcome: Default::default(),
                    window: Window::new(epoch),
                }),
        };
        entry.window.slot(epoch).add(ending.ok(), ending.answered());
        let (count, hist) = entry.by_outcome[ending.slot].get_or_insert_with(|| {
            let key = labels([
                ("server", server),
                ("tool", tool),
                ("outcome", ending.label),
            ]);
            (
                self.f.tool_executions.get_or_create_owned(&key),
                self.f.tool_duration.get_or_create_owned(&key),
            )
        });
        count.inc();
        if let Some(d) = duration {
            hist.observe(d);
            if ending.outcome == Some(Outcome::RpcError) {
                let code = error_code(e);
                let code = self.bounds.error_codes.admit(&code);
                let key = labels([
                    ("mcp_method_name", "tools/call"),
                    ("gen_ai_tool_name", tool),
                    ("error_type", code),
                ]);
                self.f.mcp_operation_duration.get_or_create(&key).observe(d);
            } else {
                entry.mcp_by_outcome[ending.slot]
                    .get_or_insert_with(|| {
                        let key = labels([
                            ("mcp_method_name", "tools/call"),
                            ("gen_ai_tool_name", tool),
                            ("error_type", error_type(ending)),
                        ]);
                        self.f.mcp_operation_duration.get_or_create_owned(&key)
                    })
                    .observe(d);
            }
        }
        if self.per_user {
            let user = self.bounds.users.admit(e.user().unwrap_or("unknown"));
            let key = labels([
                ("user", user),
                ("server", server),
                ("tool", tool),
                ("outcome", ending.label),
            ]);
            self.f.user_tool_executions.get_or_create(&key).inc();
        }
    }

    fn request(&mut self, e: &Event) {
        let ending = Ending::of(e);
        let duration = e.duration_secs().filter(|d| d.is_finite() && *d >= 0.0);
        let server = self.bounds.servers.admit(e.server().unwrap_or("unknown"));
        let raw_method = str_meta(e, "method");
        let method = self.bounds.methods.admit(raw_method.unwrap_or("unknown"));
        let epoch = self.epoch;
        let entry = match self.servers.get_mut(server) {
            Some(s) => s,
            None => self
                .servers
                .entry(server.to_owned())
                .or_insert_with(|| ServerEntry {
                    methods: HashMap::new(),
                    window: Window::new(epoch),
                }),
        };
        entry.window.slot(epoch).add(ending.ok(), ending.answered());
        let m = match entry.methods.get_mut(method) {
            Some(m) => m,
            None => entry
                .methods
                .entry(method.to_owned())
                .or_insert_with(|| MethodEntry {
                    by_outcome: Default::default(),
                    duration: self
                        .f
                        .request_duration
                        .get_or_create_owned(&labels([("server", server), ("method", method)])),
                }),
        };
        m.by_outcome[ending.slot]
            .get_or_insert_with(|| {
                self.f.requests.get_or_create_owned(&labels([
                    ("server", server),
                    ("method", method),
                    ("outcome", ending.label),
                ]))
            })
            .inc();
        let Some(d) = duration else {
            return;
        };
        m.duration.observe(d);
        // tools/call's operation is counted from its execution_complete, which names the tool.
        if raw_method.is_none() || raw_method == Some("tools/call") {
            return;
        }
        let code;
        let error_type = if ending.outcome == Some(Outcome::RpcError) {
            code = error_code(e);
            self.bounds.error_codes.admit(&code)
        } else {
            error_type(ending)
        };
        let key = labels([
            ("mcp_method_name", method),
            ("gen_ai_tool_name", ""),
            ("error_type", error_type),
        ]);
        self.f.mcp_operation_duration.get_or_create(&key).observe(d);
    }

    fn authentication(&mut self, e: &Event) {
        let ok = str_meta(e, "result") == Some("success");
        let result = if ok { "success" } else { "failure" };
        self.f
            .auth_attempts
            .get_or_create(&labels([("result", result)]))
            .inc();
        if !ok {
            self.f.auth_failures.inc();
        }
        if self.per_user {
            let user = self.bounds.users.admit(e.user().unwrap_or("unknown"));
            self.f
                .user_auth_attempts
                .get_or_create(&labels([("user", user), ("result", result)]))
                .inc();
        }
    }

    fn authorization(&mut self, e: &Event) {
        let denied = str_meta(e, "result") != Some("allowed");
        let result = if denied { "denied" } else { "allowed" };
        self.f
            .authz_decisions
            .get_or_create(&labels([("result", result)]))
            .inc();
        if denied {
            self.f.authz_denials.inc();
        }
    }

    /// Moves the windows to `now_us` and publishes the rates.
    pub fn roll(&mut self, now_us: i64) {
        self.epoch = self.slots.epoch(now_us);
        let covered = self.slots.covered_secs(now_us);
        let epoch = self.epoch;
        for (server, tools) in &mut self.tools {
            for (tool, entry) in tools {
                let t = entry.window.sum(epoch);
                let key = labels([("server", server.as_str()), ("tool", tool.as_str())]);
                self.f
                    .tool_success_ratio
                    .get_or_create(&key)
                    .set(t.ok_ratio());
                self.f
                    .tool_error_ratio
                    .get_or_create(&key)
                    .set(t.error_ratio());
            }
        }
        for (server, entry) in &mut self.servers {
            let t: Tally = entry.window.sum(epoch);
            let key = labels([("server", server.as_str())]);
            self.f
                .request_throughput
                .get_or_create(&key)
                .set(t.total as f64 / covered);
            self.f
                .request_error_ratio
                .get_or_create(&key)
                .set(t.error_ratio());
            self.f
                .availability_ratio
                .get_or_create(&key)
                .set(t.answered_ratio());
        }
        let ingested = self.ingest.sum(epoch).total;
        self.f.ingest_rate.set(ingested as f64 / covered);
    }
}

/// `error.type` of the MCP conventions for an ending that is not a JSON-RPC error.
fn error_type(ending: Ending) -> &'static str {
    match ending.outcome {
        Some(Outcome::Success) => "",
        Some(o) => o.as_str(),
        None => "_OTHER",
    }
}

/// The JSON-RPC error code as a string, `_OTHER` without one.
fn error_code(e: &Event) -> String {
    match e.metadata.get("error_code") {
        Some(Value::Number(n)) => n.to_string(),
        Some(Value::String(s)) => s.clone(),
        _ => "_OTHER".to_owned(),
    }
}

fn str_meta<'a>(e: &'a Event, key: &str) -> Option<&'a str> {
    e.metadata.get(key).and_then(Value::as_str)
}

fn u64_meta(e: &Event, key: &str) -> u64 {
    e.metadata.get(key).and_then(Value::as_u64).unwrap_or(0)
}
