//! `[detection]` configuration: what a user writes in TOML, and [`DetectConfig::build`], which
//! checks every value (all errors at once, each with its key path) and builds the runtime
//! [`DetectSettings`].

use mcpwatch_core::config::ConfigError;
use mcpwatch_core::time_fmt::parse_duration;
use serde::Deserialize;

use crate::anomaly::{AnomalySettings, DetectorKind};

/// Largest `repetition_count`: the detector keeps that many call times per session.
const MAX_REPETITION_COUNT: u32 = 1000;
use crate::threshold::{Limits, ThresholdSettings};

/// The `[detection]` section.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DetectConfig {
    /// Load the built-in rules (brute force, privilege escalation, …) before rule files.
    pub default_rules: bool,
    /// Group keys tracked per rule; beyond it the least recently seen are evicted.
    pub max_keys_per_rule: usize,
    /// Scan parameters, results and tool descriptions for threat signatures.
    pub threats: bool,
    /// Report each `tool_definition_changed` event as a threat.
    pub tool_definition_changes: bool,
    /// Event ids kept per alert (the most recent).
    pub max_event_ids_per_alert: usize,
    /// `[detection.anomaly]`.
    pub anomaly: AnomalyConfig,
    /// `[detection.thresholds]`.
    pub thresholds: ThresholdsConfig,
    /// `[detection.prompt_injection]`.
    pub prompt_injection: InjectionConfig,
}

impl Default for DetectConfig {
    fn default() -> Self {
        Self {
            default_rules: true,
            max_keys_per_rule: 100_000,
            threats: true,
            tool_definition_changes: true,
            max_event_ids_per_alert: 20,
            anomaly: AnomalyConfig::default(),
            thresholds: ThresholdsConfig::default(),
            prompt_injection: InjectionConfig::default(),
        }
    }
}

/// `[detection.prompt_injection]`: how loud the layered detector is.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InjectionConfig {
    /// Score at which a text is reported. One strong signal (an override of prior
    /// instructions, tag characters, a fake system message, an image URL with a slot for data)
    /// weighs 1.0; weaker ones 0.2 to 0.8. Lower is louder; between 0.1 and 10.
    pub threshold: f64,
    /// Hosts (with their subdomains) that Markdown images, links and HTML may send data to,
    /// e.g. `["docs.example.com"]`.
    pub allowed_hosts: Vec<String>,
}

impl Default for InjectionConfig {
    fn default() -> Self {
        let d = InjectionSettings::default();
        Self {
            threshold: f64::from(d.threshold),
            allowed_hosts: d.allowed_hosts,
        }
    }
}

/// The checked `[detection.prompt_injection]`.
#[derive(Debug, Clone, PartialEq)]
pub struct InjectionSettings {
    /// Score at which a text is reported.
    pub threshold: f32,
    /// Hosts URLs may carry data to.
    pub allowed_hosts: Vec<String>,
}

impl Default for InjectionSettings {
    fn default() -> Self {
        Self {
            threshold: 1.0,
            allowed_hosts: Vec::new(),
        }
    }
}

impl InjectionConfig {
    fn check(&self, e: &mut Vec<ConfigError>) -> InjectionSettings {
        let p = "detection.prompt_injection";
        if !(self.threshold.is_finite() && (0.1..=10.0).contains(&self.threshold)) {
            e.push(ConfigError::at(
                format!("{p}.threshold"),
                format!(
                    "`{}` must be between 0.1 and 10 (1.0 is the default)",
                    self.threshold
                ),
            ));
        }
        for (i, h) in self.allowed_hosts.iter().enumerate() {
            let ok = !h.is_empty()
                && h.len() <= 253
                && h.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-'));
            if !ok {
                e.push(ConfigError::at(
                    format!("{p}.allowed_hosts[{i}]"),
                    format!("`{h}` is not a host name; write it without scheme, port or path, e.g. \"docs.example.com\""),
                ));
            }
        }
        InjectionSettings {
            threshold: self.threshold as f32,
            allowed_hosts: self
                .allowed_hosts
                .iter()
                .map(|h| h.to_ascii_lowercase())
                .collect(),
        }
    }
}

/// `[detection.anomaly]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AnomalyConfig {
    /// Detectors to run: latency, error_rate, call_rate, new_tool, unusual_parameters, repetition.
    pub enabled: Vec<String>,
    /// How long a key is only learned before it may fire, e.g. "30m".
    pub learning_period: String,
    /// Samples a key needs before it may fire.
    pub min_samples: u32,
    /// Keys idle this long are forgotten, e.g. "24h".
    pub idle_timeout: String,
    /// Keys per detector; beyond it the least recently seen are evicted.
    pub max_keys: usize,
    /// latency: recent p50 must be at least this many times the baseline.
    pub latency_ratio: f64,
    /// latency: and this many standard errors above it.
    pub latency_z: f64,
    /// latency: and at least this much slower than it, e.g. "100ms".
    pub latency_min_increase: String,
    /// error_rate: CUSUM decision threshold (higher is less sensitive).
    pub error_cusum_h: f64,
    /// call_rate: deviations above the user's baseline per minute.
    pub call_rate_z: f64,
    /// call_rate: fewest calls in a minute that can fire.
    pub call_rate_min_calls: u32,
    /// unusual_parameters: deviations of parameter size (log scale).
    pub parameters_z: f64,
    /// repetition: identical calls in a row that fire.
    pub repetition_count: u32,
    /// repetition: the run must fall within this time, e.g. "10m".
    pub repetition_window: String,
}

impl Default for AnomalyConfig {
    fn default() -> Self {
        let d = AnomalySettings::default();
        Self {
            enabled: d.enabled.iter().map(|k| k.as_str().to_owned()).collect(),
            learning_period: "30m".into(),
            min_samples: d.min_samples,
            idle_timeout: "24h".into(),
            max_keys: d.max_keys,
            latency_ratio: d.latency_ratio,
            latency_z: d.latency_z,
            latency_min_increase: format!("{}ms", d.latency_min_increase_ms),
            error_cusum_h: d.error_cusum_h,
            call_rate_z: d.call_rate_z,
            call_rate_min_calls: d.call_rate_min_calls,
            parameters_z: d.parameters_z,
            repetition_count: d.repetition_count,
            repetition_window: "10m".into(),
        }
    }
}

/// A warning and a critical level, and whether the check runs.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsConfig {
    /// Run this check.
    #[serde(default = "yes")]
    pub enabled: bool,
    /// Warning level.
    pub warning: f64,
    /// Critical level.
    pub critical: f64,
}

fn yes() -> bool {
    true
}

const fn limits(enabled: bool, warning: f64, critical: f64) -> LimitsConfig {
    LimitsConfig {
        enabled,
        warning,
        critical,
    }
}

/// `[detection.thresholds]` (SPEC 6.4).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ThresholdsConfig {
    /// Seconds per request or tool execution.
    pub response_time: LimitsConfig,
    /// Host CPU percent.
    pub cpu_usage: LimitsConfig,
    /// Host memory percent.
    pub memory_usage: LimitsConfig,
    /// Host disk percent.
    pub disk_usage: LimitsConfig,
    /// Failed requests percent over `window`.
    pub error_rate: LimitsConfig,
    /// Requests/s *below* which it fires (warning above critical); off by default.
    pub throughput: LimitsConfig,
    /// Window for error rate and throughput, e.g. "5m".
    pub window: String,
    /// Fewest requests in a window for the error rate to be judged.
    pub min_requests: u64,
    /// Quiet time after a group fired at a level, e.g. "5m".
    pub repeat_interval: String,
}

impl Default for ThresholdsConfig {
    fn default() -> Self {
        Self {
            response_time: limits(true, 1.0, 5.0),
            cpu_usage: limits(true, 80.0, 95.0),
            memory_usage: limits(true, 85.0, 95.0),
            disk_usage: limits(true, 80.0, 90.0),
            error_rate: limits(true, 5.0, 10.0),
            throughput: limits(false, 100.0, 50.0),
            window: "5m".into(),
            min_requests: 20,
            repeat_interval: "5m".into(),
        }
    }
}

/// Everything detection needs at run time, checked.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectSettings {
    /// Load the built-in rules.
    pub default_rules: bool,
    /// Group keys per rule.
    pub max_keys_per_rule: usize,
    /// Run the threat signatures.
    pub threats: bool,
    /// Report tool definition changes as threats.
    pub tool_definition_changes: bool,
    /// Event ids kept per alert.
    pub max_event_ids_per_alert: usize,
    /// Anomaly detectors.
    pub anomaly: AnomalySettings,
    /// Performance thresholds.
    pub thresholds: ThresholdSettings,
    /// The `prompt_injection` detector.
    pub prompt_injection: InjectionSettings,
}

impl Default for DetectSettings {
    fn default() -> Self {
        DetectConfig::default()
            .build()
            .unwrap_or_else(|e| unreachable!("the default config is valid: {e:?}"))
    }
}

struct Errors(Vec<ConfigError>);

impl Errors {
    fn duration(&mut self, path: &str, text: &str) -> i64 {
        match parse_duration(text) {
            Ok(d) if !d.is_zero() => i64::try_from(d.as_micros()).unwrap_or(i64::MAX),
            Ok(_) => {
                self.0
                    .push(ConfigError::at(path, "must be longer than zero"));
                1
            }
            Err(e) => {
                self.0
                    .push(ConfigError::at(path, format!("`{text}` is {e}")));
                1
            }
        }
    }

    fn positive(&mut self, path: &str, v: f64) -> f64 {
        if !(v.is_finite() && v > 0.0) {
            self.0
                .push(ConfigError::at(path, "must be a number above zero"));
        }
        v
    }

    fn limits(&mut self, path: &str, l: LimitsConfig, max: f64, below: bool) -> Option<Limits> {
        for (k, v) in [("warning", l.warning), ("critical", l.critical)] {
            if !(v.is_finite() && v >= 0.0 && v <= max) {
                self.0.push(ConfigError::at(
                    format!("{path}.{k}"),
                    format!("must be between 0 and {max}"),
                ));
            }
        }
        let ordered = if below {
            l.warning >= l.critical
        } else {
            l.warning <= l.critical
        };
        if !ordered {
            let want = if below { "at or above" } else { "at or below" };
            self.0.push(ConfigError::at(
                path,
                format!(
                    "warning ({}) must be {want} critical ({})",
                    l.warning, l.critical
                ),
            ));
        }
        l.enabled.then_some(Limits {
            warning: l.warning,
            critical: l.critical,
        })
    }
}

impl DetectConfig {
    /// Checks every value and builds the runtime settings, or returns every error.
    pub fn build(&self) -> Result<DetectSettings, Vec<ConfigError>> {
        let mut e = Errors(Vec::new());
        let a = &self.anomaly;
        let mut enabled = Vec::new();
        for name in &a.enabled {
            match DetectorKind::parse(name) {
                Some(k) => enabled.push(k),
                None => {
                    let all: Vec<&str> = DetectorKind::ALL.iter().map(|k| k.as_str()).collect();
                    e.0.push(ConfigError::at(
                        "detection.anomaly.enabled",
                        format!(
                            "unknown detector `{name}`; detectors are {}",
                            all.join(", ")
                        ),
                    ));
                }
            }
        }
        if self.max_keys_per_rule == 0 || a.max_keys == 0 {
            e.0.push(ConfigError::at(
                "detection.max_keys_per_rule / detection.anomaly.max_keys",
                "must be at least 1",
            ));
        }
        if !(2..=MAX_REPETITION_COUNT).contains(&a.repetition_count) {
            e.0.push(ConfigError::at(
                "detection.anomaly.repetition_count",
                format!("must be between 2 and {MAX_REPETITION_COUNT}"),
            ));
        }
        let anomaly = AnomalySettings {
            learning_us: e.duration("detection.anomaly.learning_period", &a.learning_period),
            min_samples: a.min_samples,
            idle_us: e.duration("detection.anomaly.idle_timeout", &a.idle_timeout),
            max_keys: a.max_keys,
            enabled,
            latency_ratio: e.positive("detection.anomaly.latency_ratio", a.latency_ratio),
            latency_z: e.positive("detection.anomaly.latency_z", a.latency_z),
            latency_min_increase_ms: e.duration(
                "detection.anomaly.latency_min_increase",
                &a.latency_min_increase,
            ) as f64
                / 1000.0,
            error_cusum_h: e.positive("detection.anomaly.error_cusum_h", a.error_cusum_h),
            call_rate_z: e.positive("detection.anomaly.call_rate_z", a.call_rate_z),
            call_rate_min_calls: a.call_rate_min_calls,
            parameters_z: e.positive("detection.anomaly.parameters_z", a.parameters_z),
            repetition_count: a.repetition_count,
            repetition_window_us: e
                .duration("detection.anomaly.repetition_window", &a.repetition_window),
        };
        let t = &self.thresholds;
        let p = "detection.thresholds";
        let thresholds = ThresholdSettings {
            response_time: e.limits(
                &format!("{p}.response_time"),
                t.response_time,
                86_400.0,
                false,
            ),
            cpu_usage: e.limits(&format!("{p}.cpu_usage"), t.cpu_usage, 100.0, false),
            memory_usage: e.limits(&format!("{p}.memory_usage"), t.memory_usage, 100.0, false),
            disk_usage: e.limits(&format!("{p}.disk_usage"), t.disk_usage, 100.0, false),
            error_rate: e.limits(&format!("{p}.error_rate"), t.error_rate, 100.0, false),
            throughput_floor: e.limits(&format!("{p}.throughput"), t.throughput, 1e9, true),
            window_us: e.duration(&format!("{p}.window"), &t.window),
            min_requests: t.min_requests,
            repeat_us: e.duration(&format!("{p}.repeat_interval"), &t.repeat_interval),
            max_keys: 10_000,
        };
        let prompt_injection = self.prompt_injection.check(&mut e.0);
        if !e.0.is_empty() {
            return Err(e.0);
        }
        Ok(DetectSettings {
            default_rules: self.default_rules,
            max_keys_per_rule: self.max_keys_per_rule,
            threats: self.threats,
            tool_definition_changes: self.tool_definition_changes,
            max_event_ids_per_alert: self.max_event_ids_per_alert,
            anomaly,
            thresholds,
            prompt_injection,
        })
    }
}
