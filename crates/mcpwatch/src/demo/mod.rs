//! The demo traffic generator behind `mcpwatch demo`: seeded, deterministic normal traffic
//! ([`traffic`]) with a few [`attacks`] mixed in. MCP traffic is real JSON-RPC frames between
//! an in-process client and a small built-in server, sent through the capture crate's session
//! tracker ([`wire`]), so the events are the ones `wrap` and `gateway` emit; logins and
//! authorization checks are events as the gateway reports them. The caller sends the events
//! to the ingest API. [`DETECTION`] is the demo collector's detection config: a demo-sized
//! anomaly learning period, so anomalies can fire within the first minute.

pub mod attacks;
mod rng;
pub mod traffic;
pub mod wire;

use std::time::Duration;

use mcpwatch_core::Timestamp;
use serde_json::Value;

use self::attacks::Scheduled;
use self::rng::Rng;
use self::traffic::Traffic;
use self::wire::Wire;

/// The demo collector's `[detection]` section: anomaly detectors learn for 20 s (and 20 calls
/// per key) instead of the production 30 min, so the attacks after it can trip them. `new_tool`
/// is off: in 20 s the demo's 50 users have not yet used every tool they normally use, so it
/// would report normal work (in production it learns for 30 min).
pub const DETECTION: &str = r#"
[anomaly]
enabled = ["latency", "error_rate", "call_rate", "unusual_parameters", "repetition"]
learning_period = "20s"
min_samples = 20
"#;

/// Normal traffic at a rate, plus the scheduled attacks.
pub struct Generator {
    rng: Rng,
    traffic: Traffic,
    wire: Wire,
    rate: f64,
    owed: f64,
    elapsed: Duration,
    attacks: std::vec::IntoIter<Scheduled>,
    next_attack: Option<Scheduled>,
}

impl Generator {
    /// `rate` normal events per second; attacks spread over `attack_span` from `start`.
    pub fn new(seed: u64, rate: f64, attack_span: Duration, start: Timestamp) -> Self {
        let mut attacks = attacks::schedule(attack_span).into_iter();
        let next_attack = attacks.next();
        Self {
            rng: Rng::new(seed),
            traffic: Traffic::new(),
            wire: Wire::new(start),
            rate: rate.max(0.0),
            owed: 0.0,
            elapsed: Duration::ZERO,
            attacks,
            next_attack,
        }
    }

    /// The events for the run time between the previous call and `elapsed`, in send order,
    /// as JSON the ingest API takes.
    pub fn step(&mut self, elapsed: Duration) -> Vec<Value> {
        let dt = elapsed.saturating_sub(self.elapsed);
        self.elapsed = self.elapsed.max(elapsed);
        self.owed += self.rate * dt.as_secs_f64();
        let mut reported = Vec::new();
        while self.owed >= 1.0 {
            let before = self.wire.pending() + reported.len();
            self.traffic
                .activity(&mut self.rng, self.elapsed, &mut self.wire, &mut reported);
            let made = self.wire.pending() + reported.len() - before;
            self.owed -= made.max(1) as f64;
        }
        while let Some(a) = self.next_attack.take() {
            if a.at > self.elapsed {
                self.next_attack = Some(a);
                break;
            }
            a.action.run(self.elapsed, &mut self.wire, &mut reported);
            self.next_attack = self.attacks.next();
        }
        let mut out: Vec<Value> = self
            .wire
            .take()
            .iter()
            .filter_map(|e| serde_json::to_value(e).ok())
            .collect();
        out.append(&mut reported);
        out
    }
}

#[cfg(test)]
mod tests;
