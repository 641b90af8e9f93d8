//! OTLP export (http/protobuf): spans per MCP request and the metrics, to `[otlp] endpoint`.
//!
//! The stage builds a span for each finished request and `try_send`s it into a bounded queue
//! (`otlp.max_queue`); when the queue is full the span is dropped and counted. A background task
//! sends spans in batches of `otlp.max_batch` (or every `otlp.interval`) and the metrics every
//! `otlp.interval`. A span batch whose request fails for a reason that may pass (no connection,
//! a timeout, 429, 502, 503, 504) is kept and retried with exponential backoff, up to
//! `MAX_ATTEMPTS` times; spans waiting for a retry count against `otlp.max_queue` too (the
//! oldest go first when it is exceeded). What is finally given up on is counted as dropped.
//!
//! Architecture Invariant: export never blocks the pipeline; the stage only does `try_send`.

pub mod convert;
pub mod span;

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

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
use tokio::time::Instant;

use crate::config::OtlpSettings;
use crate::health::{counter, gauge};

/// The exporter's counters, on `/metrics`.
#[derive(Debug, Default)]
pub struct ExportHealth {
    queued: AtomicU64,
    retrying: AtomicU64,
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
        gauge(
            enc,
            "mcpwatch_otlp_retrying_spans",
            "Spans of failed export requests waiting to be sent again (part of otlp.max_queue)",
            None,
            ld(&self.retrying) as f64,
        )?;
        counter(
            enc,
            "mcpwatch_otlp_dropped_spans",
            "Spans dropped: the OTLP queue was full, or their export failed for good (refused, or every retry failed)",
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
    retry: Retry,
}

/// Spans of failed requests, oldest first, and when to try them again.
#[derive(Debug)]
struct Retry {
    spans: Vec<Span>,
    /// Failed attempts of the oldest batch.
    attempts: u32,
    backoff: Duration,
    at: Option<Instant>,
}

/// A batch is sent at most this many times.
const MAX_ATTEMPTS: u32 = 5;
const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// What became of one export request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Sent {
    Ok,
    /// May work later: no connection, a timeout, 429, 502, 503, 504.
    Retry,
    /// Refused for good (any other answer): sending it again would not help.
    Refused,
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
            retry: Retry {
                spans: Vec::new(),
                attempts: 0,
                backoff: INITIAL_BACKOFF,
                at: None,
            },
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
                        // Last chance for what waits on a retry; what still fails is lost.
                        self.retry.at = None;
                        self.retry.attempts = MAX_ATTEMPTS;
                        self.send_spans(&client, &mut batch).await;
                        let left = std::mem::take(&mut self.retry.spans).len() as u64;
                        self.health.spans_dropped.fetch_add(left, Ordering::Relaxed);
                        self.health.retrying.store(0, Ordering::Relaxed);
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
                () = sleep_until_opt(self.retry.at) => {
                    self.send_spans(&client, &mut batch).await;
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

    /// Sends what waits for a retry, oldest first, then `batch`, in requests of at most
    /// `max_batch` spans; stops at the first failure that may pass and schedules the retry.
    async fn send_spans(&mut self, client: &reqwest::Client, batch: &mut Vec<Span>) {
        let Some(url) = self.settings.traces_url.clone() else {
            batch.clear();
            return;
        };
        self.retry.spans.append(batch);
        let over = self
            .retry
            .spans
            .len()
            .saturating_sub(self.settings.max_queue.max(1));
        if over > 0 {
            self.retry.spans.drain(..over);
            self.health
                .spans_dropped
                .fetch_add(over as u64, Ordering::Relaxed);
        }
        if self.retry.at.is_none_or(|at| Instant::now() >= at) {
            self.retry.at = None;
            while !self.retry.spans.is_empty() && self.retry.at.is_none() {
                self.send_oldest(client, &url).await;
            }
        }
        self.health
            .retrying
            .store(self.retry.spans.len() as u64, Ordering::Relaxed);
    }

    /// Sends the oldest `max_batch` waiting spans once.
    async fn send_oldest(&mut self, client: &reqwest::Client, url: &str) {
        let n = self.retry.spans.len().min(self.settings.max_batch.max(1));
        let spans: Vec<Span> = self.retry.spans.drain(..n).collect();
        let mut request = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(Self::scope()),
                    spans,
                    ..Default::default()
                }],
                ..Default::default()
            }],
        };
        let sent = self.post(client, url, request.encode_to_vec()).await;
        let r = &mut self.retry;
        match sent {
            Sent::Ok => {
                self.health
                    .spans_exported
                    .fetch_add(n as u64, Ordering::Relaxed);
                r.attempts = 0;
                r.backoff = INITIAL_BACKOFF;
                return;
            }
            Sent::Retry if r.attempts + 1 < MAX_ATTEMPTS => {
                r.attempts += 1;
                // Back at the front, in order: the request owned them.
                let spans = std::mem::take(&mut request.resource_spans[0].scope_spans[0].spans);
                r.spans.splice(0..0, spans);
                r.at = Some(Instant::now() + r.backoff);
                r.backoff = (r.backoff * 2).min(MAX_BACKOFF);
            }
            Sent::Retry | Sent::Refused => {
                r.attempts = 0;
                self.health
                    .spans_dropped
                    .fetch_add(n as u64, Ordering::Relaxed);
            }
        }
        self.health.span_failures.fetch_add(1, Ordering::Relaxed);
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
        let counter = if self.post(client, url, request.encode_to_vec()).await == Sent::Ok {
            &self.health.metric_exports
        } else {
            &self.health.metric_failures
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    async fn post(&self, client: &reqwest::Client, url: &str, body: Vec<u8>) -> Sent {
        let mut req = client
            .post(url)
            .header("content-type", "application/x-protobuf")
            .body(body);
        for (k, v) in &self.settings.headers {
            req = req.header(k, v);
        }
        match req.send().await {
            Ok(r) if r.status().is_success() => Sent::Ok,
            Ok(r) if matches!(r.status().as_u16(), 429 | 502 | 503 | 504) => {
                tracing::warn!(status = %r.status(), url, "OTLP receiver busy; the batch is retried");
                Sent::Retry
            }
            Ok(r) => {
                tracing::warn!(status = %r.status(), url, "OTLP export refused; check otlp.endpoint and otlp.headers");
                Sent::Refused
            }
            Err(e) => {
                tracing::warn!(error = %e, url, "OTLP export failed; is the collector at otlp.endpoint running?");
                Sent::Retry
            }
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
