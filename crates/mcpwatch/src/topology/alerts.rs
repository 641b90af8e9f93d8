//! The alerting adapter: builds [`mcpwatch_alert::Alerting`] from `[alerting]`, `[channels]`
//! and `[[routes]]` on the store the config names (the PostgreSQL database of `[store] url`,
//! shared with other collectors, else `alerts.db` in the data directory), registers a
//! [`FindingObserver`] that folds each finding into it on the stage thread (one transaction, no
//! network), starts the delivery worker as a tokio task, and mounts the alerting API.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use anyhow::Context as _;
use mcpwatch_alert::postgres::cluster::PgCluster;
use mcpwatch_alert::postgres::{claim_for, node_name, PgAlertStore};
use mcpwatch_alert::store::{AlertStore, SqliteAlertStore};
use mcpwatch_alert::Alerting;
use mcpwatch_core::paths::process_env;
use mcpwatch_core::Timestamp;
use mcpwatch_detect::Finding;
use mcpwatch_metrics::{HealthSource, HealthValue};
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
/// Alerting's delivery counters, as `/metrics` reports them.
struct AlertHealthSource(Arc<Alerting>);

impl std::fmt::Debug for AlertHealthSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("AlertHealthSource")
    }
}

impl HealthSource for AlertHealthSource {
    fn report(&self, out: &mut Vec<HealthValue>) {
        let h = self.0.health();
        let ld =
            |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as f64;
        let mut counter = |name, help, value| {
            out.push(HealthValue {
                name,
                help,
                value,
                counter: true,
            })
        };
        counter(
            "mcpwatch_alert_notifications_queued",
            "Notifications put in the alert outbox",
            ld(&h.queued),
        );
        counter(
            "mcpwatch_alert_notifications_delivered",
            "Notifications a receiver accepted",
            ld(&h.delivered),
        );
        counter(
            "mcpwatch_alert_delivery_retries",
            "Delivery attempts that failed and will be retried",
            ld(&h.retried),
        );
        counter(
            "mcpwatch_alert_delivery_failures",
            "Notifications given up on after the last attempt or a permanent refusal",
            ld(&h.failed),
        );
        counter(
            "mcpwatch_alert_outbox_full_drops",
            "Notifications not queued because the outbox was full",
            ld(&h.dropped_outbox_full),
        );
        counter(
            "mcpwatch_alert_store_errors",
            "Findings or ticks that failed on the alert store",
            ld(&h.store_errors),
        );
    }
}

/// What [`build`] hands back: the observer, alerting's health, the service itself and, on
/// PostgreSQL, this node's name and the cluster's leases there.
pub(super) type Built = (
    Box<dyn FindingObserver>,
    Arc<dyn HealthSource>,
    Arc<Alerting>,
    Option<(String, PgCluster)>,
);

/// Builds the alerting observer, its routes and the delivery worker; returns the observer and
/// alerting's health for `/metrics` and the service itself (for the dashboard).
pub(super) fn build(ctx: &Context, routes: &mut Vec<RouteFactory>) -> anyhow::Result<Built> {
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
    let url = ctx
        .config
        .store
        .expanded_url(&process_env)
        .map_err(|e| anyhow::anyhow!("invalid [store]: {e}"))?;
    let mut cluster = None;
    let store: Arc<dyn AlertStore> = match url {
        Some(url) => {
            let pg = PgAlertStore::open(&url, &node_name(), claim_for(&settings))
                .context("cannot open the alert tables in the PostgreSQL store")?;
            cluster = Some((pg.node().to_owned(), pg.cluster()));
            Arc::new(pg)
        }
        None => {
            Arc::new(SqliteAlertStore::open(&ctx.data_dir).context("cannot open the alert store")?)
        }
    };
    let alerting = Alerting::with_store(store, settings, ctx.clock.clone());
    tracing::debug!(
        channels,
        "alerting ready; pending notifications are delivered now"
    );
    tokio::spawn(alerting.clone().run_delivery());
    let (for_routes, auth) = (alerting.clone(), ctx.auth.clone());
    routes.push(Box::new(move |_: &Pipeline| {
        mcpwatch_alert::api::router(for_routes, auth)
    }));
    let health: Arc<dyn HealthSource> = Arc::new(AlertHealthSource(alerting.clone()));
    Ok((
        Box::new(AlertObserver {
            alerting: alerting.clone(),
        }),
        health,
        alerting,
        cluster,
    ))
}
