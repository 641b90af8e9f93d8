//! The pipeline: every event, from ingest now and from capture and detection later, enters here.
//!
//! `submit` redacts and serialises the batch on the caller's task, then hands it to the writer
//! thread through a bounded channel; the writer groups whatever is waiting into one
//! transaction, commits, answers every submitter, and only then publishes the committed events
//! to live subscribers.
//!
//! Architecture Invariant: nothing is acknowledged before its transaction commits, and nothing
//! is published that was not committed. An event whose id is already stored (a client's
//! retry) is acknowledged but not published or staged again: everything downstream sees each
//! event once.
//! After commit, every batch goes through the post-commit [`Stage`]s (detection, alerting,
//! metrics) on their own thread, in commit order; events they emit (alerts, anomalies) enter
//! the pipeline like any other.
//!
//! Architecture Invariant: one counter bounds everything in flight: an event counts against
//! `max_pending_events` from `submit` until every stage has seen it, so a slow stage turns into
//! 503s at ingest, never into an unbounded queue or a lost event.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::sink::SinkFuture;
use mcpwatch_core::{Event, EventSink, Redactor, SinkError, Timestamp};
use mcpwatch_store::{EventWriter, PreparedEvent, RetentionPolicy, StoreError};
use tokio::sync::{broadcast, oneshot};

/// Most events the writer puts in one transaction.
const MAX_GROUP_EVENTS: usize = 20_000;
/// Events deleted per retention step, between which pending writes are served.
const RETENTION_STEP: usize = 5_000;
/// Committed batches kept for slow live subscribers before they miss some.
const PUBLISH_CAPACITY: usize = 16;
/// Least time between two settlements of the statistics while batches keep arriving with gaps
/// between them. Settling costs the writer about half as much again per event as appending
/// (benches/ingest.rs, "settling every batch"), and a paced client leaves the queue empty after
/// nearly every batch; settling at most this often, and once more this long after the last
/// batch, keeps statistics at most this stale when idle.
const SETTLE_INTERVAL: Duration = Duration::from_millis(250);
/// How often stages get a clock tick when no batch arrives.
const STAGE_TICK: Duration = Duration::from_secs(1);

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
    events: Committed,
    /// `None` for events emitted by stages: nobody waits for them.
    reply: Option<oneshot::Sender<Result<(), SinkError>>>,
}

/// A post-commit stage: sees every committed batch, in commit order, on the stage thread.
pub trait Stage: Send + 'static {
    /// For logs.
    fn name(&self) -> &'static str;
    /// Called with each committed batch; events pushed to `emit` are submitted to the pipeline.
    fn on_commit(&mut self, batch: &[PreparedEvent], emit: &mut Vec<Event>);
    /// Called about once a second with the wall time, so time-based state can move on.
    fn on_tick(&mut self, _now: Timestamp, _emit: &mut Vec<Event>) {}
}

/// Counters of the pipeline's health.
#[derive(Debug, Default)]
pub struct PipelineHealth {
    /// Events accepted but not yet committed.
    pub pending_events: AtomicUsize,
    /// Events committed since start (new ones; resent events are not counted again).
    pub committed_events: AtomicU64,
    /// Events acknowledged but not processed again because their id was already stored.
    pub duplicate_events: AtomicU64,
    /// Batches refused because the pipeline was full.
    pub overloaded_batches: AtomicU64,
    /// Commits that failed.
    pub store_errors: AtomicU64,
    /// Events deleted by retention.
    pub retention_deleted: AtomicU64,
    /// Whether the writer thread is running.
    pub writer_alive: AtomicBool,
    /// Events emitted by stages (alerts, anomalies, …).
    pub stage_events: AtomicU64,
    /// Whether committed events still wait to be counted in the statistics (they are settled
    /// at most `SETTLE_INTERVAL` after the commit). Set before the commit is acknowledged.
    pub statistics_behind: AtomicBool,
}

/// The in-process [`EventSink`] of `serve`.
#[derive(Clone)]
pub struct Pipeline {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<WriteRequest>,
    redactor: Redactor,
    max_pending: usize,
    health: Arc<PipelineHealth>,
    published: broadcast::Sender<Committed>,
}

/// Owns the writer and stage threads; joining waits for everything submitted to be committed
/// and seen by the stages.
pub struct WriterHandle {
    threads: Vec<JoinHandle<()>>,
}

impl WriterHandle {
    /// Waits for the threads to finish (after every [`Pipeline`] clone is dropped).
    pub fn join(self) {
        for t in self.threads {
            let _ = t.join();
        }
    }
}

impl Pipeline {
    /// Starts the writer thread on `writer`, and a stage thread when there are `stages`.
    pub fn start(
        writer: Box<dyn EventWriter>,
        redactor: Redactor,
        clock: SharedClock,
        config: PipelineConfig,
        stages: Vec<Box<dyn Stage>>,
    ) -> std::io::Result<(Pipeline, WriterHandle)> {
        // Channels are unbounded in type and bounded by `pending_events`: every request holds at
        // least one event that counts until the stages have seen it.
        let (tx, rx) = channel();
        let (published, _) = broadcast::channel(PUBLISH_CAPACITY);
        let health = Arc::new(PipelineHealth::default());
        health.writer_alive.store(true, Ordering::SeqCst);
        let inner = Arc::new(Inner {
            tx,
            redactor,
            max_pending: config.max_pending_events,
            health: health.clone(),
            published: published.clone(),
        });
        let mut threads = Vec::new();
        let to_stages = if stages.is_empty() {
            None
        } else {
            let (stage_tx, stage_rx) = channel();
            let stage_loop = StageLoop {
                stages,
                rx: stage_rx,
                clock: clock.clone(),
                health: health.clone(),
                pipeline: Arc::downgrade(&inner),
            };
            let thread = std::thread::Builder::new()
                .name("mcpwatch-stages".into())
                .spawn(move || stage_loop.run())?;
            threads.push(thread);
            Some(stage_tx)
        };
        let settle_interval = settle_interval(writer.as_ref());
        let writer_loop = WriterLoop {
            settle_interval,
            writer,
            rx,
            clock,
            config,
            health,
            published,
            to_stages,
            settled_at: Instant::now()
                .checked_sub(settle_interval)
                .unwrap_or_else(Instant::now),
            unsettled: false,
        };
        let thread = std::thread::Builder::new()
            .name("mcpwatch-writer".into())
            .spawn(move || writer_loop.run())?;
        threads.insert(0, thread);
        Ok((Pipeline { inner }, WriterHandle { threads }))
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
        let ids = events.iter().map(|e| e.id.clone()).collect();
        let (reply, rx) = oneshot::channel();
        inner.send(events, Some(reply))?;
        Ok((ids, rx))
    }
}

impl Inner {
    /// Redacts, serialises and hands a batch to the writer. `pending_events` already counts it.
    fn send(
        &self,
        events: Vec<Event>,
        reply: Option<oneshot::Sender<Result<(), SinkError>>>,
    ) -> Result<(), SinkError> {
        let n = events.len();
        // Short bursts, so what shares this core with the collector does not wait for a
        // thousand redactions (see `mcpwatch_core::pace`).
        let mut pacer = mcpwatch_core::pace::Pacer::new();
        let prepared: Vec<PreparedEvent> = events
            .into_iter()
            .map(|mut e| {
                self.redactor.redact_event(&mut e);
                pacer.step();
                PreparedEvent::new(e)
            })
            .collect();
        self.tx
            .send(WriteRequest {
                events: Arc::new(prepared),
                reply,
            })
            .map_err(|_| {
                self.health.pending_events.fetch_sub(n, Ordering::SeqCst);
                SinkError::Closed
            })
    }
}

impl EventSink for Pipeline {
    fn submit(&self, events: Vec<Event>) -> SinkFuture {
        Box::pin(self.submit_events(events))
    }
}

/// How long to leave between settlements: `SETTLE_INTERVAL`, or longer when the store asks.
fn settle_interval(writer: &dyn EventWriter) -> Duration {
    writer
        .settle_interval()
        .map_or(SETTLE_INTERVAL, |d| d.max(SETTLE_INTERVAL))
}

struct WriterLoop {
    writer: Box<dyn EventWriter>,
    rx: Receiver<WriteRequest>,
    clock: SharedClock,
    config: PipelineConfig,
    health: Arc<PipelineHealth>,
    published: broadcast::Sender<Committed>,
    to_stages: Option<Sender<Committed>>,
    /// `SETTLE_INTERVAL`, or longer when the store asks (`EventWriter::settle_interval`).
    settle_interval: Duration,
    /// When the statistics were last settled.
    settled_at: Instant,
    /// Whether batches were committed since.
    unsettled: bool,
}

impl WriterLoop {
    fn run(mut self) {
        let mut next_retention = Instant::now();
        let mut retention_pending = true;
        loop {
            let mut wait = if retention_pending {
                Duration::ZERO
            } else {
                next_retention.saturating_duration_since(Instant::now())
            };
            if self.unsettled {
                wait = wait.min(
                    (self.settled_at + self.settle_interval)
                        .saturating_duration_since(Instant::now()),
                );
            }
            match self.rx.recv_timeout(wait) {
                Ok(first) => self.commit_group(first),
                Err(RecvTimeoutError::Timeout) => {
                    self.settle();
                    if retention_pending || Instant::now() >= next_retention {
                        retention_pending = self.retention_step();
                        if !retention_pending {
                            next_retention = Instant::now() + self.config.retention_interval;
                        }
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
        // With nothing else waiting, statistics are brought up to date in the same commit, at
        // most every SETTLE_INTERVAL; otherwise the loop settles them that long after.
        let settle = idle && self.settled_at.elapsed() >= self.settle_interval;
        let mut fresh = Vec::with_capacity(refs.len());
        let result = self.writer.append_marking(&refs, settle, &mut fresh);
        drop(refs);
        if settle && result.is_ok() {
            self.settled_at = Instant::now();
            self.unsettled = false;
            self.settle_interval = settle_interval(self.writer.as_ref());
        } else {
            self.unsettled = true;
        }
        self.health
            .statistics_behind
            .store(self.unsettled, Ordering::SeqCst);
        match result {
            Ok(added) => {
                self.health
                    .committed_events
                    .fetch_add(added as u64, Ordering::Relaxed);
                self.health
                    .duplicate_events
                    .fetch_add((total - added) as u64, Ordering::Relaxed);
                let mut marks = fresh.into_iter();
                for mut r in group {
                    // A resent event (its id already stored) is acknowledged below, but stages
                    // and subscribers see each event once.
                    let before = r.events.len();
                    r.events = only_fresh(r.events, marks.by_ref().take(before));
                    let dropped = before - r.events.len();
                    if dropped > 0 {
                        self.health
                            .pending_events
                            .fetch_sub(dropped, Ordering::SeqCst);
                    }
                    if r.events.is_empty() {
                        if let Some(reply) = r.reply {
                            let _ = reply.send(Ok(()));
                        }
                        continue;
                    }
                    if self.published.receiver_count() > 0 {
                        let _ = self.published.send(r.events.clone());
                    }
                    // The batch stays counted as pending until the stages have seen it (without
                    // stages, until now), and the count is settled before the submitter hears
                    // back. The submitter holds the other reference, so the events are freed
                    // off this thread.
                    match &self.to_stages {
                        Some(stages) if stages.send(r.events.clone()).is_ok() => {}
                        _ => {
                            self.health
                                .pending_events
                                .fetch_sub(r.events.len(), Ordering::SeqCst);
                        }
                    }
                    if let Some(reply) = r.reply {
                        let _ = reply.send(Ok(()));
                    }
                }
            }
            Err(e) => {
                self.health
                    .pending_events
                    .fetch_sub(total, Ordering::SeqCst);
                self.health.store_errors.fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, events = total, "commit failed; the batch was refused and nothing of it was kept");
                for r in group {
                    if let Some(reply) = r.reply {
                        let _ = reply.send(Err(SinkError::Store(e.to_string())));
                    }
                }
            }
        }
    }

    /// Brings statistics up to date while nothing is waiting.
    fn settle(&mut self) {
        match self.writer.settle() {
            Ok(()) => {
                // Only settling batches starts the interval: the first batch after a quiet
                // spell is always settled in its own commit.
                if self.unsettled {
                    self.settled_at = Instant::now();
                }
                self.unsettled = false;
                self.settle_interval = settle_interval(self.writer.as_ref());
                self.health.statistics_behind.store(false, Ordering::SeqCst);
            }
            Err(e) => {
                // Retried SETTLE_INTERVAL later, not in a loop.
                self.settled_at = Instant::now();
                tracing::warn!(error = %e, "could not update statistics; will retry");
            }
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

/// The events of `batch` whose mark is true; `batch` itself when all are.
fn only_fresh(batch: Committed, marks: impl Iterator<Item = bool>) -> Committed {
    let marks: Vec<bool> = marks.collect();
    if marks.iter().all(|m| *m) {
        return batch;
    }
    let kept = batch
        .iter()
        .zip(marks)
        .filter(|(_, fresh)| *fresh)
        .map(|(e, _)| e.clone())
        .collect();
    Arc::new(kept)
}

/// Runs the post-commit stages on every committed batch, in commit order.
struct StageLoop {
    stages: Vec<Box<dyn Stage>>,
    rx: Receiver<Committed>,
    clock: SharedClock,
    health: Arc<PipelineHealth>,
    pipeline: Weak<Inner>,
}

impl StageLoop {
    fn run(mut self) {
        let mut emit = Vec::new();
        let mut last_tick = Instant::now();
        loop {
            match self.rx.recv_timeout(STAGE_TICK) {
                Ok(batch) => {
                    for stage in &mut self.stages {
                        stage.on_commit(&batch, &mut emit);
                    }
                    self.health
                        .pending_events
                        .fetch_sub(batch.len(), Ordering::SeqCst);
                }
                Err(RecvTimeoutError::Timeout) => {}
                Err(RecvTimeoutError::Disconnected) => break,
            }
            if last_tick.elapsed() >= STAGE_TICK {
                last_tick = Instant::now();
                let now = self.clock.now();
                for stage in &mut self.stages {
                    stage.on_tick(now, &mut emit);
                }
            }
            if !emit.is_empty() {
                self.submit(std::mem::take(&mut emit));
            }
        }
    }

    /// Emitted events bypass the pending limit: they are few (detection suppresses repeats),
    /// and refusing them would lose alerts.
    fn submit(&self, events: Vec<Event>) {
        let Some(inner) = self.pipeline.upgrade() else {
            return;
        };
        self.health
            .stage_events
            .fetch_add(events.len() as u64, Ordering::Relaxed);
        inner
            .health
            .pending_events
            .fetch_add(events.len(), Ordering::SeqCst);
        if let Err(e) = inner.send(events, None) {
            tracing::warn!(error = %e, "could not submit events emitted by a stage");
        }
    }
}

#[cfg(test)]
mod tests;
