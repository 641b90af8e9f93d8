//! The `[alerting]`, `[channels.NAME]` and `[[routes]]` sections and how they build the
//! runtime [`Settings`]. Every problem is collected with its key path, so `config check` and
//! `serve` report them all at once.
//!
//! ```toml
//! [alerting]
//! repeat_interval = "4h"     # a still-firing alert notifies again after this
//! resolve_after = "1h"       # an alert with no new firing for this long resolves
//! external_url = "https://mcpwatch.example.com"
//!
//! [alerting.delivery]
//! max_attempts = 20
//! initial_backoff = "5s"
//! max_backoff = "10m"
//!
//! [channels.oncall]
//! type = "pagerduty"
//! routing_key = "${PAGERDUTY_ROUTING_KEY}"
//!
//! [channels.security]
//! type = "slack"
//! webhook_url = "${SLACK_WEBHOOK_URL}"
//!
//! [[routes]]                 # replaces the default mapping by severity
//! severity = ["high", "critical"]
//! channels = ["oncall", "security"]
//! ```

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_core::config::{Config, ConfigError};
use mcpwatch_core::time_fmt::parse_duration;
use mcpwatch_detect::{FindingSource, Severity};
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::channels::{BuildContext, Channel, ChannelConfig};
use crate::routing::{Route, Routing};

/// `[alerting]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertingConfig {
    /// A still-firing open alert notifies again after this long (e.g. `"4h"`).
    pub repeat_interval: String,
    /// An open alert with no new firing for this long resolves by itself (e.g. `"1h"`);
    /// `"0s"` turns automatic resolution off.
    pub resolve_after: String,
    /// The collector's URL as people reach it; alert links in notifications start with it
    /// (default: `http://` + `server.listen`).
    pub external_url: Option<String>,
    /// Most triggering event ids kept per alert (the most recent).
    pub max_event_ids: usize,
    /// Resolved alerts and their deliveries are deleted after this long (e.g. `"30d"`).
    pub retention: String,
    /// `[alerting.delivery]`: retries of the outbox.
    pub delivery: DeliveryConfig,
}

impl Default for AlertingConfig {
    fn default() -> Self {
        Self {
            repeat_interval: "4h".into(),
            resolve_after: "1h".into(),
            external_url: None,
            max_event_ids: 100,
            retention: "30d".into(),
            delivery: DeliveryConfig::default(),
        }
    }
}

/// `[alerting.delivery]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DeliveryConfig {
    /// Attempts per notification before it is marked `failed`.
    pub max_attempts: u32,
    /// Wait before the second attempt; it doubles each time, with jitter (e.g. `"5s"`).
    pub initial_backoff: String,
    /// The longest wait between attempts (e.g. `"10m"`).
    pub max_backoff: String,
    /// How long one attempt may take (e.g. `"10s"`).
    pub timeout: String,
    /// Notifications sent at the same time.
    pub concurrency: usize,
    /// Most notifications waiting in the outbox; beyond it new ones are not queued (counted and
    /// logged) and their alerts stay `new`.
    pub max_pending: usize,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        Self {
            max_attempts: 20,
            initial_backoff: "5s".into(),
            max_backoff: "10m".into(),
            timeout: "10s".into(),
            concurrency: 8,
            max_pending: 10_000,
        }
    }
}

/// One `[[routes]]` entry. All given matchers must hold.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Severities it takes (`low`, `medium`, `high`, `critical`); all when absent.
    #[serde(default)]
    pub severity: Vec<Severity>,
    /// Alert names, exact or with `*` (`"brute_*"`); all when absent.
    #[serde(default)]
    pub name: Vec<String>,
    /// Tags the alert must all carry (rule tags such as `authentication`).
    #[serde(default)]
    pub tags: Vec<String>,
    /// Sources it takes (`rule`, `anomaly`, `threat`, `threshold`); all when absent.
    #[serde(default)]
    pub source: Vec<FindingSource>,
    /// Names of `[channels.NAME]` sections to notify.
    pub channels: Vec<String>,
}

/// Retry settings, built.
#[derive(Debug, Clone)]
pub struct DeliverySettings {
    /// Attempts before `failed`.
    pub max_attempts: u32,
    /// First wait.
    pub initial_backoff: Duration,
    /// Longest wait.
    pub max_backoff: Duration,
    /// Per attempt.
    pub timeout: Duration,
    /// Parallel sends.
    pub concurrency: usize,
    /// Outbox bound.
    pub max_pending: usize,
}

/// Everything alerting runs with.
#[derive(Clone)]
pub struct Settings {
    /// Re-notify interval.
    pub repeat_interval: Duration,
    /// Quiet period before automatic resolution; `None` turns it off.
    pub resolve_after: Option<Duration>,
    /// Base URL for links.
    pub external_url: String,
    /// Event ids kept per alert.
    pub max_event_ids: usize,
    /// How long resolved alerts are kept.
    pub retention: Duration,
    /// Outbox retries.
    pub delivery: DeliverySettings,
    /// Channels by name.
    pub channels: BTreeMap<String, Arc<dyn Channel>>,
    /// Where alerts go.
    pub routing: Routing,
}

/// Builds the alerting settings from the config; every problem at once, each with its path.
pub fn build(
    config: &Config,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Settings, Vec<ConfigError>> {
    let mut errors = Vec::new();
    let alerting: AlertingConfig = section(config, "alerting", &mut errors).unwrap_or_default();
    let duration = |field: &str, v: &str, errors: &mut Vec<ConfigError>| {
        parse_duration(v).unwrap_or_else(|m| {
            errors.push(ConfigError::at(format!("alerting.{field}"), m));
            Duration::ZERO
        })
    };
    let repeat_interval = duration("repeat_interval", &alerting.repeat_interval, &mut errors);
    let resolve_after = duration("resolve_after", &alerting.resolve_after, &mut errors);
    let retention = duration("retention", &alerting.retention, &mut errors);
    let d = &alerting.delivery;
    let delivery = DeliverySettings {
        max_attempts: d.max_attempts,
        initial_backoff: duration("delivery.initial_backoff", &d.initial_backoff, &mut errors),
        max_backoff: duration("delivery.max_backoff", &d.max_backoff, &mut errors),
        timeout: duration("delivery.timeout", &d.timeout, &mut errors),
        concurrency: d.concurrency,
        max_pending: d.max_pending,
    };
    check_ranges(&alerting, repeat_interval, &delivery, &mut errors);
    let http = reqwest::Client::builder()
        .timeout(delivery.timeout.max(Duration::from_millis(100)))
        .connect_timeout(
            delivery
                .timeout
                .clamp(Duration::from_millis(100), Duration::from_secs(10)),
        )
        .build();
    let http = match http {
        Ok(c) => c,
        Err(e) => {
            errors.push(ConfigError::at(
                "alerting",
                format!("cannot set up the HTTP client: {e}"),
            ));
            reqwest::Client::new()
        }
    };
    let ctx = BuildContext {
        http,
        timeout: delivery.timeout,
        env,
    };
    let channels = build_channels(config, &ctx, &mut errors);
    let routing = build_routes(config, &channels, &mut errors);
    let external_url = alerting
        .external_url
        .clone()
        .unwrap_or_else(|| format!("http://{}", config.server.listen))
        .trim_end_matches('/')
        .to_owned();
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Settings {
        repeat_interval,
        resolve_after: (resolve_after > Duration::ZERO).then_some(resolve_after),
        external_url,
        max_event_ids: alerting.max_event_ids,
        retention,
        delivery,
        channels,
        routing,
    })
}

/// The problems [`build`] finds, with `${VAR}`s read from the process environment; what
/// `mcpwatch config check` reports for the alerting sections.
pub fn check(config: &Config) -> Vec<ConfigError> {
    match build(config, &mcpwatch_core::paths::process_env) {
        Ok(_) => Vec::new(),
        Err(errors) => errors,
    }
}

fn check_ranges(
    a: &AlertingConfig,
    repeat_interval: Duration,
    d: &DeliverySettings,
    errors: &mut Vec<ConfigError>,
) {
    let mut bad = |path: &str, msg: &str| errors.push(ConfigError::at(path, msg));
    if repeat_interval < Duration::from_secs(1) && parse_duration(&a.repeat_interval).is_ok() {
        bad("alerting.repeat_interval", "must be at least 1s");
    }
    if a.max_event_ids == 0 || a.max_event_ids > 10_000 {
        bad("alerting.max_event_ids", "must be between 1 and 10000");
    }
    if d.max_attempts == 0 || d.max_attempts > 1_000 {
        bad(
            "alerting.delivery.max_attempts",
            "must be between 1 and 1000",
        );
    }
    if d.concurrency == 0 || d.concurrency > 256 {
        bad("alerting.delivery.concurrency", "must be between 1 and 256");
    }
    if d.max_pending == 0 {
        bad("alerting.delivery.max_pending", "must be at least 1");
    }
    if d.max_backoff < d.initial_backoff {
        bad(
            "alerting.delivery.max_backoff",
            "must be at least alerting.delivery.initial_backoff",
        );
    }
    if d.timeout < Duration::from_millis(100) {
        bad("alerting.delivery.timeout", "must be at least 100ms");
    }
}

fn section<T: DeserializeOwned>(
    config: &Config,
    key: &str,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    let value = config.extra.get(key)?.clone();
    deserialize(key, value, errors)
}

/// Deserializes `value`, reporting every bad or unknown key: after each error the offending
/// key is taken out (falling back to its default) and the rest is tried again.
fn deserialize<T: DeserializeOwned>(
    path: &str,
    mut value: toml::Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    const MAX_ERRORS_PER_SECTION: usize = 32;
    for _ in 0..MAX_ERRORS_PER_SECTION {
        let e = match serde_path_to_error::deserialize::<_, T>(value.clone()) {
            // With the bad keys taken out, the rest is still checked by the caller.
            Ok(v) => return Some(v),
            Err(e) => e,
        };
        let mut inner = e.path().to_string();
        let message = e.into_inner().message().to_owned();
        // An unknown key is reported at the key, so its position is the key's line.
        // (serde_path_to_error names the key itself, except inside a tagged enum.)
        let named = |f: &str| inner == f || inner.ends_with(&format!(".{f}"));
        if let Some(field) = unknown_field(&message).filter(|f| !named(f)) {
            inner = if inner == "." {
                field.to_owned()
            } else {
                format!("{inner}.{field}")
            };
        }
        let at = if inner == "." {
            path.to_owned()
        } else {
            format!("{path}.{inner}")
        };
        errors.push(ConfigError::at(at, message));
        // `type` picks the schema of a channel: without it nothing else can be checked.
        if inner == "." || inner == "type" || !remove_path(&mut value, &inner) {
            return None;
        }
    }
    None
}

/// The key serde names in "unknown field `foo`, expected …".
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")?
        .split_once('`')
        .map(|(f, _)| f)
}

/// Removes the key at a serde_path_to_error path such as `delivery.max_attempts` or
/// `[0].channels`; whether it was there.
fn remove_path(value: &mut toml::Value, path: &str) -> bool {
    let segments: Vec<&str> = path
        .split(['.', '['])
        .map(|s| s.trim_end_matches(']'))
        .filter(|s| !s.is_empty())
        .collect();
    let Some((last, parents)) = segments.split_last() else {
        return false;
    };
    let mut cur = value;
    for seg in parents {
        let next = match cur {
            toml::Value::Table(t) => t.get_mut(*seg),
            toml::Value::Array(a) => seg.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
            _ => None,
        };
        match next {
            Some(n) => cur = n,
            None => return false,
        }
    }
    match cur {
        toml::Value::Table(t) => t.remove(*last).is_some(),
        _ => false,
    }
}

fn build_channels(
    config: &Config,
    ctx: &BuildContext<'_>,
    errors: &mut Vec<ConfigError>,
) -> BTreeMap<String, Arc<dyn Channel>> {
    let mut out = BTreeMap::new();
    let Some(value) = config.extra.get("channels") else {
        return out;
    };
    let Some(table) = value.as_table() else {
        errors.push(ConfigError::at(
            "channels",
            "must be a table of channels: [channels.NAME] with type = \"webhook\", \"slack\", \"pagerduty\" or \"email\"",
        ));
        return out;
    };
    for (name, v) in table {
        let path = format!("channels.{name}");
        if !v.as_table().is_some_and(|t| t.contains_key("type")) {
            errors.push(ConfigError::at(
                format!("{path}.type"),
                "missing; write type = \"webhook\", \"slack\", \"pagerduty\" or \"email\"",
            ));
            continue;
        }
        let Some(cfg) = deserialize::<ChannelConfig>(&path, v.clone(), errors) else {
            continue;
        };
        match cfg.build(ctx) {
            Ok(c) => {
                out.insert(name.clone(), Arc::from(c));
            }
            Err(errs) => errors.extend(
                errs.into_iter()
                    .map(|(field, m)| ConfigError::at(format!("{path}.{field}"), m)),
            ),
        }
    }
    out
}

fn build_routes(
    config: &Config,
    channels: &BTreeMap<String, Arc<dyn Channel>>,
    errors: &mut Vec<ConfigError>,
) -> Routing {
    let Some(routes) = section::<Vec<RouteConfig>>(config, "routes", errors) else {
        return Routing::defaults(channels);
    };
    let declared: Vec<String> = config
        .extra
        .get("channels")
        .and_then(|v| v.as_table())
        .map(|t| t.keys().cloned().collect())
        .unwrap_or_default();
    let mut out = Vec::new();
    for (i, r) in routes.into_iter().enumerate() {
        if r.channels.is_empty() {
            errors.push(ConfigError::at(
                format!("routes[{i}].channels"),
                "give at least one channel name",
            ));
        }
        for (j, c) in r.channels.iter().enumerate() {
            if !declared.contains(c) {
                let known = if declared.is_empty() {
                    "none are configured; add a [channels.NAME] section".to_owned()
                } else {
                    format!("configured channels: {}", declared.join(", "))
                };
                errors.push(ConfigError::at(
                    format!("routes[{i}].channels[{j}]"),
                    format!("unknown channel `{c}`; {known}"),
                ));
            }
        }
        out.push(Route {
            severities: r.severity,
            names: r.name,
            tags: r.tags,
            sources: r.source,
            channels: r.channels,
        });
    }
    Routing::new(out)
}
