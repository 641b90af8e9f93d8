//! The alerting adapter: builds [`mcpwatch_alert::Alerting`] from `[alerting]`, `[channels]`
//! and `[[routes]]`, registers a [`FindingObserver`] that folds each finding into `alerts.db`
//! on the stage thread (one SQLite transaction, no network), starts the delivery worker as a
//! tokio task, and mounts the alerting API.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use mcpwatch_alert::Alerting;
use mcpwatch_core::paths::process_env;
use mcpwatch_core::Timestamp;
use mcpwatch_detect::Finding;
use mcpwatch_server::Pipeline;

use super::{Context, FindingObserver, RouteFactory};

/// Folds findings into persistent alerts.
struct AlertObserver {
    alerting: Arc<Alerting>,
}

impl FindingObserver for AlertObserver {
    fn on_finding(&mut self, finding: &Finding) {
        if let Err(e) = self.alerting.on_finding(finding) {
            self.alerting
                .health()
                .store_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, rule = %finding.name, "cannot record an alert; the finding's event is still stored");
        }
    }

    fn on_tick(&mut self, now: Timestamp) {
        if let Err(e) = self.alerting.tick(now) {
            self.alerting
                .health()
                .store_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "alert housekeeping (quiet-period resolution) failed; will retry");
        }
    }
}

/// Builds alerting: the observer, the API routes and the delivery worker.
pub(super) fn build(
    ctx: &Context,
    routes: &mut Vec<RouteFactory>,
) -> anyhow::Result<Box<dyn FindingObserver>> {
    let settings = mcpwatch_alert::build(&ctx.config, &process_env).map_err(|errs| {
        anyhow::anyhow!(
            "invalid alerting configuration:\n{}\n(run `mcpwatch config check FILE` to see every error with its line)",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let channels = settings.channels.len();
    let alerting = Alerting::open(&ctx.data_dir, settings, ctx.clock.clone())
        .context("cannot open the alert store")?;
    tracing::debug!(
        channels,
        "alerting ready; pending notifications are delivered now"
    );
    tokio::spawn(alerting.clone().run_delivery());
    let (for_routes, auth) = (alerting.clone(), ctx.auth.clone());
    routes.push(Box::new(move |_: &Pipeline| {
        mcpwatch_alert::api::router(for_routes, auth)
    }));
    Ok(Box::new(AlertObserver { alerting }))
}
