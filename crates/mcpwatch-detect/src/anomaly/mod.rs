//! Anomaly detectors (SPEC 6.2): online, O(1) state per key, each with a learning period and
//! a minimum sample count before it may fire, a score, and a description a person can act on.
//!
//! Every detector but `new_capability_use` (which reads `sampling_request` and
//! `elicitation_request` events) reads completed tool executions (`tool_execution`/`execution_complete`) and
//! keeps its keys in a [`BoundedMap`] (idle keys expire, keys are capped). A firing becomes an
//! `anomaly` event with `anomaly_type`, `anomaly_score` and `description` (as the original's
//! `execution_anomaly`; per-user detectors use `behavioral_anomaly`).

mod call_rate;
mod capability;
mod error_rate;
mod keyed;
mod latency;
mod new_tool;
mod parameters;
mod repetition;
mod stats;

use std::collections::BTreeMap;

use mcpwatch_core::params::Params;
use mcpwatch_core::{Event, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::finding::{group_json, Derived, Finding, FindingSource, Severity};
use keyed::KeyedStats;
pub use stats::Ewma;

/// Settings shared by all detectors plus each one's own; built from `[detection.anomaly]`.
#[derive(Debug, Clone, PartialEq)]
pub struct AnomalySettings {
    /// No detector fires for a key before it has been seen for this long (µs of event time).
    pub learning_us: i64,
    /// No detector fires for a key before this many samples.
    pub min_samples: u32,
    /// Keys idle for longer than this are forgotten (µs).
    pub idle_us: i64,
    /// Keys per detector.
    pub max_keys: usize,
    /// Which detectors run.
    pub enabled: Vec<DetectorKind>,
    /// `latency`: minimum ratio of recent p50 to baseline p50.
    pub latency_ratio: f64,
    /// `latency`: minimum z-score of the recent mean against the baseline.
    pub latency_z: f64,
    /// `latency`: minimum rise of the recent p50 over the baseline, in milliseconds, so that a
    /// 1 ms tool taking 20 ms on a busy host is not an incident.
    pub latency_min_increase_ms: f64,
    /// `error_rate`: CUSUM decision threshold.
    pub error_cusum_h: f64,
    /// `call_rate`: minimum z-score of a minute's calls against the user's baseline.
    pub call_rate_z: f64,
    /// `call_rate`: minimum calls in a minute before it can fire.
    pub call_rate_min_calls: u32,
    /// `unusual_parameters`: minimum z-score of the parameter size (log scale).
    pub parameters_z: f64,
    /// `repetition`: identical calls in a row that fire.
    pub repetition_count: u32,
    /// `repetition`: the run must fall within this time (µs).
    pub repetition_window_us: i64,
}

/// The anomaly detectors (SPEC 6.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum DetectorKind {
    /// Latency per server and tool.
    Latency,
    /// Error rate per server and tool.
    ErrorRate,
    /// Calls per minute per user.
    CallRate,
    /// First use of a tool by a user.
    NewTool,
    /// New key sets, outlying sizes and values per tool.
    UnusualParameters,
    /// The same call over and over in one session.
    Repetition,
    /// First use of sampling or elicitation by a server.
    NewCapabilityUse,
}

impl DetectorKind {
    /// Every detector, in the order they run.
    pub const ALL: [DetectorKind; 7] = [
        DetectorKind::Latency,
        DetectorKind::ErrorRate,
        DetectorKind::CallRate,
        DetectorKind::NewTool,
        DetectorKind::UnusualParameters,
        DetectorKind::Repetition,
        DetectorKind::NewCapabilityUse,
    ];

    /// The name as written in configuration, findings and alerts.
    pub fn as_str(self) -> &'static str {
        match self {
            DetectorKind::Latency => "latency",
            DetectorKind::ErrorRate => "error_rate",
            DetectorKind::CallRate => "call_rate",
            DetectorKind::NewTool => "new_tool",
            DetectorKind::UnusualParameters => "unusual_parameters",
            DetectorKind::Repetition => "repetition",
            DetectorKind::NewCapabilityUse => "new_capability_use",
        }
    }

    /// The detector named `name`.
    pub fn parse(name: &str) -> Option<DetectorKind> {
        DetectorKind::ALL.into_iter().find(|k| k.as_str() == name)
    }
}

impl Default for AnomalySettings {
    fn default() -> Self {
        Self {
            learning_us: 30 * 60 * 1_000_000,
            min_samples: 30,
            idle_us: 24 * 3600 * 1_000_000,
            max_keys: 100_000,
            enabled: DetectorKind::ALL.to_vec(),
            latency_ratio: 3.0,
            latency_z: 5.0,
            latency_min_increase_ms: 100.0,
            error_cusum_h: 5.0,
            call_rate_z: 6.0,
            call_rate_min_calls: 20,
            parameters_z: 4.0,
            repetition_count: 10,
            repetition_window_us: 10 * 60 * 1_000_000,
        }
    }
}

/// What a detector reports; turned into a [`Finding`] by [`AnomalyDetectors`].
#[derive(Debug, Clone)]
pub(crate) struct Anomaly {
    pub kind: DetectorKind,
    pub score: f64,
    pub severity: Severity,
    pub description: String,
    pub action: &'static str,
    pub group: BTreeMap<String, String>,
    pub behavioral: bool,
}

/// A completed tool execution, the fields detectors read.
pub(crate) struct Call<'a> {
    pub ts: i64,
    pub server: &'a str,
    pub tool: &'a str,
    pub user: &'a str,
    pub session: Option<&'a str>,
    pub latency_s: Option<f64>,
    pub failed: Option<bool>,
    /// The parameters as capture recorded them on `execution_complete`.
    pub params: Option<Params<'a>>,
    /// They as JSON, for a fingerprint of the arguments.
    pub params_json: Option<&'a serde_json::Value>,
    /// Bytes per argument as sent (`parameter_sizes`), where capture measured them.
    pub sizes: Option<&'a serde_json::Map<String, serde_json::Value>>,
}

impl<'a> Call<'a> {
    fn from_event(e: &'a Event) -> Option<Self> {
        if !e.is_execution_complete() {
            return None;
        }
        let failed = match e.outcome() {
            Some(mcpwatch_core::Outcome::Success) => Some(false),
            // Refusals and cancellations are not the tool failing.
            Some(mcpwatch_core::Outcome::Denied | mcpwatch_core::Outcome::Cancelled) => None,
            Some(_) => Some(true),
            None => e
                .metadata
                .get("success")
                .and_then(serde_json::Value::as_bool)
                .map(|ok| !ok),
        };
        Some(Call {
            ts: e.timestamp.as_micros(),
            server: e.server().unwrap_or(""),
            tool: e.tool()?,
            user: e.user().unwrap_or(""),
            session: e.session(),
            latency_s: e.duration_secs().filter(|d| d.is_finite() && *d >= 0.0),
            failed,
            params: e.metadata.get("parameters").and_then(Params::of),
            params_json: e.metadata.get("parameters"),
            sizes: e
                .metadata
                .get("parameter_sizes")
                .and_then(serde_json::Value::as_object),
        })
    }

    /// `server/tool`, or `tool` without a server.
    pub fn tool_label(&self) -> String {
        if self.server.is_empty() {
            self.tool.to_owned()
        } else {
            format!("{}/{}", self.server, self.tool)
        }
    }

    /// Each argument: name, bytes as sent, value when kept.
    pub fn entries(&self) -> Vec<(&'a str, u64, Option<&'a serde_json::Value>)> {
        self.params
            .map(|p| p.entries_sized(self.sizes))
            .unwrap_or_default()
    }

    /// Who made the call, for a description: `user alice, session 0193…` (or what is known).
    pub fn who(&self) -> String {
        let user = if self.user.is_empty() {
            "an unidentified user".to_owned()
        } else {
            format!("user {}", self.user)
        };
        match self.session {
            Some(s) if !s.is_empty() => format!("{user}, session {s}"),
            _ => user,
        }
    }

    /// The tool's group with the user added: one alert per user, whoever else calls the tool.
    pub fn user_tool_group(&self) -> BTreeMap<String, String> {
        let mut g = self.tool_group();
        g.insert("metadata.user_id".into(), self.user.to_owned());
        g
    }

    pub fn tool_group(&self) -> BTreeMap<String, String> {
        let mut g = BTreeMap::new();
        g.insert("metadata.server".into(), self.server.to_owned());
        g.insert("metadata.tool_name".into(), self.tool.to_owned());
        g
    }
}

/// One detector: online, bounded.
pub(crate) trait Detector: Send {
    fn observe(&mut self, call: &Call<'_>, out: &mut Vec<Anomaly>);
    /// An event that is not a completed call (only `new_capability_use` reads them).
    fn observe_event(&mut self, _event: &Event, _out: &mut Vec<Anomaly>) {}
    /// Its keyed state, for sweeping.
    fn maps_mut(&mut self) -> Vec<&mut dyn KeyedStats>;
    /// Its keyed state, for accounting.
    fn maps(&self) -> Vec<&dyn KeyedStats>;
    /// Its keyed state, for a snapshot.
    fn save(&self) -> serde_json::Value;
    /// Takes the state [`Detector::save`] wrote.
    fn load(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error>;
}

/// Counters of one detector.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DetectorStats {
    /// Calls observed.
    pub observed: u64,
    /// Anomalies reported.
    pub fired: u64,
}

#[derive(Serialize)]
struct DetectorOut {
    name: &'static str,
    stats: DetectorStats,
    state: Value,
}

#[derive(Serialize)]
struct DetectorsOut {
    watermark: i64,
    next_sweep: i64,
    detectors: Vec<DetectorOut>,
}

#[derive(Deserialize)]
struct DetectorIn {
    name: String,
    stats: DetectorStats,
    state: Value,
}

#[derive(Deserialize)]
struct DetectorsIn {
    watermark: i64,
    next_sweep: i64,
    detectors: Vec<DetectorIn>,
}

/// All enabled detectors.
pub struct AnomalyDetectors {
    detectors: Vec<(DetectorKind, Box<dyn Detector>, DetectorStats)>,
    idle_us: i64,
    watermark: i64,
    next_sweep: i64,
    scratch: Vec<Anomaly>,
}

impl std::fmt::Debug for AnomalyDetectors {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.detectors.iter().map(|d| d.0.as_str()).collect();
        f.debug_struct("AnomalyDetectors")
            .field("detectors", &names)
            .finish_non_exhaustive()
    }
}

impl AnomalyDetectors {
    /// The detectors `settings` enables.
    pub fn new(s: &AnomalySettings) -> Self {
        let mut detectors: Vec<(DetectorKind, Box<dyn Detector>, DetectorStats)> = Vec::new();
        for kind in DetectorKind::ALL {
            if !s.enabled.contains(&kind) {
                continue;
            }
            let d: Box<dyn Detector> = match kind {
                DetectorKind::Latency => Box::new(latency::Latency::new(s)),
                DetectorKind::ErrorRate => Box::new(error_rate::ErrorRate::new(s)),
                DetectorKind::CallRate => Box::new(call_rate::CallRate::new(s)),
                DetectorKind::NewTool => Box::new(new_tool::NewTool::new(s)),
                DetectorKind::UnusualParameters => Box::new(parameters::Parameters::new(s)),
                DetectorKind::Repetition => Box::new(repetition::Repetition::new(s)),
                DetectorKind::NewCapabilityUse => Box::new(capability::NewCapabilityUse::new(s)),
            };
            detectors.push((kind, d, DetectorStats::default()));
        }
        Self {
            detectors,
            idle_us: s.idle_us,
            watermark: i64::MIN,
            next_sweep: i64::MIN,
            scratch: Vec::new(),
        }
    }

    /// Feeds one event to every detector; anomalies go to `out`.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Finding>) {
        if capability::capability_of(event).is_some() {
            for (_, d, stats) in &mut self.detectors {
                let before = self.scratch.len();
                d.observe_event(event, &mut self.scratch);
                stats.observed += u64::from(self.scratch.len() > before);
                stats.fired += (self.scratch.len() - before) as u64;
            }
            for a in self.scratch.drain(..) {
                out.push(to_finding(a, event));
            }
            return;
        }
        let Some(call) = Call::from_event(event) else {
            return;
        };
        if call.ts > self.watermark {
            self.watermark = call.ts;
            if call.ts >= self.next_sweep {
                let before = call.ts.saturating_sub(self.idle_us);
                for d in &mut self.detectors {
                    d.1.maps_mut().into_iter().for_each(|m| m.sweep(before));
                }
                self.next_sweep = call.ts.saturating_add(60_000_000);
            }
        }
        for (kind, d, stats) in &mut self.detectors {
            if *kind == DetectorKind::NewCapabilityUse {
                // Reads server requests only (above), not calls.
                continue;
            }
            stats.observed += 1;
            let before = self.scratch.len();
            d.observe(&call, &mut self.scratch);
            stats.fired += (self.scratch.len() - before) as u64;
        }
        for a in self.scratch.drain(..) {
            out.push(to_finding(a, event));
        }
    }

    /// Every detector's keys and counters, for a snapshot.
    pub(crate) fn save(&self) -> Value {
        let detectors = self
            .detectors
            .iter()
            .map(|(kind, d, stats)| DetectorOut {
                name: kind.as_str(),
                stats: *stats,
                state: d.save(),
            })
            .collect();
        crate::state::to_value(&DetectorsOut {
            watermark: self.watermark,
            next_sweep: self.next_sweep,
            detectors,
        })
    }

    /// Takes the state [`AnomalyDetectors::save`] wrote; an enabled detector the snapshot does
    /// not hold starts empty, and state of detectors not enabled is dropped.
    pub(crate) fn load(&mut self, state: Value) -> Result<(), serde_json::Error> {
        let snap: DetectorsIn = serde_json::from_value(state)?;
        self.watermark = snap.watermark;
        self.next_sweep = snap.next_sweep;
        for saved in snap.detectors {
            if let Some((_, d, stats)) = self
                .detectors
                .iter_mut()
                .find(|(k, _, _)| k.as_str() == saved.name)
            {
                d.load(saved.state)?;
                *stats = saved.stats;
            }
        }
        Ok(())
    }

    /// Counters per detector.
    pub fn stats(&self) -> impl Iterator<Item = (&'static str, DetectorStats)> + '_ {
        self.detectors.iter().map(|(n, _, s)| (n.as_str(), *s))
    }

    fn maps(&self) -> impl Iterator<Item = &dyn KeyedStats> + '_ {
        self.detectors.iter().flat_map(|d| d.1.maps())
    }

    /// Keys tracked over all detectors.
    pub fn tracked_keys(&self) -> usize {
        self.maps().map(KeyedStats::tracked_keys).sum()
    }

    /// Approximate bytes of state over all detectors.
    pub fn state_bytes(&self) -> usize {
        self.maps().map(KeyedStats::state_bytes).sum()
    }

    /// Keys expired and evicted over all detectors.
    pub fn expired_and_evicted(&self) -> (u64, u64) {
        self.maps().fold((0, 0), |(a, b), m| {
            let (x, y) = m.expired_and_evicted();
            (a + x, b + y)
        })
    }
}

fn to_finding(a: Anomaly, event: &Event) -> Finding {
    let mut metadata = Map::new();
    metadata.insert("anomaly_type".into(), json!(a.kind.as_str()));
    metadata.insert(
        "anomaly_score".into(),
        json!((a.score * 100.0).round() / 100.0),
    );
    metadata.insert("description".into(), json!(a.description));
    metadata.insert("severity".into(), json!(a.severity.as_str()));
    metadata.insert("group".into(), group_json(&a.group));
    metadata.insert("event_ids".into(), json!([event.id]));
    for k in [
        "execution_id",
        "tool_name",
        "server",
        "user_id",
        "session_id",
    ] {
        if let Some(v) = event.metadata.get(k) {
            metadata.insert(k.into(), v.clone());
        }
    }
    let event_type = if a.behavioral {
        "behavioral_anomaly"
    } else {
        "execution_anomaly"
    };
    Derived {
        source: FindingSource::Anomaly,
        name: a.kind.as_str(),
        category: "anomaly",
        event_type,
        severity: a.severity,
        message: format!("Anomaly detected: {}", a.description),
        metadata,
        tags: vec!["anomaly".into(), a.kind.as_str().into()],
    }
    .into_finding(
        a.description,
        a.action.to_owned(),
        a.group,
        vec![event.id.clone()],
        Timestamp::from_micros(event.timestamp.as_micros()),
    )
}

/// A name or value as a description shows it: at most 64 bytes.
pub(crate) fn shown(s: &str) -> String {
    let mut s = s.to_owned();
    if s.len() > 64 {
        mcpwatch_core::redact::truncate(&mut s, 61);
        s.push('…');
    }
    s
}

/// Whether a key first seen at `first` with `n` samples has finished learning at `ts`.
pub(crate) fn learned(s: &AnomalySettings, first: i64, n: u32, ts: i64) -> bool {
    n >= s.min_samples && ts.saturating_sub(first) >= s.learning_us
}

#[cfg(test)]
pub(crate) mod tests;
