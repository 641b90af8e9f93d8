//! The demo traffic generator behind `mcpwatch demo`: seeded, deterministic normal traffic
//! ([`traffic`]) with a few [`attacks`] mixed in. It produces events as JSON, the way a client
//! posts them to the ingest API; the caller stamps them with its clock and sends them.

pub mod attacks;
mod rng;
pub mod traffic;

use std::time::Duration;

use serde_json::Value;

use self::attacks::Scheduled;
use self::rng::Rng;
use self::traffic::Traffic;

/// Normal traffic at a rate, plus the scheduled attacks.
pub struct Generator {
    rng: Rng,
    traffic: Traffic,
    rate: f64,
    owed: f64,
    elapsed: Duration,
    attacks: std::vec::IntoIter<Scheduled>,
    next_attack: Option<Scheduled>,
}

impl Generator {
    /// `rate` normal events per second; attacks spread over `attack_span` from the start.
    pub fn new(seed: u64, rate: f64, attack_span: Duration) -> Self {
        let mut attacks = attacks::schedule(attack_span).into_iter();
        let next_attack = attacks.next();
        Self {
            rng: Rng::new(seed),
            traffic: Traffic::new(),
            rate: rate.max(0.0),
            owed: 0.0,
            elapsed: Duration::ZERO,
            attacks,
            next_attack,
        }
    }

    /// The events for the run time between the previous call and `elapsed`, in send order.
    pub fn step(&mut self, elapsed: Duration) -> Vec<Value> {
        let dt = elapsed.saturating_sub(self.elapsed);
        self.elapsed = self.elapsed.max(elapsed);
        self.owed += self.rate * dt.as_secs_f64();
        let mut out = Vec::new();
        while self.owed >= 1.0 {
            let before = out.len();
            self.traffic.activity(&mut self.rng, &mut out);
            self.owed -= (out.len() - before) as f64;
        }
        while let Some(a) = self.next_attack.take() {
            if a.at > self.elapsed {
                self.next_attack = Some(a);
                break;
            }
            out.push(a.event);
            self.next_attack = self.attacks.next();
        }
        out
    }
}

#[cfg(test)]
mod tests;
