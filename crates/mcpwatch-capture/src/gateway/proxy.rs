//! The proxy: `/mcp/{name}` → the named upstream, inside out per request:
//! upstream lookup (404, naming the upstreams only when the gateway is open) → authentication
//! ([`super::login`]: 401, 429 for an address with too many failures, `authentication` event)
//! → session ownership (403, 404 for a session without a known owner) → for GET and DELETE
//! the per-principal rate limit (429) → for POST: body read (413, 408 when it is slow), bodies
//! that are no JSON-RPC refused (400), the per-principal rate limit a token per message
//! (429), policy and the per-target rate limit per message ([`super::batch`]: JSON-RPC
//! errors, `authorization` and `rate_limited` events) → forward what is left → response
//! streamed back chunk by chunk ([`super::rewrite`]).
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
use std::time::Duration;

use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use mcpwatch_core::clock::SharedClock;
use serde_json::{json, Value};

use super::auth::{Authenticator, Principal};
use super::batch;
use super::limits::RateLimiter;
use super::login::{authenticate, FailureThrottle};
use super::monitor::{Route, StreamEnd, Tap, TapSender};
use super::owners::{Ownership, SessionOwners};
use super::policy::Policy;
use super::refuse::{foreign_session, limited, too_big_a_batch, unreadable, upstream_down};
use super::rewrite::{self, ListFilter, Rewrite};
use super::server_requests::ServerRequestGuard;
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
    /// Failed authentications per source address.
    pub failures: FailureThrottle,
    /// How long a request body may take to arrive.
    pub body_timeout: Duration,
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
        // Strangers learn nothing of what is served; an open gateway says it to everyone.
        let msg = if gw.auth.enabled() {
            format!("unknown upstream {name:?}; check the URL")
        } else {
            let known: Vec<&str> = gw.upstreams.keys().map(String::as_str).collect();
            format!(
                "unknown upstream {name:?}; this gateway serves /mcp/{{{}}}",
                known.join(",")
            )
        };
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
    // A POST costs a token per message, taken once its body is read.
    if parts.method != Method::POST {
        if let Err(l) = gw.limiter.request(&gw.clock, &principal.user_id) {
            return limited(&gw, &route, &l);
        }
    }
    let session: Option<Arc<str>> = parts
        .headers
        .get("mcp-session-id")
        .and_then(|v| v.to_str().ok())
        .map(Arc::from);
    if let Some(s) = session.as_deref() {
        if gw.auth.enabled() {
            match gw.owners.owner(&route.server, s, &route.user) {
                Ownership::Caller => {}
                Ownership::Other => return foreign_session(&gw, &route, s, true),
                Ownership::Unknown => return foreign_session(&gw, &route, s, false),
            }
        }
    }
    let headers = forward_headers(&parts.headers, gw.auth.enabled());
    match parts.method {
        Method::POST => post(gw.clone(), url, route, principal, session, headers, body).await,
        Method::GET | Method::DELETE => {
            let method = parts.method.clone();
            let session = session.unwrap_or_else(|| Arc::from(""));
            // The GET stream carries the server's requests that answer no client request.
            let guard = (method == Method::GET)
                .then(|| {
                    ServerRequestGuard::new(
                        &gw.policy, &gw.client, url, &headers, &gw.taps, &route, &session,
                        &principal,
                    )
                })
                .flatten();
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
                ids: Vec::new(),
                guard,
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
    let read = tokio::time::timeout(gw.body_timeout, axum::body::to_bytes(body, gw.max_body));
    let bytes = match read.await {
        Ok(Ok(b)) => b,
        Ok(Err(_)) => {
            let msg = format!("request body over {} bytes; raise gateway.limits.max_body_bytes if this is expected", gw.max_body);
            return (
                StatusCode::PAYLOAD_TOO_LARGE,
                axum::Json(json!({"error": msg})),
            )
                .into_response();
        }
        Err(_) => {
            let msg = format!(
                "the request body did not arrive within {} s; send it at once (gateway.limits.body_read_timeout_secs)",
                gw.body_timeout.as_secs()
            );
            return (
                StatusCode::REQUEST_TIMEOUT,
                [(header::CONNECTION, "close")],
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
    // Refusals cost tokens too, so that a flood of bad bodies is limited like any other.
    let count = parsed.messages.len().max(1);
    if let Some(burst) = gw.limiter.principal_burst() {
        if count as f64 > burst {
            return too_big_a_batch(&gw, &route, count, burst);
        }
    }
    if let Err(l) = gw.limiter.messages(&gw.clock, &principal.user_id, count) {
        return limited(&gw, &route, &l);
    }
    if let Some(why) = &parsed.invalid {
        return unreadable(&gw, &route, &session, why);
    }
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
        // Bounded: the monitor keeps it only when it is a well-formed 55-byte traceparent.
        traceparent: headers
            .get("traceparent")
            .and_then(|v| v.to_str().ok())
            .filter(|v| v.len() <= 256)
            .map(str::to_owned),
    });
    let mut guard = ServerRequestGuard::new(
        &gw.policy, &gw.client, url, &headers, &gw.taps, &route, &session, &principal,
    );
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
    let ids = if errors.is_empty() {
        Vec::new()
    } else {
        forwarded()
            .filter_map(|m| m.request_id().cloned())
            .collect()
    };
    if provisional {
        if let Some(id) = resp
            .headers()
            .get("mcp-session-id")
            .and_then(|v| v.to_str().ok())
        {
            let to: Arc<str> = Arc::from(id);
            if let Some(g) = guard.as_mut() {
                g.set_session(&to);
            }
            let rewrite = Rewrite {
                lists,
                errors,
                ids,
                guard,
            };
            gw.owners.bind(&route.server, &to, &route.user);
            gw.taps.send(Tap::Alias {
                server: route.server.clone(),
                from: session.clone(),
                to: to.clone(),
            });
            return relay(&gw, resp, route, to, rewrite, Some(forward));
        }
    }
    let rewrite = Rewrite {
        lists,
        errors,
        ids,
        guard,
    };
    relay(&gw, resp, route, session, rewrite, Some(forward))
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
    mut rewrite: Rewrite,
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
        // Server requests travel in JSON-RPC only: a body of another type is not held back.
        rewrite.guard = None;
    }
    let merge = status.is_success() && !rewrite.errors.is_empty();
    // The upstream refused what was forwarded, the gateway the rest: every request still
    // gets its answer.
    let refused = !status.is_success() && !rewrite.errors.is_empty();
    if refused {
        headers.remove(header::CONTENT_LENGTH);
        headers.insert(
            header::CONTENT_TYPE,
            axum::http::HeaderValue::from_static("application/json"),
        );
    }
    if refused {
        // The forwarded requests failed; the monitor records them so, not as pending.
        if let Some(body) = request {
            gw.taps.send(Tap::Failed {
                session,
                route,
                body,
                reason: format!("the upstream refused the batch with HTTP {status}"),
            });
        }
        let body = rewrite::refused_batch(resp.bytes_stream(), status.as_u16(), rewrite);
        return build(StatusCode::OK, headers, body);
    }
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
