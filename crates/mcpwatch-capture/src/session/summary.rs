//! Small views of big values: result summaries and bounded parameters for tool events.
//!
//! Used by the session tracker when it builds `execution_complete` and `execution_start`; keeps
//! events small whatever a tool returns. The result excerpt is redacted before it is cut (a
//! token cut in half no longer matches its pattern); the whole event is redacted again when
//! it is built.

use mcpwatch_core::Redactor;
use serde_json::{json, Map, Value};

/// Longest text excerpt of a result kept in an event.
pub const MAX_SUMMARY_TEXT: usize = 512;
/// Text past the excerpt that is redacted with it, so that a secret straddling the cut (a
/// private key block, a long token) is recognised whole.
const REDACT_LOOKAHEAD: usize = 8 * 1024;
/// Parameters bigger than this (serialised) are replaced by their shape.
pub const MAX_PARAMETERS_BYTES: usize = 16 * 1024;

/// Whether a `tools/call` result reports a tool failure (`isError: true`).
pub fn is_tool_error(result: &Value) -> bool {
    result.get("isError").and_then(Value::as_bool) == Some(true)
}

/// Size, content types and a redacted, truncated text excerpt of a `tools/call` result.
pub fn result_summary(result: &Value, size: usize, redactor: &Redactor) -> Value {
    let mut types: Vec<&str> = Vec::new();
    let mut text = String::new();
    if let Some(items) = result.get("content").and_then(Value::as_array) {
        for item in items {
            let kind = item
                .get("type")
                .and_then(Value::as_str)
                .unwrap_or("unknown");
            if !types.contains(&kind) {
                types.push(kind);
            }
            if let Some(t) = item.get("text").and_then(Value::as_str) {
                if text.len() < MAX_SUMMARY_TEXT {
                    if !text.is_empty() {
                        text.push('\n');
                    }
                    text.push_str(t);
                }
            }
        }
    }
    let truncated = text.len() > MAX_SUMMARY_TEXT;
    let mut window = MAX_SUMMARY_TEXT + REDACT_LOOKAHEAD;
    if text.len() > window {
        while !text.is_char_boundary(window) {
            window -= 1;
        }
        text.truncate(window);
    }
    redactor.redact_string(&mut text);
    mcpwatch_core::redact::truncate(&mut text, MAX_SUMMARY_TEXT);
    json!({
        "size": size,
        "content_types": types,
        "text": text,
        "text_truncated": truncated,
        "structured": result.get("structuredContent").is_some(),
    })
}

/// The arguments as they go into an event: whole when small, else their shape.
pub fn bounded_parameters(arguments: &Value) -> Value {
    let size = serde_json::to_vec(arguments).map_or(0, |v| v.len());
    if size <= MAX_PARAMETERS_BYTES {
        return arguments.clone();
    }
    let keys: Vec<Value> = arguments
        .as_object()
        .map(|m| {
            m.keys()
                .take(50)
                .map(|k| Value::String(k.clone()))
                .collect()
        })
        .unwrap_or_default();
    let mut m = Map::new();
    m.insert("_truncated".into(), Value::Bool(true));
    m.insert("_size".into(), json!(size));
    m.insert("_keys".into(), Value::Array(keys));
    Value::Object(m)
}

/// The first bytes of a frame, for a protocol error people can read.
pub fn excerpt(bytes: &[u8]) -> String {
    let cut = bytes.len().min(200);
    String::from_utf8_lossy(&bytes[..cut]).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_keeps_types_and_truncates_text() {
        let long = "x".repeat(2000);
        let r = json!({"content": [{"type": "text", "text": long}, {"type": "image", "data": "…"}],
                       "isError": true});
        let s = result_summary(&r, 2100, &Redactor::default());
        assert_eq!(s["content_types"], json!(["text", "image"]));
        assert_eq!(s["text_truncated"], json!(true));
        assert!(s["text"].as_str().map_or(0, str::len) < 600);
        assert!(is_tool_error(&r));
        assert!(!is_tool_error(&json!({"isError": "true"})));
    }

    #[test]
    fn a_token_across_the_cut_is_redacted_before_the_text_is_truncated() {
        let token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
        let text = format!("{} {token} and the rest", "x".repeat(MAX_SUMMARY_TEXT - 10));
        let r = json!({"content": [{"type": "text", "text": text}]});
        let s = result_summary(&r, text.len(), &Redactor::default());
        let out = s["text"].as_str().unwrap_or_default();
        assert!(
            !out.contains("ghp_0123"),
            "a stub of the token survived: {out}"
        );
        assert!(out.contains("[REDACTED:github_pat]"), "{out}");
    }

    #[test]
    fn huge_parameters_become_their_shape() {
        let big = json!({"content": "y".repeat(MAX_PARAMETERS_BYTES + 1)});
        let p = bounded_parameters(&big);
        assert_eq!(p["_keys"], json!(["content"]));
        let small = json!({"path": "/tmp"});
        assert_eq!(bounded_parameters(&small), small);
    }
}
