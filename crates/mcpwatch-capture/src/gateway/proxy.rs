//! The proxy: `/mcp/{name}` → the named upstream, inside out per request:
//! upstream lookup (404) → authentication (401, `authentication` event) → per-principal rate
//! limit (429) → for POST: body read (413), policy (JSON-RPC error, `authorization` event),
//! per-tool rate limit (429) → forward → response streamed back chunk by chunk.
//!
//! Copies go to the monitor through [`TapSender`], which never waits. Responses are never
//! buffered, except a `tools/list` (or `prompts/list`, `resources/list`) JSON result that policy
//! must filter; SSE results are filtered event by event as they pass.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::Level;
use serde::Deserialize;
use serde_json::{json, Map, Value};

use super::auth::{Authenticator, Principal};
use super::limits::{Limited, RateLimiter};
use super::monitor::{Route, SecurityFact, StreamEnd, Tap, TapSender};
use super::owners::SessionOwners;
use super::policy::Policy;
use super::sse::{event_data, with_data, SseSplitter};
use crate::session::Direction;

/// JSON-RPC error code for a call refused by policy.
pub const DENIED_CODE: i64 = -32001;
/// JSON-RPC error code for an unreachable upstream.
pub const UPSTREAM_DOWN_CODE: i64 = -32002;
/// JSON-RPC error code for a rate-limited request.
pub const RATE_LIMITED_CODE: i64 = -32003;

/// What every request consults; shared by the handlers.
pub struct Shared {
    /// Upstream name → (name as shared, URL).
    pub upstreams: BTreeMap<String, (Arc<str>, reqwest::Url)>,
    /// Credentials.
    pub auth: Authenticator,
    /// Allow/deny rules.
    pub policy: Policy,
    /// Token buckets.
    pub limiter: RateLimiter,
    /// Connections to the upstreams.
    pub client: reqwest::Client,
    /// Copies to the monitor.
    pub taps: TapSender,
    /// Time for rate limits.
    pub clock: SharedClock,
    /// Largest request body accepted.
    pub max_body: usize,
    /// Stream and provisional-session numbering.
    pub next_id: AtomicU64,
    /// Who opened which session (checked when authentication is on).
    pub owners: SessionOwners,
}

/// The gateway's routes.
pub fn router(shared: Arc<Shared>) -> axum::Router {
    axum::Router::new()
        .route("/mcp/{name}", axum::routing::any(handle))
        .with_state(shared)
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default)]
    params: Option<ProbeParams>,
}

#[derive(Deserialize)]
struct ProbeParams {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
}

/// The JSON-RPC messages of a body, as far as routing decisions need them.
fn probe(body: &[u8]) -> Vec<Probe> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => serde_json::from_slice(body).unwrap_or_default(),
        Some(b'{') => serde_json::from_slice(body)
            .map(|p| vec![p])
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

async fn handle(
    State(gw): State<Arc<Shared>>,
    Path(name): Path<String>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    req: Request,
) -> Response {
    let Some((server, url)) = gw.upstreams.get(&name) else {
        let known: Vec<&str> = gw.upstreams.keys().map(String::as_str).collect();
        let msg = format!(
            "unknown upstream {name:?}; this gateway serves /mcp/{{{}}}",
            known.join(",")
        );
        return (StatusCode::NOT_FOUND, axum::Json(json!({"error": msg}))).into_response();
    };
    let (parts, body) = req.into_parts();
    let principal = match authenticate(&gw, &parts.headers, peer, server) {
        Ok(p) => p,
        Err(resp) => return *resp,
    };
    let route = Arc::new(Route {
        server: server.clone(),
        user: principal.user_id.as_str().into(),
    });
    if let Err(l) = gw.limiter.request(&gw.clock, &principal.user_id) {
        return limited(&gw, &route, None, &l, None);
    }
    let session: Option<Arc<str>> = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(Arc::from);
    if let Some(s) = session.as_deref() {
        if gw.auth.enabled() && !gw.owners.may_use(&route.server, s, &route.user) {
            return foreign_session(&gw, &route, s);
        }
    }
    let headers = forward_headers(&parts.headers, gw.auth.enabled());
    match parts.method {
        Method::POST => post(gw.clone(), url, route, principal, session, headers, body).await,
        Method::GET | Method::DELETE => {
            let method = parts.method.clone();
            let sent = gw
                .client
                .request(method.clone(), url.clone())
                .headers(headers)
                .send()
                .await;
            let resp = match sent {
                Ok(r) => r,
                Err(e) => return upstream_down(&route.server, url, &e, None),
            };
            let session = session.unwrap_or_else(|| Arc::from(""));
            if method == Method::DELETE && resp.status().is_success() {
                gw.owners.forget(&route.server, &session);
                gw.taps.send(Tap::Close {
                    server: route.server.clone(),
                    session: session.clone(),
                });
            }
            relay(&gw, resp, route, session, None, None)
        }
        _ => (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "GET, POST, DELETE")],
            axum::Json(json!({"error": "MCP Streamable HTTP uses POST, GET and DELETE"})),
        )
            .into_response(),
    }
}

async fn post(
    gw: Arc<Shared>,
    url: &reqwest::Url,
    route: Arc<Route>,
    principal: Principal,
    session: Option<Arc<str>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let bytes = match axum::body::to_bytes(body, gw.max_body).await {
        Ok(b) => b,
        Err(_) => {
            let msg = format!("request body over {} bytes; raise gateway.limits.max_body_bytes if this is expected", gw.max_body);
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"error": msg})),
            )
                .into_response();
        }
    };
    let (session, provisional) = match session {
        Some(s) => (s, false),
        None => (
            Arc::from(format!("~{}", gw.next_id.fetch_add(1, Ordering::Relaxed))),
            true,
        ),
    };
    let messages = probe(&bytes);
    if let Some(resp) = enforce(&gw, &route, &principal, &session, &messages, &bytes) {
        return resp;
    }
    let list = match messages.as_slice() {
        [one] if !gw.policy.unrestricted(&principal.roles) => {
            one.method.as_deref().and_then(ListKind::of)
        }
        _ => None,
    };
    let first_id = messages.first().and_then(|m| m.id.clone());
    gw.taps.send(Tap::Body {
        session: session.clone(),
        route: route.clone(),
        dir: Direction::ClientToServer,
        body: bytes.clone(),
    });
    let sent = gw
        .client
        .post(url.clone())
        .headers(headers)
        .body(bytes.clone())
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            gw.taps.send(Tap::Failed {
                session,
                route: route.clone(),
                body: bytes,
                reason: format!("upstream unreachable: {}", root_cause(&e)),
            });
            return upstream_down(&route.server, url, &e, first_id);
        }
    };
    if provisional {
        if let Some(id) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            let to: Arc<str> = Arc::from(id);
            gw.owners.bind(&route.server, &to, &route.user);
            gw.taps.send(Tap::Alias {
                server: route.server.clone(),
                from: session.clone(),
                to: to.clone(),
            });
            let filter = list.map(|kind| ListFilter {
                kind,
                gw: gw.clone(),
                roles: principal.roles.clone(),
                server: route.server.clone(),
            });
            return relay(&gw, resp, route, to, filter, Some(bytes));
        }
    }
    let filter = list.map(|kind| ListFilter {
        kind,
        gw: gw.clone(),
        roles: principal.roles.clone(),
        server: route.server.clone(),
    });
    relay(&gw, resp, route, session, filter, Some(bytes))
}

/// Policy and the per-tool rate limit for every message of a body; a refusal answers for all.
fn enforce(
    gw: &Shared,
    route: &Arc<Route>,
    principal: &Principal,
    session: &Arc<str>,
    messages: &[Probe],
    body: &Bytes,
) -> Option<Response> {
    for m in messages {
        let (Some(method), Some(params)) = (m.method.as_deref(), m.params.as_ref()) else {
            continue;
        };
        let (target, action) = match (method, &params.name, &params.uri) {
            ("tools/call", Some(n), _) => (format!("tool:{}/{n}", route.server), "call"),
            ("prompts/get", Some(n), _) => (format!("prompt:{}/{n}", route.server), "get"),
            ("resources/read", _, Some(u)) => (format!("resource:{u}"), "read"),
            _ => continue,
        };
        if !gw.policy.permits(&principal.roles, &target) {
            let reason = format!(
                "{} may not {action} {target} (gateway policy)",
                principal.user_id
            );
            let mut meta = Map::new();
            meta.insert("user_id".into(), json!(principal.user_id));
            meta.insert("resource".into(), json!(target));
            meta.insert("action".into(), json!(action));
            meta.insert("result".into(), json!("denied"));
            meta.insert("roles".into(), json!(principal.roles));
            gw.taps.send(Tap::Security(SecurityFact {
                event_type: "authorization",
                level: Level::Warning,
                message: format!("Denied: {reason}"),
                metadata: meta,
                server: Some(route.server.clone()),
                session: Some(session.clone()),
            }));
            gw.taps.send(Tap::Denied {
                session: session.clone(),
                route: route.clone(),
                body: body.clone(),
                reason: reason.clone(),
            });
            return Some(rpc_errors(
                StatusCode::OK,
                messages,
                DENIED_CODE,
                &format!("Forbidden: {reason}"),
                &[],
            ));
        }
        if method == "tools/call" {
            let tool = target.trim_start_matches("tool:");
            if let Err(l) = gw.limiter.tool_call(&gw.clock, &principal.user_id, tool) {
                return Some(limited(gw, route, Some(tool), &l, Some(messages)));
            }
        }
    }
    None
}

fn authenticate(
    gw: &Shared,
    headers: &HeaderMap,
    peer: SocketAddr,
    server: &Arc<str>,
) -> Result<Principal, Box<Response>> {
    if !gw.auth.enabled() {
        return Ok(Principal {
            user_id: "anonymous".into(),
            roles: Vec::new(),
            method: "none",
        });
    }
    let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let result = gw
        .auth
        .authenticate(text("authorization"), text("x-api-key"));
    let mut meta = Map::new();
    meta.insert("ip_address".into(), json!(peer.ip().to_string()));
    meta.insert("user_agent".into(), json!(text("user-agent").unwrap_or("")));
    let (level, message) = match &result {
        Ok(p) => {
            meta.insert("user_id".into(), json!(p.user_id));
            meta.insert("result".into(), json!("success"));
            meta.insert("method".into(), json!(p.method));
            (
                Level::Info,
                format!("{} authenticated by {}", p.user_id, p.method),
            )
        }
        Err(f) => {
            meta.insert("user_id".into(), json!("unknown"));
            meta.insert("result".into(), json!("failure"));
            meta.insert("reason".into(), json!(f.reason()));
            (
                Level::Warning,
                format!("Authentication failed from {}: {}", peer.ip(), f.reason()),
            )
        }
    };
    gw.taps.send(Tap::Security(SecurityFact {
        event_type: "authentication",
        level,
        message,
        metadata: meta,
        server: Some(server.clone()),
        session: None,
    }));
    result.map_err(|f| {
        let challenge = format!(
            "Bearer realm=\"{}\", error=\"{}\", error_description=\"{}\"",
            gw.auth.realm,
            f.code(),
            f.reason()
        );
        let mut resp = (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": format!("unauthorized: {}", f.reason())})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        Box::new(resp)
    })
}

/// A caller presenting a session another principal opened: refused, and recorded.
fn foreign_session(gw: &Shared, route: &Arc<Route>, session: &str) -> Response {
    let mut meta = Map::new();
    meta.insert("user_id".into(), json!(route.user.as_ref()));
    meta.insert(
        "resource".into(),
        json!(format!("session:{}", route.server)),
    );
    meta.insert("action".into(), json!("use"));
    meta.insert("result".into(), json!("denied"));
    gw.taps.send(Tap::Security(SecurityFact {
        event_type: "authorization",
        level: Level::Warning,
        message: format!(
            "Denied: {} presented a {} session opened by another user",
            route.user, route.server
        ),
        metadata: meta,
        server: Some(route.server.clone()),
        session: Some(Arc::from(session)),
    }));
    let msg = "this Mcp-Session-Id belongs to another user; start your own session with initialize";
    (StatusCode::FORBIDDEN, axum::Json(json!({"error": msg}))).into_response()
}

fn limited(
    gw: &Shared,
    route: &Arc<Route>,
    tool: Option<&str>,
    l: &Limited,
    messages: Option<&[Probe]>,
) -> Response {
    let mut meta = Map::new();
    meta.insert("user_id".into(), json!(route.user.as_ref()));
    meta.insert("scope".into(), json!(l.scope));
    meta.insert("retry_after".into(), json!(l.retry_after));
    if let Some(t) = tool {
        meta.insert("tool".into(), json!(t));
    }
    let what = tool.map(|t| format!(" calling {t}")).unwrap_or_default();
    gw.taps.send(Tap::Security(SecurityFact {
        event_type: "rate_limited",
        level: Level::Warning,
        message: format!(
            "{} rate limited{what} (per {}); retry in {} s",
            route.user, l.scope, l.retry_after
        ),
        metadata: meta,
        server: Some(route.server.clone()),
        session: None,
    }));
    let msg = format!(
        "rate limited (per {}); retry after {} s",
        l.scope, l.retry_after
    );
    let retry = [(header::RETRY_AFTER, HeaderValue::from(l.retry_after))];
    match messages {
        Some(m) => rpc_errors(
            StatusCode::TOO_MANY_REQUESTS,
            m,
            RATE_LIMITED_CODE,
            &msg,
            &retry,
        ),
        None => (
            StatusCode::TOO_MANY_REQUESTS,
            retry,
            axum::Json(json!({"error": msg})),
        )
            .into_response(),
    }
}

/// A JSON-RPC error for each request in the body (one object, or an array for a batch).
fn rpc_errors(
    status: StatusCode,
    messages: &[Probe],
    code: i64,
    message: &str,
    extra: &[(HeaderName, HeaderValue)],
) -> Response {
    let errors: Vec<Value> = messages
        .iter()
        .filter(|m| m.method.is_some())
        .filter_map(|m| m.id.as_ref())
        .map(|id| json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}}))
        .collect();
    let body = match errors.len() {
        1 if messages.len() == 1 => errors.into_iter().next().unwrap_or(Value::Null),
        _ => Value::Array(errors),
    };
    let mut resp = (status, axum::Json(body)).into_response();
    for (k, v) in extra {
        resp.headers_mut().insert(k.clone(), v.clone());
    }
    resp
}

fn upstream_down(
    server: &str,
    url: &reqwest::Url,
    e: &reqwest::Error,
    id: Option<Value>,
) -> Response {
    let msg = format!("upstream {server} is unreachable at {url} ({}); check that it runs and that gateway.upstreams.{server} is right", root_cause(e));
    let body = match id {
        Some(id) => {
            json!({"jsonrpc": "2.0", "id": id, "error": {"code": UPSTREAM_DOWN_CODE, "message": msg}})
        }
        None => json!({"error": msg}),
    };
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

const HOP_BY_HOP: [&str; 9] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn forward_headers(incoming: &HeaderMap, strip_credentials: bool) -> HeaderMap {
    let mut out = HeaderMap::with_capacity(incoming.len());
    for (k, v) in incoming {
        let n = k.as_str();
        if HOP_BY_HOP.contains(&n) || n == "host" || n == "content-length" {
            continue;
        }
        if strip_credentials && (n == "authorization" || n == "x-api-key") {
            continue;
        }
        out.append(k.clone(), v.clone());
    }
    out
}

/// Which listing a response answers, for filtering by policy.
#[derive(Clone, Copy)]
enum ListKind {
    Tools,
    Prompts,
    Resources,
}

impl ListKind {
    fn of(method: &str) -> Option<Self> {
        match method {
            "tools/list" => Some(Self::Tools),
            "prompts/list" => Some(Self::Prompts),
            "resources/list" => Some(Self::Resources),
            _ => None,
        }
    }
}

struct ListFilter {
    kind: ListKind,
    gw: Arc<Shared>,
    roles: Vec<String>,
    server: Arc<str>,
}

impl ListFilter {
    /// Removes what the caller may not use from a JSON-RPC response; None when nothing changed.
    fn apply(&self, payload: &[u8]) -> Option<Vec<u8>> {
        let mut v: Value = serde_json::from_slice(payload).ok()?;
        let (key, field) = match self.kind {
            ListKind::Tools => ("tools", "name"),
            ListKind::Prompts => ("prompts", "name"),
            ListKind::Resources => ("resources", "uri"),
        };
        let items = v.get_mut("result")?.get_mut(key)?.as_array_mut()?;
        let before = items.len();
        items.retain(|item| {
            let name = item.get(field).and_then(Value::as_str).unwrap_or_default();
            let target = match self.kind {
                ListKind::Tools => format!("tool:{}/{name}", self.server),
                ListKind::Prompts => format!("prompt:{}/{name}", self.server),
                ListKind::Resources => format!("resource:{name}"),
            };
            self.gw.policy.permits(&self.roles, &target)
        });
        (items.len() != before)
            .then(|| serde_json::to_vec(&v).ok())
            .flatten()
    }
}

/// Streams the upstream's response back, tapping a copy of each chunk for the monitor.
fn relay(
    gw: &Shared,
    resp: reqwest::Response,
    route: Arc<Route>,
    session: Arc<str>,
    filter: Option<ListFilter>,
    request: Option<Bytes>,
) -> Response {
    let status = resp.status();
    let mut headers = HeaderMap::with_capacity(resp.headers().len());
    for (k, v) in resp.headers() {
        if !HOP_BY_HOP.contains(&k.as_str()) {
            headers.append(k.clone(), v.clone());
        }
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let sse = content_type.starts_with("text/event-stream");
    let json = content_type.starts_with("application/json");
    if !sse && !json {
        return build(status, headers, Body::from_stream(resp.bytes_stream()));
    }
    let stream = gw.next_id.fetch_add(1, Ordering::Relaxed);
    gw.taps.send(Tap::Open {
        stream,
        session,
        route,
        sse,
        request,
    });
    let tapped = Tapped {
        inner: resp.bytes_stream(),
        taps: gw.taps.clone(),
        stream,
        done: false,
    };
    let Some(filter) = filter else {
        return build(status, headers, Body::from_stream(tapped));
    };
    headers.remove(header::CONTENT_LENGTH);
    if json {
        let body = async move {
            let mut buf = Vec::new();
            let mut tapped = tapped;
            while let Some(chunk) = tapped.next().await {
                buf.extend_from_slice(&chunk?);
            }
            Ok::<_, reqwest::Error>(Bytes::from(filter.apply(&buf).unwrap_or(buf)))
        };
        return build(
            status,
            headers,
            Body::from_stream(futures_util::stream::once(body)),
        );
    }
    let mut splitter = SseSplitter::new(16 << 20);
    let rewritten = tapped.map(move |chunk| {
        let chunk = chunk?;
        let mut out = Vec::with_capacity(chunk.len());
        let passed = splitter.feed(&chunk, |event| {
            match event_data(event).and_then(|d| filter.apply(&d)) {
                Some(new) => out.extend_from_slice(&with_data(event, &new)),
                None => {
                    out.extend_from_slice(event);
                    out.extend_from_slice(b"\n\n");
                }
            }
        });
        if passed > 0 {
            // An event too large to inspect goes on unchanged.
            out.extend_from_slice(&splitter.take_rest());
        }
        Ok::<_, reqwest::Error>(Bytes::from(out))
    });
    build(status, headers, Body::from_stream(rewritten))
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// The upstream's body stream, with a copy of each chunk handed to the monitor.
struct Tapped<S> {
    inner: S,
    taps: TapSender,
    stream: u64,
    done: bool,
}

impl<S: Stream<Item = reqwest::Result<Bytes>> + Unpin> Stream for Tapped<S> {
    type Item = reqwest::Result<Bytes>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let polled = self.inner.poll_next_unpin(cx);
        let how = match &polled {
            Poll::Ready(Some(Ok(bytes))) => {
                self.taps.send(Tap::Chunk {
                    stream: self.stream,
                    bytes: bytes.clone(),
                });
                return polled;
            }
            Poll::Ready(Some(Err(e))) => StreamEnd::Broken(format!(
                "the upstream's response stream broke off: {}",
                root_cause(e)
            )),
            Poll::Ready(None) => StreamEnd::Complete,
            Poll::Pending => return polled,
        };
        if !self.done {
            self.done = true;
            self.taps.send(Tap::End {
                stream: self.stream,
                how,
            });
        }
        polled
    }
}

impl<S> Drop for Tapped<S> {
    fn drop(&mut self) {
        if !self.done {
            self.taps.send(Tap::End {
                stream: self.stream,
                how: StreamEnd::Abandoned,
            });
        }
    }
}
