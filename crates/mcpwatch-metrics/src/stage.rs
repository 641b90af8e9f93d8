//! The metrics stage: a post-commit [`Stage`] that counts every committed event into the
//! traffic metrics and, once a second, rolls the rate windows forward.
//!
//! Architecture Invariant: `on_commit` only touches in-memory counters (no I/O, no locks
//! shared with scrapes beyond the metrics' own atomics), so metrics never slow the pipeline.

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::{Event, Timestamp};
use mcpwatch_server::Stage;
use mcpwatch_store::PreparedEvent;

use crate::host::HostSampler;
use crate::otlp::SpanQueue;
use crate::traffic::Traffic;

/// Counts committed events into the metrics.
pub struct MetricsStage {
    traffic: Traffic,
    host: Option<HostSampler>,
    spans: Option<SpanQueue>,
}

impl MetricsStage {
    pub(crate) fn new(
        traffic: Traffic,
        host: Option<HostSampler>,
        spans: Option<SpanQueue>,
    ) -> Self {
        Self {
            traffic,
            host,
            spans,
        }
    }

    /// Counts one event (what `on_commit` does for each; public for benchmarks and tests).
    pub fn observe(&mut self, e: &Event) {
        self.traffic.observe(e);
        if let Some(q) = &self.spans {
            q.offer(e);
        }
    }

    /// Rolls the rate windows to `now` (what `on_tick` does).
    pub fn roll(&mut self, now: Timestamp) {
        self.traffic.roll(now.as_micros());
    }
}

impl Stage for MetricsStage {
    fn name(&self) -> &'static str {
        "metrics"
    }

    fn on_commit(&mut self, batch: &[PreparedEvent], _emit: &mut Vec<Event>) {
        for p in batch {
            self.observe(&p.event);
        }
    }

    fn on_tick(&mut self, now: Timestamp, emit: &mut Vec<Event>) {
        self.traffic.roll(now.as_micros());
        if let Some(host) = &mut self.host {
            host.tick(now, emit);
        }
    }
}

/// Keeps the clock type in the public signature of [`crate::Metrics::build`] documented.
pub type Clock = SharedClock;
