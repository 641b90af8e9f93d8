//! The metrics stage and `GET /metrics`: builds [`mcpwatch_metrics::Metrics`] from `[metrics]`,
//! registers its stage after detection (so it counts what detection emitted too), and serves
//! the registry once the pipeline runs; with `[otlp]`, also exports spans and metrics.

use anyhow::Context as _;
use mcpwatch_metrics::{DetectorHealth, HealthSource, Metrics, MetricsConfig, OtlpConfig, Sources};
use mcpwatch_server::{Pipeline, Stage};
use std::sync::Arc;

use super::{Context, RouteFactory};

/// Every problem in `[metrics]` and `[otlp]`, with key paths.
pub(super) fn check(
    config: &mcpwatch_core::config::Config,
) -> Vec<mcpwatch_core::config::ConfigError> {
    use mcpwatch_core::config::ConfigError;
    let mut errors = Vec::new();
    if let Some(v) = config.extra.get("metrics") {
        match v.clone().try_into::<MetricsConfig>() {
            Ok(c) => errors.extend(
                c.build()
                    .err()
                    .unwrap_or_default()
                    .into_iter()
                    .map(from_metrics),
            ),
            Err(e) => errors.push(ConfigError::at("metrics", e.message().to_owned())),
        }
    }
    if let Some(v) = config.extra.get("otlp") {
        match v.clone().try_into::<OtlpConfig>() {
            Ok(c) => errors.extend(
                c.build()
                    .err()
                    .unwrap_or_default()
                    .into_iter()
                    .map(from_metrics),
            ),
            Err(e) => errors.push(ConfigError::at("otlp", e.message().to_owned())),
        }
    }
    errors
}

fn from_metrics(e: mcpwatch_metrics::MetricsError) -> mcpwatch_core::config::ConfigError {
    match e {
        mcpwatch_metrics::MetricsError::Config { key, message } => {
            mcpwatch_core::config::ConfigError::at(key, message)
        }
    }
}

/// Builds the stage and pushes the `/metrics` route factory.
pub(super) fn build(
    ctx: &Context,
    detector: Arc<DetectorHealth>,
    extra: Vec<Arc<dyn HealthSource>>,
    routes: &mut Vec<RouteFactory>,
) -> anyhow::Result<Box<dyn Stage>> {
    let config: MetricsConfig = match ctx.config.extra.get("metrics") {
        Some(v) => v
            .clone()
            .try_into()
            .context("invalid [metrics] (run `mcpwatch config check`)")?,
        None => MetricsConfig::default(),
    };
    let settings = config.build().map_err(|errs| {
        anyhow::anyhow!(
            "invalid [metrics]:\n{}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let otlp = match ctx.config.extra.get("otlp") {
        Some(v) => {
            let c: OtlpConfig = v
                .clone()
                .try_into()
                .context("invalid [otlp] (run `mcpwatch config check`)")?;
            Some(c.build().map_err(|errs| {
                anyhow::anyhow!(
                    "invalid [otlp]:\n{}",
                    errs.iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?)
        }
        None => None,
    };
    let metrics = Metrics::build(
        &settings,
        Sources {
            clock: ctx.clock.clone(),
            reader: Some(ctx.reader.clone()),
            detector,
            data_dir: ctx.data_dir.clone(),
            otlp,
            extra,
        },
    );
    let (endpoint, auth) = (metrics.endpoint, ctx.auth.clone());
    routes.push(Box::new(move |p: &Pipeline| endpoint.router(p, auth)));
    Ok(Box::new(metrics.stage))
}
