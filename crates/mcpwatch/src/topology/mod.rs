//! The topology of `serve`: which post-commit stages run, in what order, and which extra routes
//! the API gets. Like Vector's topology builder, this is the one place the stages are wired;
//! each stage's adapter lives in its own file here.
//!
//! Order matters: detection runs first and hands its findings to the finding observers
//! (alerting); every stage then sees the events detection emitted once they are committed.

mod alerts;
mod detect;
mod metrics;
mod web;

use std::path::PathBuf;
use std::sync::Arc;

use axum::Router;
use mcpwatch_core::auth::Authenticator;
use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::config::Config;
use mcpwatch_core::Timestamp;
use mcpwatch_detect::Finding;
use mcpwatch_server::{Pipeline, Stage};
use mcpwatch_store::EventReader;

pub use detect::{detection_from_config, RulesHandle};

/// What stages may need from the collector.
#[allow(
    dead_code,
    reason = "fields are for the stages that register in Topology::build"
)]
pub struct Context {
    /// The collector's configuration.
    pub config: Config,
    /// Where data lives.
    pub data_dir: PathBuf,
    /// Wall time (for ticks and delivery; detection itself uses event time).
    pub clock: SharedClock,
    /// Who may call the API.
    pub auth: Arc<Authenticator>,
    /// Queries over stored events.
    pub reader: Arc<dyn EventReader>,
    /// The stream consumer's and cluster node's counters, when `[nats]` names servers.
    pub stream_health: Option<Arc<crate::cmd::nats::StreamHealth>>,
}

/// Sees every detection finding, on the stage thread (alerting registers one).
pub trait FindingObserver: Send + 'static {
    /// A finding, in event-time order.
    fn on_finding(&mut self, finding: &Finding);
    /// About once a second with the wall time.
    fn on_tick(&mut self, _now: Timestamp) {}
}

/// Builds extra routes once the pipeline runs.
pub type RouteFactory = Box<dyn FnOnce(&Pipeline) -> Router + Send>;

/// Every problem in the sections the stages own (`[detection]`, `[rules]` and the rule files,
/// `[metrics]`, `[otlp]`), for `mcpwatch config check`; `serve` refuses the same problems.
pub fn check(config: &Config) -> Vec<mcpwatch_core::config::ConfigError> {
    use mcpwatch_core::config::ConfigError;
    let mut errors = Vec::new();
    let detection = match config.extra.get("detection") {
        None => Some(mcpwatch_detect::DetectConfig::default()),
        Some(v) => v
            .clone()
            .try_into::<mcpwatch_detect::DetectConfig>()
            .map_err(|e| errors.push(ConfigError::at("detection", e.message())))
            .ok(),
    };
    let settings = detection.and_then(|d| d.build().map_err(|e| errors.extend(e)).ok());
    let files = match config.extra.get("rules") {
        None => Some(Vec::new()),
        Some(v) => v
            .clone()
            .try_into::<detect::RulesSection>()
            .map(|r| r.files)
            .map_err(|e| errors.push(ConfigError::at("rules", e.message())))
            .ok(),
    };
    if let Some(files) = files {
        let with_defaults = settings.as_ref().is_none_or(|s| s.default_rules);
        match mcpwatch_detect::RuleSet::load(&files, with_defaults) {
            Ok(_) => {}
            Err(mcpwatch_detect::DetectError::Rules(rule_errors)) => {
                errors.extend(
                    rule_errors
                        .into_iter()
                        .map(|r| ConfigError::at("rules.files", r.to_string())),
                );
            }
            Err(other) => errors.push(ConfigError::at("rules.files", other.to_string())),
        }
    }
    errors.extend(metrics::check(config));
    if let Err(e) = crate::cluster::ClusterSettings::from_config(config) {
        errors.push(ConfigError::at("cluster", format!("{e:#}")));
    }
    errors
}

/// The stages and routes of a collector.
pub struct Topology {
    /// Post-commit stages, in order.
    pub stages: Vec<Box<dyn Stage>>,
    /// Extra API routes.
    pub routes: Vec<RouteFactory>,
    /// Reloads the rules (SIGHUP).
    pub rules: RulesHandle,
    /// Where the alerts are: `alerts.db`'s path or the PostgreSQL URL (password hidden).
    pub alerts_in: String,
    /// Alerting, for the cluster's tasks.
    pub alerting: Arc<mcpwatch_alert::Alerting>,
    /// On PostgreSQL: this node's name and the cluster's leases.
    pub cluster: Option<(String, mcpwatch_alert::postgres::cluster::PgCluster)>,
}

impl Topology {
    /// Builds every stage from the configuration. Fails on the first bad section;
    /// [`check`] (behind `config check`) reports them all. In a cluster (`serve --cluster`)
    /// detection runs in the cluster's tasks instead of on what this node stores.
    pub fn build(ctx: &Context, cluster: bool) -> anyhow::Result<Topology> {
        let mut routes: Vec<RouteFactory> = Vec::new();
        // Detection hands its findings to alerting; metrics runs after detection so it also
        // counts what detection emits, and reports alerting's delivery health.
        let (alert_observer, alert_health, alerting, pg_cluster) = alerts::build(ctx, &mut routes)?;
        let (detect_stage, rules) = detect::build(ctx, vec![alert_observer], &mut routes)?;
        let mut health = vec![alert_health];
        if let Some(h) = &ctx.stream_health {
            health.push(h.clone());
        }
        let metrics_stage =
            metrics::build(ctx, rules.detector_health.clone(), health, &mut routes)?;
        let alerts_in = alerting.store().location();
        web::build(ctx, alerting.clone(), rules.clone(), &mut routes);
        let stages: Vec<Box<dyn Stage>> = if cluster {
            vec![metrics_stage]
        } else {
            vec![Box::new(detect_stage), metrics_stage]
        };
        Ok(Topology {
            stages,
            routes,
            rules,
            alerts_in,
            alerting,
            cluster: pg_cluster,
        })
    }
}
