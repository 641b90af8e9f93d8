//! Performance thresholds (SPEC 6.4): response time per request and tool execution, host CPU,
//! memory and disk from `system_performance` events, error rate over a window, and throughput
//! *below* a floor over a window (the original alerted above it; we do what it means).
//!
//! Error rate and throughput use tumbling windows on event time: a window is judged when the
//! first event after it arrives (or when [`Thresholds::advance`] is called by a live clock).
//! A group that crossed a level stays quiet for `repeat_us` unless it reaches a higher level.

use std::collections::BTreeMap;

use mcpwatch_core::{Event, Timestamp};
use serde_json::{json, Map, Value};

use crate::finding::{group_json, Derived, Finding, FindingSource, Severity};
use crate::state::{to_value, Aged, BoundedMap, MapSnapshot};

/// A warning and a critical level.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Limits {
    /// Warning level.
    pub warning: f64,
    /// Critical level.
    pub critical: f64,
}

/// Runtime thresholds, built from `[detection.thresholds]`.
#[derive(Debug, Clone, PartialEq)]
pub struct ThresholdSettings {
    /// Response time in seconds; `None` turns it off.
    pub response_time: Option<Limits>,
    /// Host CPU percent.
    pub cpu_usage: Option<Limits>,
    /// Host memory percent.
    pub memory_usage: Option<Limits>,
    /// Host disk percent.
    pub disk_usage: Option<Limits>,
    /// Failed requests percent over `window_us`.
    pub error_rate: Option<Limits>,
    /// Requests per second *below* which it fires, over `window_us`.
    pub throughput_floor: Option<Limits>,
    /// Window for error rate and throughput (µs).
    pub window_us: i64,
    /// Fewest requests in a window for the error rate to be judged.
    pub min_requests: u64,
    /// Quiet time after a group fired at a level (µs).
    pub repeat_us: i64,
    /// Groups remembered for the quiet time.
    pub max_keys: usize,
}

impl Default for ThresholdSettings {
    fn default() -> Self {
        let l = |warning, critical| Some(Limits { warning, critical });
        Self {
            response_time: l(1.0, 5.0),
            cpu_usage: l(80.0, 95.0),
            memory_usage: l(85.0, 95.0),
            disk_usage: l(80.0, 90.0),
            error_rate: l(5.0, 10.0),
            throughput_floor: None,
            window_us: 5 * 60 * 1_000_000,
            min_requests: 20,
            repeat_us: 5 * 60 * 1_000_000,
            max_keys: 10_000,
        }
    }
}

#[derive(serde::Serialize, serde::Deserialize)]
struct Fired {
    last: i64,
    level: Severity,
}

#[derive(serde::Serialize)]
struct ThresholdsOut<'a> {
    fired: &'a BoundedMap<Fired>,
    window_start: Option<i64>,
    total: u64,
    failed: u64,
    last_id: &'a str,
}

#[derive(serde::Deserialize)]
struct ThresholdsIn {
    fired: MapSnapshot<Fired>,
    window_start: Option<i64>,
    total: u64,
    failed: u64,
    last_id: String,
}

impl Aged for Fired {
    fn last_seen(&self) -> i64 {
        self.last
    }
}

/// Evaluates thresholds on events.
pub struct Thresholds {
    s: ThresholdSettings,
    fired: BoundedMap<Fired>,
    window_start: Option<i64>,
    total: u64,
    failed: u64,
    last_id: String,
}

impl std::fmt::Debug for Thresholds {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Thresholds")
            .field("settings", &self.s)
            .finish_non_exhaustive()
    }
}

impl Thresholds {
    /// Thresholds with these settings.
    pub fn new(s: ThresholdSettings) -> Self {
        Self {
            fired: BoundedMap::new(s.max_keys),
            s,
            window_start: None,
            total: 0,
            failed: 0,
            last_id: String::new(),
        }
    }

    /// Quiet times and the open window, for a snapshot.
    pub(crate) fn save(&self) -> Value {
        to_value(&ThresholdsOut {
            fired: &self.fired,
            window_start: self.window_start,
            total: self.total,
            failed: self.failed,
            last_id: &self.last_id,
        })
    }

    /// Takes the state [`Thresholds::save`] wrote.
    pub(crate) fn load(&mut self, state: Value) -> Result<(), serde_json::Error> {
        let snap: ThresholdsIn = serde_json::from_value(state)?;
        self.fired = BoundedMap::restore(self.fired.cap(), snap.fired);
        self.window_start = snap.window_start;
        self.total = snap.total;
        self.failed = snap.failed;
        self.last_id = snap.last_id;
        Ok(())
    }

    /// Groups remembered.
    pub fn tracked_keys(&self) -> usize {
        self.fired.len()
    }

    /// Checks one event.
    pub fn process(&mut self, e: &Event, out: &mut Vec<Finding>) {
        let ts = e.timestamp.as_micros();
        match (e.category.as_str(), e.event_type.as_str()) {
            ("performance", "request_performance") | ("tool_execution", "execution_complete") => {
                self.advance(ts, out);
                self.total += 1;
                if e.metadata.get("success").and_then(Value::as_bool) == Some(false) {
                    self.failed += 1;
                }
                self.last_id.clone_from(&e.id);
                if let (Some(l), Some(v)) = (self.s.response_time, e.duration_secs()) {
                    let mut g = meta_group(e, &["server", "tool_name"]);
                    if g.is_empty() {
                        g.insert("source".into(), e.source.clone());
                    }
                    self.check("response_time", v, l, false, g, e, out, |v| {
                        format!("{v:.2} s")
                    });
                }
            }
            ("performance", "system_performance") => {
                let Some(metric) = e.metadata.get("metric_name").and_then(Value::as_str) else {
                    return;
                };
                let limits = match metric {
                    "cpu_usage" => self.s.cpu_usage,
                    "memory_usage" => self.s.memory_usage,
                    "disk_usage" => self.s.disk_usage,
                    _ => None,
                };
                let (Some(l), Some(v)) = (limits, e.metadata.get("value").and_then(Value::as_f64))
                else {
                    return;
                };
                let mut g = BTreeMap::new();
                g.insert("source".into(), e.source.clone());
                let name: &'static str = match metric {
                    "cpu_usage" => "cpu_usage",
                    "memory_usage" => "memory_usage",
                    _ => "disk_usage",
                };
                self.check(name, v, l, false, g, e, out, |v| format!("{v:.1}%"));
            }
            _ => {}
        }
    }

    /// Judges every window that ended before `now` (event time or a live clock).
    pub fn advance_to(&mut self, now: Timestamp, out: &mut Vec<Finding>) {
        self.advance(now.as_micros(), out);
    }

    fn advance(&mut self, now: i64, out: &mut Vec<Finding>) {
        let start = *self.window_start.get_or_insert(now);
        if now < start + self.s.window_us {
            return;
        }
        let secs = self.s.window_us as f64 / 1e6;
        let at = start + self.s.window_us;
        let e = Event {
            id: self.last_id.clone(),
            timestamp: Timestamp::from_micros(at),
            level: mcpwatch_core::Level::Info,
            category: "performance".into(),
            source: "mcpwatch:detect".into(),
            event_type: "window".into(),
            message: String::new(),
            metadata: Map::new(),
            tags: Vec::new(),
        };
        if let Some(l) = self.s.error_rate {
            if self.total >= self.s.min_requests {
                let pct = self.failed as f64 * 100.0 / self.total as f64;
                self.check("error_rate", pct, l, false, BTreeMap::new(), &e, out, |v| {
                    format!("{v:.1}% of requests failed")
                });
            }
        }
        if let Some(l) = self.s.throughput_floor {
            let rate = self.total as f64 / secs;
            self.check("throughput", rate, l, true, BTreeMap::new(), &e, out, |v| {
                format!("{v:.1} requests/s")
            });
        }
        // Windows without any event in them count as empty ones.
        let skipped = (now - start) / self.s.window_us;
        self.window_start = Some(start + skipped * self.s.window_us);
        self.total = 0;
        self.failed = 0;
    }

    #[allow(
        clippy::too_many_arguments,
        reason = "one private helper shared by every metric"
    )]
    fn check(
        &mut self,
        name: &'static str,
        value: f64,
        l: Limits,
        below: bool,
        group: BTreeMap<String, String>,
        e: &Event,
        out: &mut Vec<Finding>,
        show: impl Fn(f64) -> String,
    ) {
        let crosses = |limit: f64| if below { value < limit } else { value >= limit };
        let (severity, limit, level) = if crosses(l.critical) {
            (Severity::High, l.critical, "critical")
        } else if crosses(l.warning) {
            (Severity::Medium, l.warning, "warning")
        } else {
            return;
        };
        let ts = e.timestamp.as_micros();
        let key = format!("{name}\u{1f}{group:?}");
        let repeat = self.s.repeat_us;
        let st = self.fired.entry(&key, ts - repeat, || Fired {
            last: i64::MIN,
            level: Severity::Low,
        });
        if st.last != i64::MIN && ts - st.last < repeat && severity <= st.level {
            return;
        }
        st.last = ts;
        st.level = severity;
        let dir = if below { "below" } else { "above" };
        let scope = if group.is_empty() {
            String::new()
        } else {
            let parts: Vec<String> = group.iter().map(|(k, v)| format!("{k}={v}")).collect();
            format!(" for {}", parts.join(", "))
        };
        let description = format!(
            "{name} {} is {dir} the {level} threshold {}{scope}",
            show(value),
            show(limit)
        );
        let mut metadata = Map::new();
        metadata.insert("metric".into(), json!(name));
        metadata.insert("value".into(), json!(value));
        metadata.insert("threshold".into(), json!(limit));
        metadata.insert("threshold_level".into(), json!(level));
        metadata.insert("severity".into(), json!(severity.as_str()));
        metadata.insert("group".into(), group_json(&group));
        metadata.insert("event_ids".into(), json!([e.id]));
        let f = Derived {
            source: FindingSource::Threshold,
            name,
            category: "performance",
            event_type: "threshold_exceeded",
            severity,
            message: format!("Performance threshold crossed: {description}"),
            metadata,
            tags: vec!["performance".into(), "threshold".into(), name.into()],
        }
        .into_finding(
            description,
            action(name).to_owned(),
            group,
            vec![e.id.clone()],
            Timestamp::from_micros(ts),
        );
        out.push(f);
    }
}

fn action(name: &str) -> &'static str {
    match name {
        "response_time" => "Check the slow server or tool and what it waits on",
        "cpu_usage" | "memory_usage" => {
            "Find the process using the host's resources; scale or restart it"
        }
        "disk_usage" => "Free disk space or grow the volume; check retention settings",
        "error_rate" => "Look at the failing requests' errors and the servers behind them",
        _ => "Check that clients can reach the servers and that traffic has not stopped",
    }
}

fn meta_group(e: &Event, keys: &[&str]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|k| {
            Some((
                format!("metadata.{k}"),
                e.metadata.get(*k)?.as_str()?.to_owned(),
            ))
        })
        .collect()
}
