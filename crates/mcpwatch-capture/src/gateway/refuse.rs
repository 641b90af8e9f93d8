//! The gateway's refusals and its own error answers: bodies it cannot judge, sessions that
//! are not the caller's, rate limits, unreachable upstreams. Each refusal is recorded as a
//! security event so that detection sees probing.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpwatch_core::Level;
use serde_json::{json, Map, Value};

use super::batch::{rpc_error, Target};
use super::limits::Limited;
use super::monitor::{Route, SecurityFact, Tap};
use super::proxy::{Shared, UPSTREAM_DOWN_CODE};
use crate::error::root_cause;

/// A body that policy applies to but the gateway cannot read: refused (fail closed), and
/// recorded as a denial so that detection sees probing.
pub(super) fn unreadable(
    gw: &Shared,
    route: &Arc<Route>,
    session: &Arc<str>,
    why: &str,
) -> Response {
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

/// A caller presenting a session another principal opened, or one the gateway has no owner
/// for (it restarted, or forgot the binding to stay bounded): refused, and recorded. An
/// unknown session gets 404, which tells an MCP client to initialize a new one.
pub(super) fn foreign_session(
    gw: &Shared,
    route: &Arc<Route>,
    session: &str,
    known: bool,
) -> Response {
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
            "Denied: {} presented a {} session {}",
            route.user,
            route.server,
            if known {
                "opened by another user"
            } else {
                "the gateway does not know the owner of"
            }
        ),
        metadata: meta,
        server: Some(route.server.clone()),
        session: Some(Arc::from(session)),
    }));
    if !known {
        let msg = "Session not found: the gateway does not know who opened this Mcp-Session-Id (it may have restarted); start a new session with initialize";
        return (
            StatusCode::NOT_FOUND,
            axum::Json(
                json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32001, "message": msg}}),
            ),
        )
            .into_response();
    }
    let msg = "this Mcp-Session-Id belongs to another user; start your own session with initialize";
    (StatusCode::FORBIDDEN, axum::Json(json!({"error": msg}))).into_response()
}

/// Records a `rate_limited` event; returns the message for the caller.
pub(super) fn record_limited(
    gw: &Shared,
    route: &Arc<Route>,
    target: Option<&Target>,
    l: &Limited,
) -> String {
    let tool = target.and_then(|t| t.tool.as_deref());
    let mut meta = Map::new();
    meta.insert("user_id".into(), json!(route.user.as_ref()));
    meta.insert("scope".into(), json!(l.scope));
    meta.insert("retry_after".into(), json!(l.retry_after));
    if let Some(t) = tool {
        meta.insert("tool".into(), json!(t));
    }
    if let Some(t) = target {
        meta.insert("target".into(), json!(t.name));
    }
    let what = match (tool, target) {
        (Some(t), _) => format!(" calling {t}"),
        (None, Some(t)) => format!(" using {}", t.name),
        _ => String::new(),
    };
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
pub(super) fn limited(gw: &Shared, route: &Arc<Route>, l: &Limited) -> Response {
    let msg = record_limited(gw, route, None, l);
    (
        StatusCode::TOO_MANY_REQUESTS,
        [(header::RETRY_AFTER, HeaderValue::from(l.retry_after))],
        axum::Json(json!({"error": msg})),
    )
        .into_response()
}

/// A body with more messages than the per-principal burst: it can never pass, so say so.
pub(super) fn too_big_a_batch(
    gw: &Shared,
    route: &Arc<Route>,
    count: usize,
    burst: f64,
) -> Response {
    let l = Limited {
        scope: "principal",
        retry_after: 1,
    };
    record_limited(gw, route, None, &l);
    let msg = format!(
        "rate limited (per principal): a batch of {count} messages is more than the {burst} this principal may send at once; send smaller batches"
    );
    (
        StatusCode::TOO_MANY_REQUESTS,
        axum::Json(json!({"error": msg})),
    )
        .into_response()
}

/// The upstream could not be reached: a JSON-RPC error for each forwarded request (one object,
/// or an array for a batch, with the gateway's `errors` for the requests it refused).
pub(super) fn upstream_down(
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
