//! The writer against serde_json itself: the same bytes for every input.

use proptest::prelude::*;
use serde_json::{json, Map, Number, Value};

use super::{value_len, write_str, write_value};
use crate::clock::ManualClock;
use crate::ids::IdGenerator;
use crate::validate::{parse_batch, BodyFormat, Defaults};
use crate::Timestamp;

fn ours(v: &Value) -> Vec<u8> {
    let mut out = Vec::new();
    write_value(&mut out, v);
    out
}

fn check(v: &Value) {
    let want = serde_json::to_vec(v).expect("serialises");
    assert_eq!(
        String::from_utf8_lossy(&ours(v)),
        String::from_utf8_lossy(&want),
        "for {v:?}"
    );
    assert_eq!(value_len(v), want.len());
}

#[test]
fn every_ascii_byte_at_every_offset_of_a_word() {
    // Offsets 0..17 put the byte in every lane of the first two eight-byte words and in the
    // tail that is checked byte by byte.
    for c in (0u8..=0x7f)
        .map(char::from)
        .chain(['é', '\u{2028}', '\u{202e}', '😀'])
    {
        for at in 0..17 {
            for len in [at + 1, at + 8, at + 20] {
                let mut s: String = "abcdefghijklmnopqrstuvwxyz0123456789"
                    .chars()
                    .cycle()
                    .take(len - 1)
                    .collect();
                s.insert(at.min(s.len()), c);
                check(&Value::String(s));
            }
        }
    }
}

#[test]
fn strings_made_only_of_escapes() {
    for s in [
        "",
        "\"",
        "\\",
        "\"\\\"\\\"\\\"\\\"\\",
        "\u{0}\u{1}\u{1f}\n\r\t\u{8}\u{c}",
        "\u{7f}",
    ] {
        check(&json!(s));
        check(&json!({ s: s }));
    }
    let mut out = Vec::new();
    write_str(&mut out, "a\"b");
    assert_eq!(out, br#""a\"b""#);
}

#[test]
fn numbers_as_serde_json_writes_them() {
    for v in [
        json!(0),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(-1),
        json!(0.0),
        json!(-0.0),
        json!(1e300),
        json!(5e-324),
        json!(0.1),
        json!(123456789.125),
        json!(f64::MAX),
    ] {
        check(&v);
    }
    // Not representable: serde_json turns them into null.
    check(&json!(f64::NAN));
    check(&Value::Array(vec![
        Value::Number(Number::from(7u8)),
        Value::Null,
        json!(true),
        json!(false),
    ]));
    check(&Value::Object(Map::new()));
    check(&json!([]));
}

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<u64>().prop_map(|n| json!(n)),
        any::<i64>().prop_map(|n| json!(n)),
        any::<f64>().prop_map(|f| json!(f)),
        any::<String>().prop_map(Value::String),
        "[\"\\\\\\x00-\\x1f a-z\\u{7f}-\\u{10ffff}]{0,40}".prop_map(Value::String),
    ]
}

fn value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(6, 64, 8, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(
                prop_oneof![any::<String>(), "[a-z\"\\\\\\x00-\\x1f]{0,12}"],
                inner,
                0..8
            )
            .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_value_is_written_as_serde_json_writes_it(v in value()) {
        check(&v);
    }

    /// Events as ingest produces them (defaults filled in, fields validated), written whole.
    #[test]
    fn ingested_events_are_written_as_serde_json_writes_them(
        message in any::<String>(),
        metadata in prop::collection::btree_map("[a-z_\"\\\\]{1,12}", value(), 0..6),
        tags in prop::collection::vec(any::<String>(), 0..4),
        micros in 0i64..4_000_000_000_000_000,
    ) {
        let clock = ManualClock::new(Timestamp::from_micros(micros));
        let ids = IdGenerator::new();
        let defaults = Defaults {
            ids: &ids,
            clock: &clock,
            source: "api",
            max_events: 10,
            max_future_skew: std::time::Duration::from_secs(300),
        };
        let body = json!({
            "category": "custom", "event_type": "x", "message": message,
            "metadata": metadata, "tags": tags,
        })
        .to_string();
        let events = parse_batch(body.as_bytes(), BodyFormat::Json, &defaults)
            .map_err(|e| TestCaseError::fail(format!("{e:?}")))?;
        for e in events {
            let mut out = Vec::new();
            e.write_json(&mut out);
            let want = serde_json::to_vec(&e).expect("serialises");
            prop_assert_eq!(String::from_utf8_lossy(&out), String::from_utf8_lossy(&want));
        }
    }
}
