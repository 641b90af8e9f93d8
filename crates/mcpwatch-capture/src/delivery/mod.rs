//! Delivery: from the session tracker's events to the collector, whatever the collector does.
//!
//! The last stage of capture. Events arrive on a bounded channel; the worker batches them (up
//! to `batch_max`, lingering `linger` for more), delivers them to its [`Target`] (the
//! collector through the [`HttpSink`], a JetStream stream through the [`NatsSink`], or both),
//! and when the target is unreachable or busy writes them to the [`Spool`] and retries with
//! backoff, oldest first. A JetStream publish acknowledgement counts as the collector's 202.
//! Invalid events (400) are logged and dropped, never retried forever; a batch that is too
//! large (413) is split. A refused token (401/403) costs nothing: the events stay
//! in the spool, the refusal is said once on stderr and marked in the spool folder for
//! `mcpwatch spool status`, and they are delivered once a valid token is given (the next
//! `wrap`, or `mcpwatch spool flush --token`).
//!
//! With [`DeliveryConfig::orphans`] set, the worker also delivers the spools that other server
//! names left behind when their process ended ([`Orphans`]), one batch at a time between its
//! own, and only once the collector has taken one of its own batches: while the collector is
//! down it takes nothing over, so those spools stay visible to `mcpwatch spool`.
//!
//! Architecture Invariant: nothing here is on the relay's path; a slow or dead collector costs
//! the MCP session nothing.

pub mod http;
pub mod nats;
pub mod spool;
pub mod target;
#[cfg(test)]
mod tests;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_core::Event;
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::health::CaptureHealth;
pub use http::{HttpSink, PostError, DEFAULT_COLLECTOR};
pub use nats::NatsSink;
pub use spool::{Orphans, Spool};
pub use target::Target;

/// How delivery behaves.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    /// Collector base URL.
    pub collector: String,
    /// NATS servers (`nats://host:4222`, several separated by commas) to publish events to a
    /// JetStream stream; `None` for none.
    pub nats: Option<String>,
    /// With `nats` set, whether events also go to the collector over HTTP.
    pub nats_and_http: bool,
    /// Most JetStream publishes awaiting their acknowledgement.
    pub nats_in_flight: usize,
    /// Bearer token for the ingest API.
    pub token: Option<String>,
    /// Spool directory; `None` means events are lost (and counted) while the collector is away.
    pub spool_dir: Option<PathBuf>,
    /// Most bytes the spool may hold.
    pub spool_max_bytes: u64,
    /// Most events per POST.
    pub batch_max: usize,
    /// How long to wait for more events before posting a partial batch.
    pub linger: Duration,
    /// Capacity of the channel in front of the worker.
    pub queue: usize,
    /// How long the final flush may take at shutdown before the rest is spooled.
    pub shutdown_grace: Duration,
    /// The folder holding every server's spool (see [`spool::root`]): the spools in it whose
    /// process is gone, except `spool_dir`, are delivered too, after this worker's own events.
    pub orphans: Option<PathBuf>,
}

impl DeliveryConfig {
    /// Defaults for a collector URL.
    pub fn new(collector: impl Into<String>) -> Self {
        Self {
            collector: collector.into(),
            nats: None,
            nats_and_http: false,
            nats_in_flight: mcpwatch_nats::publish::DEFAULT_MAX_IN_FLIGHT,
            token: None,
            spool_dir: None,
            spool_max_bytes: 64 * 1024 * 1024,
            batch_max: 500,
            linger: Duration::from_millis(50),
            queue: 10_000,
            shutdown_grace: Duration::from_secs(2),
            orphans: None,
        }
    }

    /// The targets this config names; a bad URL fails here, before anything runs.
    pub fn target(&self) -> Result<Target, crate::CaptureError> {
        let http = || HttpSink::new(&self.collector, self.token.clone());
        Ok(match &self.nats {
            None => Target::Http(http()?),
            Some(urls) => {
                let nats = NatsSink::new(urls, "mcpwatch-edge", self.nats_in_flight)?;
                if self.nats_and_http {
                    Target::Both(nats, http()?)
                } else {
                    Target::Nats(nats)
                }
            }
        })
    }

    /// Builds the worker and the sender that feeds it.
    pub fn build(
        &self,
        health: Arc<CaptureHealth>,
    ) -> Result<(mpsc::Sender<Event>, DeliveryWorker), crate::CaptureError> {
        let sink = self.target()?;
        let spool = match &self.spool_dir {
            Some(dir) => match Spool::open(dir, self.spool_max_bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(
                        "mcpwatch: no spool, events are lost while the collector is away: {e}"
                    );
                    None
                }
            },
            None => None,
        };
        let (tx, rx) = mpsc::channel(self.queue.max(1));
        if spool.is_some() {
            CaptureHealth::set(&health.spool_max_bytes, self.spool_max_bytes);
        }
        let worker = DeliveryWorker {
            cfg: self.clone(),
            sink,
            spool,
            rx,
            health,
            retry_at: None,
            backoff: INITIAL_BACKOFF,
            token_refused: false,
            orphans: self
                .orphans
                .as_deref()
                .map(|root| Orphans::new(root, self.spool_dir.as_deref())),
        };
        worker.note_spool();
        Ok((tx, worker))
    }
}

const INITIAL_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(15);

/// Posts batches, spools what cannot be posted, and drains the spool when it can.
pub struct DeliveryWorker {
    cfg: DeliveryConfig,
    sink: Target,
    spool: Option<Spool>,
    rx: mpsc::Receiver<Event>,
    health: Arc<CaptureHealth>,
    retry_at: Option<Instant>,
    backoff: Duration,
    /// The collector refused the token and that was said; cleared by the next delivery.
    token_refused: bool,
    /// Other servers' orphaned spools still to deliver; `None` once all are done.
    orphans: Option<Orphans>,
}

/// What happened to one batch.
enum Shipped {
    Delivered,
    /// Not all delivered; the collector should be retried later (after the given time) with
    /// these events, the ones not yet delivered.
    Later(Duration, Vec<Event>),
}

impl Shipped {
    /// `Later` with `first` and every batch still waiting on the `work` stack, in send order.
    fn later(after: Duration, first: Vec<Event>, work: Vec<Vec<Event>>) -> Shipped {
        let mut rest = first;
        for batch in work.into_iter().rev() {
            rest.extend(batch);
        }
        Shipped::Later(after, rest)
    }
}

impl DeliveryWorker {
    /// Runs until every sender is dropped, then flushes (or spools) what is left.
    pub async fn run(mut self) {
        let mut batch: Vec<Event> = Vec::with_capacity(self.cfg.batch_max);
        loop {
            let retry = self
                .retry_at
                .filter(|_| self.spool_waiting() || self.orphans.is_some());
            let orphans_turn = self.orphans_turn();
            let first = tokio::select! {
                ev = self.rx.recv() => ev,
                () = sleep_until_opt(retry) => {
                    self.retry_at = None;
                    self.drain_spool().await;
                    continue;
                }
                () = std::future::ready(()), if orphans_turn => {
                    self.drain_orphans_once().await;
                    continue;
                }
            };
            let Some(first) = first else { break };
            batch.push(first);
            // One timer per batch, and every event already waiting taken at once: a fresh
            // `sleep_until` per event re-registered the timer each time, and each registration
            // woke the runtime's driver (an eventfd write, about one per request through the
            // gateway; measured with strace and perf).
            let linger = tokio::time::sleep_until(Instant::now() + self.cfg.linger);
            tokio::pin!(linger);
            let mut closed = false;
            while batch.len() < self.cfg.batch_max {
                let room = self.cfg.batch_max - batch.len();
                tokio::select! {
                    n = self.rx.recv_many(&mut batch, room) => if n == 0 {
                        closed = true;
                        break;
                    },
                    () = &mut linger => break,
                }
            }
            self.ship(std::mem::take(&mut batch)).await;
            if closed {
                break;
            }
        }
        self.shutdown().await;
    }

    /// Publishes the spool's size for the edge's health report.
    fn note_spool(&self) {
        let (bytes, pending) = self
            .spool
            .as_ref()
            .map_or((0, 0), |s| (s.bytes(), s.pending_bytes()));
        CaptureHealth::set(&self.health.spool_bytes, bytes);
        CaptureHealth::set(&self.health.spool_pending_bytes, pending);
    }

    fn spool_waiting(&self) -> bool {
        self.spool.as_ref().is_some_and(|s| !s.is_empty())
    }

    fn collector_down(&self) -> bool {
        self.retry_at.is_some_and(|t| Instant::now() < t)
    }

    async fn ship(&mut self, batch: Vec<Event>) {
        if !self.collector_down() && self.spool_waiting() {
            self.drain_spool().await;
        }
        if self.collector_down() || self.spool_waiting() {
            self.spool_batch(&batch);
            return;
        }
        // The batch moves into `post`; what it could not deliver comes back to be spooled.
        match self.post(batch).await {
            Shipped::Delivered => self.backoff = INITIAL_BACKOFF,
            Shipped::Later(after, rest) => {
                self.spool_batch(&rest);
                self.defer(after);
            }
        }
    }

    fn defer(&mut self, after: Duration) {
        let wait = after.max(self.backoff);
        self.retry_at = Some(Instant::now() + wait);
        self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
    }

    /// Posts the spool's oldest events until it is empty or the collector fails.
    async fn drain_spool(&mut self) {
        loop {
            let Some(spool) = self.spool.as_mut() else {
                return;
            };
            let events = match spool.peek(self.cfg.batch_max) {
                Ok(events) => events,
                Err(e) => {
                    tracing::error!("mcpwatch: cannot read the spool, giving up on it: {e}");
                    self.spool = None;
                    return;
                }
            };
            if events.is_empty() {
                spool.consume();
                if spool.is_empty() {
                    self.note_spool();
                    return;
                }
                continue;
            }
            match self.post(events).await {
                Shipped::Delivered => {
                    self.backoff = INITIAL_BACKOFF;
                    if let Some(spool) = self.spool.as_mut() {
                        spool.consume();
                    }
                    self.note_spool();
                }
                Shipped::Later(after, _) => {
                    // The spool still holds them: it is consumed only after a delivery.
                    self.defer(after);
                    return;
                }
            }
        }
    }

    /// Whether to deliver a batch of another server's orphaned spool now: the collector has
    /// taken this worker's events and is not being waited for.
    fn orphans_turn(&self) -> bool {
        self.orphans.is_some()
            && !self.collector_down()
            && CaptureHealth::get(&self.health.delivered_events) > 0
    }

    /// Posts one batch of the orphaned spools, oldest first.
    async fn drain_orphans_once(&mut self) {
        let Some(orphans) = self.orphans.as_mut() else {
            return;
        };
        let events = match orphans.peek(self.cfg.batch_max) {
            Ok(Some(events)) => events,
            Ok(None) => {
                self.orphans = None;
                return;
            }
            Err(e) => {
                tracing::warn!("mcpwatch: skipping an orphaned spool that cannot be read: {e}");
                return;
            }
        };
        match self.post(events).await {
            Shipped::Delivered => {
                self.backoff = INITIAL_BACKOFF;
                if let Some(orphans) = self.orphans.as_mut() {
                    orphans.consume();
                }
            }
            // Still in the adopted segments: retried later, or left for the next process.
            Shipped::Later(after, _) => self.defer(after),
        }
    }

    fn spool_batch(&mut self, batch: &[Event]) {
        let lost = match self.spool.as_mut() {
            Some(spool) => match spool.append(batch) {
                Ok(lost) => lost,
                Err(e) => {
                    tracing::error!("mcpwatch: cannot write the spool: {e}");
                    batch.len()
                }
            },
            None => batch.len(),
        };
        CaptureHealth::add(&self.health.spooled_events, (batch.len() - lost) as u64);
        CaptureHealth::add(&self.health.spool_overflow_events, lost as u64);
        self.note_spool();
    }

    /// Posts a batch, dropping invalid events and splitting too-large batches.
    async fn post(&mut self, batch: Vec<Event>) -> Shipped {
        let mut work = vec![batch];
        while let Some(batch) = work.pop() {
            if batch.is_empty() {
                continue;
            }
            match self.sink.deliver(&batch).await {
                Ok(_) => CaptureHealth::add(&self.health.delivered_events, batch.len() as u64),
                Err(PostError::Unreachable(why)) => {
                    tracing::debug!("mcpwatch: collector unreachable, spooling: {why}");
                    return Shipped::later(Duration::ZERO, batch, work);
                }
                Err(PostError::Busy(after)) => return Shipped::later(after, batch, work),
                Err(PostError::Unauthorized(status)) => {
                    self.refused(status);
                    return Shipped::later(MAX_BACKOFF, batch, work);
                }
                Err(PostError::TooLarge) if batch.len() > 1 => {
                    let mut first = batch;
                    let second = first.split_off(first.len() / 2);
                    work.push(second);
                    work.push(first);
                }
                Err(PostError::Rejected { bad, message })
                    if !bad.is_empty() && bad.len() < batch.len() =>
                {
                    tracing::error!(
                        "mcpwatch: the collector rejected {} event(s), dropping them: {message}",
                        bad.len()
                    );
                    CaptureHealth::add(&self.health.rejected_events, bad.len() as u64);
                    let keep: Vec<Event> = batch
                        .into_iter()
                        .enumerate()
                        .filter(|(i, _)| !bad.contains(i))
                        .map(|(_, e)| e)
                        .collect();
                    // Retried once, alone; a second rejection drops the lot below.
                    match self.sink.deliver(&keep).await {
                        Ok(_) => {
                            CaptureHealth::add(&self.health.delivered_events, keep.len() as u64)
                        }
                        Err(PostError::Unreachable(_)) | Err(PostError::Busy(_)) => {
                            return Shipped::later(Duration::ZERO, keep, work);
                        }
                        Err(PostError::Unauthorized(status)) => {
                            self.refused(status);
                            return Shipped::later(MAX_BACKOFF, keep, work);
                        }
                        Err(e) => self.drop_batch(keep.len(), &e),
                    }
                }
                Err(e) => self.drop_batch(batch.len(), &e),
            }
        }
        if self.token_refused {
            self.token_refused = false;
            if let Some(dir) = &self.cfg.spool_dir {
                spool::clear_token_refused(dir);
            }
        }
        Shipped::Delivered
    }

    /// The collector refused the token: say so once, and mark the spool for `spool status`.
    fn refused(&mut self, status: u16) {
        if self.token_refused {
            return;
        }
        self.token_refused = true;
        let kept = match &self.cfg.spool_dir {
            Some(dir) => {
                if let Err(e) = spool::mark_token_refused(dir, status) {
                    tracing::warn!("mcpwatch: {e}");
                }
                format!("events are kept in the spool {}", dir.display())
            }
            None => "there is no spool, so events are lost until then".to_string(),
        };
        tracing::error!(
            "mcpwatch: the collector at {} refused the token (HTTP {status}); {kept}. Give a \
             token with the ingest role ($MCPWATCH_TOKEN) to the next wrap, or run `mcpwatch \
             spool flush --token TOKEN` once this one has exited",
            self.cfg.collector
        );
    }

    fn drop_batch(&self, n: usize, e: &PostError) {
        tracing::error!(
            "mcpwatch: the collector refused {n} event(s) and they will not be retried: {e}. \
             Check that the collector and mcpwatch versions match."
        );
        CaptureHealth::add(&self.health.rejected_events, n as u64);
    }

    async fn shutdown(&mut self) {
        let deadline = Instant::now() + self.cfg.shutdown_grace;
        self.flush_rest(deadline).await;
        // A short session can end before the worker ever had a turn for other servers'
        // orphaned spools (its own events went out in the final flush): adopt them now, within
        // the same grace. Cut short, a batch is sent again by the next process (ids dedup).
        let _ = tokio::time::timeout_at(deadline, async {
            while self.orphans_turn() && self.retry_at.is_none() {
                self.drain_orphans_once().await;
            }
        })
        .await;
        if let Some(orphans) = self.orphans.as_mut() {
            if let Err(e) = orphans.checkpoint() {
                tracing::warn!("mcpwatch: an orphaned spool may be delivered twice: {e}");
            }
        }
    }

    /// Ships (or spools) what is still queued, by `deadline`.
    async fn flush_rest(&mut self, deadline: Instant) {
        let mut rest: Vec<Event> = Vec::new();
        while let Ok(ev) = self.rx.try_recv() {
            rest.push(ev);
        }
        if rest.is_empty() && !self.spool_waiting() {
            return;
        }
        if self.collector_down() {
            self.spool_batch(&rest);
            return;
        }
        let flushed = tokio::time::timeout_at(deadline, async {
            for chunk in rest.chunks(self.cfg.batch_max.max(1)) {
                self.ship(chunk.to_vec()).await;
            }
        })
        .await;
        if flushed.is_err() {
            // Too slow: keep everything for the next run (duplicates are ignored by id).
            self.retry_at = Some(Instant::now() + MAX_BACKOFF);
            self.spool_batch(&rest);
        }
    }
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
