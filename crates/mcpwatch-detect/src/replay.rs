//! Replay as a library (SPEC 3, `mcpwatch replay`): recorded events through detection offline,
//! in event-time order, with the same engine and the same output as the live path.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;

use mcpwatch_core::Event;
use serde::Serialize;

use crate::alert::{Alert, AlertBook, AlertChange, FoldPolicy};
use crate::config::DetectSettings;
use crate::engine::{Engine, Health};
use crate::error::DetectError;
use crate::finding::FindingSource;
use crate::rules::RuleSet;

/// Reads a JSON-lines file of events (one event per line, blank lines skipped). A bad line is
/// an error naming the file and the 1-based line.
pub fn load_events_jsonl(path: &Path) -> Result<Vec<Event>, DetectError> {
    let io = |source| DetectError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut events = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let event =
            serde_json::from_str::<Event>(&line).map_err(|e| DetectError::BadEventLine {
                path: path.to_owned(),
                line: n + 1,
                message: e.to_string(),
            })?;
        events.push(event);
    }
    Ok(events)
}

/// One row of the replay summary: a rule, a detector, a signature or a threshold.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SummaryRow {
    /// What kind of thing.
    pub source: FindingSource,
    /// Its name.
    pub name: String,
    /// Events that matched (rules) or were observed (detectors); `None` for the others.
    pub matched: Option<u64>,
    /// Findings it produced.
    pub findings: u64,
    /// Firings dropped by `suppress` (rules).
    pub suppressed: u64,
    /// Alerts its findings folded into.
    pub alerts: u64,
}

/// What a replay did.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ReplaySummary {
    /// Events replayed.
    pub events: u64,
    /// One row per rule and detector, then any other finding names, in a stable order.
    pub rows: Vec<SummaryRow>,
    /// State at the end.
    pub health: Health,
}

/// Runs `events` through detection in event-time order (stable for equal times) and folds the
/// findings into alerts, never resolving them. Deterministic: the same events, rules and
/// settings give the same alerts, ids included.
pub fn replay(
    events: impl IntoIterator<Item = Event>,
    rules: RuleSet,
    settings: &DetectSettings,
) -> (Vec<Alert>, ReplaySummary) {
    let policy = FoldPolicy {
        max_event_ids: settings.max_event_ids_per_alert,
        resolve_after_us: None,
    };
    replay_with(events, rules, settings, policy)
}

/// [`replay`] folding by `policy`, as live alerting does with the same policy: alerts quiet
/// for its period resolve as event time passes them.
pub fn replay_with(
    events: impl IntoIterator<Item = Event>,
    rules: RuleSet,
    settings: &DetectSettings,
    policy: FoldPolicy,
) -> (Vec<Alert>, ReplaySummary) {
    let mut events: Vec<Event> = events.into_iter().collect();
    events.sort_by_key(|e| e.timestamp);
    let mut engine = Engine::new(rules, settings);
    let mut book = AlertBook::with_policy(policy);
    let mut out = Vec::new();
    let mut alerts_by: BTreeMap<(FindingSource, String), u64> = BTreeMap::new();
    for e in &events {
        book.resolve_quiet(e.timestamp);
        engine.process(e, &mut out);
        for f in out.drain(..) {
            if let AlertChange::Created(_) = book.fold(&f) {
                *alerts_by.entry((f.source, f.name)).or_default() += 1;
            }
        }
    }
    let summary = summarize(&engine, &alerts_by);
    (book.into_alerts(), summary)
}

fn summarize(engine: &Engine, alerts_by: &BTreeMap<(FindingSource, String), u64>) -> ReplaySummary {
    let found = engine.findings_by_name();
    let count = |m: &BTreeMap<(FindingSource, String), u64>, s, n: &str| {
        m.get(&(s, n.to_owned())).copied().unwrap_or(0)
    };
    let mut rows = Vec::new();
    for (name, st) in engine.rule_engine().stats() {
        rows.push(SummaryRow {
            source: FindingSource::Rule,
            name: name.to_owned(),
            matched: Some(st.matched),
            findings: st.fired,
            suppressed: st.suppressed,
            alerts: count(alerts_by, FindingSource::Rule, name),
        });
    }
    for (name, st) in engine.anomalies().stats() {
        rows.push(SummaryRow {
            source: FindingSource::Anomaly,
            name: name.to_owned(),
            matched: Some(st.observed),
            findings: st.fired,
            suppressed: 0,
            alerts: count(alerts_by, FindingSource::Anomaly, name),
        });
    }
    for ((source, name), n) in found {
        if matches!(source, FindingSource::Threat | FindingSource::Threshold) {
            rows.push(SummaryRow {
                source: *source,
                name: name.clone(),
                matched: None,
                findings: *n,
                suppressed: 0,
                alerts: count(alerts_by, *source, name),
            });
        }
    }
    ReplaySummary {
        events: engine.health().events,
        rows,
        health: engine.health(),
    }
}
