//! Requests a server sends to the client: `sampling/createMessage` (the server asks the client's
//! model to generate), `elicitation/create` (it asks the user for input) and `roots/list`. A
//! malicious server reaches the model and the user through them, so each is an event of its
//! own (`session`/`sampling_request`, `elicitation_request`, `roots_request`) with a redacted,
//! bounded summary of what was asked, and its answer is another (`sampling_response`, …) that
//! names the request's event and says how it was answered: `accepted`, `declined`,
//! `cancelled` or `error` (and `timeout`, `transport_error`, `denied` as for any request); for
//! sampling, the model and the stop reason.

use mcpwatch_core::{Event, Level, Redactor};
use serde_json::{json, Map, Value};

use super::correlate::Pending;
use super::outcome::Ending;
use super::summary::REDACT_LOOKAHEAD;
use super::{Direction, SessionTracker};
use crate::jsonrpc::{id_display, id_key};

/// Longest text kept of one message, system prompt or schema description.
pub const MAX_REQUEST_TEXT: usize = 4 * 1024;
/// Messages of one sampling request kept (the last ones: they are what the model answers).
pub const MAX_REQUEST_MESSAGES: usize = 16;
/// Fields of one requested elicitation schema kept.
pub const MAX_REQUESTED_FIELDS: usize = 32;
/// Longest short string kept (a name, a role, a model).
const MAX_NAME: usize = 128;

/// The server-initiated requests the tracker follows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ServerRequest {
    Sampling,
    Elicitation,
    Roots,
}

impl ServerRequest {
    /// The kind of a request travelling from server to client, if it is one of these.
    pub(super) fn of(method: &str) -> Option<Self> {
        match method {
            "sampling/createMessage" => Some(Self::Sampling),
            "elicitation/create" => Some(Self::Elicitation),
            "roots/list" => Some(Self::Roots),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Sampling => "sampling",
            Self::Elicitation => "elicitation",
            Self::Roots => "roots",
        }
    }
}

/// What a pending server request remembers for its answer.
#[derive(Debug)]
pub(super) struct Asked {
    kind: ServerRequest,
    event_id: String,
}

impl SessionTracker {
    /// A server request (seen through [`Self::on_frame`]) that a gateway refused by policy and
    /// never passed to the client: completed at once with outcome `denied`.
    pub fn on_server_request_denied(&mut self, id: &Value, reason: &str, out: &mut Vec<Event>) {
        let dir = Direction::ServerToClient;
        if let Some(p) = self.pending[dir.index()].remove(&id_key(id)) {
            self.complete(dir, p, Ending::Denied(reason.to_string()), out);
        }
    }

    /// A server request begins: its `<kind>_request` event.
    pub(super) fn server_request_started(
        &mut self,
        kind: ServerRequest,
        id: &Value,
        params: &Value,
        out: &mut Vec<Event>,
    ) -> Asked {
        let r = &self.cfg.redactor;
        let mut m = Map::new();
        m.insert("request_id".into(), json!(id_display(id)));
        m.insert("capability".into(), json!(kind.name()));
        let server = self.cfg.server.clone();
        let msg = match kind {
            ServerRequest::Sampling => {
                sampling_summary(params, r, &mut m);
                format!("Server {server} asked the client's model to generate (sampling)")
            }
            ServerRequest::Elicitation => {
                elicitation_summary(params, r, &mut m);
                format!("Server {server} asked the user for input (elicitation)")
            }
            ServerRequest::Roots => format!("Server {server} asked for the client's roots"),
        };
        let event_type = format!("{}_request", kind.name());
        let event = self.emit(
            Level::Info,
            "session",
            &event_type,
            msg,
            m,
            &["session", "server_request", kind.name()],
        );
        let event_id = event.id.clone();
        out.push(event);
        Asked { kind, event_id }
    }

    /// A server request ended: its `<kind>_response` event, correlated by `request_event_id`.
    pub(super) fn server_request_answered(
        &mut self,
        p: &Pending,
        asked: Asked,
        ending: &Ending,
        out: &mut Vec<Event>,
    ) {
        let kind = asked.kind;
        let mut m = Map::new();
        m.insert("request_id".into(), json!(id_display(&p.id)));
        m.insert("request_event_id".into(), json!(asked.event_id));
        m.insert("capability".into(), json!(kind.name()));
        let answer = match ending {
            Ending::Result(result, _) => {
                let action = result.get("action").and_then(Value::as_str);
                match (kind, action) {
                    (ServerRequest::Elicitation, Some("decline")) => "declined",
                    (ServerRequest::Elicitation, Some("cancel")) => "cancelled",
                    _ => "accepted",
                }
            }
            Ending::RpcError(code, message) => {
                m.insert("error_code".into(), json!(code));
                m.insert("error_message".into(), json!(bounded(message, MAX_NAME)));
                "error"
            }
            Ending::Cancelled(_) => "cancelled",
            Ending::Timeout => "timeout",
            Ending::TransportError(_) => "transport_error",
            Ending::Denied(reason) => {
                m.insert("reason".into(), json!(bounded(reason, MAX_NAME)));
                "denied"
            }
        };
        m.insert("answer".into(), json!(answer));
        if let Ending::Result(result, _) = ending {
            match kind {
                ServerRequest::Sampling => {
                    for (from, to) in [("model", "model"), ("stopReason", "stop_reason")] {
                        if let Some(s) = result.get(from).and_then(Value::as_str) {
                            m.insert(to.into(), json!(bounded(s, MAX_NAME)));
                        }
                    }
                    if let Some(role) = result.get("role").and_then(Value::as_str) {
                        m.insert("role".into(), json!(bounded(role, MAX_NAME)));
                    }
                }
                ServerRequest::Elicitation => {
                    // What the user typed is theirs: only which fields they filled in.
                    if let Some(content) = result.get("content").and_then(Value::as_object) {
                        let fields: Vec<Value> = content
                            .keys()
                            .take(MAX_REQUESTED_FIELDS)
                            .map(|k| json!(bounded(k, MAX_NAME)))
                            .collect();
                        m.insert("answered_fields".into(), Value::Array(fields));
                    }
                }
                ServerRequest::Roots => {
                    let n = result
                        .get("roots")
                        .and_then(Value::as_array)
                        .map_or(0, Vec::len);
                    m.insert("roots".into(), json!(n));
                }
            }
        }
        let level = match answer {
            "accepted" | "declined" | "cancelled" => Level::Info,
            _ => Level::Warning,
        };
        let msg = format!("{} request from {} {answer}", kind.name(), self.cfg.server);
        let event_type = format!("{}_response", kind.name());
        out.push(self.emit(
            level,
            "session",
            &event_type,
            msg,
            m,
            &["session", "server_request", kind.name()],
        ));
    }
}

/// Messages (role, content type, text), system prompt and the settings of a sampling request.
fn sampling_summary(params: &Value, r: &Redactor, m: &mut Map<String, Value>) {
    let messages = params
        .get("messages")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    let skip = messages.len().saturating_sub(MAX_REQUEST_MESSAGES);
    let kept: Vec<Value> = messages[skip..]
        .iter()
        .map(|msg| {
            let role = msg.get("role").and_then(Value::as_str).unwrap_or("");
            // `content` is one block or (with tools) a list of them.
            let blocks: Vec<&Value> = match msg.get("content") {
                Some(Value::Array(items)) => items.iter().collect(),
                Some(v) => vec![v],
                None => Vec::new(),
            };
            let types: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("type").and_then(Value::as_str))
                .collect();
            let text: Vec<&str> = blocks
                .iter()
                .filter_map(|b| b.get("text").and_then(Value::as_str))
                .collect();
            let (text, truncated) = redacted_text(&text.join("\n"), r);
            json!({"role": bounded(role, MAX_NAME), "content_types": types,
                   "text": text, "text_truncated": truncated})
        })
        .collect();
    m.insert("message_count".into(), json!(messages.len()));
    m.insert("messages".into(), Value::Array(kept));
    if let Some(s) = params.get("systemPrompt").and_then(Value::as_str) {
        m.insert("system_prompt".into(), json!(redacted_text(s, r).0));
    }
    if let Some(n) = params.get("maxTokens").and_then(Value::as_u64) {
        m.insert("max_tokens".into(), json!(n));
    }
    if let Some(s) = params.get("includeContext").and_then(Value::as_str) {
        m.insert("include_context".into(), json!(bounded(s, MAX_NAME)));
    }
    let hints: Vec<Value> = params
        .pointer("/modelPreferences/hints")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
        .iter()
        .filter_map(|h| h.get("name").and_then(Value::as_str))
        .take(8)
        .map(|s| json!(bounded(s, MAX_NAME)))
        .collect();
    if !hints.is_empty() {
        m.insert("model_hints".into(), Value::Array(hints));
    }
    let tools = params
        .get("tools")
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if tools > 0 {
        m.insert("tools".into(), json!(tools));
    }
}

/// The message, the requested fields (a list, so that a field named `password` is kept as a
/// name and not taken for a password) and `request_text`, everything a person reads, in one
/// string for rules.
fn elicitation_summary(params: &Value, r: &Redactor, m: &mut Map<String, Value>) {
    let message = params.get("message").and_then(Value::as_str).unwrap_or("");
    let (message, _) = redacted_text(message, r);
    let mut text = message.clone();
    m.insert("message".into(), json!(message));
    if let Some(mode) = params.get("mode").and_then(Value::as_str) {
        m.insert("mode".into(), json!(bounded(mode, MAX_NAME)));
    }
    if let Some(url) = params.get("url").and_then(Value::as_str) {
        m.insert("url".into(), json!(redacted_text(url, r).0));
    }
    let schema = params.get("requestedSchema");
    let properties = schema
        .and_then(|s| s.get("properties"))
        .and_then(Value::as_object);
    let required: Vec<&str> = schema
        .and_then(|s| s.get("required"))
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let mut fields = Vec::new();
    for (name, prop) in properties.into_iter().flatten().take(MAX_REQUESTED_FIELDS) {
        let mut f = Map::new();
        let name = bounded(name, MAX_NAME);
        text.push('\n');
        text.push_str(&name);
        f.insert("name".into(), json!(name));
        for key in ["type", "format"] {
            if let Some(s) = prop.get(key).and_then(Value::as_str) {
                f.insert(key.into(), json!(bounded(s, MAX_NAME)));
            }
        }
        for key in ["title", "description"] {
            if let Some(s) = prop.get(key).and_then(Value::as_str) {
                let (s, _) = redacted_text(s, r);
                text.push('\n');
                text.push_str(&s);
                f.insert(key.into(), json!(s));
            }
        }
        f.insert("required".into(), json!(required.contains(&name.as_str())));
        fields.push(Value::Object(f));
    }
    m.insert("field_count".into(), json!(properties.map_or(0, Map::len)));
    m.insert("requested_fields".into(), Value::Array(fields));
    mcpwatch_core::redact::truncate(&mut text, 4 * MAX_REQUEST_TEXT);
    m.insert("request_text".into(), json!(text));
}

/// `s` redacted (with some text past the cut, so that a secret straddling it is recognised
/// whole), then cut to [`MAX_REQUEST_TEXT`]; and whether it was cut.
fn redacted_text(s: &str, r: &Redactor) -> (String, bool) {
    let mut text = bounded(s, MAX_REQUEST_TEXT + REDACT_LOOKAHEAD);
    r.redact_string(&mut text);
    let truncated = s.len() > MAX_REQUEST_TEXT;
    mcpwatch_core::redact::truncate(&mut text, MAX_REQUEST_TEXT);
    (text, truncated)
}

/// At most `max` bytes of `s`, cut at a character boundary.
fn bounded(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}
