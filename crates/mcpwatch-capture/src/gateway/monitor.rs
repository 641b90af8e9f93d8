//! The gateway's monitor: copies of the proxied traffic in, events out, on its own thread.
//!
//! The proxy hands over [`Tap`]s with `try_send` (a full queue drops the copy and counts it;
//! the drop is reported as an event) and never waits for them. The monitor keeps one
//! [`SessionTracker`] per upstream and `Mcp-Session-Id` (bounded: the least recently used ends
//! beyond `max_sessions`, idle ones end after `session_idle`), reassembles JSON bodies and SSE
//! streams, and turns security facts (authentication, authorization, rate limits) into events.
//! It runs like `wrap`'s parser (see [`crate::wrap`]): one thread with a current-thread
//! runtime, polling while traffic flows, parked when idle.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::pace::Pacer;
use mcpwatch_core::{Event, Level, Redactor, Timestamp};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::sse::{event_data, has_event_id, SseSplitter};
use crate::classify::ClassificationConfig;
use crate::health::CaptureHealth;
use crate::pins::PinStore;
use crate::session::{Direction, SessionConfig, SessionTracker};

/// Who a message belongs to: the upstream and the principal.
#[derive(Debug)]
pub struct Route {
    /// Upstream name (`metadata.server`).
    pub server: Arc<str>,
    /// The principal's user id.
    pub user: Arc<str>,
}

/// A copy of something the proxy saw, or a fact it established.
pub enum Tap {
    /// A whole JSON-RPC body travelling in `dir`.
    Body {
        session: Arc<str>,
        route: Arc<Route>,
        dir: Direction,
        body: Bytes,
        /// The HTTP request's `traceparent` header, as sent.
        traceparent: Option<String>,
    },
    /// A client request the gateway refused by policy: recorded with outcome `denied`.
    Denied {
        session: Arc<str>,
        route: Arc<Route>,
        body: Bytes,
        reason: String,
    },
    /// A server request the gateway refused by policy (dropped from the client's stream and
    /// answered with an error): completed with outcome `denied`.
    ServerRequestDenied {
        session: Arc<str>,
        route: Arc<Route>,
        id: Value,
        reason: String,
    },
    /// A client body already tapped got no response: the upstream could not be reached.
    Failed {
        session: Arc<str>,
        route: Arc<Route>,
        body: Bytes,
        reason: String,
    },
    /// A response body streamed from the upstream begins (SSE or JSON).
    Open {
        stream: u64,
        session: Arc<str>,
        route: Arc<Route>,
        sse: bool,
        /// The client body (as forwarded) this stream answers; `None` for a GET stream.
        request: Option<Bytes>,
    },
    /// Part of a streamed body.
    Chunk { stream: u64, bytes: Bytes },
    /// The streamed body ended.
    End { stream: u64, how: StreamEnd },
    /// The upstream named a new session: the provisional key becomes its `Mcp-Session-Id`.
    Alias {
        server: Arc<str>,
        from: Arc<str>,
        to: Arc<str>,
    },
    /// The client ended the session (DELETE).
    Close { server: Arc<str>, session: Arc<str> },
    /// A security fact: authentication, authorization or rate limiting.
    Security(SecurityFact),
}

/// How a streamed response body ended.
#[derive(Debug)]
pub enum StreamEnd {
    /// The upstream finished it.
    Complete,
    /// The upstream connection broke (the reason says how): requests of the body that opened
    /// the stream and still wait for a response end as `transport_error` at once.
    Broken(String),
    /// The client went away first. Its requests stay pending: the client may resume the
    /// stream (GET with `Last-Event-ID`) and get the responses there, or they time out.
    Abandoned,
}

/// A `security` event the proxy decided on; the monitor stamps and delivers it.
pub struct SecurityFact {
    /// `authentication`, `authorization` or `rate_limited`.
    pub event_type: &'static str,
    /// Severity.
    pub level: Level,
    /// For people.
    pub message: String,
    /// Type-specific metadata (`user_id`, `result`, …).
    pub metadata: Map<String, Value>,
    /// The upstream and session it concerns, when known.
    pub server: Option<Arc<str>>,
    /// The `Mcp-Session-Id` (or provisional key) it concerns.
    pub session: Option<Arc<str>>,
}

/// The proxy's end of the queue: never blocks, counts what it drops.
#[derive(Clone)]
pub struct TapSender {
    tx: mpsc::Sender<Tap>,
    health: Arc<CaptureHealth>,
}

impl TapSender {
    /// Hands a copy over, or drops and counts it when the monitor is behind.
    pub fn send(&self, tap: Tap) {
        let len = match &tap {
            Tap::Body { body, .. } | Tap::Denied { body, .. } | Tap::Failed { body, .. } => {
                body.len()
            }
            Tap::Chunk { bytes, .. } => bytes.len(),
            _ => 0,
        };
        if self.tx.try_send(tap).is_err() {
            CaptureHealth::add(&self.health.dropped_lines, 1);
            CaptureHealth::add(&self.health.dropped_bytes, len as u64);
        }
    }
}

impl TapSender {
    /// A sender and the queue it fills, for tests that read the taps themselves.
    #[cfg(test)]
    pub(super) fn channel(n: usize) -> (Self, mpsc::Receiver<Tap>) {
        let (tx, rx) = mpsc::channel(n);
        let health = Arc::new(CaptureHealth::default());
        (Self { tx, health }, rx)
    }
}

/// What the monitor needs.
pub struct MonitorConfig {
    /// Most sessions tracked.
    pub max_sessions: usize,
    /// A request without a response after this long is a `timeout`.
    pub request_timeout: Duration,
    /// A session without traffic this long ends.
    pub session_idle: Duration,
    /// Largest body or SSE event parsed.
    pub max_body: usize,
    /// Which data is sensitive.
    pub classification: ClassificationConfig,
    /// Removes secrets from events.
    pub redactor: Redactor,
    /// Where tool pins live (`None`: memory only).
    pub pins_dir: Option<PathBuf>,
    /// Copies waiting for the monitor at most.
    pub queue: usize,
    /// How often the gateway's `system/edge_health` event reports its spool and tap queue.
    pub health_interval: Duration,
}

/// Most response streams followed at once.
const MAX_STREAMS: usize = 4096;
const POLL: Duration = Duration::from_millis(2);
const PARK_AFTER: Duration = Duration::from_millis(200);
const TICK: Duration = Duration::from_secs(1);
const DRAIN_MAX: usize = 1024;

type Key = (Arc<str>, Arc<str>);

struct Entry {
    tracker: SessionTracker,
    last_seen: Timestamp,
}

enum Body {
    Sse(SseSplitter),
    Json(Vec<u8>, bool),
}

struct Stream {
    key: Key,
    route: Arc<Route>,
    body: Body,
    request: Option<Bytes>,
    /// Its events carried SSE ids: a client may resume it after a break.
    resumable: bool,
}

/// The monitor task's state.
pub struct Monitor {
    cfg: MonitorConfig,
    clock: SharedClock,
    ids: IdGenerator,
    rx: mpsc::Receiver<Tap>,
    events: mpsc::Sender<Event>,
    health: Arc<CaptureHealth>,
    sessions: HashMap<Key, Entry>,
    /// One pin store for every session of every upstream (pins are kept per server inside),
    /// so that a changed definition is reported once, not once per live session.
    pins: PinStore,
    streams: HashMap<u64, Stream>,
    reported: (u64, u64, u64),
    /// When the next `system/edge_health` is due.
    next_health: Instant,
}

impl Monitor {
    /// The monitor and the proxy's sender.
    pub fn new(
        cfg: MonitorConfig,
        clock: SharedClock,
        events: mpsc::Sender<Event>,
        health: Arc<CaptureHealth>,
    ) -> (TapSender, Monitor) {
        let (tx, rx) = mpsc::channel(cfg.queue.max(1));
        let sender = TapSender {
            tx,
            health: health.clone(),
        };
        let pins = PinStore::new(cfg.pins_dir.clone()).with_redactor(cfg.redactor.clone());
        let cfg_health_interval = cfg.health_interval;
        let m = Monitor {
            pins,
            cfg,
            clock,
            ids: IdGenerator::new(),
            rx,
            events,
            health,
            sessions: HashMap::new(),
            streams: HashMap::new(),
            reported: (0, 0, 0),
            next_health: Instant::now() + cfg_health_interval,
        };
        (sender, m)
    }

    /// Runs until every sender is gone, then ends the open sessions.
    pub async fn run(mut self) {
        let mut out = Vec::new();
        let mut next_tick = Instant::now() + TICK;
        let mut last_traffic = Instant::now();
        let mut open = true;
        // A drain can be a thousand copies: the pacer keeps each burst short, so the proxy's
        // requests on this core do not wait behind it (see `mcpwatch_core::pace`).
        let mut pacer = Pacer::new();
        while open {
            let mut took = false;
            pacer.rest();
            for _ in 0..DRAIN_MAX {
                match self.rx.try_recv() {
                    Ok(t) => {
                        took = true;
                        self.take(t, &mut out);
                        pacer.step();
                    }
                    Err(mpsc::error::TryRecvError::Empty) => break,
                    Err(mpsc::error::TryRecvError::Disconnected) => {
                        open = false;
                        break;
                    }
                }
            }
            let now = Instant::now();
            if took {
                last_traffic = now;
            }
            if now >= next_tick {
                next_tick = now + TICK;
                self.tick(&mut out);
            }
            if !self.ship(&mut out).await {
                return;
            }
            if !open {
                break;
            }
            if now.duration_since(last_traffic) < PARK_AFTER {
                tokio::time::sleep(POLL).await;
                continue;
            }
            tokio::select! {
                t = self.rx.recv() => match t {
                    Some(t) => { self.take(t, &mut out); last_traffic = Instant::now(); }
                    None => open = false,
                },
                () = tokio::time::sleep_until(next_tick) => {}
            }
        }
        for (_, mut e) in self.sessions.drain() {
            e.tracker.on_close("gateway stopped", None, &mut out);
        }
        self.ship(&mut out).await;
    }

    async fn ship(&mut self, out: &mut Vec<Event>) -> bool {
        for ev in out.drain(..) {
            if self.events.send(ev).await.is_err() {
                return false;
            }
        }
        true
    }

    fn tick(&mut self, out: &mut Vec<Event>) {
        let now = self.clock.now();
        let idle = self.cfg.session_idle;
        let stale: Vec<Key> = self
            .sessions
            .iter()
            .filter(|(_, e)| e.last_seen.saturating_add(idle) < now)
            .map(|(k, _)| k.clone())
            .collect();
        for k in stale {
            if let Some(mut e) = self.sessions.remove(&k) {
                e.tracker.on_close("session idle", None, out);
            }
        }
        for e in self.sessions.values_mut() {
            e.tracker.on_tick(out);
        }
        self.report_losses(out);
        let now = Instant::now();
        if now >= self.next_health {
            self.next_health = now + self.cfg.health_interval;
            out.push(self.edge_health());
        }
    }

    /// The gateway's `system/edge_health`: one edge (`source` `gateway`) for every upstream,
    /// whether or not a session is open, with its tap queue beside the spool: copies waiting
    /// for the monitor now, and copies dropped (relayed, not inspected) since it started.
    fn edge_health(&self) -> Event {
        let (level, message, mut metadata) = crate::session::edge_health_report(&self.health);
        metadata.insert("queue_depth".into(), json!(self.rx.len()));
        metadata.insert("queue_capacity".into(), json!(self.cfg.queue.max(1)));
        metadata.insert(
            "dropped_bytes".into(),
            json!(CaptureHealth::get(&self.health.dropped_bytes)),
        );
        let message = format!(
            "{message}; {} of {} copies waiting for inspection",
            self.rx.len(),
            self.cfg.queue.max(1)
        );
        let timestamp = self.clock.now();
        let mut event = Event {
            id: self.ids.next(timestamp),
            timestamp,
            level,
            category: "system".into(),
            source: "gateway".into(),
            event_type: "edge_health".into(),
            message,
            metadata,
            tags: vec!["capture".into(), "health".into(), "gateway".into()],
        };
        self.cfg.redactor.redact_event(&mut event);
        event
    }

    fn report_losses(&mut self, out: &mut Vec<Event>) {
        let lines = CaptureHealth::get(&self.health.dropped_lines);
        let bytes = CaptureHealth::get(&self.health.dropped_bytes);
        let overflow = CaptureHealth::get(&self.health.spool_overflow_events);
        if lines <= self.reported.0 && overflow <= self.reported.2 {
            return;
        }
        let Some(e) = self.sessions.values_mut().next() else {
            return;
        };
        if lines > self.reported.0 {
            e.tracker
                .on_dropped(lines - self.reported.0, bytes - self.reported.1, out);
        }
        if overflow > self.reported.2 {
            e.tracker.on_spool_overflow(overflow - self.reported.2, out);
        }
        self.reported = (lines, bytes, overflow);
    }

    fn take(&mut self, tap: Tap, out: &mut Vec<Event>) {
        match tap {
            Tap::Body {
                session,
                route,
                dir,
                body,
                traceparent,
            } => {
                let max = self.cfg.max_body;
                let e = self.session(&route, session);
                if body.len() > max {
                    e.tracker.on_oversized(dir, body.len(), max, out);
                } else {
                    e.tracker.set_transport_trace(traceparent.as_deref());
                    e.tracker.on_frame(dir, &body, out);
                    e.tracker.set_transport_trace(None);
                }
            }
            Tap::Denied {
                session,
                route,
                body,
                reason,
            } => {
                self.session(&route, session)
                    .tracker
                    .on_denied(&body, &reason, out);
            }
            Tap::ServerRequestDenied {
                session,
                route,
                id,
                reason,
            } => {
                self.session(&route, session)
                    .tracker
                    .on_server_request_denied(&id, &reason, out);
            }
            Tap::Failed {
                session,
                route,
                body,
                reason,
            } => {
                self.session(&route, session)
                    .tracker
                    .on_request_failed(&body, &reason, out);
            }
            Tap::Open {
                stream,
                session,
                route,
                sse,
                request,
            } => {
                if self.streams.len() >= MAX_STREAMS {
                    if let Some(oldest) = self.streams.keys().min().copied() {
                        self.streams.remove(&oldest);
                    }
                }
                let body = if sse {
                    Body::Sse(SseSplitter::new(self.cfg.max_body))
                } else {
                    Body::Json(Vec::new(), false)
                };
                let key = (route.server.clone(), session);
                self.streams.insert(
                    stream,
                    Stream {
                        key,
                        route,
                        body,
                        request,
                        resumable: false,
                    },
                );
            }
            Tap::Chunk { stream, bytes } => self.chunk(stream, &bytes, out),
            Tap::End { stream, how } => self.end(stream, how, out),
            Tap::Alias { server, from, to } => {
                if let Some(e) = self.sessions.remove(&(server.clone(), from)) {
                    self.sessions.insert((server, to), e);
                }
            }
            Tap::Close { server, session } => {
                if let Some(mut e) = self.sessions.remove(&(server, session)) {
                    e.tracker.on_close("session ended by the client", None, out);
                }
            }
            Tap::Security(fact) => out.push(self.security_event(fact)),
        }
    }

    fn chunk(&mut self, stream: u64, bytes: &[u8], out: &mut Vec<Event>) {
        let Some(s) = self.streams.get_mut(&stream) else {
            return;
        };
        let max = self.cfg.max_body;
        let mut frames = Vec::new();
        match &mut s.body {
            Body::Sse(splitter) => {
                let mut named = false;
                splitter.feed(bytes, |event| {
                    named |= has_event_id(event);
                    if let Some(data) = event_data(event) {
                        frames.push(data);
                    }
                });
                s.resumable |= named;
            }
            Body::Json(buf, oversized) => {
                if buf.len() + bytes.len() > max {
                    *oversized = true;
                    buf.clear();
                } else if !*oversized {
                    buf.extend_from_slice(bytes);
                }
                return;
            }
        }
        let (key, route) = (s.key.clone(), s.route.clone());
        let e = self.session(&route, key.1);
        for f in frames {
            e.tracker.on_frame(Direction::ServerToClient, &f, out);
        }
    }

    fn end(&mut self, stream: u64, how: StreamEnd, out: &mut Vec<Event>) {
        let Some(s) = self.streams.remove(&stream) else {
            return;
        };
        let max = self.cfg.max_body;
        let e = self.session(&s.route, s.key.1);
        match (&how, &s.request) {
            (StreamEnd::Complete, _) => {}
            // What was pending will not come on this stream; a JSON body cut short is not
            // worth parsing.
            // A stream with SSE ids may be resumed with `Last-Event-ID`, and what it owed
            // answered there: the verdict waits (see `session::resume`).
            (StreamEnd::Broken(reason), Some(request)) if s.resumable => {
                return e.tracker.on_request_stream_broken(request, reason);
            }
            (StreamEnd::Broken(reason), Some(request)) => {
                return e.tracker.on_request_failed(request, reason, out);
            }
            _ => return,
        }
        if let Body::Json(buf, oversized) = s.body {
            if oversized {
                e.tracker
                    .on_oversized(Direction::ServerToClient, max + 1, max, out);
            } else if !buf.is_empty() {
                e.tracker.on_frame(Direction::ServerToClient, &buf, out);
            }
        }
    }

    /// The tracker of a session, created (and the least recently used one ended) as needed.
    fn session(&mut self, route: &Arc<Route>, session: Arc<str>) -> &mut Entry {
        let now = self.clock.now();
        let key = (route.server.clone(), session);
        if !self.sessions.contains_key(&key) && self.sessions.len() >= self.cfg.max_sessions {
            let oldest = self
                .sessions
                .iter()
                .min_by_key(|(_, e)| e.last_seen)
                .map(|(k, _)| k.clone());
            if let Some(mut e) = oldest.and_then(|k| self.sessions.remove(&k)) {
                let mut out = Vec::new();
                e.tracker.on_close(
                    "too many sessions: ended the least recently used",
                    None,
                    &mut out,
                );
                for ev in out {
                    let _ = self.events.try_send(ev);
                }
            }
        }
        let cfg = &self.cfg;
        let clock = &self.clock;
        let pins = &self.pins;
        let entry = self.sessions.entry(key).or_insert_with(|| Entry {
            tracker: SessionTracker::new(
                SessionConfig {
                    server: route.server.to_string(),
                    source: format!("gateway:{}", route.server),
                    user_id: route.user.to_string(),
                    request_timeout: cfg.request_timeout,
                    max_pending: 10_000,
                    classification: cfg.classification.clone(),
                    redactor: cfg.redactor.clone(),
                },
                clock.clone(),
                pins.clone(),
            ),
            last_seen: now,
        });
        entry.last_seen = now;
        entry
    }

    fn security_event(&self, fact: SecurityFact) -> Event {
        let timestamp = self.clock.now();
        let mut metadata = fact.metadata;
        if let Some(server) = &fact.server {
            metadata.insert("server".into(), json!(server.as_ref()));
            if let Some(session) = &fact.session {
                if let Some(e) = self.sessions.get(&(server.clone(), session.clone())) {
                    metadata.insert("session_id".into(), json!(e.tracker.session_id()));
                }
            }
        }
        let source = match &fact.server {
            Some(s) => format!("gateway:{s}"),
            None => "gateway".into(),
        };
        let mut event = Event {
            id: self.ids.next(timestamp),
            timestamp,
            level: fact.level,
            category: "security".into(),
            source,
            event_type: fact.event_type.into(),
            message: fact.message,
            metadata,
            tags: vec!["gateway".into(), fact.event_type.into()],
        };
        self.cfg.redactor.redact_event(&mut event);
        event
    }
}
