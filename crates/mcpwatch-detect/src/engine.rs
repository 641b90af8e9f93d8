//! The detection stage as one object: rules, anomaly detectors, threat signatures and
//! thresholds run on each event in that order. This is what `serve` calls per event and what
//! [`crate::replay::replay`] drives offline.
//!
//! Architecture Invariant: events produced by detection (source `mcpwatch:detect`) are not
//! detected on again, so feeding derived events back into the pipeline cannot loop. Ingest
//! refuses that source from clients, so only detection can write it.
//!
//! Architecture Invariant: on the live path event time never runs more than
//! [`crate::watermark::MAX_AHEAD`] past the collector's clock ([`crate::watermark`]), so one
//! far-future event cannot expire every window and baseline.

mod snapshot;

use std::collections::BTreeMap;

use mcpwatch_core::{Event, Timestamp};
use serde::Serialize;

use crate::anomaly::AnomalyDetectors;
use crate::config::DetectSettings;
use crate::finding::{Finding, FindingSource};
use crate::rules::{RuleEngine, RuleSet};
use crate::scope::{rule_scope, scoped_settings, Scope};
use crate::threat::injection::InjectionDetector;
use crate::threat::ThreatScanner;
use crate::threshold::Thresholds;
use crate::watermark::{TimeGuard, MAX_AHEAD};

pub use snapshot::SNAPSHOT_VERSION;

/// The source of events that detection derives.
pub const DERIVED_SOURCE: &str = "mcpwatch:detect";

/// Internal health of detection, for `/metrics` (SPEC 8).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct Health {
    /// Events processed.
    pub events: u64,
    /// Keys tracked now, over rules, detectors, signatures and thresholds.
    pub tracked_keys: usize,
    /// Approximate bytes of that state.
    pub state_bytes: usize,
    /// Keys forgotten because they were idle.
    pub expired_keys: u64,
    /// Keys evicted because a cap was reached.
    pub evicted_keys: u64,
    /// Events dated too far past the collector's clock, detected at the clock's time instead
    /// (live only; left out of summaries while zero).
    #[serde(skip_serializing_if = "is_zero")]
    pub future_events_moved: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// Rules, detectors, signatures and thresholds, on event time.
#[derive(Debug)]
pub struct Engine {
    rules: RuleEngine,
    anomalies: AnomalyDetectors,
    threats: Option<ThreatScanner>,
    thresholds: Thresholds,
    findings: BTreeMap<(FindingSource, String), u64>,
    events: u64,
    time: TimeGuard,
    scope: Scope,
}

impl Engine {
    /// An engine running `rules` (load them with [`RuleSet::load`]) under `settings`.
    pub fn new(rules: RuleSet, settings: &DetectSettings) -> Self {
        Self::with_scope(rules, settings, Scope::All)
    }

    /// An engine running only the rules, detectors, signatures and thresholds of `scope`
    /// ([`crate::scope`]): one per partition of a key family finds, over that partition's
    /// events, what one [`Scope::All`] engine finds over all of them.
    pub fn with_scope(rules: RuleSet, settings: &DetectSettings, scope: Scope) -> Self {
        let settings = &scoped_settings(settings, scope);
        let threats = settings.threats.then(|| {
            let pi = &settings.prompt_injection;
            let detector = InjectionDetector::new(pi.threshold, pi.allowed_hosts.clone());
            let mut t = ThreatScanner::with_injection(settings.anomaly.max_keys, detector);
            t.pass_through_definition_changes = settings.tool_definition_changes;
            t
        });
        Self {
            rules: RuleEngine::new(scoped_rules(rules, scope), settings.max_keys_per_rule),
            anomalies: AnomalyDetectors::new(&settings.anomaly),
            threats,
            thresholds: Thresholds::new(settings.thresholds.clone()),
            findings: BTreeMap::new(),
            events: 0,
            time: TimeGuard::new(MAX_AHEAD),
            scope,
        }
    }

    /// The part of detection this engine runs.
    pub fn scope(&self) -> Scope {
        self.scope
    }

    /// Runs detection on one event; findings (each with its derived event) go to `out`.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Finding>) {
        if event.source == DERIVED_SOURCE {
            return;
        }
        let event = &*self.time.admit(event);
        self.events += 1;
        let before = out.len();
        self.rules.process(event, out);
        self.anomalies.process(event, out);
        if let Some(t) = &mut self.threats {
            t.process(event, out);
        }
        self.thresholds.process(event, out);
        for f in &out[before..] {
            *self.findings.entry((f.source, f.name.clone())).or_default() += 1;
        }
    }

    /// Lets windowed thresholds (error rate, throughput) close on a live clock when no events
    /// arrive; replay never calls it.
    pub fn advance_to(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        self.time.tick(now);
        let before = out.len();
        self.thresholds.advance_to(now, out);
        for f in &out[before..] {
            *self.findings.entry((f.source, f.name.clone())).or_default() += 1;
        }
    }

    /// Replaces the rules (those of this engine's scope), keeping the state of rules whose
    /// definition did not change.
    pub fn reload_rules(&mut self, rules: RuleSet) {
        self.rules.reload(scoped_rules(rules, self.scope));
    }

    /// The rule engine (rules in force and their counters).
    pub fn rule_engine(&self) -> &RuleEngine {
        &self.rules
    }

    /// The anomaly detectors and their counters.
    pub fn anomalies(&self) -> &AnomalyDetectors {
        &self.anomalies
    }

    /// Findings so far per (source, name).
    pub fn findings_by_name(&self) -> &BTreeMap<(FindingSource, String), u64> {
        &self.findings
    }

    /// Keys, memory, expiries and evictions.
    pub fn health(&self) -> Health {
        let (re, rv) = self.rules.expired_and_evicted();
        let (ae, av) = self.anomalies.expired_and_evicted();
        let threat_keys = self.threats.as_ref().map_or(0, ThreatScanner::tracked_keys);
        let threat_bytes = self.threats.as_ref().map_or(0, ThreatScanner::state_bytes);
        Health {
            events: self.events,
            tracked_keys: self.rules.tracked_keys()
                + self.anomalies.tracked_keys()
                + threat_keys
                + self.thresholds.tracked_keys(),
            state_bytes: self.rules.state_bytes() + self.anomalies.state_bytes() + threat_bytes,
            expired_keys: re + ae,
            evicted_keys: rv + av,
            future_events_moved: self.time.moved,
        }
    }
}

/// The rules of `rules` that an engine of `scope` runs.
fn scoped_rules(rules: RuleSet, scope: Scope) -> RuleSet {
    if scope == Scope::All {
        return rules;
    }
    rules.retain(|r| scope.runs(rule_scope(r)))
}
