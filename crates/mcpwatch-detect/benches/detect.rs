//! Detection benchmark (SPEC 11): ns per event for the default rule set and for the whole
//! engine over a realistic mixed stream, the time to replay 1,000,000 events, and bytes of
//! state per tracked key. Prints each measurement next to its target.
//!
//! Run: `cargo bench -p mcpwatch-detect`

use std::hint::black_box;
use std::time::Instant;

use mcpwatch_core::{Event, Level, Timestamp};
use mcpwatch_detect::{replay, DetectSettings, Engine, RuleEngine, RuleSet};
use serde_json::{json, Value};

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TOOLS: &[(&str, &str)] = &[
    ("fs", "read_file"),
    ("fs", "write_file"),
    ("fs", "list_dir"),
    ("web", "search"),
    ("web", "fetch"),
    ("db", "query"),
    ("db", "schema"),
    ("git", "log"),
];

/// A mixed stream like a busy deployment's: mostly tool executions, plus authentication,
/// authorization, data access and performance events; 1,000 users, 300 addresses.
fn stream(n: usize) -> Vec<Event> {
    let mut rng = Rng(42);
    let mut t: i64 = 1_790_000_000_000_000;
    (0..n)
        .map(|i| {
            t += 2_000 + rng.below(4_000) as i64; // ~330 events/s of event time
            let user = format!("user{}", rng.below(1000));
            let id = uuid::Uuid::from_u128(0x0193_0000_0000_7000_8000_0000_0000_0000 | i as u128)
                .to_string();
            let kind = rng.below(100);
            let (category, event_type, metadata) = match kind {
                0..=59 => {
                    let (server, tool) = TOOLS[rng.below(TOOLS.len() as u64) as usize];
                    let ok = rng.below(50) != 0;
                    let outcome = if ok { "success" } else { "tool_error" };
                    let path = format!("/srv/data/file{}.txt", rng.below(500));
                    ("tool_execution", "execution_complete", json!({
                        "execution_id": format!("x{i}"), "tool_name": tool, "server": server,
                        "user_id": user, "session_id": format!("s{}", rng.below(3000)),
                        "execution_time": 0.005 + rng.below(100) as f64 / 1000.0,
                        "success": ok, "outcome": outcome,
                        "parameters": {"path": path, "limit": 10},
                        "result": {"text": "file contents: lorem ipsum dolor sit amet", "size": 42}}))
                }
                60..=69 => {
                    let (server, tool) = TOOLS[rng.below(TOOLS.len() as u64) as usize];
                    ("tool_execution", "execution_start", json!({
                        "execution_id": format!("x{i}"), "tool_name": tool, "server": server,
                        "user_id": user, "parameters": {"path": "/srv/data/a.txt"}}))
                }
                70..=79 => {
                    let result = if rng.below(10) == 0 { "failure" } else { "success" };
                    ("security", "authentication", json!({"user_id": user, "result": result,
                        "ip_address": format!("10.0.{}.{}", rng.below(3), rng.below(100))}))
                }
                80..=84 => {
                    let result = if rng.below(20) == 0 { "denied" } else { "allowed" };
                    let res = if rng.below(10) == 0 { "/admin/users" } else { "/reports/q3" };
                    ("security", "authorization", json!({"user_id": user, "resource": res,
                        "action": "read", "result": result}))
                }
                85..=89 => {
                    let class = if rng.below(5) == 0 { "sensitive" } else { "internal" };
                    ("security", "data_access", json!({"user_id": user, "data_type": "records",
                        "operation": "read", "data_classification": class,
                        "resource": format!("db://crm/{}", rng.below(100))}))
                }
                90..=97 => ("performance", "request_performance", json!({
                    "request_id": format!("r{i}"), "response_time": rng.below(300) as f64 / 1000.0,
                    "success": rng.below(40) != 0, "server": "fs"})),
                _ => ("performance", "system_performance", json!({
                    "metric_name": "cpu_usage", "value": 20 + rng.below(50)})),
            };
            Event {
                id,
                timestamp: Timestamp::from_micros(t),
                level: Level::Info,
                category: category.into(),
                source: "bench".into(),
                event_type: event_type.into(),
                message: String::new(),
                metadata: match metadata {
                    Value::Object(m) => m,
                    _ => serde_json::Map::new(),
                },
                tags: vec!["bench".into()],
            }
        })
        .collect()
}

fn main() {
    let settings = DetectSettings::default();
    let events = stream(1_000_000);
    let warm = &events[..200_000];
    let measured = &events[200_000..];

    // Default rules alone.
    let mut rules = RuleEngine::new(RuleSet::defaults(), settings.max_keys_per_rule);
    let mut out = Vec::new();
    warm.iter().for_each(|e| rules.process(e, &mut out));
    out.clear();
    let t0 = Instant::now();
    for e in measured {
        rules.process(black_box(e), &mut out);
        out.clear();
    }
    let rule_ns = t0.elapsed().as_nanos() as f64 / measured.len() as f64;
    let rule_bytes = rules.state_bytes() as f64 / rules.tracked_keys().max(1) as f64;

    // The whole engine: rules, detectors, signatures, thresholds.
    let mut engine = Engine::new(RuleSet::defaults(), &settings);
    warm.iter().for_each(|e| engine.process(e, &mut out));
    out.clear();
    let t0 = Instant::now();
    for e in measured {
        engine.process(black_box(e), &mut out);
        out.clear();
    }
    let engine_ns = t0.elapsed().as_nanos() as f64 / measured.len() as f64;
    let h = engine.health();
    let engine_bytes = h.state_bytes as f64 / h.tracked_keys.max(1) as f64;

    // Replay of 1,000,000 events (sorting and alert folding included).
    let t0 = Instant::now();
    let (alerts, summary) = replay(events, RuleSet::defaults(), &settings);
    let replay_s = t0.elapsed().as_secs_f64();

    println!("mcpwatch-detect benchmark (release), 1,000,000-event mixed stream");
    println!("{:<52} {:>12} {:>12}", "measure", "measured", "target");
    println!(
        "{:<52} {:>9.0} ns {:>9} ns",
        "default rule set, per event", rule_ns, "<= 1000"
    );
    println!(
        "{:<52} {:>9.0} ns {:>12}",
        "whole engine (rules+anomaly+threat+threshold), per event", engine_ns, "(info)"
    );
    println!(
        "{:<52} {:>10.2} s {:>10} s",
        "replay of 1,000,000 events", replay_s, "<= 5"
    );
    println!(
        "{:<52} {:>8.0} B {:>10} B",
        "rule state per tracked key", rule_bytes, "<= 300"
    );
    println!(
        "{:<52} {:>8.0} B {:>10} B",
        "all detection state per tracked key", engine_bytes, "<= 300"
    );
    println!(
        "(replay: {} alerts; {} keys tracked, {} expired, {} evicted)",
        alerts.len(),
        summary.health.tracked_keys,
        summary.health.expired_keys,
        summary.health.evicted_keys
    );
}
