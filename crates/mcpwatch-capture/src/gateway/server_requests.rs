//! What a server asks of the client, judged by policy on its way back: `sampling/createMessage`
//! as `sampling:{server}`, `elicitation/create` as `elicitation:{server}`, refused only by an
//! explicit deny ([`Policy::denies_server_request`]).
//!
//! A refused request never reaches the client: [`super::rewrite`] drops it from the upstream's
//! SSE stream (a POST's response stream or the GET stream; from a batch, only the refused
//! messages). The gateway answers the upstream itself, with a JSON-RPC error for the request's
//! id POSTed on the same session (as the client would have answered), records an
//! `authorization` event naming the server, the method, the principal and the role that
//! denied, and tells the session tracker, which completes the request as `denied`.

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue};
use bytes::Bytes;
use mcpwatch_core::Level;
use serde::Deserialize;
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

use super::auth::Principal;
use super::batch::{join_array, rpc_error};
use super::monitor::{Route, SecurityFact, Tap, TapSender};
use super::policy::Policy;
use super::proxy::DENIED_CODE;
use crate::error::root_cause;

/// The server requests policy can refuse: method, and the prefix of its policy target.
const JUDGED: [(&str, &str); 2] = [
    ("sampling/createMessage", "sampling"),
    ("elicitation/create", "elicitation"),
];

/// Refuses, on one response stream, the server requests that policy denies its principal.
pub(super) struct ServerRequestGuard {
    /// Per entry of [`JUDGED`]: the role that denies it, if one does.
    denied: [Option<String>; 2],
    upstream: reqwest::Url,
    client: reqwest::Client,
    /// What the gateway's answer is POSTed with: the client's headers as forwarded.
    headers: HeaderMap,
    taps: TapSender,
    route: Arc<Route>,
    session: Arc<str>,
    roles: Vec<String>,
}

/// What became of one SSE payload.
pub(super) enum Guarded {
    /// Nothing in it was refused.
    Unchanged,
    /// Every message in it was refused: the event is dropped.
    Dropped,
    /// Some messages of a batch were refused: the rest.
    Rest(Vec<u8>),
}

#[derive(Deserialize)]
struct Probe {
    #[serde(default)]
    id: Option<Value>,
    #[serde(default)]
    method: Option<String>,
}

impl ServerRequestGuard {
    /// A guard for a stream of `route`'s upstream answering `principal`; `None` when policy
    /// lets it receive every server request (then nothing is read on its behalf).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        policy: &Policy,
        client: &reqwest::Client,
        upstream: &reqwest::Url,
        headers: &HeaderMap,
        taps: &TapSender,
        route: &Arc<Route>,
        session: &Arc<str>,
        principal: &Principal,
    ) -> Option<Self> {
        if !policy.judges_server_requests() {
            return None;
        }
        let denied = JUDGED.map(|(_, kind)| {
            policy
                .denies_server_request(&principal.roles, &format!("{kind}:{}", route.server))
                .map(str::to_string)
        });
        if denied.iter().all(Option::is_none) {
            return None;
        }
        let mut headers = headers.clone();
        for h in [header::CONTENT_TYPE, header::ACCEPT, header::CONTENT_LENGTH] {
            headers.remove(h);
        }
        headers.remove("last-event-id");
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(
            header::ACCEPT,
            HeaderValue::from_static("application/json, text/event-stream"),
        );
        Some(Self {
            denied,
            upstream: upstream.clone(),
            client: client.clone(),
            headers,
            taps: taps.clone(),
            route: route.clone(),
            session: session.clone(),
            roles: principal.roles.clone(),
        })
    }

    /// The session the answers go to, once the upstream has named it.
    pub fn set_session(&mut self, session: &Arc<str>) {
        self.session = session.clone();
    }

    /// Judges one SSE payload (one message or a batch), answering what it refuses.
    pub fn judge(&self, payload: &[u8]) -> Guarded {
        let named = JUDGED.iter().zip(&self.denied).any(|((method, _), role)| {
            role.is_some() && memchr::memmem::find(payload, method.as_bytes()).is_some()
        });
        if !named {
            return Guarded::Unchanged;
        }
        let array = payload.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'[');
        let items: Vec<&RawValue> = if array {
            match serde_json::from_slice(payload) {
                Ok(items) => items,
                Err(_) => return Guarded::Unchanged,
            }
        } else {
            match serde_json::from_slice(payload) {
                Ok(item) => vec![item],
                Err(_) => return Guarded::Unchanged,
            }
        };
        let mut kept: Vec<&[u8]> = Vec::with_capacity(items.len());
        for raw in &items {
            let refused = serde_json::from_str::<Probe>(raw.get())
                .ok()
                .and_then(|p| Some((p.id?, p.method?)))
                .and_then(|(id, method)| {
                    let i = JUDGED.iter().position(|(m, _)| *m == method)?;
                    let role = self.denied[i].as_deref()?;
                    Some((id, i, role))
                });
            match refused {
                Some((id, i, role)) => self.refuse(&id, i, role),
                None => kept.push(raw.get().as_bytes()),
            }
        }
        match (kept.len() == items.len(), kept.is_empty()) {
            (true, _) => Guarded::Unchanged,
            (false, true) => Guarded::Dropped,
            (false, false) => Guarded::Rest(join_array(&kept)),
        }
    }

    /// Refuses one request: the event, the tracker's `denied`, the answer to the upstream.
    fn refuse(&self, id: &Value, which: usize, role: &str) {
        let (method, kind) = JUDGED[which];
        let server = &self.route.server;
        let target = format!("{kind}:{server}");
        let reason = format!(
            "{} may not receive {method} from {server} (gateway policy: role {role} denies {target})",
            self.route.user
        );
        let mut meta = Map::new();
        meta.insert("user_id".into(), json!(self.route.user.as_ref()));
        meta.insert("resource".into(), json!(target));
        meta.insert("action".into(), json!("receive"));
        meta.insert("method".into(), json!(method));
        meta.insert("request_id".into(), json!(crate::jsonrpc::id_display(id)));
        meta.insert("result".into(), json!("denied"));
        meta.insert("roles".into(), json!(self.roles));
        meta.insert("role".into(), json!(role));
        self.taps.send(Tap::Security(SecurityFact {
            event_type: "authorization",
            level: Level::Warning,
            message: format!("Denied: {reason}"),
            metadata: meta,
            server: Some(server.clone()),
            session: Some(self.session.clone()),
        }));
        self.taps.send(Tap::ServerRequestDenied {
            session: self.session.clone(),
            route: self.route.clone(),
            id: id.clone(),
            reason: reason.clone(),
        });
        let answer = rpc_error(id, DENIED_CODE, &format!("Forbidden: {reason}"));
        let mut headers = self.headers.clone();
        if !self.session.is_empty() && !self.session.starts_with('~') {
            if let Ok(v) = HeaderValue::from_str(&self.session) {
                headers.insert("mcp-session-id", v);
            }
        }
        let sent = self
            .client
            .post(self.upstream.clone())
            .headers(headers)
            .body(Bytes::from(answer.to_string()))
            .send();
        let (taps, route, session) = (self.taps.clone(), self.route.clone(), self.session.clone());
        tokio::spawn(async move {
            let why = match sent.await {
                Ok(r) if r.status().is_success() => return,
                Ok(r) => format!("it answered HTTP {}", r.status()),
                Err(e) => root_cause(&e),
            };
            let mut meta = Map::new();
            meta.insert("user_id".into(), json!(route.user.as_ref()));
            meta.insert("method".into(), json!(method));
            meta.insert("reason".into(), json!(why));
            taps.send(Tap::Security(SecurityFact {
                event_type: "denial_unanswered",
                level: Level::Warning,
                message: format!(
                    "The gateway refused {method} from {} but could not tell it so ({why}); the server waits until its own timeout",
                    route.server
                ),
                metadata: meta,
                server: Some(route.server.clone()),
                session: Some(session),
            }));
        });
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::gateway::config::{PolicySection, RoleRules};

    fn policy() -> Policy {
        let dev = RoleRules {
            allow: Some(vec!["tool:**".into()]),
            deny: vec!["sampling:up".into()],
        };
        let cfg = PolicySection {
            default: None,
            roles: [("dev".to_string(), dev)].into(),
        };
        Policy::build(&cfg).expect("a valid policy")
    }

    fn principal(role: &str) -> Principal {
        Principal {
            user_id: "alice".into(),
            roles: vec![role.into()],
            method: "api_key",
        }
    }

    #[test]
    fn only_the_denied_requests_of_a_batch_are_dropped_and_an_unanswerable_denial_is_recorded() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let (taps, mut rx) = TapSender::channel(16);
            let route = Arc::new(Route {
                server: Arc::from("up"),
                user: Arc::from("alice"),
            });
            let session: Arc<str> = Arc::from("s-1");
            // Nothing listens there: the answer to the upstream cannot be delivered.
            let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("a port");
            let upstream: reqwest::Url =
                format!("http://{}/mcp", closed.local_addr().expect("addr"))
                    .parse()
                    .expect("a URL");
            drop(closed);
            let client = reqwest::Client::new();
            let new = |role: &str| {
                ServerRequestGuard::new(
                    &policy(),
                    &client,
                    &upstream,
                    &HeaderMap::new(),
                    &taps,
                    &route,
                    &session,
                    &principal(role),
                )
            };
            assert!(new("ops").is_none(), "nothing denied: nothing read");
            let guard = new("dev").expect("sampling is denied to dev");
            let sampling =
                r#"{"jsonrpc":"2.0","id":7,"method":"sampling/createMessage","params":{}}"#;
            let elicit = r#"{"jsonrpc":"2.0","id":8,"method":"elicitation/create","params":{}}"#;
            let log = r#"{"jsonrpc":"2.0","method":"notifications/message","params":{}}"#;
            assert!(matches!(guard.judge(log.as_bytes()), Guarded::Unchanged));
            assert!(matches!(guard.judge(elicit.as_bytes()), Guarded::Unchanged));
            let batch = format!("[{sampling},{log}]");
            match guard.judge(batch.as_bytes()) {
                Guarded::Rest(rest) => assert_eq!(rest, format!("[{log}]").as_bytes()),
                _ => panic!("the notification is kept"),
            }
            assert!(matches!(guard.judge(sampling.as_bytes()), Guarded::Dropped));
            let mut seen = Vec::new();
            while seen.len() < 6 {
                let tap = tokio::time::timeout(Duration::from_secs(10), rx.recv())
                    .await
                    .expect("the taps arrive")
                    .expect("a tap");
                seen.push(match tap {
                    Tap::Security(f) => {
                        if f.event_type == "authorization" {
                            assert_eq!(f.metadata["resource"], "sampling:up");
                            assert_eq!(f.metadata["method"], "sampling/createMessage");
                            assert_eq!(f.metadata["role"], "dev");
                        }
                        f.event_type.to_string()
                    }
                    Tap::ServerRequestDenied { id, reason, .. } => {
                        assert_eq!(id, serde_json::json!(7));
                        assert!(reason.contains("role dev denies sampling:up"), "{reason}");
                        "denied".into()
                    }
                    _ => "other".into(),
                });
            }
            seen.sort();
            assert_eq!(
                seen,
                [
                    "authorization",
                    "authorization",
                    "denial_unanswered",
                    "denial_unanswered",
                    "denied",
                    "denied"
                ]
            );
        });
    }
}
