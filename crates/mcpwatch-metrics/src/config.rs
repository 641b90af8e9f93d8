//! `[metrics]` and `[otlp]` in the config file, and the settings they build.
//!
//! Like every stage's config, these structs build the runtime settings
//! ([`MetricsConfig::build`], [`OtlpConfig::build`]) and report every error at once, each with
//! the key it is about.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Deserializer};

use crate::MetricsError;

/// `[metrics]`: what `GET /metrics` shows and how the host is sampled.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MetricsConfig {
    /// Adds the `mcpwatch_user_*` families, labelled by `metadata.user_id`. Off by default:
    /// every distinct user is a series.
    pub per_user: bool,
    /// Most distinct users given their own label value; later users count as `other`.
    pub max_users: usize,
    /// Most distinct servers given their own label value; later ones count as `other`.
    pub max_servers: usize,
    /// Most distinct tool names given their own label value; later ones count as `other`.
    pub max_tools: usize,
    /// Most distinct values of every other open label (MCP method, error code, event type,
    /// data classification, protocol error kind, category).
    pub max_label_values: usize,
    /// Window of the in-process rates (success, error, availability, throughput), e.g. "5m".
    #[serde(deserialize_with = "duration")]
    pub window: Duration,
    /// How often the host (CPU, memory, disk, network) is sampled and a
    /// `performance/system_performance` event is emitted per metric; "0s" turns sampling off.
    #[serde(deserialize_with = "duration")]
    pub host_interval: Duration,
    /// Emit the `system_performance` events (detection's CPU/memory/disk thresholds read them).
    pub host_events: bool,
    /// How long the store's size may be cached before a scrape refreshes it, e.g. "5s".
    #[serde(deserialize_with = "duration")]
    pub store_stats_max_age: Duration,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            per_user: false,
            max_users: 1_000,
            max_servers: 200,
            max_tools: 2_000,
            max_label_values: 100,
            window: Duration::from_secs(300),
            host_interval: Duration::from_secs(15),
            host_events: true,
            store_stats_max_age: Duration::from_secs(5),
        }
    }
}

/// What the metrics stage runs with, built from [`MetricsConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct MetricsSettings {
    /// See [`MetricsConfig::per_user`].
    pub per_user: bool,
    /// See [`MetricsConfig::max_users`].
    pub max_users: usize,
    /// See [`MetricsConfig::max_servers`].
    pub max_servers: usize,
    /// See [`MetricsConfig::max_tools`].
    pub max_tools: usize,
    /// See [`MetricsConfig::max_label_values`].
    pub max_label_values: usize,
    /// See [`MetricsConfig::window`].
    pub window: Duration,
    /// `None` when host sampling is off.
    pub host_interval: Option<Duration>,
    /// See [`MetricsConfig::host_events`].
    pub host_events: bool,
    /// See [`MetricsConfig::store_stats_max_age`].
    pub store_stats_max_age: Duration,
}

impl Default for MetricsSettings {
    fn default() -> Self {
        MetricsConfig::default()
            .build()
            .unwrap_or_else(|_| unreachable!("the defaults are valid"))
    }
}

impl MetricsConfig {
    /// Checks the values; every error names its key.
    pub fn build(&self) -> Result<MetricsSettings, Vec<MetricsError>> {
        let mut errors = Vec::new();
        let mut at_least_one = |key: &str, v: usize| {
            if v == 0 {
                errors.push(MetricsError::config(
                    format!("metrics.{key}"),
                    "must be at least 1",
                ));
            }
        };
        at_least_one("max_users", self.max_users);
        at_least_one("max_servers", self.max_servers);
        at_least_one("max_tools", self.max_tools);
        at_least_one("max_label_values", self.max_label_values);
        if self.window < Duration::from_secs(10) {
            errors.push(MetricsError::config(
                "metrics.window",
                "must be at least 10s (rates are kept in 30 slots of window/30)",
            ));
        }
        if !self.host_interval.is_zero() && self.host_interval < Duration::from_secs(1) {
            errors.push(MetricsError::config(
                "metrics.host_interval",
                "must be at least 1s, or \"0s\" to turn host sampling off",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(MetricsSettings {
            per_user: self.per_user,
            max_users: self.max_users,
            max_servers: self.max_servers,
            max_tools: self.max_tools,
            max_label_values: self.max_label_values,
            window: self.window,
            host_interval: (!self.host_interval.is_zero()).then_some(self.host_interval),
            host_events: self.host_events,
            store_stats_max_age: self.store_stats_max_age,
        })
    }
}

/// `[otlp]`: export spans and metrics over OTLP/HTTP (protobuf). Absent means off.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OtlpConfig {
    /// Base URL of the collector, e.g. "http://127.0.0.1:4318"; `/v1/traces` and `/v1/metrics`
    /// are appended unless `traces_endpoint` / `metrics_endpoint` say otherwise.
    pub endpoint: String,
    /// Full URL for spans (overrides `endpoint`).
    #[serde(default)]
    pub traces_endpoint: Option<String>,
    /// Full URL for metrics (overrides `endpoint`).
    #[serde(default)]
    pub metrics_endpoint: Option<String>,
    /// Extra HTTP headers, e.g. `{ authorization = "Bearer …" }`.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// How often queued spans are sent and metrics are exported, e.g. "10s".
    #[serde(default = "default_interval", deserialize_with = "duration")]
    pub interval: Duration,
    /// Most spans waiting to be sent; beyond it spans are dropped and counted.
    #[serde(default = "default_max_queue")]
    pub max_queue: usize,
    /// Most spans in one request.
    #[serde(default = "default_max_batch")]
    pub max_batch: usize,
    /// How long one export request may take.
    #[serde(default = "default_timeout", deserialize_with = "duration")]
    pub timeout: Duration,
    /// Export one span per MCP request.
    #[serde(default = "yes")]
    pub traces: bool,
    /// Export the metrics of `GET /metrics`.
    #[serde(default = "yes")]
    pub metrics: bool,
    /// `service.name` of the exported resource.
    #[serde(default = "default_service")]
    pub service_name: String,
}

fn default_interval() -> Duration {
    Duration::from_secs(10)
}
fn default_max_queue() -> usize {
    10_000
}
fn default_max_batch() -> usize {
    512
}
fn default_timeout() -> Duration {
    Duration::from_secs(10)
}
fn yes() -> bool {
    true
}
fn default_service() -> String {
    "mcpwatch".into()
}

/// What the OTLP exporter runs with, built from [`OtlpConfig`].
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpSettings {
    /// Where spans go (`None`: not exported).
    pub traces_url: Option<String>,
    /// Where metrics go (`None`: not exported).
    pub metrics_url: Option<String>,
    /// Extra headers.
    pub headers: Vec<(String, String)>,
    /// See [`OtlpConfig::interval`].
    pub interval: Duration,
    /// See [`OtlpConfig::max_queue`].
    pub max_queue: usize,
    /// See [`OtlpConfig::max_batch`].
    pub max_batch: usize,
    /// See [`OtlpConfig::timeout`].
    pub timeout: Duration,
    /// See [`OtlpConfig::service_name`].
    pub service_name: String,
}

impl OtlpConfig {
    /// Checks the values; every error names its key.
    pub fn build(&self) -> Result<OtlpSettings, Vec<MetricsError>> {
        let mut errors = Vec::new();
        let base = self.endpoint.trim_end_matches('/');
        let mut url = |key: &str, explicit: &Option<String>, suffix: &str| {
            let u = explicit
                .clone()
                .unwrap_or_else(|| format!("{base}{suffix}"));
            if !(u.starts_with("http://") || u.starts_with("https://")) {
                errors.push(MetricsError::config(
                    format!("otlp.{key}"),
                    format!(
                        "{u:?} is not an http:// or https:// URL (e.g. \"http://127.0.0.1:4318\")"
                    ),
                ));
            }
            u
        };
        let traces = url("traces_endpoint", &self.traces_endpoint, "/v1/traces");
        let metrics = url("metrics_endpoint", &self.metrics_endpoint, "/v1/metrics");
        for (k, v) in &self.headers {
            let bad_name = k.is_empty()
                || !k
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
            if bad_name || v.bytes().any(|b| b == b'\r' || b == b'\n') {
                errors.push(MetricsError::config(
                    format!("otlp.headers.{k}"),
                    "header names are letters, digits, '-' and '_'; values have no line breaks",
                ));
            }
        }
        if self.interval < Duration::from_millis(100) {
            errors.push(MetricsError::config(
                "otlp.interval",
                "must be at least 100ms",
            ));
        }
        if self.max_queue == 0 || self.max_batch == 0 {
            errors.push(MetricsError::config(
                "otlp.max_queue",
                "max_queue and max_batch must be at least 1",
            ));
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(OtlpSettings {
            traces_url: self.traces.then_some(traces),
            metrics_url: self.metrics.then_some(metrics),
            headers: self
                .headers
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect(),
            interval: self.interval,
            max_queue: self.max_queue,
            max_batch: self.max_batch,
            timeout: self.timeout,
            service_name: self.service_name.clone(),
        })
    }
}

fn duration<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
    let s = String::deserialize(d)?;
    humantime::parse_duration(&s).map_err(|e| {
        serde::de::Error::custom(format!(
            "{s:?} is not a duration like \"15s\" or \"5m\": {e}"
        ))
    })
}
