//! What the gateway decides for each message of a POST body before anything goes upstream.
//!
//! A body is one JSON-RPC message or a batch (protocol 2025-03-26). Policy (an `authorization`
//! event, JSON-RPC error -32001) and the per-tool rate limit (a `rate_limited` event, -32003)
//! judge every message on its own, so one refused call does not refuse the rest of a batch:
//! the gateway answers the refused requests itself, the remainder goes upstream as a smaller
//! batch, and [`super::rewrite`] merges the two answers into one response. A body the gateway
//! refuses entirely never reaches the upstream.

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use mcpwatch_core::Level;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::auth::Principal;
use super::monitor::{Route, SecurityFact, Tap};
use super::proxy::{Shared, DENIED_CODE, RATE_LIMITED_CODE};
use super::refuse::record_limited;
use crate::depth::MAX_READABLE_DEPTH;

/// One message, as far as routing decisions need it.
#[derive(Deserialize, Default)]
pub(super) struct Probe {
    #[serde(default)]
    jsonrpc: Option<String>,
    #[serde(default)]
    pub id: Option<Value>,
    #[serde(default)]
    pub method: Option<String>,
    #[serde(default)]
    params: Option<ProbeParams>,
    #[serde(default, deserialize_with = "present")]
    result: bool,
    #[serde(default, deserialize_with = "present")]
    error: bool,
}

#[derive(Deserialize, Default)]
struct ProbeParams {
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
    /// `completion/complete`'s `ref`: a prompt (by name) or a resource template (by URI).
    #[serde(default, rename = "ref")]
    reference: Option<ProbeRef>,
}

#[derive(Deserialize, Default)]
struct ProbeRef {
    #[serde(default, rename = "type")]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    uri: Option<String>,
}

/// True for a key that is there, whatever its value (`"result": null` included).
fn present<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    serde::de::IgnoredAny::deserialize(d).map(|_| true)
}

impl Probe {
    /// The id of a request (a message with a method and an id); `None` for anything else.
    pub fn request_id(&self) -> Option<&Value> {
        self.method.as_ref().and(self.id.as_ref())
    }

    /// Why this is not a JSON-RPC 2.0 request, notification or response, if it is not.
    fn not_jsonrpc(&self) -> Option<&'static str> {
        if self.jsonrpc.as_deref() != Some("2.0") {
            return Some("a message without \"jsonrpc\": \"2.0\"");
        }
        let response = self.id.is_some() && (self.result || self.error);
        (self.method.is_none() && !response).then_some(
            "a message that is neither a request (method) nor a response (id with result or error)",
        )
    }
}

/// A POST body cut into its messages.
pub(super) struct Parsed {
    /// Whether the body is a JSON array (a batch).
    pub batch: bool,
    /// Each message: its bytes within the body, and what routing needs of it.
    pub messages: Vec<(Bytes, Probe)>,
    /// Why (part of) the body could not be read as JSON-RPC, if it could not: then policy
    /// cannot judge it, and a principal under policy must not get it past the gateway.
    pub unreadable: Option<String>,
    /// Why the body is no JSON-RPC at all (an empty or nested batch, an item that is no
    /// object, an object that is no JSON-RPC message): refused to everyone, since what the
    /// upstream makes of it is anyone's guess and nothing could be counted or judged.
    pub invalid: Option<String>,
}

/// Reads a body. A message the gateway cannot read (not JSON, a repeated key, a `method` or
/// `params.name` that is not a string, …) gets a default probe and its reason is kept in
/// [`Parsed::unreadable`]: forwarded unjudged only when no policy applies (see `proxy`),
/// since the upstream's parser may read it differently, e.g. take the last of two `name`s.
pub(super) fn parse(body: &Bytes) -> Parsed {
    let mut unreadable = None;
    let mut invalid = None;
    let mut probe = |text: &[u8]| {
        match text.iter().find(|b| !b.is_ascii_whitespace()) {
            Some(b'{') => {}
            Some(b'[') => {
                invalid.get_or_insert_with(|| "a batch nested in a batch".to_string());
                return Probe::default();
            }
            _ => {
                invalid.get_or_insert_with(|| "a batch item that is not an object".to_string());
                return Probe::default();
            }
        }
        if crate::depth::exceeds(text, MAX_READABLE_DEPTH) {
            // The probe below may still read it (serde_json skips unknown fields without
            // recursing), but the monitor cannot read it whole and neither can policy.
            unreadable.get_or_insert_with(|| {
                format!("a message nested deeper than {MAX_READABLE_DEPTH} levels")
            });
        }
        match serde_json::from_slice::<Probe>(text) {
            Ok(p) => {
                if let Some(why) = p.not_jsonrpc() {
                    invalid.get_or_insert_with(|| why.to_string());
                }
                p
            }
            Err(e) => {
                unreadable.get_or_insert_with(|| e.to_string());
                Probe::default()
            }
        }
    };
    let (batch, messages) = match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'[') => match serde_json::from_slice::<Vec<&RawValue>>(body) {
            Ok(items) => {
                let messages: Vec<(Bytes, Probe)> = items
                    .into_iter()
                    .map(|raw| {
                        let p = probe(raw.get().as_bytes());
                        (body.slice_ref(raw.get().as_bytes()), p)
                    })
                    .collect();
                if messages.is_empty() {
                    invalid = Some("an empty batch".into());
                }
                (true, messages)
            }
            Err(e) => {
                unreadable = Some(e.to_string());
                (true, Vec::new())
            }
        },
        Some(b'{') => {
            let p = probe(body);
            (false, vec![(body.clone(), p)])
        }
        _ => {
            unreadable = Some("the body is not a JSON object or array".into());
            (false, Vec::new())
        }
    };
    Parsed {
        batch,
        messages,
        unreadable,
        invalid,
    }
}

/// The gateway's verdicts on one body.
pub(super) struct Judged {
    /// Per message (in body order), whether it goes upstream.
    pub forward: Vec<bool>,
    /// The gateway's JSON-RPC error responses to the requests it refused.
    pub errors: Vec<Value>,
    /// Refusals by policy.
    denied: usize,
    /// Refusals by the per-tool rate limit, and the longest wait among them.
    limited: usize,
    retry_after: u64,
}

impl Judged {
    /// Whether every message goes upstream.
    pub fn all_forwarded(&self) -> bool {
        self.denied + self.limited == 0
    }

    /// The messages that go upstream, as the body to forward (a batch stays a batch); `None`
    /// when the gateway refused every one.
    pub fn remainder(&self, parsed: &Parsed) -> Option<Bytes> {
        let kept: Vec<&[u8]> = parsed
            .messages
            .iter()
            .zip(&self.forward)
            .filter(|(_, f)| **f)
            .map(|((raw, _), _)| raw.as_ref())
            .collect();
        if kept.is_empty() || !parsed.batch {
            return None;
        }
        Some(Bytes::from(join_array(&kept)))
    }

    /// The whole answer when nothing went upstream: the errors (one object, or an array for a
    /// batch); 429 with `Retry-After` when only rate limits refused, 202 when only
    /// notifications were refused (they get no response).
    pub fn answer(self, batch: bool) -> Response {
        if self.errors.is_empty() {
            return StatusCode::ACCEPTED.into_response();
        }
        let status = if self.denied == 0 {
            StatusCode::TOO_MANY_REQUESTS
        } else {
            StatusCode::OK
        };
        let body = match (batch, self.errors.len()) {
            (false, 1) => self.errors.into_iter().next().unwrap_or(Value::Null),
            _ => Value::Array(self.errors),
        };
        let mut resp = (status, axum::Json(body)).into_response();
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
        }
        resp
    }
}

/// `[a,b,…]` from the bytes of JSON values.
pub(super) fn join_array(items: &[&[u8]]) -> Vec<u8> {
    let len = items.iter().map(|i| i.len() + 1).sum::<usize>() + 2;
    let mut out = Vec::with_capacity(len);
    out.push(b'[');
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.extend_from_slice(item);
    }
    out.push(b']');
    out
}

/// A JSON-RPC error response.
pub(super) fn rpc_error(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

/// Policy and the per-target rate limit for every message, with an event (and, for a denial,
/// a copy for the session tracker, which records the call as `denied`) for each refusal.
pub(super) fn judge(
    gw: &Shared,
    route: &Arc<Route>,
    principal: &Principal,
    session: &Arc<str>,
    parsed: &Parsed,
) -> Judged {
    let mut judged = Judged {
        forward: vec![true; parsed.messages.len()],
        errors: Vec::new(),
        denied: 0,
        limited: 0,
        retry_after: 0,
    };
    for (i, (raw, m)) in parsed.messages.iter().enumerate() {
        let Some(t) = target(&route.server, m) else {
            continue;
        };
        let refusal = match gw.policy.verdict(&principal.roles, &t.name) {
            Ok(true) => None,
            Ok(false) => Some(None),
            Err(e) => Some(Some(format!(
                "the resource URI has no canonical spelling: {e}"
            ))),
        };
        if let Some(why) = refusal {
            let reason = deny(gw, route, principal, session, raw, &t, why);
            judged.forward[i] = false;
            judged.denied += 1;
            if let Some(id) = m.request_id() {
                let message = format!("Forbidden: {reason}");
                judged.errors.push(rpc_error(id, DENIED_CODE, &message));
            }
            continue;
        }
        if let Err(l) = gw
            .limiter
            .per_target(&gw.clock, &principal.user_id, &t.bucket)
        {
            let message = record_limited(gw, route, Some(&t), &l);
            judged.forward[i] = false;
            judged.limited += 1;
            judged.retry_after = judged.retry_after.max(l.retry_after);
            if let Some(id) = m.request_id() {
                judged
                    .errors
                    .push(rpc_error(id, RATE_LIMITED_CODE, &message));
            }
        }
    }
    judged
}

/// What a message names, for policy and the per-target rate limit.
#[derive(Debug, PartialEq)]
pub(super) struct Target {
    /// What policy judges: `tool:everything/echo`, `prompt:s/p`, `resource:{uri}`.
    pub name: String,
    /// `call`, `get`, `read`, `subscribe`, `unsubscribe` or `complete`.
    pub action: &'static str,
    /// The rate-limit bucket: `server/tool` for a tool, the prompt's name for a prompt, and
    /// one bucket for all of a server's resources (URIs are the caller's to vary).
    pub bucket: String,
    /// `server/tool` for a tool (the `tool` of `rate_limited` events).
    pub tool: Option<String>,
}

/// What a message names, for the methods that name a tool, a prompt or a resource.
pub(super) fn target(server: &str, m: &Probe) -> Option<Target> {
    let (method, params) = (m.method.as_deref()?, m.params.as_ref()?);
    let tool = |n: &str| Target {
        name: format!("tool:{server}/{n}"),
        action: "call",
        bucket: format!("{server}/{n}"),
        tool: Some(format!("{server}/{n}")),
    };
    let prompt = |n: &str, action| Target {
        name: format!("prompt:{server}/{n}"),
        action,
        bucket: format!("prompt:{server}/{n}"),
        tool: None,
    };
    let resource = |u: &str, action| Target {
        name: format!("resource:{u}"),
        action,
        bucket: format!("resources:{server}"),
        tool: None,
    };
    match (method, &params.name, &params.uri, &params.reference) {
        ("tools/call", Some(n), _, _) => Some(tool(n)),
        ("prompts/get", Some(n), _, _) => Some(prompt(n, "get")),
        ("resources/read", _, Some(u), _) => Some(resource(u, "read")),
        ("resources/subscribe", _, Some(u), _) => Some(resource(u, "subscribe")),
        ("resources/unsubscribe", _, Some(u), _) => Some(resource(u, "unsubscribe")),
        ("completion/complete", _, _, Some(r)) => match (r.kind.as_deref(), &r.name, &r.uri) {
            (Some("ref/prompt"), Some(n), _) => Some(prompt(n, "complete")),
            (Some("ref/resource"), _, Some(u)) => Some(resource(u, "complete")),
            _ => None,
        },
        _ => None,
    }
}

/// Records a denial: the `authorization` event, and the message for the session tracker.
/// Returns the reason.
fn deny(
    gw: &Shared,
    route: &Arc<Route>,
    principal: &Principal,
    session: &Arc<str>,
    raw: &Bytes,
    t: &Target,
    why: Option<String>,
) -> String {
    let (target, action) = (&t.name, t.action);
    let reason = match why {
        Some(why) => format!("{} may not {action} {target}: {why}", principal.user_id),
        None => format!(
            "{} may not {action} {target} (gateway policy)",
            principal.user_id
        ),
    };
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
        body: raw.clone(),
        reason: reason.clone(),
    });
    reason
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_batch_is_cut_into_its_messages_and_the_remainder_keeps_their_bytes() {
        let body = Bytes::from_static(
            br#" [ {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret"}},
                 7 , {"jsonrpc": "2.0", "method": "notifications/initialized"} ] "#,
        );
        let parsed = parse(&body);
        assert!(parsed.batch);
        let methods: Vec<Option<&str>> = parsed
            .messages
            .iter()
            .map(|(_, m)| m.method.as_deref())
            .collect();
        assert_eq!(
            methods,
            [Some("tools/call"), None, Some("notifications/initialized")]
        );
        assert_eq!(
            target("up", &parsed.messages[0].1).map(|t| (t.name, t.action)),
            Some(("tool:up/secret".into(), "call"))
        );
        assert_eq!(
            parsed.invalid.as_deref(),
            Some("a batch item that is not an object")
        );
        let judged = |forward: Vec<bool>| Judged {
            forward,
            errors: Vec::new(),
            denied: 1,
            limited: 0,
            retry_after: 0,
        };
        let rest = judged(vec![false, true, true]).remainder(&parsed);
        assert_eq!(
            rest.as_deref(),
            Some(&br#"[7,{"jsonrpc": "2.0", "method": "notifications/initialized"}]"#[..])
        );
        assert_eq!(judged(vec![false, false, false]).remainder(&parsed), None);
        // A single message refused leaves nothing to forward.
        let one = parse(&Bytes::from_static(
            br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
        ));
        assert!(!one.batch);
        assert_eq!(judged(vec![false]).remainder(&one), None);
    }

    #[test]
    fn a_body_refused_whole_is_answered_by_the_gateway() {
        let answer = |batch: bool, errors: Vec<Value>, denied: usize, limited: usize| {
            let resp = Judged {
                forward: Vec::new(),
                errors,
                denied,
                limited,
                retry_after: 30,
            }
            .answer(batch);
            let retry = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            (resp.status().as_u16(), retry)
        };
        let e = |id: i64| rpc_error(&json!(id), DENIED_CODE, "Forbidden");
        assert_eq!(answer(false, vec![e(1)], 1, 0), (200, None));
        assert_eq!(answer(true, vec![e(1), e(2)], 1, 1), (200, None));
        assert_eq!(answer(true, vec![e(1)], 0, 1), (429, Some("30".into())));
        // Only notifications refused: nothing to answer.
        assert_eq!(answer(true, Vec::new(), 1, 0), (202, None));
    }
}
