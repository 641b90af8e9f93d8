//! Each detector must fire on a clear injected anomaly inside noisy, realistic background
//! traffic, and stay (nearly) silent on a long background-only stream. The traffic comes from a
//! seeded generator, so every run sees the same stream.

use std::collections::BTreeMap;

use mcpwatch_core::{Event, Level, Timestamp};
use serde_json::{json, Map, Value};

use super::{AnomalyDetectors, AnomalySettings, DETECTORS};
use crate::finding::Finding;

/// SplitMix64: small, seeded, good enough for test traffic.
pub(crate) struct Rng(u64);

impl Rng {
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
    pub fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    pub fn normal(&mut self) -> f64 {
        let (u, v) = (self.unit().max(1e-12), self.unit());
        (-2.0 * u.ln()).sqrt() * (2.0 * std::f64::consts::PI * v).cos()
    }
}

/// (server, tool, median latency ms, parameter keys)
const TOOLS: &[(&str, &str, f64, &[&str])] = &[
    ("fs", "read_file", 12.0, &["path"]),
    ("fs", "write_file", 25.0, &["path", "content"]),
    ("fs", "list_dir", 8.0, &["path"]),
    ("web", "search", 300.0, &["query", "limit"]),
    ("web", "fetch", 450.0, &["url"]),
    ("db", "query", 40.0, &["sql"]),
    ("db", "schema", 15.0, &["table"]),
    ("db", "explain", 60.0, &["sql", "analyze"]),
];

pub(crate) struct Gen {
    rng: Rng,
    pub t: i64,
    n: u64,
}

impl Gen {
    pub fn new(seed: u64) -> Self {
        Self {
            rng: Rng(seed),
            t: 1_790_000_000_000_000,
            n: 0,
        }
    }

    /// One background call: one of 20 users, each using 4 of the 8 tools, 2% errors,
    /// log-normal latency, random argument values.
    pub fn background(&mut self) -> Event {
        self.t += (-(self.rng.unit().max(1e-9)).ln() * 500_000.0) as i64;
        let u = self.rng.below(20);
        let tool = (u + self.rng.below(4) * 2) % TOOLS.len();
        let failed = self.rng.unit() < 0.02;
        let (server, name, median, keys) = TOOLS[tool];
        let latency = median * (0.5 * self.rng.normal()).exp();
        let params: Map<String, Value> = keys
            .iter()
            .map(|k| {
                let len = 10 + self.rng.below(50);
                let v: String = (0..len)
                    .map(|_| (b'a' + self.rng.below(26) as u8) as char)
                    .collect();
                ((*k).to_owned(), Value::String(v))
            })
            .collect();
        let (user, session) = (format!("u{u}"), format!("s{u}"));
        self.call(
            &user,
            &session,
            server,
            name,
            latency,
            failed,
            Value::Object(params),
        )
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "a test event builder, called in few places"
    )]
    pub fn call(
        &mut self,
        user: &str,
        session: &str,
        server: &str,
        tool: &str,
        latency_ms: f64,
        failed: bool,
        params: Value,
    ) -> Event {
        self.n += 1;
        let outcome = if failed { "tool_error" } else { "success" };
        let meta = json!({"execution_id": format!("x{}", self.n), "tool_name": tool,
            "server": server, "user_id": user, "session_id": session,
            "execution_time": latency_ms / 1000.0, "success": !failed, "outcome": outcome,
            "parameters": params});
        Event {
            id: format!("e{}", self.n),
            timestamp: Timestamp::from_micros(self.t),
            level: Level::Info,
            category: "tool_execution".into(),
            source: "wrap:test".into(),
            event_type: "execution_complete".into(),
            message: String::new(),
            metadata: meta.as_object().cloned().unwrap_or_default(),
            tags: Vec::new(),
        }
    }
}

fn run(events: impl IntoIterator<Item = Event>) -> Vec<Finding> {
    let mut d = AnomalyDetectors::new(&AnomalySettings::default());
    let mut out = Vec::new();
    for e in events {
        d.process(&e, &mut out);
    }
    out
}

fn count_by_kind(findings: &[Finding]) -> BTreeMap<String, usize> {
    let mut m: BTreeMap<String, usize> = DETECTORS.iter().map(|d| ((*d).to_owned(), 0)).collect();
    for f in findings {
        *m.entry(f.name.clone()).or_default() += 1;
    }
    m
}

/// Background for two hours, then `inject` (which may use the generator), then one more hour.
fn stream(seed: u64, inject: impl Fn(&mut Gen) -> Vec<Event>) -> Vec<Event> {
    let mut g = Gen::new(seed);
    let start = g.t;
    let mut events = Vec::new();
    while g.t < start + 2 * 3_600_000_000 {
        events.push(g.background());
    }
    events.extend(inject(&mut g));
    let resume = g.t;
    while g.t < resume + 3_600_000_000 {
        events.push(g.background());
    }
    events
}

/// Runs `inject` inside background and checks that `kind` fires for it (a finding whose
/// description contains `needle`) at least once, and at most `max_kind` times overall.
fn check(kind: &str, needle: &str, max_kind: usize, inject: impl Fn(&mut Gen) -> Vec<Event>) {
    for seed in [1, 2, 3] {
        let out = run(stream(seed, &inject));
        let hits: Vec<&Finding> = out.iter().filter(|f| f.name == kind).collect();
        assert!(
            hits.iter().any(|f| f.description.contains(needle)),
            "seed {seed}: {kind} did not fire for the injected anomaly; got {:#?}",
            hits.iter().map(|f| &f.description).collect::<Vec<_>>()
        );
        assert!(
            hits.len() <= max_kind,
            "seed {seed}: {kind} fired {} times",
            hits.len()
        );
    }
}

#[test]
fn background_alone_gives_few_false_positives() {
    for seed in [11, 12, 13] {
        let mut g = Gen::new(seed);
        let events: Vec<Event> = (0..40_000).map(|_| g.background()).collect();
        let counts = count_by_kind(&run(events));
        for (kind, n) in &counts {
            assert!(
                *n <= 2,
                "seed {seed}: {kind} fired {n} times on 40,000 normal calls: {counts:?}"
            );
        }
    }
}

#[test]
fn latency_fires_on_a_slow_tool() {
    check("latency", "fs/read_file p50 latency", 2, |g| {
        (0..300)
            .map(|i| {
                g.t += 200_000;
                let slow = 840.0 * (0.3 * ((i % 7) as f64 - 3.0) / 3.0).exp();
                g.call(
                    "u0",
                    "s0",
                    "fs",
                    "read_file",
                    slow,
                    false,
                    json!({"path": "/a"}),
                )
            })
            .collect()
    });
}

#[test]
fn error_rate_fires_on_a_failing_tool() {
    check("error_rate", "db/query error rate", 3, |g| {
        (0..80)
            .map(|i| {
                g.t += 300_000;
                g.call(
                    "u1",
                    "s1",
                    "db",
                    "query",
                    40.0,
                    i % 2 == 0,
                    json!({"sql": "select 1"}),
                )
            })
            .collect()
    });
}

#[test]
fn call_rate_fires_on_a_burst() {
    check("call_rate", "user u3 made", 1, |g| {
        (0..200)
            .map(|i| {
                g.t += 250_000;
                g.call(
                    "u3",
                    "s3",
                    "fs",
                    "read_file",
                    12.0,
                    false,
                    json!({"path": format!("/f{i}")}),
                )
            })
            .collect()
    });
}

#[test]
fn new_tool_fires_on_first_use_after_learning() {
    check(
        "new_tool",
        "user u5 called fs/delete_file for the first time",
        1,
        |g| {
            g.t += 1_000_000;
            vec![g.call(
                "u5",
                "s5",
                "fs",
                "delete_file",
                10.0,
                false,
                json!({"path": "/etc"}),
            )]
        },
    );
}

#[test]
fn unusual_parameters_fires_on_new_keys_and_huge_inputs() {
    check(
        "unusual_parameters",
        "parameter set never seen before: [path, upload_to]",
        2,
        |g| {
            g.t += 1_000_000;
            vec![g.call(
                "u0",
                "s0",
                "fs",
                "read_file",
                12.0,
                false,
                json!({"path": "/a", "upload_to": "http://x"}),
            )]
        },
    );
    check("unusual_parameters", "20000 bytes of parameters", 2, |g| {
        g.t += 1_000_000;
        vec![g.call(
            "u0",
            "s0",
            "fs",
            "read_file",
            12.0,
            false,
            json!({"path": "a".repeat(19_996)}),
        )]
    });
}

#[test]
fn repetition_fires_on_a_stuck_agent() {
    check(
        "repetition",
        "fs/list_dir called 10 times in a row",
        1,
        |g| {
            (0..15)
                .map(|_| {
                    g.t += 2_000_000;
                    g.call(
                        "u7",
                        "stuck",
                        "fs",
                        "list_dir",
                        8.0,
                        false,
                        json!({"path": "/tmp"}),
                    )
                })
                .collect()
        },
    );
}
