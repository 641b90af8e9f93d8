//! One OTLP span per MCP request, following the OpenTelemetry MCP server-span conventions
//! (open-telemetry/semantic-conventions-genai, docs/gen-ai/mcp.md): name `{mcp.method.name}
//! {target}` (target: the tool for `tools/call`), kind SERVER, `error.type` = the JSON-RPC code
//! or `tool_error` (isError: true) or the outcome (`timeout`, …), status ERROR with the
//! JSON-RPC message when `error.type` is set.
//!
//! Timing: the event is emitted when the request ends, so the span ends at the event's
//! timestamp and starts `execution_time`/`response_time` earlier. Ids derive from the event id,
//! so a replayed event yields the same span. A request that came with W3C trace context
//! (capture keeps it as `metadata.traceparent`, from `params._meta.traceparent` or the
//! gateway's `traceparent` header) joins the caller's trace, with the caller's span as parent;
//! any other span is its own trace.

use std::hash::{Hash, Hasher};

use mcpwatch_core::{Event, Outcome};
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span::SpanKind, status::StatusCode, Span, Status};
use serde_json::Value;

/// The span for `e`, if it describes a finished MCP request. `tools/call` spans come from
/// `execution_complete` (which names the tool), every other method from `request_performance`.
pub fn span_of(e: &Event) -> Option<Span> {
    let (method, tool) = match (e.category.as_str(), e.event_type.as_str()) {
        ("tool_execution", "execution_complete") => ("tools/call", e.tool()),
        ("performance", "request_performance") => {
            let m = e.metadata.get("method")?.as_str()?;
            if m == "tools/call" {
                return None;
            }
            (m, None)
        }
        _ => return None,
    };
    let end_ns = u64::try_from(e.timestamp.as_micros()).ok()? * 1_000;
    let dur_ns = e
        .duration_secs()
        .filter(|d| d.is_finite() && *d >= 0.0)
        .map_or(0, |d| (d * 1e9) as u64);
    let mut attributes = vec![kv("mcp.method.name", method)];
    if let Some(t) = tool {
        attributes.push(kv("gen_ai.tool.name", t));
        attributes.push(kv("gen_ai.operation.name", "execute_tool"));
    }
    let meta = |k: &str| e.metadata.get(k);
    if let Some(id) = meta("request_id").and_then(Value::as_str) {
        attributes.push(kv("jsonrpc.request.id", id));
    }
    if let Some(s) = e.session() {
        attributes.push(kv("mcp.session.id", s));
    }
    if let Some(t) = transport(&e.source) {
        attributes.push(kv("network.transport", t));
    }
    if let Some(s) = e.server() {
        attributes.push(kv("mcpwatch.server", s));
    }
    let (error_type, message) = error_of(e);
    if let Some(code) = code_of(e) {
        attributes.push(kv("rpc.response.status_code", &code));
    }
    let status = match &error_type {
        Some(t) => {
            attributes.push(kv("error.type", t));
            Status {
                code: StatusCode::Error as i32,
                message: message.unwrap_or_default(),
            }
        }
        None => Status::default(),
    };
    let name = match tool {
        Some(t) => format!("{method} {t}"),
        None => method.to_owned(),
    };
    let (mut trace_id, span_id) = ids(&e.id);
    let mut parent_span_id = Vec::new();
    if let Some((trace, parent)) = meta("traceparent").and_then(Value::as_str).and_then(caller) {
        trace_id = trace;
        parent_span_id = parent;
    }
    Some(Span {
        trace_id,
        span_id,
        parent_span_id,
        name,
        kind: SpanKind::Server as i32,
        start_time_unix_nano: end_ns.saturating_sub(dur_ns),
        end_time_unix_nano: end_ns,
        attributes,
        status: Some(status),
        ..Default::default()
    })
}

/// `error.type` and the status message: none on success.
fn error_of(e: &Event) -> (Option<String>, Option<String>) {
    let message = e
        .metadata
        .get("error_message")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let success = e.metadata.get("success").and_then(Value::as_bool);
    match e.outcome() {
        Some(Outcome::Success) => (None, None),
        Some(Outcome::RpcError) => (Some(code_of(e).unwrap_or_else(|| "_OTHER".into())), message),
        Some(o) => (Some(o.as_str().to_owned()), message),
        None if success == Some(true) => (None, None),
        None => (Some("_OTHER".into()), message),
    }
}

fn code_of(e: &Event) -> Option<String> {
    match e.metadata.get("error_code")? {
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

/// `network.transport` from where capture ran: stdio is a pipe, the gateway is TCP.
fn transport(source: &str) -> Option<&'static str> {
    if source.starts_with("wrap:") {
        Some("pipe")
    } else if source.starts_with("gateway:") {
        Some("tcp")
    } else {
        None
    }
}

/// The trace id and parent span id of a `00-<32 hex>-<16 hex>-<2 hex>` traceparent.
fn caller(tp: &str) -> Option<(Vec<u8>, Vec<u8>)> {
    let mut parts = tp.split('-');
    let (_, trace, parent) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = |h: &str, n: usize| -> Option<Vec<u8>> {
        if h.len() != n * 2 {
            return None;
        }
        (0..n)
            .map(|i| u8::from_str_radix(h.get(i * 2..i * 2 + 2)?, 16).ok())
            .collect()
    };
    Some((bytes(trace, 16)?, bytes(parent, 8)?))
}

/// A string attribute.
pub(crate) fn kv(key: &str, value: &str) -> KeyValue {
    KeyValue {
        key: key.to_owned(),
        value: Some(AnyValue {
            value: Some(any_value::Value::StringValue(value.to_owned())),
        }),
        ..Default::default()
    }
}

/// Trace id from the event id's 32 hex digits (a UUID), else from its hash; span id from a hash.
fn ids(event_id: &str) -> (Vec<u8>, Vec<u8>) {
    let hex: String = event_id.chars().filter(char::is_ascii_hexdigit).collect();
    let h = |salt: u8| {
        let mut s = std::hash::DefaultHasher::new();
        salt.hash(&mut s);
        event_id.hash(&mut s);
        s.finish().to_be_bytes()
    };
    let trace = if hex.len() == 32 && event_id.len() <= 36 {
        (0..16)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap_or(0))
            .collect()
    } else {
        [h(1), h(2)].concat()
    };
    (trace, h(3).to_vec())
}
