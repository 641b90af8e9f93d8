//! The proxy: `/mcp/{name}` → the named upstream, inside out per request:
//! upstream lookup (404) → authentication (401, `authentication` event) → per-principal rate
//! limit (429) → for POST: body read (413), policy and the per-tool rate limit per message
//! ([`super::batch`]: JSON-RPC errors, `authorization` and `rate_limited` events) → forward
//! what is left → response streamed back chunk by chunk ([`super::rewrite`]).
//!
//! Copies go to the monitor through [`TapSender`], which never waits. Responses are never
//! buffered, except a JSON answer that policy must filter (a list result) or that the gateway's
//! own errors for part of a batch join; SSE answers are rewritten event by event as they pass.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::Level;
use serde_json::{json, Map, Value};

use super::auth::{Authenticator, Principal};
use super::batch::{self, rpc_error};
use super::limits::{Limited, RateLimiter};
use super::monitor::{Route, SecurityFact, StreamEnd, Tap, TapSender};
use super::owners::SessionOwners;
use super::policy::Policy;
use super::rewrite::{self, ListFilter, Rewrite};
use crate::error::root_cause;
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
    pub policy: Arc<Policy>,
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
        return limited(&gw, &route, &l);
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
                Err(e) => {
                    return upstream_down(&route.server, url, &e, Vec::new(), Vec::new(), false)
                }
            };
            let session = session.unwrap_or_else(|| Arc::from(""));
            if method == Method::DELETE && resp.status().is_success() {
                gw.owners.forget(&route.server, &session);
                gw.taps.send(Tap::Close {
                    server: route.server.clone(),
                    session: session.clone(),
                });
            }
            let rewrite = Rewrite {
                lists: None,
                errors: Vec::new(),
            };
            relay(&gw, resp, route, session, rewrite, None)
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
    let parsed = batch::parse(&bytes);
    if let Some(why) = &parsed.unreadable {
        if !gw.policy.unrestricted(&principal.roles) {
            return unreadable(&gw, &route, &session, why);
        }
    }
    let mut judged = batch::judge(&gw, &route, &principal, &session, &parsed);
    let (forward, errors) = if judged.all_forwarded() {
        (bytes, Vec::new())
    } else {
        let Some(rest) = judged.remainder(&parsed) else {
            return judged.answer(parsed.batch);
        };
        (rest, std::mem::take(&mut judged.errors))
    };
    let forwarded = || {
        parsed
            .messages
            .iter()
            .zip(&judged.forward)
            .filter(|(_, f)| **f)
            .map(|((_, m), _)| m)
    };
    let lists = ListFilter::new(&gw.policy, &principal.roles, &route.server, forwarded());
    gw.taps.send(Tap::Body {
        session: session.clone(),
        route: route.clone(),
        dir: Direction::ClientToServer,
        body: forward.clone(),
    });
    let sent = gw
        .client
        .post(url.clone())
        .headers(headers)
        .body(forward.clone())
        .send()
        .await;
    let resp = match sent {
        Ok(r) => r,
        Err(e) => {
            gw.taps.send(Tap::Failed {
                session,
                route: route.clone(),
                body: forward,
                reason: format!("upstream unreachable: {}", root_cause(&e)),
            });
            let ids = forwarded()
                .filter_map(|m| m.request_id().cloned())
                .collect();
            return upstream_down(&route.server, url, &e, ids, errors, parsed.batch);
        }
    };
    let rewrite = Rewrite { lists, errors };
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
            return relay(&gw, resp, route, to, rewrite, Some(forward));
        }
    }
    relay(&gw, resp, route, session, rewrite, Some(forward))
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

/// A body that policy applies to but the gateway cannot read: refused (fail closed), and
/// recorded as a denial so that detection sees probing.
fn unreadable(gw: &Shared, route: &Arc<Route>, session: &Arc<str>, why: &str) -> Response {
    let mut meta = Map::new();
    meta.insert("user_id".into(), json!(route.user.as_ref()));
    meta.insert(
        "resource".into(),
        json!(format!("message:{}", route.server)),
    );
    meta.insert("action".into(), json!("send"));
    meta.insert("result".into(), json!("denied"));
    meta.insert("reason".into(), json!(why));
    gw.taps.send(Tap::Security(SecurityFact {
        event_type: "authorization",
        level: Level::Warning,
        message: format!(
            "Denied: {} sent {} a body the gateway cannot read as JSON-RPC ({why}), so policy cannot judge it",
            route.user, route.server
        ),
        metadata: meta,
        server: Some(route.server.clone()),
        session: Some(session.clone()),
    }));
    let msg = format!(
        "Invalid Request: the gateway could not read this body as JSON-RPC ({why}); it forwards only what its policy can judge. Send each message once, with unique keys, a string method and string params.name/params.uri"
    );
    (
        StatusCode::BAD_REQUEST,
        axum::Json(
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32600, "message": msg}}),
        ),
    )
        .into_response()
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

/// Records a `rate_limited` event; returns the message for the caller.
pub(super) fn record_limited(
    gw: &Shared,
    route: &Arc<Route>,
    tool: Option<&str>,
    l: &Limited,
) -> String {
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
    format!(
        "rate limited (per {}); retry after {} s",
        l.scope, l.retry_after
    )
}

/// A request over the per-principal rate limit: 429 with `Retry-After`, and an event.
fn limited(gw: &Shared, route: &Arc<Route>, l: &Limited) -> Response {
    let msg = record_limited(gw, route, None, l);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, HeaderValue::from(l.retry_after))],
        axum::Json(json!({"error": msg})),
    )
        .into_response()
}

/// The upstream could not be reached: a JSON-RPC error for each forwarded request (one object,
/// or an array for a batch, with the gateway's `errors` for the requests it refused).
fn upstream_down(
    server: &str,
    url: &reqwest::Url,
    e: &reqwest::Error,
    ids: Vec<Value>,
    mut errors: Vec<Value>,
    batch: bool,
) -> Response {
    let msg = format!("upstream {server} is unreachable at {url} ({}); check that it runs and that gateway.upstreams.{server} is right", root_cause(e));
    let body = if batch {
        let mut all: Vec<Value> = ids
            .iter()
            .map(|id| rpc_error(id, UPSTREAM_DOWN_CODE, &msg))
            .collect();
        all.append(&mut errors);
        Value::Array(all)
    } else {
        match ids.first() {
            Some(id) => rpc_error(id, UPSTREAM_DOWN_CODE, &msg),
            None => json!({"error": msg}),
        }
    };
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
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

/// Streams the upstream's response back, tapping a copy of each chunk for the monitor, and
/// rewriting it on the way when `rewrite` says so.
fn relay(
    gw: &Shared,
    resp: reqwest::Response,
    route: Arc<Route>,
    session: Arc<str>,
    rewrite: Rewrite,
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
    let merge = status.is_success() && !rewrite.errors.is_empty();
    if !sse && !json {
        if merge {
            // The upstream took the rest without answering (202: notifications only), so the
            // gateway's errors are the whole answer.
            headers.remove(header::CONTENT_LENGTH);
            headers.remove(header::CONTENT_TYPE);
            let answer = (StatusCode::OK, axum::Json(Value::Array(rewrite.errors)));
            return (headers, answer).into_response();
        }
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
        remaining: resp.content_length(),
        inner: resp.bytes_stream(),
        taps: gw.taps.clone(),
        stream,
        done: false,
    };
    // An upstream that refused the forwarded part answers for the whole body.
    if rewrite.is_empty() || !status.is_success() {
        return build(status, headers, Body::from_stream(tapped));
    }
    headers.remove(header::CONTENT_LENGTH);
    build(status, headers, rewrite::body(tapped, sse, rewrite))
}

fn build(status: StatusCode, headers: HeaderMap, body: Body) -> Response {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    *resp.headers_mut() = headers;
    resp
}

/// The upstream's body stream, with a copy of each chunk handed to the monitor.
///
/// A body with a `Content-Length` is complete when that many bytes have passed: hyper stops
/// polling a body it has sent whole, so the end of the stream may never be seen, and the
/// stream is dropped instead.
struct Tapped<S> {
    inner: S,
    taps: TapSender,
    stream: u64,
    done: bool,
    /// Bytes still to come, when the upstream said how many.
    remaining: Option<u64>,
}

impl<S> Tapped<S> {
    fn end(&mut self, how: StreamEnd) {
        if !self.done {
            self.done = true;
            self.taps.send(Tap::End {
                stream: self.stream,
                how,
            });
        }
    }
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
                let len = bytes.len() as u64;
                if let Some(left) = self.remaining.as_mut() {
                    *left = left.saturating_sub(len);
                    if *left == 0 {
                        self.end(StreamEnd::Complete);
                    }
                }
                return polled;
            }
            Poll::Ready(Some(Err(e))) => StreamEnd::Broken(format!(
                "the upstream's response stream broke off: {}",
                root_cause(e)
            )),
            Poll::Ready(None) => StreamEnd::Complete,
            Poll::Pending => return polled,
        };
        self.end(how);
        polled
    }
}

impl<S> Drop for Tapped<S> {
    fn drop(&mut self) {
        // An empty body (`Content-Length: 0`) may never be polled at all.
        let how = match self.remaining {
            Some(0) => StreamEnd::Complete,
            _ => StreamEnd::Abandoned,
        };
        self.end(how);
    }
}
