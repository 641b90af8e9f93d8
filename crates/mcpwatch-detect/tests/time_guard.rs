//! One event dated ahead of the collector's clock must not expire every open window: the live
//! engine detects on it at the clock's time. Events come out of ingest's own validation, as a
//! client (or a capture host with a wrong clock) would send them.

use std::time::Duration;

use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::validate::{BodyFormat, Defaults};
use mcpwatch_core::{parse_batch, Event, ManualClock, Timestamp};
use mcpwatch_detect::{DetectSettings, Engine, Finding, RuleSet};
use serde_json::json;

const T0: i64 = 1_767_225_600_000_000; // 2026-01-01T00:00:00Z

fn auth(user: &str, result: &str, at: Timestamp) -> Event {
    let body = json!({"category": "security", "event_type": "authentication", "source": "app",
        "timestamp": at.as_secs_f64(), "metadata": {"user_id": user, "result": result}});
    let ids = IdGenerator::new();
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let defaults = Defaults {
        ids: &ids,
        clock: &clock,
        source: "api",
        max_events: 1,
        // What a path that bypasses ingest's skew check delivers.
        max_future_skew: Duration::MAX,
    };
    parse_batch(body.to_string().as_bytes(), BodyFormat::Json, &defaults)
        .unwrap_or_else(|e| panic!("{e:?}"))
        .remove(0)
}

fn at(secs: f64) -> Timestamp {
    Timestamp::from_micros(T0 + (secs * 1e6) as i64)
}

/// Four failures for alice, one event from `ahead` seconds in the future, the fifth failure:
/// the brute-force firings, with or without the collector's clock ticking.
fn brute_force_after_an_outlier(ahead: f64, live: bool) -> (Vec<Finding>, Engine) {
    let mut engine = Engine::new(RuleSet::defaults(), &DetectSettings::default());
    let mut out = Vec::new();
    let tick = |engine: &mut Engine, secs: f64, out: &mut Vec<Finding>| {
        if live {
            engine.advance_to(at(secs), out);
        }
    };
    for i in 0..4 {
        tick(&mut engine, f64::from(i), &mut out);
        engine.process(&auth("alice", "failure", at(f64::from(i))), &mut out);
    }
    engine.process(&auth("mallory", "success", at(ahead)), &mut out);
    tick(&mut engine, 4.0, &mut out);
    engine.process(&auth("alice", "failure", at(4.0)), &mut out);
    out.retain(|f| f.name == "brute_force_detection");
    (out, engine)
}

#[test]
fn a_far_future_event_does_not_wipe_open_windows_on_the_live_path() {
    for ahead in [400.0, 86_400.0 * 365.0, 253_402_300_799.0 - T0 as f64 / 1e6] {
        let (fired, engine) = brute_force_after_an_outlier(ahead, true);
        assert_eq!(fired.len(), 1, "{ahead}s ahead: {fired:?}");
        assert_eq!(fired[0].event_ids.len(), 5);
        assert_eq!(engine.health().future_events_moved, 1);
    }
}

#[test]
fn without_the_clock_the_same_outlier_would_wipe_the_window() {
    // Why the guard exists: unguarded, the window of four failures is swept away. (Replay runs
    // without a clock, but sorts by time first, so there the outlier comes last.)
    let (fired, engine) = brute_force_after_an_outlier(86_400.0 * 365.0, false);
    assert!(fired.is_empty(), "{fired:?}");
    assert_eq!(engine.health().future_events_moved, 0);
}

#[test]
fn events_a_little_ahead_keep_their_time() {
    let (fired, engine) = brute_force_after_an_outlier(20.0, true);
    assert_eq!(fired.len(), 1);
    assert_eq!(engine.health().future_events_moved, 0);
}
