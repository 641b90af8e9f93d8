//! What the gateway changes in an upstream's answer on its way back to the client.
//!
//! Three things, each only when needed: server requests that policy refuses the caller are
//! dropped from SSE streams ([`super::server_requests`]); list results (`tools/list`, `prompts/list`,
//! `resources/list`) lose what the caller may not use, matched to their requests by id so that
//! batches are filtered too; and when the gateway refused part of a batch ([`super::batch`]),
//! its errors are merged into the upstream's answer.
//!
//! A JSON answer is buffered, rewritten and sent as one array. An SSE answer stays a stream:
//! list results are rewritten event by event, and the gateway's errors go first, as SSE
//! `message` events before the upstream's. The MCP Streamable HTTP transport lets a server
//! send a batch's responses in any order and in separate events, and close the stream once all
//! are sent; sending the gateway's at the start delivers them at once rather than after the
//! slowest upstream call, and never after the upstream closed the stream or it broke off. They
//! carry no SSE `id`, so they leave a client's `Last-Event-ID` for resuming untouched.

use std::borrow::Cow;
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde_json::value::RawValue;
use serde_json::Value;

use super::batch::{join_array, rpc_error, Probe};
use super::policy::Policy;
use super::server_requests::{Guarded, ServerRequestGuard};
use super::sse::{event_data, with_data, SseSplitter};
use crate::jsonrpc::id_key;

/// What to change in one upstream answer.
pub(super) struct Rewrite {
    /// List results to filter.
    pub lists: Option<ListFilter>,
    /// The gateway's own responses to merge in.
    pub errors: Vec<Value>,
    /// The ids of the requests forwarded (needed when `errors` must be merged into an answer
    /// the upstream gave with an error status).
    pub ids: Vec<Value>,
    /// Server requests to refuse (SSE only: a JSON answer carries the response alone).
    pub guard: Option<ServerRequestGuard>,
}

impl Rewrite {
    /// Whether the answer passes unchanged.
    pub fn is_empty(&self) -> bool {
        self.lists.is_none() && self.errors.is_empty() && self.guard.is_none()
    }
}

/// Which listing a response answers.
#[derive(Clone, Copy, Debug, PartialEq)]
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

/// Filters list results by policy, for the list requests of one body.
pub(super) struct ListFilter {
    /// Each list request's id (as [`id_key`]) and what it lists.
    requests: Vec<(String, ListKind)>,
    policy: Arc<Policy>,
    roles: Vec<String>,
    server: Arc<str>,
}

impl ListFilter {
    /// A filter for the list requests among `forwarded`; `None` when there are none, or when
    /// the principal may use everything anyway.
    pub fn new<'a>(
        policy: &Arc<Policy>,
        roles: &[String],
        server: &Arc<str>,
        forwarded: impl Iterator<Item = &'a Probe>,
    ) -> Option<Self> {
        if policy.unrestricted(roles) {
            return None;
        }
        let requests: Vec<(String, ListKind)> = forwarded
            .filter_map(|m| Some((id_key(m.request_id()?), ListKind::of(m.method.as_deref()?)?)))
            .collect();
        (!requests.is_empty()).then(|| Self {
            requests,
            policy: policy.clone(),
            roles: roles.to_vec(),
            server: server.clone(),
        })
    }

    /// One JSON-RPC message with what the caller may not use removed from its list result;
    /// `None` when it is not the response to a list request, or nothing was removed.
    fn apply(&self, message: &[u8]) -> Option<Vec<u8>> {
        memchr::memmem::find(message, b"\"result\"")?;
        let mut v: Value = serde_json::from_slice(message).ok()?;
        if v.get("method").is_some() {
            // A request from the server: ids are numbered per direction.
            return None;
        }
        let id = id_key(v.get("id")?);
        let kind = self.requests.iter().find(|(k, _)| *k == id)?.1;
        let (key, field) = match kind {
            ListKind::Tools => ("tools", "name"),
            ListKind::Prompts => ("prompts", "name"),
            ListKind::Resources => ("resources", "uri"),
        };
        let items = v.get_mut("result")?.get_mut(key)?.as_array_mut()?;
        let before = items.len();
        items.retain(|item| {
            let name = item.get(field).and_then(Value::as_str).unwrap_or_default();
            let target = match kind {
                ListKind::Tools => format!("tool:{}/{name}", self.server),
                ListKind::Prompts => format!("prompt:{}/{name}", self.server),
                ListKind::Resources => format!("resource:{name}"),
            };
            self.policy.permits(&self.roles, &target)
        });
        (items.len() != before)
            .then(|| serde_json::to_vec(&v).ok())
            .flatten()
    }
}

/// A JSON-RPC payload (one message or a batch) with list results filtered and `errors`
/// appended (which makes it a batch); `None` when nothing changed, or when the payload is not
/// JSON-RPC (then it passes as the upstream sent it). Messages left alone keep their bytes.
pub(super) fn rewrite_messages(
    payload: &[u8],
    lists: Option<&ListFilter>,
    errors: &[Value],
) -> Option<Vec<u8>> {
    let array = match payload.iter().find(|b| !b.is_ascii_whitespace())? {
        b'[' => true,
        b'{' => false,
        _ => return None,
    };
    let items: Vec<&RawValue> = if array {
        serde_json::from_slice(payload).ok()?
    } else {
        vec![serde_json::from_slice(payload).ok()?]
    };
    let mut changed = false;
    let mut parts: Vec<Cow<'_, [u8]>> = items
        .iter()
        .map(
            |raw| match lists.and_then(|f| f.apply(raw.get().as_bytes())) {
                Some(filtered) => {
                    changed = true;
                    Cow::Owned(filtered)
                }
                None => Cow::Borrowed(raw.get().as_bytes()),
            },
        )
        .collect();
    if errors.is_empty() {
        if !changed {
            return None;
        }
        if !array {
            return parts.pop().map(Cow::into_owned);
        }
    }
    for e in errors {
        parts.push(Cow::Owned(serde_json::to_vec(e).ok()?));
    }
    let parts: Vec<&[u8]> = parts.iter().map(AsRef::as_ref).collect();
    Some(join_array(&parts))
}

/// `errors` as SSE `message` events, one each.
fn sse_events(errors: &[Value]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in errors {
        out.extend_from_slice(b"event: message\ndata: ");
        out.extend_from_slice(e.to_string().as_bytes());
        out.extend_from_slice(b"\n\n");
    }
    out
}

/// One SSE event as the client gets it: `None` when it passes unchanged, `Some(empty)` when
/// it is dropped (every message in it a refused server request).
fn pass_event(
    event: &[u8],
    lists: Option<&ListFilter>,
    guard: Option<&ServerRequestGuard>,
) -> Option<Vec<u8>> {
    let data = event_data(event)?;
    let mut data = Cow::Borrowed(&data[..]);
    let mut changed = false;
    if let Some(g) = guard {
        match g.judge(&data) {
            Guarded::Unchanged => {}
            Guarded::Dropped => return Some(Vec::new()),
            Guarded::Rest(rest) => {
                data = Cow::Owned(rest);
                changed = true;
            }
        }
    }
    if let Some(new) = lists.and_then(|l| rewrite_messages(&data, Some(l), &[])) {
        data = Cow::Owned(new);
        changed = true;
    }
    changed.then(|| with_data(event, &data))
}

/// The client's body from the upstream's (`stream`, already tapped), rewritten.
pub(super) fn body<S>(stream: S, sse: bool, rewrite: Rewrite) -> Body
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + Unpin + 'static,
{
    let Rewrite {
        lists,
        errors,
        guard,
        ..
    } = rewrite;
    if !sse {
        let merged = async move {
            let mut buf = Vec::new();
            let mut stream = stream;
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk?);
            }
            // A server request in a JSON answer reaches an MCP client as surely as one on a
            // stream (the Python SDK dispatches both), so it is judged here too. An answer of
            // nothing but refused requests becomes an empty batch, which the client reports as
            // an unreadable answer to its request.
            match guard.as_ref().map(|g| g.judge(&buf)) {
                Some(Guarded::Dropped) => buf = b"[]".to_vec(),
                Some(Guarded::Rest(rest)) => buf = rest,
                Some(Guarded::Unchanged) | None => {}
            }
            let out = rewrite_messages(&buf, lists.as_ref(), &errors).unwrap_or(buf);
            Ok::<_, reqwest::Error>(Bytes::from(out))
        };
        return Body::from_stream(futures_util::stream::once(merged));
    }
    let first = (!errors.is_empty()).then(|| Ok(Bytes::from(sse_events(&errors))));
    let first = futures_util::stream::iter(first);
    if lists.is_none() && guard.is_none() {
        return Body::from_stream(first.chain(stream));
    }
    let state = SseFilter {
        inner: stream,
        splitter: SseSplitter::new(MAX_FILTERED_EVENT),
        lists,
        guard,
    };
    let filtered = futures_util::stream::unfold(Some(state), |state| async move {
        let mut st = state?;
        loop {
            let Some(chunk) = st.inner.next().await else {
                // An unfinished last event is passed on too, filtered like any other.
                let rest = st.splitter.take_rest();
                if rest.is_empty() {
                    return None;
                }
                let out = pass_event(&rest, st.lists.as_ref(), st.guard.as_ref()).unwrap_or(rest);
                return Some((Ok(Bytes::from(out)), None));
            };
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => return Some((Err(e), None)),
            };
            let mut out = Vec::with_capacity(chunk.len());
            let (lists, guard) = (st.lists.as_ref(), st.guard.as_ref());
            let skipped = st
                .splitter
                .feed(&chunk, |event| match pass_event(event, lists, guard) {
                    Some(new) => out.extend_from_slice(&new),
                    None => {
                        out.extend_from_slice(event);
                        out.extend_from_slice(b"\n\n");
                    }
                });
            if skipped > 0 {
                // An event too large to read may hold what the caller must not see: the
                // stream ends here, with an error saying why.
                out.extend_from_slice(&sse_events(&[too_large()]));
                return Some((Ok(Bytes::from(out)), None));
            }
            if !out.is_empty() {
                return Some((Ok(Bytes::from(out)), Some(st)));
            }
        }
    });
    Body::from_stream(first.chain(filtered))
}

/// Most bytes of an upstream's error answer read to merge the gateway's errors into it.
const MAX_REFUSAL: usize = 1 << 20;

/// The client's body when the upstream refused the forwarded part of a batch (an error
/// status) and the gateway refused the rest: one JSON array that answers every request, with
/// the upstream's own responses, an error for each forwarded request it left unanswered
/// (carrying what it said), and the gateway's errors.
pub(super) fn refused_batch<S>(stream: S, status: u16, rewrite: Rewrite) -> Body
where
    S: Stream<Item = reqwest::Result<Bytes>> + Send + Unpin + 'static,
{
    let merged = async move {
        let mut buf = Vec::new();
        let mut stream = stream;
        while let Some(chunk) = stream.next().await {
            buf.extend_from_slice(&chunk?);
            if buf.len() > MAX_REFUSAL {
                buf.truncate(MAX_REFUSAL);
                break;
            }
        }
        let sse_data = event_data(&buf);
        let payload = sse_data.as_deref().unwrap_or(&buf);
        let items = match serde_json::from_slice::<Value>(payload) {
            Ok(Value::Array(items)) => items,
            Ok(v @ Value::Object(_)) => vec![v],
            _ => Vec::new(),
        };
        let said = items
            .iter()
            .find_map(|m| m["error"]["message"].as_str().map(str::to_string))
            .unwrap_or_else(|| String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned());
        let mut answers: Vec<Value> = items
            .into_iter()
            .filter(|m| {
                !m["id"].is_null() && (m.get("result").is_some() || m.get("error").is_some())
            })
            .collect();
        let answered: Vec<String> = answers.iter().map(|m| id_key(&m["id"])).collect();
        let message = format!("the upstream refused this batch with HTTP {status}: {said}");
        for id in &rewrite.ids {
            if !answered.contains(&id_key(id)) {
                answers.push(rpc_error(id, UPSTREAM_REFUSED_CODE, &message));
            }
        }
        answers.extend(rewrite.errors);
        let out = serde_json::to_vec(&Value::Array(answers)).unwrap_or_default();
        Ok::<_, reqwest::Error>(Bytes::from(out))
    };
    Body::from_stream(futures_util::stream::once(merged))
}

/// JSON-RPC error code for a request the upstream refused with an HTTP error status.
pub const UPSTREAM_REFUSED_CODE: i64 = -32004;

/// The largest SSE event list filtering reads; a larger one ends the stream (fail closed).
pub(super) const MAX_FILTERED_EVENT: usize = 16 << 20;

/// An upstream SSE answer being filtered event by event.
struct SseFilter<S> {
    inner: S,
    splitter: SseSplitter,
    lists: Option<ListFilter>,
    guard: Option<ServerRequestGuard>,
}

/// The error that ends a filtered stream at an event too large to read.
fn too_large() -> Value {
    serde_json::json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32603, "message": format!(
        "the upstream sent an event over {} MiB, which the gateway cannot filter by policy; the stream ends here. Ask for less (e.g. paginate the list)",
        MAX_FILTERED_EVENT >> 20
    )}})
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use serde_json::json;

    use super::*;
    use crate::gateway::batch::{parse, rpc_error};
    use crate::gateway::config::{PolicySection, RoleRules};

    /// A filter for the list requests of `body`, for a `dev` who may not use `tool:up/secret`,
    /// `resource:note://private` or `prompt:up/hidden`.
    fn filter(body: &str) -> Option<ListFilter> {
        let deny = [
            "tool:up/secret",
            "resource:note://private",
            "prompt:up/hidden",
        ];
        let rules = RoleRules {
            allow: None,
            deny: deny.iter().map(|d| d.to_string()).collect(),
        };
        let cfg = PolicySection {
            default: None,
            roles: [("dev".to_string(), rules)].into(),
        };
        let policy = Arc::new(Policy::build(&cfg).expect("a valid policy"));
        let parsed = parse(&Bytes::from(body.to_string()));
        let server: Arc<str> = Arc::from("up");
        let probes = parsed.messages.iter().map(|(_, m)| m);
        ListFilter::new(&policy, &["dev".to_string()], &server, probes)
    }

    /// Rewrites the upstream's `answer` to the client's `requests`, with the gateway's `errors`.
    fn check(requests: &str, answer: &str, errors: &[Value], expected: Option<&str>) {
        let f = filter(requests);
        let got = rewrite_messages(answer.as_bytes(), f.as_ref(), errors)
            .map(|b| String::from_utf8_lossy(&b).into_owned());
        assert_eq!(got.as_deref(), expected, "{requests} → {answer}");
    }

    #[test]
    fn list_results_are_filtered_by_the_id_of_their_request_in_batches_too() {
        let batch = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"},
            {"jsonrpc":"2.0","id":"r","method":"resources/list"},
            {"jsonrpc":"2.0","id":3,"method":"tools/call","params":{"name":"echo"}}]"#;
        // Answers in any order; a result that is not a listing keeps its exact bytes.
        check(
            batch,
            r#"[{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"secret"}],"n":1.0}},
                {"jsonrpc":"2.0","id":"r","result":{"resources":[{"uri":"note://public"},{"uri":"note://private"}]}},
                {"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"echo"},{"name":"secret"}]}}]"#,
            &[],
            Some(concat!(
                r#"[{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"secret"}],"n":1.0}},"#,
                r#"{"id":"r","jsonrpc":"2.0","result":{"resources":[{"uri":"note://public"}]}},"#,
                r#"{"id":1,"jsonrpc":"2.0","result":{"tools":[{"name":"echo"}]}}]"#
            )),
        );
        // One SSE event may carry one response of the batch.
        check(
            batch,
            r#"{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"secret"},{"name":"add"}]}}"#,
            &[],
            Some(r#"{"id":1,"jsonrpc":"2.0","result":{"tools":[{"name":"add"}]}}"#),
        );
        let prompts = r#"{"jsonrpc":"2.0","id":7,"method":"prompts/list"}"#;
        check(
            prompts,
            r#"{"jsonrpc":"2.0","id":7,"result":{"prompts":[{"name":"hidden"},{"name":"open"}]}}"#,
            &[],
            Some(r#"{"id":7,"jsonrpc":"2.0","result":{"prompts":[{"name":"open"}]}}"#),
        );
        // Nothing hidden, another id, or a request from the server: unchanged.
        for answer in [
            r#"{"jsonrpc":"2.0","id":7,"result":{"prompts":[{"name":"open"}]}}"#,
            r#"{"jsonrpc":"2.0","id":8,"result":{"prompts":[{"name":"hidden"}]}}"#,
            r#"{"jsonrpc":"2.0","id":7,"method":"x","result":{"prompts":[{"name":"hidden"}]}}"#,
            r#"{"jsonrpc":"2.0","method":"notifications/progress","params":{}}"#,
        ] {
            check(prompts, answer, &[], None);
        }
    }

    #[test]
    fn the_gateways_errors_join_the_upstreams_answer_as_one_batch() {
        let denied = [rpc_error(&json!(2), -32001, "Forbidden")];
        let err = r#"{"error":{"code":-32001,"message":"Forbidden"},"id":2,"jsonrpc":"2.0"}"#;
        let ok = r#"{"jsonrpc":"2.0","id":1,"result":{}}"#;
        check(
            "[]",
            &format!("[{ok}]"),
            &denied,
            Some(&format!("[{ok},{err}]")),
        );
        // A server may answer a one-request batch with a bare object.
        check("[]", ok, &denied, Some(&format!("[{ok},{err}]")));
        check("[]", " [ ] ", &denied, Some(&format!("[{err}]")));
        // Not JSON-RPC: passed as the upstream sent it.
        check("[]", "Internal Server Error", &denied, None);
        let tools = r#"[{"jsonrpc":"2.0","id":1,"method":"tools/list"}]"#;
        check(
            tools,
            r#"[{"jsonrpc":"2.0","id":1,"result":{"tools":[{"name":"secret"}]}}]"#,
            &[rpc_error(&json!(2), -32001, "Forbidden")],
            Some(&format!(
                r#"[{{"id":1,"jsonrpc":"2.0","result":{{"tools":[]}}}},{err}]"#
            )),
        );
    }

    #[test]
    fn errors_go_first_as_sse_message_events() {
        let events = sse_events(&[rpc_error(&json!(2), -32003, "rate limited")]);
        assert_eq!(
            String::from_utf8_lossy(&events),
            "event: message\ndata: {\"error\":{\"code\":-32003,\"message\":\"rate limited\"},\"id\":2,\"jsonrpc\":\"2.0\"}\n\n"
        );
    }
}
