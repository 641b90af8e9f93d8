//! mcpwatch's own health on `GET /metrics`: the pipeline's queue and counters, the detector's
//! state, the store's size and the OTLP exporter's queue, read at scrape time.
//!
//! These values live elsewhere (atomics the pipeline, the detection stage and the exporter
//! update), so one [`Collector`] reads them when Prometheus scrapes; nothing is copied on the
//! event path. The store's size needs SQLite, so it is cached ([`StoreStatsCache`]) and
//! refreshed in the background at most every `store_stats_max_age`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use mcpwatch_server::pipeline::PipelineHealth;
use mcpwatch_store::EventReader;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::Unit;

/// The detection engine's state, published by the detection stage on every tick.
#[derive(Debug, Default)]
pub struct DetectorHealth {
    tracked_keys: AtomicU64,
    state_bytes: AtomicU64,
    expired_keys: AtomicU64,
    evicted_keys: AtomicU64,
    reported: AtomicBool,
}

impl DetectorHealth {
    /// Records the engine's health (`mcpwatch_detect::Health`'s fields).
    pub fn set(&self, tracked_keys: u64, state_bytes: u64, expired_keys: u64, evicted_keys: u64) {
        self.tracked_keys.store(tracked_keys, Ordering::Relaxed);
        self.state_bytes.store(state_bytes, Ordering::Relaxed);
        self.expired_keys.store(expired_keys, Ordering::Relaxed);
        self.evicted_keys.store(evicted_keys, Ordering::Relaxed);
        self.reported.store(true, Ordering::Relaxed);
    }
}

/// The store's size, cached so a scrape never waits on SQLite more than once.
pub struct StoreStatsCache {
    reader: Arc<dyn EventReader>,
    max_age: Duration,
    last: Mutex<Option<(Instant, u64, u64)>>,
    refreshing: AtomicBool,
    errors: AtomicU64,
}

impl std::fmt::Debug for StoreStatsCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreStatsCache")
            .field("max_age", &self.max_age)
            .field("last", &self.snapshot())
            .finish_non_exhaustive()
    }
}

impl StoreStatsCache {
    /// A cache over `reader`, stale after `max_age`.
    pub fn new(reader: Arc<dyn EventReader>, max_age: Duration) -> Arc<Self> {
        Arc::new(Self {
            reader,
            max_age,
            last: Mutex::new(None),
            refreshing: AtomicBool::new(false),
            errors: AtomicU64::new(0),
        })
    }

    /// Before a scrape: the first time, waits for the numbers; later, when they are stale,
    /// refreshes them in the background and the scrape shows the previous ones.
    pub async fn refresh_if_stale(self: &Arc<Self>) {
        let age = self.snapshot().map(|(at, ..)| at.elapsed());
        if age.is_some_and(|a| a < self.max_age) {
            return;
        }
        if self.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        let me = self.clone();
        let task = tokio::task::spawn_blocking(move || {
            match me.reader.stats() {
                Ok(s) => {
                    *me.last.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), s.events, s.used_bytes));
                }
                Err(e) => {
                    me.errors.fetch_add(1, Ordering::Relaxed);
                    tracing::warn!(error = %e, "metrics: cannot read the store's size");
                }
            }
            me.refreshing.store(false, Ordering::Release);
        });
        if age.is_none() {
            let _ = task.await;
        }
    }

    fn snapshot(&self) -> Option<(Instant, u64, u64)> {
        *self.last.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// One value another component reports about its own health.
#[derive(Debug, Clone, PartialEq)]
pub struct HealthValue {
    /// Metric name, `mcpwatch_` prefixed, without `_total` (added for counters).
    pub name: &'static str,
    /// What it means, for the HELP line.
    pub help: &'static str,
    /// The value now.
    pub value: f64,
    /// A counter (only goes up) rather than a gauge.
    pub counter: bool,
}

/// A component that reports its own health on `/metrics` (alerting's delivery counters, say)
/// without this crate depending on it.
pub trait HealthSource: Send + Sync + std::fmt::Debug {
    /// Appends this component's values.
    fn report(&self, out: &mut Vec<HealthValue>);
}

/// Reads every health source at scrape time.
#[derive(Debug)]
pub struct HealthCollector {
    /// Other components' own health.
    pub extra: Vec<Arc<dyn HealthSource>>,
    /// Set once the pipeline runs (the route factory gets it).
    pub pipeline: Arc<OnceLock<Arc<PipelineHealth>>>,
    /// Published by the detection stage.
    pub detector: Arc<DetectorHealth>,
    /// The store's size.
    pub store: Option<Arc<StoreStatsCache>>,
    /// The OTLP exporter, when configured.
    pub export: Option<Arc<crate::otlp::ExportHealth>>,
}

pub(crate) fn counter(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    v: u64,
) -> std::fmt::Result {
    let m = ConstCounter::new(v);
    m.encode(enc.encode_descriptor(name, help, None, m.metric_type())?)
}

pub(crate) fn gauge(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    unit: Option<&Unit>,
    v: f64,
) -> std::fmt::Result {
    let m = ConstGauge::new(v);
    m.encode(enc.encode_descriptor(name, help, unit, m.metric_type())?)
}

impl Collector for HealthCollector {
    fn encode(&self, mut enc: DescriptorEncoder) -> std::fmt::Result {
        let mut values = Vec::new();
        for source in &self.extra {
            source.report(&mut values);
        }
        for v in values {
            if v.counter {
                counter(&mut enc, v.name, v.help, v.value as u64)?;
            } else {
                gauge(&mut enc, v.name, v.help, None, v.value)?;
            }
        }
        if let Some(p) = self.pipeline.get() {
            let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
            gauge(&mut enc, "mcpwatch_pipeline_pending_events", "Events accepted but not yet committed and seen by every stage (the queue depth that bounds ingest; at server.max_pending_events ingest answers 503)", None, p.pending_events.load(Ordering::Relaxed) as f64)?;
            counter(
                &mut enc,
                "mcpwatch_pipeline_committed_events",
                "Events committed to the store since start",
                ld(&p.committed_events),
            )?;
            counter(
                &mut enc,
                "mcpwatch_pipeline_overloaded_batches",
                "Ingest batches refused with 503 because the pipeline was full",
                ld(&p.overloaded_batches),
            )?;
            counter(
                &mut enc,
                "mcpwatch_store_errors",
                "Store transactions that failed (their events were refused)",
                ld(&p.store_errors),
            )?;
            counter(
                &mut enc,
                "mcpwatch_retention_deleted_events",
                "Events deleted by retention (age or size)",
                ld(&p.retention_deleted),
            )?;
            counter(
                &mut enc,
                "mcpwatch_stage_emitted_events",
                "Events emitted by post-commit stages (alerts, anomalies, host samples)",
                ld(&p.stage_events),
            )?;
            gauge(
                &mut enc,
                "mcpwatch_pipeline_writer_up",
                "1 while the store writer thread runs, 0 if it stopped",
                None,
                f64::from(u8::from(p.writer_alive.load(Ordering::Relaxed))),
            )?;
        }
        if self.detector.reported.load(Ordering::Relaxed) {
            let d = &self.detector;
            let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
            gauge(&mut enc, "mcpwatch_detector_tracked_keys", "Keys detection tracks now, over rules, anomaly detectors, threat signatures and thresholds", None, ld(&d.tracked_keys) as f64)?;
            gauge(
                &mut enc,
                "mcpwatch_detector_state",
                "Approximate memory of detection state",
                Some(&Unit::Bytes),
                ld(&d.state_bytes) as f64,
            )?;
            counter(
                &mut enc,
                "mcpwatch_detector_expired_keys",
                "Detection keys forgotten because they were idle",
                ld(&d.expired_keys),
            )?;
            counter(&mut enc, "mcpwatch_detector_evicted_keys", "Detection keys evicted because a cap was reached (state was lost; raise the cap if this grows)", ld(&d.evicted_keys))?;
        }
        if let Some(s) = &self.store {
            if let Some((at, events, bytes)) = s.snapshot() {
                gauge(
                    &mut enc,
                    "mcpwatch_store_events",
                    "Events in the store (cached, see mcpwatch_store_stats_age_seconds)",
                    None,
                    events as f64,
                )?;
                gauge(
                    &mut enc,
                    "mcpwatch_store_size",
                    "Bytes the store's database uses, excluding free pages (cached)",
                    Some(&Unit::Bytes),
                    bytes as f64,
                )?;
                gauge(
                    &mut enc,
                    "mcpwatch_store_stats_age",
                    "Age of the cached store numbers",
                    Some(&Unit::Seconds),
                    at.elapsed().as_secs_f64(),
                )?;
            }
            counter(
                &mut enc,
                "mcpwatch_store_stats_errors",
                "Failed reads of the store's size",
                s.errors.load(Ordering::Relaxed),
            )?;
        }
        if let Some(x) = &self.export {
            x.encode(&mut enc)?;
        }
        Ok(())
    }
}
