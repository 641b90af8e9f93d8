//! OTLP export (http/protobuf): spans per MCP request and the metrics, to `[otlp] endpoint`.
//!
//! The stage builds a span for each finished request and `try_send`s it into a bounded queue
//! (`otlp.max_queue`); when the queue is full the span is dropped and counted. A background task
//! sends spans in batches of `otlp.max_batch` (or every `otlp.interval`) and the metrics every
//! `otlp.interval`. A failed request is counted and its batch dropped: export is best effort.
//!
//! Architecture Invariant: export never blocks the pipeline; the stage only does `try_send`.

pub mod convert;
pub mod span;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::Event;
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::InstrumentationScope;
use opentelemetry_proto::tonic::metrics::v1::{ResourceMetrics, ScopeMetrics};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{ResourceSpans, ScopeSpans, Span};
use prometheus_client::encoding::DescriptorEncoder;
use prometheus_client::registry::Registry;
use prost::Message;
use tokio::sync::mpsc;

use crate::config::OtlpSettings;
use crate::health::{counter, gauge};

/// The exporter's counters, on `/metrics`.
#[derive(Debug, Default)]
pub struct ExportHealth {
    queued: AtomicU64,
    spans_dropped: AtomicU64,
    spans_exported: AtomicU64,
    span_failures: AtomicU64,
    metric_exports: AtomicU64,
    metric_failures: AtomicU64,
}

impl ExportHealth {
    /// Writes the exporter's metrics.
    pub fn encode(&self, enc: &mut DescriptorEncoder) -> std::fmt::Result {
        let ld = |a: &AtomicU64| a.load(Ordering::Relaxed);
        gauge(
            enc,
            "mcpwatch_otlp_queued_spans",
            "Spans waiting in the OTLP queue (bounded by otlp.max_queue)",
            None,
            ld(&self.queued) as f64,
        )?;
        counter(
            enc,
            "mcpwatch_otlp_dropped_spans",
            "Spans dropped: the OTLP queue was full or their export request failed",
            ld(&self.spans_dropped),
        )?;
        counter(
            enc,
            "mcpwatch_otlp_exported_spans",
            "Spans the OTLP endpoint accepted",
            ld(&self.spans_exported),
        )?;
        counter(
            enc,
            "mcpwatch_otlp_span_export_failures",
            "OTLP span export requests that failed (network error or non-2xx)",
            ld(&self.span_failures),
        )?;
        counter(
            enc,
            "mcpwatch_otlp_metric_exports",
            "OTLP metric exports the endpoint accepted",
            ld(&self.metric_exports),
        )?;
        counter(
            enc,
            "mcpwatch_otlp_metric_export_failures",
            "OTLP metric export requests that failed",
            ld(&self.metric_failures),
        )
    }
}

/// The stage's side: turns events into spans and queues them without waiting.
#[derive(Debug)]
pub struct SpanQueue {
    tx: mpsc::Sender<Span>,
    health: Arc<ExportHealth>,
}

impl SpanQueue {
    /// Queues the span of `e`, if it is a finished MCP request; drops and counts it when full.
    pub fn offer(&self, e: &Event) {
        let Some(span) = span::span_of(e) else {
            return;
        };
        match self.tx.try_send(span) {
            Ok(()) => {
                self.health.queued.fetch_add(1, Ordering::Relaxed);
            }
            Err(_) => {
                self.health.spans_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The background side, started once a runtime runs.
pub struct Exporter {
    settings: OtlpSettings,
    rx: mpsc::Receiver<Span>,
    health: Arc<ExportHealth>,
    clock: SharedClock,
}

/// A queue and its exporter for `settings`.
pub fn channel(
    settings: OtlpSettings,
    clock: SharedClock,
) -> (SpanQueue, Exporter, Arc<ExportHealth>) {
    let (tx, rx) = mpsc::channel(settings.max_queue);
    let health = Arc::new(ExportHealth::default());
    (
        SpanQueue {
            tx,
            health: health.clone(),
        },
        Exporter {
            settings,
            rx,
            health: health.clone(),
            clock,
        },
        health,
    )
}

impl Exporter {
    /// Runs until every [`SpanQueue`] is gone: sends spans in batches and the registry's
    /// metrics every interval.
    pub async fn run(mut self, registry: Arc<Registry>) {
        let client = match reqwest::Client::builder()
            .timeout(self.settings.timeout)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "OTLP export disabled: cannot build the HTTP client");
                return;
            }
        };
        let start_ns = self.now_ns();
        let mut ticker = tokio::time::interval(self.settings.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut batch: Vec<Span> = Vec::with_capacity(self.settings.max_batch);
        loop {
            tokio::select! {
                n = self.rx.recv_many(&mut batch, self.settings.max_batch) => {
                    if n == 0 {
                        self.send_spans(&client, &mut batch).await;
                        return;
                    }
                    self.health.queued.fetch_sub(n as u64, Ordering::Relaxed);
                    if batch.len() >= self.settings.max_batch {
                        self.send_spans(&client, &mut batch).await;
                    }
                }
                _ = ticker.tick() => {
                    self.send_spans(&client, &mut batch).await;
                    self.send_metrics(&client, &registry, start_ns).await;
                }
            }
        }
    }

    fn now_ns(&self) -> u64 {
        u64::try_from(self.clock.now().as_micros()).unwrap_or(0) * 1_000
    }

    fn resource(&self) -> Resource {
        Resource {
            attributes: vec![span::kv("service.name", &self.settings.service_name)],
            ..Default::default()
        }
    }

    fn scope() -> InstrumentationScope {
        InstrumentationScope {
            name: "mcpwatch".into(),
            version: env!("CARGO_PKG_VERSION").into(),
            ..Default::default()
        }
    }

    async fn send_spans(&self, client: &reqwest::Client, batch: &mut Vec<Span>) {
        let Some(url) = &self.settings.traces_url else {
            batch.clear();
            return;
        };
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(Self::scope()),
                    spans: std::mem::take(batch),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        if self.post(client, url, request.encode_to_vec()).await {
            self.health.spans_exported.fetch_add(n, Ordering::Relaxed);
        } else {
            self.health.span_failures.fetch_add(1, Ordering::Relaxed);
            self.health.spans_dropped.fetch_add(n, Ordering::Relaxed);
        }
    }

    async fn send_metrics(&self, client: &reqwest::Client, registry: &Registry, start_ns: u64) {
        let Some(url) = &self.settings.metrics_url else {
            return;
        };
        let mut text = String::new();
        if prometheus_client::encoding::text::encode(&mut text, registry).is_err() {
            return;
        }
        let request = ExportMetricsServiceRequest {
            resource_metrics: vec![ResourceMetrics {
                resource: Some(self.resource()),
                scope_metrics: vec![ScopeMetrics {
                    scope: Some(Self::scope()),
                    metrics: convert::metrics_of(&text, start_ns, self.now_ns()),
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let counter = if self.post(client, url, request.encode_to_vec()).await {
            &self.health.metric_exports
        } else {
            &self.health.metric_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    async fn post(&self, client: &reqwest::Client, url: &str, body: Vec<u8>) -> bool {
        let mut req = client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body);
        for (k, v) in &self.settings.headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => true,
            Ok(r) => {
                tracing::warn!(status = %r.status(), url, "OTLP export refused; check otlp.endpoint and otlp.headers");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, url, "OTLP export failed; is the collector at otlp.endpoint running?");
                false
            }
        }
    }
}
