//! Property tests of the gateway's batch judge: whatever body a client sends, the gateway
//! either refuses it, or reads every message as a plain JSON parser (the upstream's) does,
//! so that what policy judges is what the upstream executes. Bounded by proptest's
//! `PROPTEST_CASES` (256 by default; see the README for long runs).

use bytes::Bytes;
use proptest::prelude::*;
use serde_json::Value;

use super::batch::{parse, target};

/// JSON text of a value policy may meet where it expects a string.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z/_.:%]{0,12}".prop_map(|s| Value::String(s).to_string()),
        Just("\"file:///etc/passwd\"".to_string()),
        Just("\"secret\"".to_string()),
        any::<i32>().prop_map(|n| n.to_string()),
        Just("null".to_string()),
        Just("[\"secret\"]".to_string()),
        Just("{}".to_string()),
    ]
}

/// An object's text from key/value texts; keys may repeat, as an attacker's may.
fn object(fields: Vec<(&'static str, String)>) -> String {
    let inner: Vec<String> = fields
        .into_iter()
        .map(|(k, v)| format!("{}:{v}", Value::String(k.into())))
        .collect();
    format!("{{{}}}", inner.join(","))
}

fn reference() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["type", "name", "uri"]),
            prop_oneof![
                Just("\"ref/prompt\"".to_string()),
                Just("\"ref/resource\"".to_string()),
                scalar()
            ],
        ),
        0..4,
    )
    .prop_map(object)
}

fn params() -> impl Strategy<Value = String> {
    prop::collection::vec(
        (
            prop::sample::select(vec!["name", "uri", "ref", "arguments"]),
            prop_oneof![3 => scalar(), 1 => reference()],
        ),
        0..4,
    )
    .prop_map(object)
}

fn message() -> impl Strategy<Value = String> {
    let method = prop::sample::select(vec![
        "\"tools/call\"",
        "\"prompts/get\"",
        "\"resources/read\"",
        "\"resources/subscribe\"",
        "\"completion/complete\"",
        "\"tools/list\"",
        "\"ping\"",
        "7",
    ]);
    prop::collection::vec(
        prop_oneof![
            Just(("jsonrpc", "\"2.0\"".to_string())),
            Just(("jsonrpc", "\"1.0\"".to_string())),
            any::<u8>().prop_map(|n| ("id", n.to_string())),
            method.prop_map(|m| ("method", m.to_string())),
            params().prop_map(|p| ("params", p)),
            Just(("result", "{}".to_string())),
            Just(("error", "{\"code\":1,\"message\":\"x\"}".to_string())),
            scalar().prop_map(|v| ("extra", v)),
        ],
        0..7,
    )
    .prop_map(object)
}

/// A body: one message, a batch (maybe nested or empty), or a scalar, with spacing.
fn body() -> impl Strategy<Value = String> {
    let item = prop_oneof![4 => message(), 1 => scalar()];
    prop_oneof![
        3 => message(),
        3 => prop::collection::vec(item, 0..5).prop_map(|m| format!("[{}]", m.join(","))),
        1 => prop::collection::vec(message(), 0..3).prop_map(|m| format!("[[{}]]", m.join(","))),
        1 => scalar(),
    ]
    .prop_flat_map(|b| (Just(b), "[ \n\t]{0,2}"))
    .prop_map(|(b, pad)| format!("{pad}{b}{pad}"))
}

/// What a message names, read the way a plain JSON parser reads it.
fn plain_target(m: &Value) -> Option<String> {
    let s = |v: &Value| v.as_str().map(str::to_string);
    let p = &m["params"];
    match m["method"].as_str()? {
        "tools/call" => s(&p["name"]).map(|n| format!("tool:up/{n}")),
        "prompts/get" => s(&p["name"]).map(|n| format!("prompt:up/{n}")),
        "resources/read" | "resources/subscribe" => s(&p["uri"]).map(|u| format!("resource:{u}")),
        "completion/complete" => match p["ref"]["type"].as_str()? {
            "ref/prompt" => s(&p["ref"]["name"]).map(|n| format!("prompt:up/{n}")),
            "ref/resource" => s(&p["ref"]["uri"]).map(|u| format!("resource:{u}")),
            _ => None,
        },
        _ => None,
    }
}

proptest! {
    #[test]
    fn what_the_gateway_forwards_it_reads_as_the_upstream_does(text in body()) {
        let parsed = parse(&Bytes::from(text.clone()));
        if parsed.invalid.is_some() || parsed.unreadable.is_some() {
            return Ok(());
        }
        let value: Value = serde_json::from_str(&text).expect("forwarded bodies are JSON");
        let items = match &value {
            Value::Array(items) => items.clone(),
            one => vec![one.clone()],
        };
        prop_assert!(!items.is_empty(), "an empty batch was forwarded");
        prop_assert_eq!(items.len(), parsed.messages.len());
        for (item, (raw, probe)) in items.iter().zip(&parsed.messages) {
            prop_assert_eq!(&item["jsonrpc"], "2.0", "{}", text);
            let again: Value = serde_json::from_slice(raw).expect("each message is JSON");
            prop_assert_eq!(&again, item);
            prop_assert_eq!(target("up", probe).map(|t| t.name), plain_target(item), "{}", text);
        }
    }

    #[test]
    fn any_bytes_are_parsed_without_panic_and_non_json_is_never_clean(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let parsed = parse(&Bytes::from(bytes.clone()));
        if serde_json::from_slice::<Value>(&bytes).is_err() {
            prop_assert!(parsed.invalid.is_some() || parsed.unreadable.is_some());
        }
    }
}
