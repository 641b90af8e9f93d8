//! mcpwatch-metrics: what `GET /metrics` shows and what goes out over OTLP.
//!
//! A post-commit stage ([`MetricsStage`]) counts every committed event into Prometheus metrics
//! (tool executions, requests, security events, the OpenTelemetry MCP histograms), bounded in
//! cardinality by [`labels::LabelBound`]; a scrape-time collector adds mcpwatch's own health
//! (pipeline queue, store size, detector state). [`Metrics::build`] wires both from the
//! `[metrics]` config; `docs/metrics.md` lists every metric.
//!
//! Architecture Invariant: the number of series is bounded by configuration, never by traffic.
//! Architecture Invariant: `on_commit` does no I/O; scrapes never wait on SQLite beyond the first.

#![forbid(unsafe_code)]

pub mod config;
mod error;
pub mod families;
pub mod health;
pub mod host;
mod http;
pub mod labels;
pub mod otlp;
mod stage;
mod traffic;
pub mod window;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use axum::Router;
use mcpwatch_core::auth::Authenticator;
use mcpwatch_server::Pipeline;
use mcpwatch_store::EventReader;
use prometheus_client::registry::Registry;

pub use config::{MetricsConfig, MetricsSettings, OtlpConfig, OtlpSettings};
pub use error::MetricsError;
pub use health::{DetectorHealth, HealthSource, HealthValue};
pub use http::CONTENT_TYPE;
pub use stage::{Clock, MetricsStage};

use crate::families::Families;
use crate::health::{HealthCollector, StoreStatsCache};
use crate::host::HostSampler;
use crate::otlp::Exporter;
use crate::traffic::Traffic;

/// The metrics of one collector: its stage and its `/metrics` endpoint.
pub struct Metrics {
    /// The post-commit stage to register.
    pub stage: MetricsStage,
    /// Serves `/metrics` once the pipeline runs.
    pub endpoint: MetricsEndpoint,
}

/// What `GET /metrics` needs, until the pipeline exists.
pub struct MetricsEndpoint {
    registry: Arc<Registry>,
    pipeline: Arc<OnceLock<Arc<mcpwatch_server::pipeline::PipelineHealth>>>,
    store: Option<Arc<StoreStatsCache>>,
    exporter: Option<Exporter>,
}

/// What [`Metrics::build`] needs from the collector.
pub struct Sources {
    /// Wall time for the rate windows.
    pub clock: Clock,
    /// The store, for its size (`None` in tests without one).
    pub reader: Option<Arc<dyn EventReader>>,
    /// Published by the detection stage.
    pub detector: Arc<DetectorHealth>,
    /// The data directory: the host sampler reports the disk that holds it.
    pub data_dir: PathBuf,
    /// OTLP export, when `[otlp]` is configured.
    pub otlp: Option<OtlpSettings>,
    /// Other components' own health (alerting's deliveries, …).
    pub extra: Vec<Arc<dyn HealthSource>>,
}

impl Metrics {
    /// Registers every metric and builds the stage.
    pub fn build(settings: &MetricsSettings, sources: Sources) -> Metrics {
        let mut registry = Registry::default();
        let families = Families::register(&mut registry, settings.per_user);
        let now = sources.clock.now();
        let traffic = Traffic::new(families, settings, now.as_micros());
        let host = settings.host_interval.map(|every| {
            HostSampler::new(
                &mut registry,
                every,
                settings.host_events,
                sources.data_dir.clone(),
            )
        });
        let pipeline = Arc::new(OnceLock::new());
        let store = sources
            .reader
            .map(|r| StoreStatsCache::new(r, settings.store_stats_max_age));
        let (spans, exporter, export) = match sources.otlp {
            Some(o) => {
                let (q, x, h) = otlp::channel(o, sources.clock.clone());
                (Some(q), Some(x), Some(h))
            }
            None => (None, None, None),
        };
        registry.register_collector(Box::new(HealthCollector {
            extra: sources.extra,
            pipeline: pipeline.clone(),
            detector: sources.detector,
            store: store.clone(),
            export,
        }));
        Metrics {
            stage: MetricsStage::new(traffic, host, spans),
            endpoint: MetricsEndpoint {
                registry: Arc::new(registry),
                pipeline,
                store,
                exporter,
            },
        }
    }
}

impl MetricsEndpoint {
    /// The `/metrics` route, reading the running pipeline's health.
    /// Also starts the OTLP exporter, when configured (call it inside the runtime).
    pub fn router(mut self, pipeline: &Pipeline, auth: Arc<Authenticator>) -> Router {
        let _ = self.pipeline.set(pipeline.health().clone());
        self.start_export();
        http::router(auth, self.registry, self.store)
    }

    /// Starts the OTLP exporter on the current runtime, once; it stops when the stage is gone.
    pub fn start_export(&mut self) {
        if let Some(x) = self.exporter.take() {
            tokio::spawn(x.run(self.registry.clone()));
        }
    }

    /// The metrics as OpenMetrics text (what a scrape returns, minus the store refresh).
    pub fn encode(&self) -> String {
        let mut s = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut s, &self.registry);
        s
    }
}

#[cfg(test)]
mod tests;
