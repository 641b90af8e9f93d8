//! Property tests: rule files through the rules compiler, and what compiles through the rule
//! engine. Whatever the text, compiling returns (no panic); every error names the file and
//! says something; rules that compile evaluate any event without panicking, and the state they
//! keep stays within the per-rule key cap.
//!
//! CI runs the default number of cases; `PROPTEST_CASES=1000000 cargo test -p mcpwatch-detect
//! --release --test rules_props` runs for about an hour (see README). Cases it finds belong in
//! `tests/fixtures/rules_props/` (replayed by `found_cases_stay_fixed`).

mod common;

use mcpwatch_core::{Event, Level, Timestamp};
use mcpwatch_detect::{RuleEngine, RuleSet};
use proptest::prelude::*;
use serde_json::{json, Map, Value};

const KEY_CAP: usize = 16;

/// The one place the properties are checked, for any rule file text.
fn check(text: &str, events: &[Event]) {
    match RuleSet::from_yaml(text, "fuzz.yaml") {
        Err(errors) => {
            assert!(!errors.is_empty());
            for e in &errors {
                assert_eq!(e.file, "fuzz.yaml");
                assert!(!e.message.trim().is_empty(), "{e:?}");
                assert!(
                    e.message.len() < 4_096,
                    "message of {} bytes",
                    e.message.len()
                );
                // Displaying it must work too (it is what `rules check` prints).
                let _ = e.to_string();
            }
        }
        Ok(rules) => {
            let n = rules.rules().len();
            let mut engine = RuleEngine::new(rules, KEY_CAP);
            let mut out = Vec::new();
            for e in events {
                engine.process(e, &mut out);
            }
            assert!(engine.tracked_keys() <= KEY_CAP * n.max(1));
        }
    }
}

/// Pieces of the expression language, correct and not.
fn expr() -> impl Strategy<Value = String> {
    let field = prop_oneof![
        Just("category"),
        Just("event_type"),
        Just("level"),
        Just("message"),
        Just("tags"),
        Just("metadata.user_id"),
        Just("metadata.a.b.c"),
        Just("metadata.n"),
        Just("user"),
        Just("metadata."),
    ];
    let literal = prop_oneof![
        Just("\"security\"".to_owned()),
        Just("'x'".to_owned()),
        Just("5".to_owned()),
        Just("-1.5e3".to_owned()),
        Just("true".to_owned()),
        Just("\"(unclosed\"".to_owned()),
        Just("\"\\d+\"".to_owned()),
        Just("\"unterminated".to_owned()),
        "[a-z\\\\\"']{0,6}".prop_map(|s| format!("\"{s}\"")),
    ];
    let op = prop_oneof![
        Just("=="),
        Just("!="),
        Just("<"),
        Just("<="),
        Just(">"),
        Just(">="),
        Just("matches"),
        Just("contains"),
        Just("in"),
        Just("="),
        Just("&"),
    ];
    let atom = (field, op, literal).prop_map(|(f, o, l)| match o {
        "in" => format!("{f} in [{l}, {l}]"),
        _ => format!("{f} {o} {l}"),
    });
    atom.prop_recursive(4, 32, 4, |inner| {
        prop_oneof![
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("{a} && {b}")),
            (inner.clone(), inner.clone()).prop_map(|(a, b)| format!("({a}) || {b}")),
            inner.clone().prop_map(|a| format!("!({a})")),
            inner.clone().prop_map(|a| format!("(({a}")),
            Just("exists(metadata.user_id)".to_owned()),
        ]
    })
}

/// A YAML value as rule files write them, or something that is not one.
fn scalar() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("5".to_owned()),
        Just("0".to_owned()),
        Just("-3".to_owned()),
        Just("100001".to_owned()),
        Just("1m".to_owned()),
        Just("5 fortnights".to_owned()),
        Just("99999999999999999999d".to_owned()),
        Just("[metadata.user_id, category]".to_owned()),
        Just("{a: 1}".to_owned()),
        Just("~".to_owned()),
        "[a-z0-9 ]{0,10}",
    ]
}

fn rule() -> impl Strategy<Value = String> {
    let keys = prop_oneof![
        Just("threshold"),
        Just("window"),
        Just("distinct"),
        Just("suppress"),
        Just("group_by"),
        Just("severity"),
        Just("tags"),
        Just("description"),
        Just("recommended_action"),
        Just("threshhold"),
    ];
    (
        prop::option::of("[a-z_]{0,12}"),
        prop::option::of(expr()),
        prop::option::of(prop_oneof![Just("low"), Just("high"), Just("urgent")]),
        prop::collection::vec((keys, scalar()), 0..5),
    )
        .prop_map(|(name, when, severity, extra)| {
            let mut r = String::from("  - ");
            let mut lines = Vec::new();
            if let Some(n) = name {
                lines.push(format!("name: {n}"));
            }
            if let Some(w) = when {
                lines.push(format!("when: '{}'", w.replace('\'', "''")));
            }
            if let Some(s) = severity {
                lines.push(format!("severity: {s}"));
            }
            for (k, v) in extra {
                lines.push(format!("{k}: {v}"));
            }
            if lines.is_empty() {
                lines.push("{}".into());
            }
            r.push_str(&lines.join("\n    "));
            r
        })
}

fn rule_file() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => prop::collection::vec(rule(), 0..5).prop_map(|rs| format!("rules:\n{}\n", rs.join("\n"))),
        1 => "\\PC{0,200}",
        1 => Just("rules: 5".to_owned()),
        1 => Just("- a\n- b".to_owned()),
    ]
}

fn events() -> impl Strategy<Value = Vec<Event>> {
    let ev = (
        prop_oneof![Just("security"), Just("tool_execution"), Just("custom")],
        prop_oneof![
            Just("authentication"),
            Just("execution_complete"),
            Just("x")
        ],
        prop::option::of("[a-z]{0,3}"),
        prop::option::of(any::<i64>()),
        0i64..600,
    )
        .prop_map(|(category, event_type, user, n, secs)| {
            let mut metadata = Map::new();
            if let Some(u) = user {
                metadata.insert("user_id".into(), Value::from(u));
            }
            if let Some(n) = n {
                metadata.insert("n".into(), json!(n));
            }
            metadata.insert("a".into(), json!({"b": {"c": "security"}}));
            Event {
                id: format!("e{secs}"),
                timestamp: Timestamp::from_micros(1_767_225_600_000_000 + secs * 1_000_000),
                level: Level::Info,
                category: category.into(),
                source: "fuzz".into(),
                event_type: event_type.into(),
                message: "security 123".into(),
                metadata,
                tags: vec!["t".into()],
            }
        });
    prop::collection::vec(ev, 0..40)
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
    #![proptest_config(config(128))]

    #[test]
    fn any_rule_file_compiles_or_is_refused_and_what_compiles_runs(
        text in rule_file(),
        events in events(),
    ) {
        check(&text, &events);
    }
}

/// Rule files earlier runs found, kept as fixtures.
#[test]
fn found_cases_stay_fixed() {
    let dir = common::fixture("rules_props");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let text = std::fs::read_to_string(entry.unwrap().path()).unwrap();
        check(&text, &[]);
        n += 1;
    }
    assert!(n > 0, "no fixtures in {}", dir.display());
}
