//! The generator is deterministic, every event it makes passes ingest validation, its MCP
//! events are the session tracker's, and a simulated run through detection (with the demo's
//! detection config) trips every attack's detection and nothing for the normal users.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::validate::{parse_batch, BodyFormat, Defaults};
use mcpwatch_core::{Event, ManualClock, Timestamp};
use mcpwatch_detect::{replay, DetectConfig, DetectSettings, RuleSet};
use serde_json::Value;

use super::attacks::EXPECTED;
use super::{Generator, DETECTION};

const STEP: Duration = Duration::from_millis(250);

/// Runs the generator for `run` (stepping like the demo does) and validates each batch as
/// ingest would, stamping it with the simulated time.
fn simulate(seed: u64, rate: f64, run: Duration) -> Vec<Event> {
    let start = Timestamp::from_micros(1_795_000_000_000_000);
    let clock = ManualClock::new(start);
    let ids = IdGenerator::new();
    let mut generator = Generator::new(seed, rate, Duration::from_secs(60), start);
    let mut events = Vec::new();
    let mut elapsed = Duration::ZERO;
    while elapsed < run {
        elapsed += STEP;
        clock.set(start.saturating_add(elapsed));
        let batch = generator.step(elapsed);
        if batch.is_empty() {
            continue;
        }
        let body = serde_json::to_vec(&batch).unwrap();
        let defaults = Defaults {
            ids: &ids,
            clock: &clock,
            source: "demo",
            max_events: 10_000,
            max_future_skew: mcpwatch_core::validate::bounds::DEFAULT_MAX_FUTURE_SKEW,
        };
        match parse_batch(&body, BodyFormat::Json, &defaults) {
            Ok(mut ok) => events.append(&mut ok),
            Err(e) => panic!("the generator made events ingest rejects: {e:?}"),
        }
    }
    events
}

/// The events without the ids capture draws at random (event, session and execution ids).
fn strip_ids(events: &[Event]) -> Vec<Value> {
    events
        .iter()
        .map(|e| {
            let mut v = serde_json::to_value(e).unwrap();
            v["id"] = Value::Null;
            for k in ["session_id", "execution_id"] {
                if let Some(m) = v["metadata"].as_object_mut() {
                    m.remove(k);
                }
            }
            v
        })
        .collect()
}

fn demo_settings() -> DetectSettings {
    let config: DetectConfig = toml::from_str(DETECTION).expect("the demo's detection config");
    config
        .build()
        .expect("the demo's detection config is valid")
}

#[test]
fn the_same_seed_gives_the_same_traffic() {
    let run = Duration::from_secs(20);
    let a = strip_ids(&simulate(3, 40.0, run));
    let b = strip_ids(&simulate(3, 40.0, run));
    let c = strip_ids(&simulate(4, 40.0, run));
    assert!(a.len() > 700, "{} events in 20 s at 40/s", a.len());
    assert_eq!(a, b);
    assert_ne!(a, c);
}

#[test]
fn traffic_is_varied_like_real_traffic() {
    let events = simulate(1, 30.0, Duration::from_secs(120));
    let users: BTreeSet<&str> = events.iter().filter_map(Event::user).collect();
    let servers: BTreeSet<&str> = events.iter().filter_map(Event::server).collect();
    let mut outcomes: BTreeMap<&str, usize> = BTreeMap::new();
    for e in &events {
        if e.event_type == "execution_complete" {
            let o = e.metadata["outcome"].as_str().unwrap_or("?");
            *outcomes.entry(o).or_default() += 1;
        }
    }
    assert!(users.len() >= 45, "{users:?}");
    assert!(servers.len() >= 5, "{servers:?}");
    let calls: usize = outcomes.values().sum();
    let errors = outcomes.get("tool_error").copied().unwrap_or(0)
        + outcomes.get("rpc_error").copied().unwrap_or(0);
    assert!(
        outcomes.contains_key("tool_error") && outcomes.contains_key("rpc_error"),
        "{outcomes:?}"
    );
    let rate = errors as f64 / calls as f64;
    assert!(
        (0.01..0.08).contains(&rate),
        "error rate {rate}: {outcomes:?}"
    );
    for t in [
        "session_start",
        "tools_listed",
        "request_performance",
        "data_access",
    ] {
        assert!(events.iter().any(|e| e.event_type == t), "no {t}");
    }
}

#[test]
fn every_attack_is_detected_and_normal_traffic_stays_quiet() {
    let events = simulate(1, 25.0, Duration::from_secs(300));
    let settings = demo_settings();
    // MCP events come from the session tracker: its calls carry parameters to completion.
    let completions: Vec<&Event> = events
        .iter()
        .filter(|e| e.event_type == "execution_complete")
        .collect();
    assert!(completions.len() > 1000, "{} calls", completions.len());
    assert!(completions
        .iter()
        .all(|e| e.source.starts_with("wrap:") && e.metadata.get("parameters").is_some()));
    let (alerts, _) = replay(events, RuleSet::defaults(), &settings);
    let fired: BTreeSet<&str> = alerts.iter().map(|a| a.name.as_str()).collect();
    for (attack, name) in EXPECTED {
        assert!(fired.contains(name), "{attack}: no {name} in {fired:?}");
    }
    // Who each rule and signature may fire for: the attackers, nobody else.
    let allowed: &[(&str, &str)] = &[
        ("brute_force_detection", "dana"),
        ("credential_stuffing", "203.0.113.77"),
        ("privilege_escalation", "intern-bot"),
        ("unusual_data_access", "sybil"),
        ("path_traversal", "trent"),
        ("prompt_injection", "lena"),
        ("tool_poisoning", "math-helper"),
        ("tool_poisoning", "github"),
        ("repetition", "ci-bot"),
        ("unusual_parameters", "carol"),
        // The page with the injection is not one of the usual URLs.
        ("unusual_parameters", "lena"),
    ];
    for a in &alerts {
        let group: Vec<&str> = a.group.values().map(String::as_str).collect();
        let listed = allowed
            .iter()
            .filter(|(n, _)| *n == a.name)
            .collect::<Vec<_>>();
        if listed.is_empty() {
            // Anomalies other than those listed are false positives: normal users stay quiet
            // (the latency spike's `latency` is raj's attack).
            let anomaly = ["error_rate", "call_rate", "new_tool", "unusual_parameters"];
            assert!(
                !anomaly.contains(&a.name.as_str()),
                "false positive: {} for {:?}: {}",
                a.name,
                a.group,
                a.description
            );
            continue;
        }
        assert!(
            listed
                .iter()
                .any(|(_, who)| group.iter().any(|g| g.contains(who))),
            "false positive: {} for {:?}",
            a.name,
            a.group
        );
    }
    let odd = alerts
        .iter()
        .find(|a| a.name == "unusual_parameters" && a.description.contains("carol"))
        .expect("carol's odd call is reported");
    assert!(odd.description.contains("exec"), "{}", odd.description);
    assert!(
        alerts.len() < 40,
        "too noisy for a demo: {} alerts: {:?}",
        alerts.len(),
        alerts.iter().map(|a| &a.name).collect::<Vec<_>>()
    );
}
