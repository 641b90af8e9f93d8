//! The pipeline: every event, from ingest now and from capture and detection later, enters here.
//!
//! `submit` redacts and serialises the batch on the caller's task, then hands it to the writer
//! thread through a bounded channel; the writer groups whatever is waiting into one
//! transaction, commits, answers every submitter, and only then publishes the committed events
//! to live subscribers.
//!
//! Architecture Invariant: nothing is acknowledged before its transaction commits, and nothing
//! is published that was not committed.
//! Architecture Invariant: every queue is bounded; a full pipeline answers `Overloaded` at once
//! instead of queueing more.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::sink::SinkFuture;
use mcpwatch_core::{Event, EventSink, Redactor, SinkError};
use mcpwatch_store::{EventWriter, PreparedEvent, RetentionPolicy, StoreError};
use tokio::sync::{broadcast, oneshot};

/// Most events the writer puts in one transaction.
const MAX_GROUP_EVENTS: usize = 20_000;
/// Events deleted per retention step, between which pending writes are served.
const RETENTION_STEP: usize = 5_000;
/// Committed batches kept for slow live subscribers before they miss some.
const PUBLISH_CAPACITY: usize = 1024;

/// What the pipeline needs to know.
#[derive(Debug, Clone)]
pub struct PipelineConfig {
    /// Most events accepted but not yet committed.
    pub max_pending_events: usize,
    /// What to keep.
    pub retention: RetentionPolicy,
    /// How often retention runs.
    pub retention_interval: Duration,
}

/// A committed batch, as live subscribers see it.
pub type Committed = Arc<Vec<PreparedEvent>>;

struct WriteRequest {
    events: Vec<PreparedEvent>,
    reply: oneshot::Sender<Result<(), SinkError>>,
}

/// Counters of the pipeline's health.
#[derive(Debug, Default)]
pub struct PipelineHealth {
    /// Events accepted but not yet committed.
    pub pending_events: AtomicUsize,
    /// Events committed since start.
    pub committed_events: AtomicU64,
    /// Batches refused because the pipeline was full.
    pub overloaded_batches: AtomicU64,
    /// Commits that failed.
    pub store_errors: AtomicU64,
    /// Events deleted by retention.
    pub retention_deleted: AtomicU64,
    /// Whether the writer thread is running.
    pub writer_alive: AtomicBool,
}

/// The in-process [`EventSink`] of `serve`.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    tx: SyncSender<WriteRequest>,
    redactor: Redactor,
    max_pending: usize,
    health: Arc<PipelineHealth>,
    published: broadcast::Sender<Committed>,
}

/// Owns the writer thread; joining it waits for everything submitted to be committed.
pub struct WriterHandle {
    thread: Option<JoinHandle<()>>,
}

impl WriterHandle {
    /// Waits for the writer to finish (after every [`Pipeline`] clone is dropped).
    pub fn join(mut self) {
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Pipeline {
    /// Starts the writer thread on `writer`.
    pub fn start(
        writer: Box<dyn EventWriter>,
        redactor: Redactor,
        clock: SharedClock,
        config: PipelineConfig,
    ) -> std::io::Result<(Pipeline, WriterHandle)> {
        // A request holds a batch; the event bound is enforced by `pending_events`.
        let (tx, rx) = sync_channel(4096);
        let (published, _) = broadcast::channel(PUBLISH_CAPACITY);
        let health = Arc::new(PipelineHealth::default());
        health.writer_alive.store(true, Ordering::SeqCst);
        let writer_loop = WriterLoop {
            writer,
            rx,
            clock,
            config: config.clone(),
            health: health.clone(),
            published: published.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("mcpwatch-writer".into())
            .spawn(move || writer_loop.run())?;
        let inner = Inner {
            tx,
            redactor,
            max_pending: config.max_pending_events,
            health,
            published,
        };
        Ok((
            Pipeline {
                inner: Arc::new(inner),
            },
            WriterHandle {
                thread: Some(thread),
            },
        ))
    }

    /// Live committed batches. Lossy for slow readers (they learn how many they missed).
    pub fn subscribe(&self) -> broadcast::Receiver<Committed> {
        self.inner.published.subscribe()
    }

    /// Health counters.
    pub fn health(&self) -> &Arc<PipelineHealth> {
        &self.inner.health
    }

    /// Redacts and serialises a batch (on the calling task) and queues it for the writer.
    /// Resolves once it is committed.
    pub fn submit_events(
        &self,
        events: Vec<Event>,
    ) -> impl std::future::Future<Output = Result<Vec<String>, SinkError>> + Send + 'static {
        let enqueued = self.enqueue(events);
        async move {
            let (ids, rx) = enqueued?;
            rx.await.map_err(|_| SinkError::Closed)??;
            Ok(ids)
        }
    }

    #[allow(
        clippy::type_complexity,
        reason = "a private helper returning the ids and the commit signal"
    )]
    fn enqueue(
        &self,
        events: Vec<Event>,
    ) -> Result<(Vec<String>, oneshot::Receiver<Result<(), SinkError>>), SinkError> {
        let inner = &self.inner;
        let n = events.len();
        let pending = inner.health.pending_events.fetch_add(n, Ordering::SeqCst);
        if pending + n > inner.max_pending && pending > 0 {
            inner.health.pending_events.fetch_sub(n, Ordering::SeqCst);
            inner
                .health
                .overloaded_batches
                .fetch_add(1, Ordering::Relaxed);
            return Err(SinkError::Overloaded {
                retry_after_secs: 1,
            });
        }
        let mut ids = Vec::with_capacity(n);
        let prepared: Vec<PreparedEvent> = events
            .into_iter()
            .map(|mut e| {
                inner.redactor.redact_event(&mut e);
                ids.push(e.id.clone());
                PreparedEvent::new(e)
            })
            .collect();
        let (reply, rx) = oneshot::channel();
        match inner.tx.try_send(WriteRequest {
            events: prepared,
            reply,
        }) {
            Ok(()) => Ok((ids, rx)),
            Err(e) => {
                inner.health.pending_events.fetch_sub(n, Ordering::SeqCst);
                match e {
                    TrySendError::Full(_) => {
                        inner
                            .health
                            .overloaded_batches
                            .fetch_add(1, Ordering::Relaxed);
                        Err(SinkError::Overloaded {
                            retry_after_secs: 1,
                        })
                    }
                    TrySendError::Disconnected(_) => Err(SinkError::Closed),
                }
            }
        }
    }
}

impl EventSink for Pipeline {
    fn submit(&self, events: Vec<Event>) -> SinkFuture {
        Box::pin(self.submit_events(events))
    }
}

struct WriterLoop {
    writer: Box<dyn EventWriter>,
    rx: Receiver<WriteRequest>,
    clock: SharedClock,
    config: PipelineConfig,
    health: Arc<PipelineHealth>,
    published: broadcast::Sender<Committed>,
}

impl WriterLoop {
    fn run(mut self) {
        let mut next_retention = Instant::now();
        let mut retention_pending = true;
        loop {
            let wait = if retention_pending {
                Duration::ZERO
            } else {
                next_retention.saturating_duration_since(Instant::now())
            };
            match self.rx.recv_timeout(wait) {
                Ok(first) => self.commit_group(first),
                Err(RecvTimeoutError::Timeout) => {
                    self.settle();
                    retention_pending = self.retention_step();
                    if !retention_pending {
                        next_retention = Instant::now() + self.config.retention_interval;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if !retention_pending && Instant::now() >= next_retention {
                retention_pending = true;
            }
        }
        self.health.writer_alive.store(false, Ordering::SeqCst);
    }

    /// Commits `first` and whatever else is already waiting, in one transaction.
    fn commit_group(&mut self, first: WriteRequest) {
        let mut group = vec![first];
        let mut total = group[0].events.len();
        let mut idle = false;
        while total < MAX_GROUP_EVENTS {
            match self.rx.try_recv() {
                Ok(r) => {
                    total += r.events.len();
                    group.push(r);
                }
                Err(_) => {
                    idle = true;
                    break;
                }
            }
        }
        let refs: Vec<&PreparedEvent> = group.iter().flat_map(|r| r.events.iter()).collect();
        // With nothing else waiting, statistics are brought up to date in the same commit.
        let result = self.writer.append(&refs, idle).map(|_| ());
        drop(refs);
        self.health
            .pending_events
            .fetch_sub(total, Ordering::SeqCst);
        match result {
            Ok(()) => {
                self.health
                    .committed_events
                    .fetch_add(total as u64, Ordering::Relaxed);
                let mut committed = Vec::with_capacity(total);
                for r in group {
                    let _ = r.reply.send(Ok(()));
                    committed.extend(r.events);
                }
                // No subscribers is fine: nothing is lost that was committed.
                let _ = self.published.send(Arc::new(committed));
            }
            Err(e) => {
                self.health.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, events = total, "commit failed; the batch was refused and nothing of it was kept");
                for r in group {
                    let _ = r.reply.send(Err(SinkError::Store(e.to_string())));
                }
            }
        }
    }

    /// Brings statistics up to date while nothing is waiting.
    fn settle(&mut self) {
        if let Err(e) = self.writer.settle() {
            tracing::warn!(error = %e, "could not update statistics; will retry");
        }
    }

    /// One bounded step of retention; returns whether more is due.
    fn retention_step(&mut self) -> bool {
        match self
            .writer
            .retain(&self.config.retention, self.clock.now(), RETENTION_STEP)
        {
            Ok(step) => {
                self.health
                    .retention_deleted
                    .fetch_add(step.deleted, Ordering::Relaxed);
                step.more
            }
            Err(StoreError::Database(e)) => {
                tracing::warn!(error = %e, "retention step failed; will retry at the next interval");
                false
            }
            Err(e) => {
                tracing::warn!(error = %e, "retention step failed");
                false
            }
        }
    }
}

#[cfg(test)]
mod tests;
