//! JSON-RPC 2.0 framing: from one line of bytes to the messages it carries.
//!
//! The first stage of session tracking, after a transport (the stdio relay, later the gateway)
//! has cut its traffic into frames. A frame is one message or a batch (protocol 2025-03-26).
//! Anything that is not valid JSON-RPC is a [`FrameError`] that becomes a `protocol_error`
//! event; the bytes themselves were already relayed unchanged.

use serde_json::{Map, Value};

/// One JSON-RPC message.
#[derive(Debug, Clone, PartialEq)]
pub enum Message {
    /// A call that expects a response.
    Request {
        /// The id as sent (string or number).
        id: Value,
        /// The method name.
        method: String,
        /// The params, `Null` when absent.
        params: Value,
    },
    /// A call without an id; no response follows.
    Notification {
        /// The method name.
        method: String,
        /// The params, `Null` when absent.
        params: Value,
    },
    /// A successful response.
    Result {
        /// The id of the request it answers.
        id: Value,
        /// The result.
        result: Value,
        /// Size of the frame's result in bytes, as serialised (approximate for batches).
        size: usize,
    },
    /// An error response.
    Error {
        /// The id of the request it answers (`Null` when the server could not read it).
        id: Value,
        /// The JSON-RPC error code.
        code: i64,
        /// The error message.
        message: String,
    },
}

/// Why a frame is not JSON-RPC.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// Not UTF-8.
    #[error("frame is not valid UTF-8 (first bad byte at offset {0})")]
    Utf8(usize),
    /// Not JSON.
    #[error("frame is not valid JSON: {0}")]
    Json(String),
    /// JSON, but not a JSON-RPC message (or a batch element is not).
    #[error("frame is not a JSON-RPC message: {0}")]
    Shape(String),
}

impl FrameError {
    /// A short machine-readable kind, for event metadata.
    pub fn kind(&self) -> &'static str {
        match self {
            FrameError::Utf8(_) => "invalid_utf8",
            FrameError::Json(_) => "invalid_json",
            FrameError::Shape(_) => "invalid_jsonrpc",
        }
    }
}

/// A parsed frame: its messages, and whether it was a batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Frame {
    /// The messages, in order.
    pub messages: Vec<Message>,
    /// Whether the frame was a JSON array.
    pub batch: bool,
    /// When the frame nests deeper than `serde_json` reads: what [`crate::depth::parse_cut`]
    /// cut from it (the messages hold markers in place of the subtrees).
    pub cut: Option<crate::depth::Cut>,
}

/// Parses one frame (a line without its newline). Blank lines give an empty frame.
pub fn parse_frame(bytes: &[u8]) -> Result<Frame, FrameError> {
    let text = std::str::from_utf8(bytes).map_err(|e| FrameError::Utf8(e.valid_up_to()))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(Frame {
            messages: Vec::new(),
            batch: false,
            cut: None,
        });
    }
    let (value, cut) = match serde_json::from_str::<Value>(text) {
        Ok(v) => (v, None),
        Err(e) if e.to_string().starts_with("recursion limit exceeded") => {
            // Nested past what serde_json reads: read it anyway, down to a depth, so a call
            // cannot hide behind its nesting (see `depth`).
            let (v, cut) =
                crate::depth::parse_cut(text).map_err(|e| FrameError::Json(e.to_string()))?;
            (v, Some(cut))
        }
        Err(e) => return Err(FrameError::Json(e.to_string())),
    };
    match value {
        Value::Array(items) => {
            if items.is_empty() {
                return Err(FrameError::Shape("empty batch".into()));
            }
            let size_hint = text.len() / items.len();
            let messages = items
                .into_iter()
                .enumerate()
                .map(|(i, v)| {
                    message_from_value(v, size_hint)
                        .map_err(|e| FrameError::Shape(format!("batch element {i}: {e}")))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Frame {
                messages,
                batch: true,
                cut,
            })
        }
        v => Ok(Frame {
            messages: vec![message_from_value(v, text.len()).map_err(FrameError::Shape)?],
            batch: false,
            cut,
        }),
    }
}

fn message_from_value(value: Value, size: usize) -> Result<Message, String> {
    let Value::Object(mut obj) = value else {
        return Err("expected an object".into());
    };
    if obj.get("jsonrpc").and_then(Value::as_str) != Some("2.0") {
        return Err("missing \"jsonrpc\": \"2.0\"".into());
    }
    let id = obj.remove("id");
    if let Some(id) = &id {
        if !matches!(id, Value::String(_) | Value::Number(_) | Value::Null) {
            return Err("id must be a string or a number".into());
        }
    }
    if let Some(method) = obj.remove("method") {
        let Value::String(method) = method else {
            return Err("method must be a string".into());
        };
        let params = obj.remove("params").unwrap_or(Value::Null);
        return Ok(match id {
            Some(Value::Null) => return Err("a request id must not be null".into()),
            Some(id) => Message::Request { id, method, params },
            None => Message::Notification { method, params },
        });
    }
    let id = id.ok_or_else(|| "a response needs an id".to_string())?;
    if let Some(result) = obj.remove("result") {
        return Ok(Message::Result { id, result, size });
    }
    if let Some(error) = obj.remove("error") {
        let Value::Object(error) = error else {
            return Err("error must be an object".into());
        };
        return Ok(error_message(id, &error));
    }
    Err("neither a request (method) nor a response (result or error)".into())
}

fn error_message(id: Value, error: &Map<String, Value>) -> Message {
    Message::Error {
        id,
        code: error.get("code").and_then(Value::as_i64).unwrap_or(0),
        message: error
            .get("message")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_string(),
    }
}

/// The key under which a request id is correlated: `1` and `"1"` are different ids.
pub fn id_key(id: &Value) -> String {
    id.to_string()
}

/// The id as people read it: strings without quotes.
pub fn id_display(id: &Value) -> String {
    match id {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(input: &[u8], expected: Result<Vec<Message>, &str>) {
        let got = parse_frame(input).map(|f| f.messages);
        match (got, expected) {
            (Ok(got), Ok(want)) => assert_eq!(got, want),
            (Err(e), Err(kind)) => assert_eq!(e.kind(), kind, "{e}"),
            (got, want) => panic!("got {got:?}, want {want:?}"),
        }
    }

    #[test]
    fn requests_notifications_and_responses() {
        check(
            br#"{"jsonrpc":"2.0","id":1,"method":"tools/list"}"#,
            Ok(vec![Message::Request {
                id: json!(1),
                method: "tools/list".into(),
                params: Value::Null,
            }]),
        );
        check(
            br#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
            Ok(vec![Message::Notification {
                method: "notifications/initialized".into(),
                params: Value::Null,
            }]),
        );
        check(
            br#"{"jsonrpc":"2.0","id":"a","error":{"code":-32601,"message":"nope"}}"#,
            Ok(vec![Message::Error {
                id: json!("a"),
                code: -32601,
                message: "nope".into(),
            }]),
        );
    }

    #[test]
    fn batches_are_split_in_order() {
        let f = parse_frame(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"},{"jsonrpc":"2.0","id":1,"result":{}}]"#,
        );
        let f = f.expect("a valid batch");
        assert!(f.batch);
        assert_eq!(f.messages.len(), 2);
    }

    #[test]
    fn hostile_frames_are_errors_not_panics() {
        check(b"\xff\xfe{}", Err("invalid_utf8"));
        check(b"{not json", Err("invalid_json"));
        check(b"[]", Err("invalid_jsonrpc"));
        check(b"42", Err("invalid_jsonrpc"));
        check(br#"{"id":1,"method":"x"}"#, Err("invalid_jsonrpc"));
        check(
            br#"{"jsonrpc":"2.0","id":{"a":1},"method":"x"}"#,
            Err("invalid_jsonrpc"),
        );
        check(br#"{"jsonrpc":"2.0","id":1}"#, Err("invalid_jsonrpc"));
        check(
            br#"[{"jsonrpc":"2.0","id":1,"method":"a"}, 3]"#,
            Err("invalid_jsonrpc"),
        );
        check(b"   ", Ok(vec![]));
    }

    #[test]
    fn string_and_numeric_ids_are_distinct_keys() {
        assert_ne!(id_key(&json!(1)), id_key(&json!("1")));
        assert_eq!(id_display(&json!("1")), "1");
    }
}
