//! Engine snapshots: stopping anywhere, snapshotting and restoring gives exactly the findings
//! (ids, order) and the final state of the uninterrupted run; bad snapshots are refused with
//! the reason; a changed rule starts fresh while the others keep their state.

use std::time::Instant;

use mcpwatch_core::Event;
use serde_json::{json, Value};

use crate::error::{DetectError, SnapshotError};
use crate::scope_tests::{auth, ingested, partition, realistic_events, run};
use crate::{DetectSettings, Engine, RuleSet, Scope, SNAPSHOT_VERSION};

/// Derived event ids and names, in order.
fn ids(findings: &[crate::Finding]) -> Vec<(String, String)> {
    findings
        .iter()
        .map(|f| (f.event.id.clone(), f.name.clone()))
        .collect()
}

fn check_resumes_exactly(scope: Scope, events: &[Event], settings: &DetectSettings) {
    let rules = RuleSet::defaults();
    let mut whole = Engine::with_scope(rules.clone(), settings, scope);
    let expected = ids(&run(&mut whole, events));
    let final_state = whole.snapshot();
    assert!(
        !expected.is_empty(),
        "{scope}: nothing fired, the test proves nothing"
    );
    let n = events.len();
    for k in [0, 1, n / 5, n / 3, n / 2, 2 * n / 3, n - 1, n] {
        let mut first = Engine::with_scope(rules.clone(), settings, scope);
        let mut got = ids(&run(&mut first, &events[..k]));
        let snap = first.snapshot();
        let mut second = Engine::restore(rules.clone(), settings, scope, &snap)
            .unwrap_or_else(|e| panic!("{scope} at {k}: {e}"));
        assert_eq!(
            second.snapshot(),
            snap,
            "{scope} at {k}: restore is not the identity"
        );
        got.extend(ids(&run(&mut second, &events[k..])));
        assert_eq!(
            got, expected,
            "{scope}: findings differ when stopped at {k} of {n}"
        );
        assert!(
            second.snapshot() == final_state,
            "{scope}: final state differs when stopped at {k} of {n}"
        );
        assert_eq!(second.health().events, whole.health().events);
        assert_eq!(second.findings_by_name(), whole.findings_by_name());
    }
}

#[test]
fn a_restored_engine_continues_exactly_where_the_snapshot_was_taken() {
    let events = realistic_events();
    let settings = DetectSettings::default();
    check_resumes_exactly(Scope::All, &events, &settings);
    // A scoped engine over its partition's events, as a task runs it.
    let p = partition(&events[0], "server");
    let server: Vec<Event> = events
        .iter()
        .filter(|e| partition(e, "server") == p)
        .cloned()
        .collect();
    check_resumes_exactly(Scope::Server, &server, &settings);
    check_resumes_exactly(Scope::User, &events, &settings);
    check_resumes_exactly(Scope::Global, &events, &settings);
}

#[test]
fn eviction_at_the_caps_is_the_same_after_a_restore() {
    let d = DetectSettings::default();
    let settings = DetectSettings {
        max_keys_per_rule: 4,
        anomaly: crate::anomaly::AnomalySettings {
            max_keys: 6,
            ..d.anomaly.clone()
        },
        thresholds: crate::threshold::ThresholdSettings {
            max_keys: 2,
            ..d.thresholds.clone()
        },
        ..d
    };
    let events = realistic_events();
    let mut probe = Engine::new(RuleSet::defaults(), &settings);
    run(&mut probe, &events);
    assert!(probe.health().evicted_keys > 100, "{:?}", probe.health());
    check_resumes_exactly(Scope::All, &events, &settings);
}

fn refusal(bytes: &[u8], scope: Scope) -> SnapshotError {
    match Engine::restore(
        RuleSet::defaults(),
        &DetectSettings::default(),
        scope,
        bytes,
    ) {
        Err(DetectError::Snapshot(e)) => e,
        Err(e) => panic!("another error: {e}"),
        Ok(_) => panic!("a bad snapshot was restored"),
    }
}

#[test]
fn corrupt_and_foreign_snapshots_are_refused_with_the_reason() {
    let mut engine = Engine::new(RuleSet::defaults(), &DetectSettings::default());
    run(&mut engine, &realistic_events()[..2000]);
    let snap = engine.snapshot();

    let truncated = refusal(&snap[..snap.len() / 2], Scope::All);
    assert!(
        matches!(truncated, SnapshotError::Corrupt(_)),
        "{truncated}"
    );
    assert!(matches!(
        refusal(b"\x00\xffgarbage", Scope::All),
        SnapshotError::Corrupt(_)
    ));
    assert!(matches!(
        refusal(b"[1, 2]", Scope::All),
        SnapshotError::Corrupt(_)
    ));
    let layout = refusal(br#"{"version": 1, "scope": "all"}"#, Scope::All);
    assert!(matches!(layout, SnapshotError::Corrupt(_)), "{layout}");

    let mut v: Value = serde_json::from_slice(&snap).expect("a snapshot is JSON");
    v["version"] = json!(SNAPSHOT_VERSION + 1);
    let newer = refusal(&serde_json::to_vec(&v).expect("json"), Scope::All);
    assert_eq!(
        newer,
        SnapshotError::Version {
            found: (SNAPSHOT_VERSION + 1).to_string(),
            supported: SNAPSHOT_VERSION
        }
    );
    if let Some(o) = v.as_object_mut() {
        o.remove("version");
    }
    let none = refusal(&serde_json::to_vec(&v).expect("json"), Scope::All);
    assert!(
        matches!(&none, SnapshotError::Version { found, .. } if found == "none"),
        "{none}"
    );

    let wrong_scope = refusal(&snap, Scope::User);
    assert_eq!(
        wrong_scope,
        SnapshotError::Scope {
            found: Scope::All,
            expected: Scope::User
        }
    );
    // A damaged part names the part.
    let mut v: Value = serde_json::from_slice(&snap).expect("json");
    v["anomalies"]["detectors"][0]["state"] = json!("oops");
    let part = refusal(&serde_json::to_vec(&v).expect("json"), Scope::All);
    assert!(part.to_string().contains("anomaly state"), "{part}");
    let shown = DetectError::from(part).to_string();
    assert!(
        shown.contains("cannot restore the detection state"),
        "{shown}"
    );
}

fn two_rules(b_threshold: u32) -> RuleSet {
    let yaml = format!(
        r#"rules:
  - name: a
    when: category == "security" && event_type == "authentication" && metadata.result == "failure"
    group_by: [metadata.user_id]
    threshold: 5
    window: 1h
    severity: high
  - name: b
    when: category == "security" && event_type == "authentication" && metadata.result == "failure"
    group_by: [metadata.user_id]
    threshold: {b_threshold}
    window: 1h
    severity: high
"#
    );
    RuleSet::from_yaml(&yaml, "test.yaml").unwrap_or_else(|e| panic!("{e:?}"))
}

fn fired(findings: &[crate::Finding]) -> Vec<&str> {
    findings.iter().map(|f| f.name.as_str()).collect()
}

#[test]
fn a_changed_rule_starts_fresh_and_the_others_keep_their_windows() {
    let t0 = 1_790_000_000_000_000;
    let failures: Vec<Event> = ingested(
        (0..12)
            .map(|i| auth(t0 + i * 1_000_000, "alice", "198.51.100.1", false))
            .collect(),
    );
    let settings = DetectSettings::default();
    let mut engine = Engine::new(two_rules(5), &settings);
    assert!(run(&mut engine, &failures[..4]).is_empty());
    let snap = engine.snapshot();

    // Unchanged definitions: both windows hold 4 failures, the 5th fires both.
    let mut same = Engine::restore(two_rules(5), &settings, Scope::All, &snap).expect("restores");
    assert_eq!(fired(&run(&mut same, &failures[4..5])), ["a", "b"]);

    // `b` changed: it starts empty (and its counters at zero); `a` keeps its window.
    let mut changed =
        Engine::restore(two_rules(6), &settings, Scope::All, &snap).expect("restores");
    let stats: Vec<(&str, u64)> = changed
        .rule_engine()
        .stats()
        .map(|(n, s)| (n, s.matched))
        .collect();
    assert_eq!(stats, [("a", 4), ("b", 0)]);
    assert_eq!(fired(&run(&mut changed, &failures[4..5])), ["a"]);
    // `b` with its old window would fire now, on its 6th failure; reset, it has 2.
    assert!(fired(&run(&mut changed, &failures[5..9])).is_empty());
    // Its 6th failure since the restore, and `a`'s 5th since it fired.
    assert_eq!(fired(&run(&mut changed, &failures[9..10])), ["a", "b"]);
}

#[test]
fn snapshot_size_for_ten_thousand_keys() {
    let t0 = 1_790_000_000_000_000;
    let failures: Vec<Event> = (0..10)
        .flat_map(|batch| {
            ingested(
                (0..1000)
                    .map(|i| {
                        let u = batch * 1000 + i;
                        let ip = format!("10.0.{}.{}", u % 7, u % 13);
                        auth(t0 + u * 10_000, &format!("user-{u:05}"), &ip, false)
                    })
                    .collect(),
            )
        })
        .collect();
    let (rules, settings) = (RuleSet::defaults(), DetectSettings::default());
    let mut engine = Engine::new(rules.clone(), &settings);
    run(&mut engine, &failures);
    let keys = engine.health().tracked_keys;
    assert!((10_000..11_000).contains(&keys), "{keys} keys");
    let started = Instant::now();
    let snap = engine.snapshot();
    let took_snapshot = started.elapsed();
    let started = Instant::now();
    let restored = Engine::restore(rules, &settings, Scope::All, &snap).expect("restores");
    let took_restore = started.elapsed();
    assert_eq!(restored.health().tracked_keys, keys);
    eprintln!(
        "snapshot of {keys} keys: {} bytes ({} per key); snapshot {took_snapshot:?}, restore {took_restore:?} (debug build)",
        snap.len(),
        snap.len() / keys
    );
    assert!(
        snap.len() < keys * 200,
        "{} bytes for {keys} keys",
        snap.len()
    );
}
