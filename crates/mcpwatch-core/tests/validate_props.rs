//! Property tests: ingest bodies through validation. Whatever the body, validation returns (no
//! panic), what it accepts keeps every bound, what it refuses is answered in bounded size, and
//! an accepted batch sent again is accepted unchanged.
//!
//! CI runs the default number of cases; `PROPTEST_CASES=2000000 cargo test -p mcpwatch-core
//! --release --test validate_props` runs for about an hour (see README). Cases it finds belong
//! in `tests/fixtures/validate/` (they are replayed by `found_cases_stay_fixed`).

use std::time::Duration;

use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::validate::bounds::{
    MAX_KEY_BYTES, MAX_NAME_BYTES, MAX_SOURCE_BYTES, MAX_TAGS, MAX_TAG_BYTES,
};
use mcpwatch_core::validate::{BatchError, BodyFormat, Defaults, MAX_LISTED_ERRORS};
use mcpwatch_core::{parse_batch, Event, ManualClock, Timestamp};
use proptest::prelude::*;
use serde_json::{Map, Value};

const NOW: i64 = 1_790_000_000_000_000;
const SKEW: Duration = Duration::from_secs(300);
const MAX_EVENTS: usize = 8;

fn validate(body: &[u8], format: BodyFormat) -> Result<Vec<Event>, BatchError> {
    let ids = IdGenerator::new();
    let clock = ManualClock::new(Timestamp::from_micros(NOW));
    let defaults = Defaults {
        ids: &ids,
        clock: &clock,
        source: "api",
        max_events: MAX_EVENTS,
        max_future_skew: SKEW,
    };
    parse_batch(body, format, &defaults)
}

/// The one place the properties are checked, for any body.
fn check(body: &[u8], format: BodyFormat) {
    match validate(body, format) {
        Ok(events) => {
            assert!(!events.is_empty() && events.len() <= MAX_EVENTS);
            for e in &events {
                accepted_event_is_bounded(e);
            }
            // Accepted events, sent again as they are, are accepted unchanged.
            let again = serde_json::to_vec(&events).unwrap_or_default();
            match validate(&again, BodyFormat::Json) {
                Ok(back) => assert_eq!(back, events),
                Err(e) => panic!("re-sending accepted events was refused: {e:?}"),
            }
        }
        Err(BatchError::Fields(errors)) => {
            assert!(!errors.is_empty() && errors.len() <= MAX_LISTED_ERRORS + 1);
            for e in &errors {
                assert!(
                    e.field.len() <= 400,
                    "field path of {} bytes",
                    e.field.len()
                );
                assert!(
                    e.message.len() <= 1_000,
                    "message of {} bytes",
                    e.message.len()
                );
            }
        }
        Err(BatchError::Body(m)) => assert!(m.len() <= 1_000, "message of {} bytes", m.len()),
        Err(BatchError::TooManyEvents { events, limit }) => {
            assert!(events > limit && limit == MAX_EVENTS)
        }
    }
}

fn accepted_event_is_bounded(e: &Event) {
    assert!(!e.category.is_empty() && e.category.len() <= MAX_NAME_BYTES);
    assert!(!e.event_type.is_empty() && e.event_type.len() <= MAX_NAME_BYTES);
    assert!(e.source.len() <= MAX_SOURCE_BYTES);
    assert!(!e
        .source
        .trim_start()
        .to_ascii_lowercase()
        .starts_with("mcpwatch:"));
    assert!(e.timestamp <= Timestamp::from_micros(NOW).saturating_add(SKEW));
    assert!(e.tags.len() <= MAX_TAGS && e.tags.iter().all(|t| t.len() <= MAX_TAG_BYTES));
    assert!(!e.id.is_empty() && e.id.len() <= 128);
    keys_are_bounded(&e.metadata);
}

fn keys_are_bounded(m: &Map<String, Value>) {
    for (k, v) in m {
        assert!(k.len() <= MAX_KEY_BYTES, "key of {} bytes", k.len());
        walk(v);
    }
}

fn walk(v: &Value) {
    match v {
        Value::Object(m) => keys_are_bounded(m),
        Value::Array(items) => items.iter().for_each(walk),
        _ => {}
    }
}

/// Strings that hit the interesting edges: empty, reserved, control characters, near a bound.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z_:]{0,12}",
        Just("mcpwatch:detect".to_owned()),
        Just(" MCPWATCH:host".to_owned()),
        "\\PC{0,8}",
        "[\\x00-\\x1f]{1,3}",
        (60usize..70).prop_map(|n| "c".repeat(n)),
        (120usize..135).prop_map(|n| "k".repeat(n)),
        (250usize..260).prop_map(|n| "s".repeat(n)),
    ]
}

fn json_leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    json_leaf().prop_recursive(4, 24, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::btree_map(text(), inner, 0..8)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Timestamps around now, far in the past and future, and not timestamps at all.
fn timestamp() -> impl Strategy<Value = Value> {
    let now = NOW as f64 / 1e6;
    prop_oneof![
        (-400.0f64..400.0).prop_map(move |d| Value::from(now + d)),
        Just(Value::from("9999-12-31T23:59:59Z")),
        Just(Value::from("1970-01-01T00:00:00Z")),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        text().prop_map(Value::String),
    ]
}

/// Event-shaped objects: known and custom types, each field sometimes present, sometimes wrong.
fn event() -> impl Strategy<Value = Value> {
    let kinds = prop_oneof![
        Just(("security", "authentication")),
        Just(("tool_execution", "execution_complete")),
        Just(("performance", "system_performance")),
        Just(("custom", "x")),
    ];
    (
        kinds,
        prop::option::of(text()),
        prop::option::of(timestamp()),
        prop::option::of(json_value()),
        prop::option::of(prop::collection::vec(text(), 0..70)),
        prop::collection::btree_map(text(), json_value(), 0..3),
    )
        .prop_map(|((cat, ty), source, ts, meta, tags, extra)| {
            let mut o = Map::new();
            o.insert("category".into(), Value::from(cat));
            o.insert("event_type".into(), Value::from(ty));
            if let Some(s) = source {
                o.insert("source".into(), Value::from(s));
            }
            if let Some(t) = ts {
                o.insert("timestamp".into(), t);
            }
            if let Some(m) = meta {
                o.insert("metadata".into(), m);
            }
            if let Some(t) = tags {
                o.insert("tags".into(), Value::from(t));
            }
            for (k, v) in extra {
                o.entry(k).or_insert(v);
            }
            Value::Object(o)
        })
}

/// `cases` unless `PROPTEST_CASES` says otherwise (CI keeps the default; long runs raise it).
fn config(cases: u32) -> ProptestConfig {
    let mut c = ProptestConfig::default();
    if std::env::var_os("PROPTEST_CASES").is_none() {
        c.cases = cases;
    }
    c
}

proptest! {
    #![proptest_config(config(64))]

    #[test]
    fn any_bytes_are_answered(body in prop::collection::vec(any::<u8>(), 0..512)) {
        check(&body, BodyFormat::Json);
        check(&body, BodyFormat::Ndjson);
    }

    #[test]
    fn event_shaped_batches_keep_every_bound(events in prop::collection::vec(event(), 1..12)) {
        let body = serde_json::to_vec(&events).unwrap_or_default();
        check(&body, BodyFormat::Json);
        let ndjson: Vec<String> = events.iter().map(Value::to_string).collect();
        check(ndjson.join("\n").as_bytes(), BodyFormat::Ndjson);
    }

    #[test]
    fn deep_and_wide_json_is_answered(v in json_value(), depth in 0usize..200) {
        let body = format!("{}{}{}", "[".repeat(depth), v, "]".repeat(depth));
        check(body.as_bytes(), BodyFormat::Json);
    }
}

/// Bodies earlier runs found, kept as fixtures: each must still be answered within the bounds.
#[test]
fn found_cases_stay_fixed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/validate");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        let body = std::fs::read(&path).unwrap();
        let format = if path.extension().is_some_and(|e| e == "ndjson") {
            BodyFormat::Ndjson
        } else {
            BodyFormat::Json
        };
        check(&body, format);
        n += 1;
    }
    assert!(n > 0, "no fixtures in {}", dir.display());
}
