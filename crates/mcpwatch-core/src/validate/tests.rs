//! Validation tests: every known event type, each required field missing or mistyped.

use serde_json::{json, Value};

use super::*;
use crate::clock::ManualClock;

fn parse(body: &str, format: BodyFormat) -> Result<Vec<Event>, BatchError> {
    let ids = IdGenerator::new();
    let clock = ManualClock::new(Timestamp::from_micros(1_790_000_000_000_000));
    let d = Defaults {
        ids: &ids,
        clock: &clock,
        source: "api",
        max_events: 10,
        max_future_skew: bounds::DEFAULT_MAX_FUTURE_SKEW,
    };
    parse_batch(body.as_bytes(), format, &d)
}

/// The one place the tests call the API: `expected` lists `field` names of the errors, or is
/// empty when the batch must be accepted.
fn check(body: Value, expected: &[&str]) {
    let got = parse(&body.to_string(), BodyFormat::Json);
    match (got, expected.is_empty()) {
        (Ok(_), true) => {}
        (Err(BatchError::Fields(errs)), false) => {
            let fields: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
            assert_eq!(fields, expected, "for {body}: {errs:?}");
        }
        (other, _) => panic!("for {body}: expected errors on {expected:?}, got {other:?}"),
    }
}

fn valid_metadata(category: &str, event_type: &str) -> Value {
    match (category, event_type) {
        ("security", "authentication") => json!({"user_id": "alice", "result": "failure"}),
        ("security", "authorization") => {
            json!({"user_id": "alice", "resource": "admin/users", "action": "read", "result": "denied"})
        }
        ("security", "data_access") => {
            json!({"user_id": "alice", "data_type": "customer", "operation": "read"})
        }
        ("tool_execution", "execution_start") => {
            json!({"execution_id": "e1", "tool_name": "read_file", "user_id": "alice"})
        }
        ("tool_execution", "execution_complete") => {
            json!({"execution_id": "e1", "tool_name": "read_file", "user_id": "alice", "execution_time": 0.01, "success": true})
        }
        ("performance", "request_performance") => {
            json!({"request_id": "r1", "response_time": 0.2, "success": true})
        }
        ("performance", "system_performance") => json!({"metric_name": "cpu_usage", "value": 12.5}),
        _ => unreachable!(),
    }
}

#[test]
fn every_required_field_of_every_known_type_missing_or_mistyped_is_named() {
    for known in KNOWN_TYPES {
        let meta = valid_metadata(known.category, known.event_type);
        check(
            json!({"category": known.category, "event_type": known.event_type, "metadata": meta.clone()}),
            &[],
        );
        for (key, _) in known.required {
            let field = format!("metadata.{key}");
            let mut missing = meta.clone();
            missing.as_object_mut().unwrap().remove(*key);
            check(
                json!({"category": known.category, "event_type": known.event_type, "metadata": missing}),
                &[&field],
            );
            let mut mistyped = meta.clone();
            mistyped[*key] = json!([1, 2]);
            check(
                json!({"category": known.category, "event_type": known.event_type, "metadata": mistyped}),
                &[&field],
            );
        }
    }
}

#[test]
fn top_level_fields() {
    check(json!({"event_type": "x"}), &["category"]);
    check(
        json!({"category": "custom", "event_type": 5}),
        &["event_type"],
    );
    check(
        json!({"category": "custom", "event_type": "x", "level": "fatal"}),
        &["level"],
    );
    check(
        json!({"category": "custom", "event_type": "x", "timestamp": "yesterday"}),
        &["timestamp"],
    );
    check(
        json!({"category": "custom", "event_type": "x", "timestamp": -5}),
        &["timestamp"],
    );
    check(
        json!({"category": "custom", "event_type": "x", "tags": ["a", 1]}),
        &["tags[1]"],
    );
    check(
        json!({"category": "custom", "event_type": "x", "meta": {}}),
        &["meta"],
    );
    check(
        json!({"category": "custom", "event_type": "x", "metadata": []}),
        &["metadata"],
    );
    check(
        json!({"category": "custom", "event_type": "x", "id": ""}),
        &["id"],
    );
}

#[test]
fn outcome_and_success_must_agree_and_missing_outcome_is_derived() {
    let mut meta = valid_metadata("tool_execution", "execution_complete");
    meta["outcome"] = json!("tool_error");
    check(
        json!({"category": "tool_execution", "event_type": "execution_complete", "metadata": meta.clone()}),
        &["metadata.success"],
    );
    meta["success"] = json!(false);
    check(
        json!({"category": "tool_execution", "event_type": "execution_complete", "metadata": meta}),
        &[],
    );

    let mut meta = valid_metadata("tool_execution", "execution_complete");
    meta["success"] = json!(false);
    let body =
        json!({"category": "tool_execution", "event_type": "execution_complete", "metadata": meta});
    let ev = parse(&body.to_string(), BodyFormat::Json)
        .unwrap()
        .remove(0);
    assert_eq!(ev.outcome(), Some(Outcome::ToolError));
}

#[test]
fn defaults_are_filled_in() {
    let ev = parse(
        r#"{"category":"custom","event_type":"x"}"#,
        BodyFormat::Json,
    )
    .unwrap()
    .remove(0);
    assert_eq!(ev.level, Level::Info);
    assert_eq!(ev.source, "api");
    assert_eq!(ev.timestamp, Timestamp::from_micros(1_790_000_000_000_000));
    assert_eq!(ev.id.len(), 36);
    let ev = parse(
        r#"{"category":"custom","event_type":"x","timestamp":1790000000.5,"id":"mine"}"#,
        BodyFormat::Json,
    )
    .unwrap()
    .remove(0);
    assert_eq!(ev.timestamp, Timestamp::from_micros(1_790_000_000_500_000));
    assert_eq!(ev.id, "mine");
}

#[test]
fn one_bad_event_rejects_the_batch_and_names_its_index() {
    let body = json!([
        {"category": "custom", "event_type": "x"},
        {"category": "security", "event_type": "authentication", "metadata": {"user_id": "bob"}},
    ]);
    match parse(&body.to_string(), BodyFormat::Json) {
        Err(BatchError::Fields(errs)) => {
            assert_eq!(errs.len(), 1);
            assert_eq!(
                (errs[0].index, errs[0].field.as_str()),
                (1, "metadata.result")
            );
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn bad_bodies() {
    let body_err = |b: &[u8], f| match parse_batch_bytes(b, f) {
        Err(BatchError::Body(m)) => m,
        other => panic!("{other:?}"),
    };
    assert!(body_err(b"{not json", BodyFormat::Json).contains("not valid JSON"));
    assert!(body_err(b"[]", BodyFormat::Json).contains("empty"));
    assert!(body_err(b"\n\n", BodyFormat::Ndjson).contains("empty"));
    for scalar in [&b"42"[..], b"\"x\"", b"null", b"true", b"-1.5"] {
        assert!(body_err(scalar, BodyFormat::Json).contains("expected an event object"));
    }
    // Whatever follows the array or the object is refused, not ignored.
    assert!(body_err(b"[{}] {}", BodyFormat::Json).contains("not valid JSON"));
    assert!(body_err(b"{} x", BodyFormat::Json).contains("not valid JSON"));
    assert!(body_err(b"[{},", BodyFormat::Json).contains("not valid JSON"));
    assert!(body_err(b"{\"category\":\"\xff\xfe\"}", BodyFormat::Json).contains("UTF-8"));
    let deep = "[".repeat(200) + &"]".repeat(200);
    assert!(body_err(deep.as_bytes(), BodyFormat::Json).contains("nesting is too deep"));
    let eleven = (0..11)
        .map(|_| r#"{"category":"c","event_type":"x"}"#)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(matches!(
        parse_batch_bytes(eleven.as_bytes(), BodyFormat::Ndjson),
        Err(BatchError::TooManyEvents { .. })
    ));
    assert!(body_err(
        b"{\"category\":\"c\",\"event_type\":\"x\"}\n{oops",
        BodyFormat::Ndjson
    )
    .contains("line 2"));
}

fn parse_batch_bytes(b: &[u8], f: BodyFormat) -> Result<Vec<Event>, BatchError> {
    let ids = IdGenerator::new();
    let clock = ManualClock::default();
    parse_batch(
        b,
        f,
        &Defaults {
            ids: &ids,
            clock: &clock,
            source: "api",
            max_events: 10,
            max_future_skew: bounds::DEFAULT_MAX_FUTURE_SKEW,
        },
    )
}

#[test]
fn ndjson_is_accepted() {
    let body = "{\"category\":\"custom\",\"event_type\":\"a\"}\n\n{\"category\":\"custom\",\"event_type\":\"b\"}\n";
    let evs = parse(body, BodyFormat::Ndjson).unwrap();
    assert_eq!(
        evs.iter()
            .map(|e| e.event_type.as_str())
            .collect::<Vec<_>>(),
        ["a", "b"]
    );
}

/// The errors of a batch that must be refused, as (field, message).
fn refused(body: Value) -> Vec<(String, String)> {
    match parse(&body.to_string(), BodyFormat::Json) {
        Err(BatchError::Fields(errs)) => errs.into_iter().map(|e| (e.field, e.message)).collect(),
        other => panic!("for {body}: expected field errors, got {other:?}"),
    }
}

#[test]
fn reserved_sources_are_refused_in_any_case() {
    for source in [
        "mcpwatch:detect",
        "MCPWATCH:detect",
        "  mcpwatch:host",
        "mcpwatch:",
    ] {
        let errs = refused(json!({"category": "custom", "event_type": "x", "source": source}));
        assert_eq!(errs.len(), 1, "{source}: {errs:?}");
        assert_eq!(errs[0].0, "source");
        assert!(errs[0].1.contains("reserved"), "{}", errs[0].1);
    }
    check(
        json!({"category": "custom", "event_type": "x", "source": "wrap:mcpwatch"}),
        &[],
    );
}

#[test]
fn timestamps_past_the_allowed_skew_are_refused() {
    // NOW is the test clock; five minutes ahead is allowed, a second more is not.
    let now = 1_790_000_000.0;
    check(
        json!({"category": "custom", "event_type": "x", "timestamp": now + 300.0}),
        &[],
    );
    let errs = refused(json!({"category": "custom", "event_type": "x", "timestamp": now + 301.0}));
    assert_eq!(errs[0].0, "timestamp");
    assert!(errs[0].1.contains("5m ahead"), "{}", errs[0].1);
    let errs = refused(
        json!({"category": "custom", "event_type": "x", "timestamp": "9999-12-31T23:59:59Z"}),
    );
    assert_eq!(errs[0].0, "timestamp");
    // The past is fine: capture may deliver late from its spool.
    check(
        json!({"category": "custom", "event_type": "x", "timestamp": "2020-01-01T00:00:00Z"}),
        &[],
    );
}

#[test]
fn names_keys_and_tags_are_bounded_and_each_error_names_the_limit() {
    let long = |n: usize| "a".repeat(n);
    let cases = [
        (
            json!({"category": long(65), "event_type": "x"}),
            "category",
            "limit of 64",
        ),
        (
            json!({"category": "c", "event_type": long(65)}),
            "event_type",
            "limit of 64",
        ),
        (
            json!({"category": "c", "event_type": "x", "source": long(257)}),
            "source",
            "limit of 256",
        ),
        (
            json!({"category": "c", "event_type": "x", "tags": vec!["t"; 65]}),
            "tags",
            "limit of 64",
        ),
        (
            json!({"category": "c", "event_type": "x", "tags": [long(257)]}),
            "tags[0]",
            "limit of 256",
        ),
        (
            json!({"category": "c\n", "event_type": "x"}),
            "category",
            "control characters",
        ),
    ];
    for (body, field, limit) in cases {
        let errs = refused(body);
        assert_eq!(errs.len(), 1, "{errs:?}");
        assert_eq!(errs[0].0, field);
        assert!(errs[0].1.contains(limit), "{}", errs[0].1);
    }
    // Metadata keys at every depth, inside arrays too; the path shows a bounded prefix.
    let mut inner = Map::new();
    inner.insert(long(129), json!(1));
    let body = json!({"category": "c", "event_type": "x", "metadata": {"a": [{"b": Value::Object(inner)}]}});
    let errs = refused(body);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].0.starts_with("metadata.a[0].b.aaaa"),
        "{}",
        errs[0].0
    );
    assert!(errs[0].0.len() < 120, "{}", errs[0].0);
    assert!(errs[0].1.contains("limit of 128"), "{}", errs[0].1);
    // Exactly at the limits is accepted.
    let mut at = Map::new();
    at.insert(long(128), json!(1));
    check(
        json!({"category": long(64), "event_type": long(64), "source": long(256), "tags": vec![long(256); 64], "metadata": at}),
        &[],
    );
}

#[test]
fn a_huge_unknown_key_is_not_echoed_whole() {
    let key = "k".repeat(1_000_000);
    let errs = refused(json!({"category": "c", "event_type": "x", key.clone(): 1}));
    assert!(errs[0].0.len() < 100 && errs[0].1.len() < 400, "{errs:?}");
}

#[test]
fn listed_errors_are_capped_and_the_rest_counted() {
    let mut obj = Map::new();
    obj.insert("category".into(), json!("c"));
    obj.insert("event_type".into(), json!("x"));
    for i in 0..500 {
        obj.insert(format!("u{i}"), json!(0));
    }
    let errs = refused(Value::Object(obj));
    assert_eq!(errs.len(), MAX_LISTED_ERRORS + 1);
    assert!(errs[MAX_LISTED_ERRORS].1.contains("400 more"), "{errs:?}");
}

#[test]
fn too_many_events_is_its_own_error() {
    let eleven = json!(vec![json!({"category": "c", "event_type": "x"}); 11]);
    match parse(&eleven.to_string(), BodyFormat::Json) {
        Err(
            e @ BatchError::TooManyEvents {
                events: 11,
                limit: 10,
            },
        ) => {
            assert!(e.to_string().contains("limit of 10"));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn top_level_fields_read_as_a_json_object_would_be() {
    // A field given twice keeps its last value, as any JSON object reader does.
    let evs = parse(
        r#"{"category":"a","event_type":"x","category":"b","message":"m1","message":"m2"}"#,
        BodyFormat::Json,
    )
    .unwrap();
    assert_eq!(
        (evs[0].category.as_str(), evs[0].message.as_str()),
        ("b", "m2")
    );
    // Unknown fields are each named once, in name order, whatever the body's order.
    let Err(BatchError::Fields(errs)) = parse(
        r#"{"zeta":1,"category":"c","event_type":"x","alpha":{"a":[1]},"zeta":2}"#,
        BodyFormat::Json,
    ) else {
        panic!("unknown fields must be refused")
    };
    let named: Vec<&str> = errs.iter().map(|e| e.field.as_str()).collect();
    assert_eq!(named, ["alpha", "zeta"]);
    // The nesting limit holds inside a field that is refused anyway.
    let deep = format!(
        r#"{{"category":"c","event_type":"x","extra":{}{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    match parse(&deep, BodyFormat::Json) {
        Err(BatchError::Body(m)) => assert!(m.contains("nesting is too deep"), "{m}"),
        other => panic!("{other:?}"),
    }
}
