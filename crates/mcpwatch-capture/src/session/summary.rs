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
pub(super) const REDACT_LOOKAHEAD: usize = 8 * 1024;
/// Parameters bigger than this (serialised) are replaced by their shape.
pub const MAX_PARAMETERS_BYTES: usize = 16 * 1024;
/// Top-level keys a shape lists at most.
pub const MAX_SHAPE_KEYS: usize = 50;
/// Bytes of one key a shape keeps at most.
pub const MAX_SHAPE_KEY_BYTES: usize = 128;

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

/// The arguments as they go into an event: whole when small, else their shape
/// ([`parameter_shape`]); with their serialised size.
pub fn bounded_parameters(arguments: &Value) -> (Value, usize) {
    let size = mcpwatch_core::json::value_len(arguments);
    if size <= MAX_PARAMETERS_BYTES {
        return (arguments.clone(), size);
    }
    (parameter_shape(arguments, size), size)
}

/// What detection needs of parameters too big to keep: `{"_truncated": true, "_size": total
/// serialised bytes, "_keys": [the first 50 top-level keys], "_sizes": {key: serialised bytes}}`.
pub fn parameter_shape(arguments: &Value, size: usize) -> Value {
    let (mut keys, mut sizes) = (Vec::new(), Map::new());
    if let Some(m) = arguments.as_object() {
        for (k, v) in m.iter().take(MAX_SHAPE_KEYS) {
            let mut k = k.clone();
            mcpwatch_core::redact::truncate(&mut k, MAX_SHAPE_KEY_BYTES);
            let n = mcpwatch_core::json::value_len(v);
            sizes.insert(k.clone(), json!(n));
            keys.push(Value::String(k));
        }
    }
    let mut m = Map::new();
    m.insert("_truncated".into(), Value::Bool(true));
    m.insert("_size".into(), json!(size));
    m.insert("_keys".into(), Value::Array(keys));
    m.insert("_sizes".into(), Value::Object(sizes));
    Value::Object(m)
}

/// Serialised bytes of each top-level argument as sent (the first [`MAX_SHAPE_KEYS`]), for
/// `execution_complete`'s `parameter_sizes`: redaction shortens long strings, detection needs
/// the sizes the server received.
pub fn parameter_sizes(arguments: &Value) -> Map<String, Value> {
    let mut sizes = Map::new();
    if let Some(m) = arguments.as_object() {
        for (k, v) in m.iter().take(MAX_SHAPE_KEYS) {
            let n = mcpwatch_core::json::value_len(v);
            let mut k = k.clone();
            mcpwatch_core::redact::truncate(&mut k, MAX_SHAPE_KEY_BYTES);
            sizes.insert(k, json!(n));
        }
    }
    sizes
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
        let (p, size) = bounded_parameters(&big);
        assert_eq!(p["_keys"], json!(["content"]));
        assert_eq!(p["_sizes"]["content"], json!(MAX_PARAMETERS_BYTES + 3));
        assert_eq!(p["_size"], json!(size));
        let small = json!({"path": "/tmp"});
        assert_eq!(bounded_parameters(&small), (small, 15));
    }
}
