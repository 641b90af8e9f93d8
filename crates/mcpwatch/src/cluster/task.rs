//! A task at work on the node that holds its lease: an ordered consumer reads the task's
//! subjects from its stored position (an async reader on the node's runtime), and a thread of
//! its own runs detection and writes.
//!
//! Every write is one fenced transaction (`Alerting::on_findings_fenced`): the findings folded
//! into alerts, the stream position they reach and, every `snapshot_every`, the engine's state,
//! all under a check that the lease is still this node's with this epoch. A task whose check
//! fails stands down at once. The findings' derived events are stored just before (their ids
//! come from what triggered them, so storing one again is a no-op), and a finding already
//! folded into an alert is folded once, so detecting again after a take-over changes nothing.
//!
//! Architecture Invariant: a task writes only under its lease; its position and snapshot never
//! run ahead of the findings committed with them.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::pull::OrderedConfig;
use async_nats::jetstream::consumer::DeliverPolicy;
use bytes::Bytes;
use futures_util::StreamExt;
use mcpwatch_alert::postgres::cluster::{Checkpoint, Claimed, Fence};
use mcpwatch_alert::{AlertError, Alerting};
use mcpwatch_core::{Event, EventSink, SinkError, Timestamp};
use mcpwatch_nats::async_nats;
use mcpwatch_nats::consume::{next_message, published_at, Received};
use mcpwatch_nats::subject::Task;
use mcpwatch_server::Pipeline;

use super::detector::{DetectSpec, TaskDetector};
use super::ClusterSettings;

/// One message of a task's filter, owned.
pub(crate) struct Msg {
    seq: u64,
    subject: String,
    msg_id: Option<String>,
    relay_mac: Option<String>,
    published: Option<Timestamp>,
    payload: Bytes,
}

impl Msg {
    fn received(&self) -> Received<'_> {
        Received {
            payload: &self.payload,
            msg_id: self.msg_id.as_deref(),
            subject: &self.subject,
            published: self.published,
            relay_mac: self.relay_mac.as_deref(),
        }
    }
}

/// How long a task waits on an overloaded store before it says so.
const SAY_HELD_UP_AFTER: Duration = Duration::from_secs(30);

/// Most findings one fenced transaction folds (the store takes at most
/// `MAX_FENCED_FINDINGS`, 512; one event gives a few at most).
const FINDINGS_PER_COMMIT: usize = 256;

/// What a node shares with its tasks.
pub(crate) struct TaskDeps {
    pub(crate) js: async_nats::jetstream::Context,
    pub(crate) stream: String,
    pub(crate) spec: DetectSpec,
    pub(crate) alerting: Arc<Alerting>,
    pub(crate) pipeline: Pipeline,
    pub(crate) runtime: tokio::runtime::Handle,
    pub(crate) settings: ClusterSettings,
    pub(crate) health: Arc<super::ClusterHealth>,
}

/// How a node steers a running task, and what the task tells it.
#[derive(Default)]
pub(crate) struct Control {
    /// Stop soon.
    pub(crate) stop: AtomicBool,
    /// When stopping, first write a last checkpoint with a snapshot (a hand-over); unset when
    /// the lease is lost, as any write would be refused.
    pub(crate) hand_over: AtomicBool,
    /// The node's heartbeat no longer lists the lease: commit what the task has now, under the
    /// fence. The fence refuses it when the lease is someone else's (or expired), and the task
    /// stands down; when the database says it is still ours, the task goes on.
    pub(crate) verify: AtomicBool,
    /// The last committed position, for logs and status.
    pub(crate) position: AtomicU64,
}

/// Why a task ended.
#[derive(Debug)]
pub(crate) enum Exit {
    /// Asked to stop (hand-over or shutdown).
    Stopped,
    /// Its lease was no longer this node's.
    Fenced(String),
    /// It could not start (state, stream).
    Failed(String),
}

/// Runs `claimed` until told to stop or fenced. Blocking: run it on a thread of its own.
pub(crate) fn run(deps: &TaskDeps, claimed: Claimed, ctl: &Control) -> Exit {
    let fence = claimed.fence.clone();
    let Some(task) = Task::parse(&fence.task) else {
        return Exit::Failed(format!("{} names no task", fence.task));
    };
    let (mut detector, mut snap_pos) = match &claimed.snapshot {
        Some((at, bytes)) => match TaskDetector::restore(task, &deps.spec, bytes) {
            Ok(d) => (d, *at),
            Err(e) => {
                tracing::warn!(
                    task = %fence.task,
                    "{e}; detecting again from the start of the stream instead"
                );
                (TaskDetector::new(task, &deps.spec), 0)
            }
        },
        None => (TaskDetector::new(task, &deps.spec), 0),
    };
    let mut committed = claimed.position;
    ctl.position.store(committed, Ordering::Relaxed);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Msg>(deps.settings.batch.max(1) * 2);
    let reader = deps.runtime.spawn(read(
        deps.js.clone(),
        deps.stream.clone(),
        task.filter(),
        snap_pos + 1,
        tx,
        deps.health.clone(),
    ));
    let _abort = AbortOnDrop(reader);
    let mut last_seq = snap_pos;
    // nats-server 2.9 miscounts a wildcard-filtered consumer's pending messages, so lag is
    // measured on the stream by `cluster status --nats` instead of reported from here.
    let pending = None;
    let mut snap_at = Instant::now();
    let mut batch = Vec::with_capacity(deps.settings.batch);
    loop {
        if ctl.stop.load(Ordering::Relaxed) {
            if !ctl.hand_over.load(Ordering::Relaxed) {
                return Exit::Stopped;
            }
            // Hand over with the state in the same transaction as the last findings.
            let snapshot = (last_seq > snap_pos).then(|| detector.snapshot());
            return match write(
                deps,
                &fence,
                &mut detector,
                last_seq,
                pending,
                snapshot,
                ctl,
            ) {
                Ok(()) => Exit::Stopped,
                Err(exit) => exit,
            };
        }
        batch.clear();
        deps.runtime.block_on(async {
            if let Ok(Some(m)) = tokio::time::timeout(deps.settings.linger, rx.recv()).await {
                batch.push(m);
                while batch.len() < deps.settings.batch {
                    match rx.try_recv() {
                        Ok(m) => batch.push(m),
                        Err(_) => break,
                    }
                }
            }
        });
        deps.health
            .messages
            .fetch_add(batch.len() as u64, Ordering::Relaxed);
        for m in &batch {
            detector.feed(&m.received());
            last_seq = m.seq;
            // One transaction folds a bounded number of findings (its fingerprint locks live
            // in PostgreSQL's shared lock table): a burst is committed in parts, each with the
            // position of the message that ended it.
            if detector.findings().len() >= FINDINGS_PER_COMMIT {
                if let Err(exit) = write(deps, &fence, &mut detector, last_seq, pending, None, ctl)
                {
                    return exit;
                }
                committed = last_seq;
            }
        }
        let snapshot_due = snap_at.elapsed() >= deps.settings.snapshot_every && last_seq > snap_pos;
        let verify = ctl.verify.swap(false, Ordering::Relaxed);
        if last_seq == committed && !detector.has_findings() && !snapshot_due && !verify {
            continue;
        }
        let snapshot = snapshot_due.then(|| detector.snapshot());
        let with_snapshot = snapshot.is_some();
        match write(
            deps,
            &fence,
            &mut detector,
            last_seq,
            pending,
            snapshot,
            ctl,
        ) {
            Ok(()) => {
                committed = last_seq;
                if with_snapshot {
                    snap_pos = last_seq;
                    snap_at = Instant::now();
                }
            }
            Err(exit) => return exit,
        }
    }
}

/// Stores the findings' derived events, then commits the findings with the position they
/// reach (and a snapshot), fenced; retries what the database did not take until it does, the
/// lease is lost or the task is stopped.
fn write(
    deps: &TaskDeps,
    fence: &Fence,
    detector: &mut TaskDetector,
    position: u64,
    pending: Option<u64>,
    snapshot: Option<Vec<u8>>,
    ctl: &Control,
) -> Result<(), Exit> {
    let events: Vec<Event> = detector
        .findings()
        .iter()
        .map(|f| f.event.clone())
        .collect();
    if !events.is_empty() {
        store_derived(deps, &fence.task, events, ctl)?;
    }
    let cp = Checkpoint {
        position,
        pending,
        snapshot,
    };
    let mut wait = Duration::from_millis(200);
    loop {
        match deps
            .alerting
            .on_findings_fenced(detector.findings(), fence, &cp)
        {
            Ok(_) => {
                deps.health.commits.fetch_add(1, Ordering::Relaxed);
                deps.health
                    .findings
                    .fetch_add(detector.findings().len() as u64, Ordering::Relaxed);
                break;
            }
            Err(AlertError::Fenced { message, .. }) => return Err(Exit::Fenced(message)),
            Err(e) => {
                tracing::error!(task = %fence.task, "cannot commit detection state, retrying: {e}");
                give_up_if_stopped(ctl)?;
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(5));
            }
        }
    }
    detector.take_findings();
    ctl.position.store(position, Ordering::Relaxed);
    Ok(())
}

/// A task told to stop without a hand-over (shutting down, or its lease is gone) stops
/// retrying; what it did not commit is detected again by the next owner.
fn give_up_if_stopped(ctl: &Control) -> Result<(), Exit> {
    if ctl.stop.load(Ordering::Relaxed) && !ctl.hand_over.load(Ordering::Relaxed) {
        return Err(Exit::Stopped);
    }
    Ok(())
}

/// Stores derived events through the pipeline, waiting out overload. They go before the
/// findings are committed: a crash in between only means the next owner derives them again,
/// with the same ids (a no-op for the store); the other order could lose them. A stale owner
/// that stores them before its commit is refused derives exactly what the new owner derives.
fn store_derived(
    deps: &TaskDeps,
    task: &str,
    events: Vec<Event>,
    ctl: &Control,
) -> Result<(), Exit> {
    let mut wait = Duration::from_millis(100);
    let (since, mut said) = (Instant::now(), false);
    loop {
        match deps.runtime.block_on(deps.pipeline.submit(events.clone())) {
            Ok(_) => return Ok(()),
            Err(SinkError::Overloaded { .. }) => {
                // Overload is normal for a moment; for this long it holds the task up unseen.
                if !said && since.elapsed() >= SAY_HELD_UP_AFTER {
                    tracing::warn!(
                        task,
                        "the store has refused {} derived event(s) as overloaded for {}s; \
                         the task waits (its position does not move)",
                        events.len(),
                        since.elapsed().as_secs()
                    );
                    said = true;
                }
            }
            Err(SinkError::Closed) => return Err(Exit::Stopped),
            Err(e) => {
                tracing::error!(
                    task,
                    "cannot store {} derived event(s), retrying: {e}",
                    events.len()
                );
            }
        }
        give_up_if_stopped(ctl)?;
        std::thread::sleep(wait);
        wait = (wait * 2).min(Duration::from_secs(2));
    }
}

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long a task's consumer may deliver nothing before the task looks on the stream for a
/// message it should have had.
const STALL_CHECK: Duration = Duration::from_secs(10);

/// Reads `filter` from stream sequence `from` in stream order into `tx`, forever; a consumer
/// that fails is made again from the next sequence.
///
/// A consumer that goes quiet is checked, not trusted: after [`STALL_CHECK`] without a message
/// the task looks the next message of its filter up on the stream, and if one waits that was
/// published longer ago than that, it makes the consumer again from `from`. Seen here: after a
/// stream leader was killed, an ordered consumer delivered nothing for minutes while its lease
/// was renewed, so its users went undetected with nothing in the logs. (A task busy detecting
/// is not waiting here: the timer runs only while the task waits for the consumer.)
async fn read(
    js: async_nats::jetstream::Context,
    stream: String,
    filter: String,
    mut from: u64,
    tx: tokio::sync::mpsc::Sender<Msg>,
    health: Arc<super::ClusterHealth>,
) {
    let mut said = false;
    loop {
        let messages = async {
            let s = js.get_stream(&stream).await.map_err(|e| e.to_string())?;
            let c = s
                .create_consumer(OrderedConfig {
                    filter_subject: filter.clone(),
                    deliver_policy: if from <= 1 {
                        DeliverPolicy::All
                    } else {
                        DeliverPolicy::ByStartSequence {
                            start_sequence: from,
                        }
                    },
                    ..Default::default()
                })
                .await
                .map_err(|e| e.to_string())?;
            c.messages().await.map_err(|e| e.to_string())
        }
        .await;
        let mut messages = match messages {
            Ok(m) => m,
            Err(e) => {
                if !said {
                    tracing::warn!("cannot read {filter} from stream {stream}: {e}; retrying");
                    said = true;
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
                continue;
            }
        };
        said = false;
        loop {
            let next =
                next_unless_stalled(&mut messages, STALL_CHECK, &js, &stream, &filter, from).await;
            let m = match next {
                Next::Item(m) => m,
                Next::Ended => break,
                Next::Stalled(seq) => {
                    tracing::warn!(
                        "the consumer of {filter} delivered nothing for {}s while message {seq} \
                         waits on stream {stream}; making it again from {from}",
                        STALL_CHECK.as_secs()
                    );
                    health.stalled.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            };
            let Ok(m) = m else { break };
            let Ok(info) = m.info() else { continue };
            let (seq, published) = (info.stream_sequence, published_at(info.published));
            if seq < from {
                continue;
            }
            let r = Received::from_message(&m);
            let msg = Msg {
                seq,
                subject: r.subject.to_owned(),
                msg_id: r.msg_id.map(str::to_owned),
                relay_mac: r.relay_mac.map(str::to_owned),
                published: Some(published),
                payload: m.payload.clone(),
            };
            if tx.send(msg).await.is_err() {
                return;
            }
            from = seq + 1;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// What a task's consumer gave.
#[derive(Debug)]
enum Next<T> {
    Item(T),
    /// The consumer ended.
    Ended,
    /// Quiet for `quiet` while this message of the filter, published longer ago, waits.
    Stalled(u64),
}

/// The consumer's next item, unless it stays quiet for `quiet` while a message of `filter`
/// at or after `from`, published more than `quiet` ago, waits on the stream (a consumer that
/// works would have delivered it). When the stream cannot say (it is being failed over), the
/// consumer's own recovery is given the benefit of the doubt and the wait goes on.
async fn next_unless_stalled<S: futures_util::Stream + Unpin>(
    messages: &mut S,
    quiet: Duration,
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
    from: u64,
) -> Next<S::Item> {
    loop {
        match tokio::time::timeout(quiet, messages.next()).await {
            Ok(Some(m)) => return Next::Item(m),
            Ok(None) => return Next::Ended,
            Err(_) => {
                if let Some(seq) = waiting(js, stream, filter, from, quiet).await {
                    return Next::Stalled(seq);
                }
            }
        }
    }
}

/// The first message of `filter` at or after `from`, if it was published more than `older`
/// ago; `None` when there is none or the stream cannot say now.
async fn waiting(
    js: &async_nats::jetstream::Context,
    stream: &str,
    filter: &str,
    from: u64,
    older: Duration,
) -> Option<u64> {
    let s = js.get_stream(stream).await.ok()?;
    let (seq, published) = next_message(&s, filter, from).await.ok()??;
    let now = mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock);
    (now.as_micros() - published.as_micros() > older.as_micros() as i64).then_some(seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use mcpwatch_nats::testing::TempNatsCluster;
    use mcpwatch_nats::{ensure_stream, Publisher, StreamSettings};

    /// On a real cluster: a consumer that delivers nothing while the task's message waits is
    /// found stalled; the real ordered consumer over the same message is not (it delivers), and
    /// a quiet consumer with nothing waiting for it is left to wait.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_quiet_consumer_is_stalled_only_while_its_message_waits() {
        let nats = TempNatsCluster::start();
        let client = mcpwatch_nats::connect(&nats.urls(), "test", true)
            .await
            .unwrap();
        let js = async_nats::jetstream::new(client.clone());
        let settings = StreamSettings {
            name: "STALL".into(),
            max_bytes: 64 * 1024 * 1024,
            ..StreamSettings::default()
        };
        ensure_stream(&js, &settings).await.unwrap();
        let event = crate::cluster::detector::tests::failures("dana", 1, 0).remove(0);
        let parts =
            mcpwatch_nats::subject::parse_subject(&mcpwatch_nats::subject::subject_for(&event))
                .unwrap();
        let task = Task::all()
            .into_iter()
            .find(|t| t.name().starts_with("user/") && t.covers(&parts))
            .expect("the user's task");
        let mut publisher = Publisher::new(client, 8);
        publisher.publish(&[event]).await.unwrap();
        let quiet = Duration::from_millis(300);
        tokio::time::sleep(quiet * 2).await;

        let mut dead = futures_util::stream::pending::<()>();
        let found = tokio::time::timeout(
            Duration::from_secs(10),
            next_unless_stalled(&mut dead, quiet, &js, "STALL", &task.filter(), 1),
        )
        .await
        .expect("a stall is found within seconds");
        assert!(matches!(found, Next::Stalled(1)), "{found:?}");

        let s = js.get_stream("STALL").await.unwrap();
        let mut live = s
            .create_consumer(OrderedConfig {
                filter_subject: task.filter(),
                ..Default::default()
            })
            .await
            .unwrap()
            .messages()
            .await
            .unwrap();
        let got = next_unless_stalled(&mut live, quiet, &js, "STALL", &task.filter(), 1).await;
        let Next::Item(Ok(m)) = got else {
            panic!("the ordered consumer delivers the message: {got:?}")
        };
        assert_eq!(m.info().unwrap().stream_sequence, 1);

        let waited = tokio::time::timeout(
            quiet * 4,
            next_unless_stalled(&mut dead, quiet, &js, "STALL", &task.filter(), 2),
        )
        .await;
        assert!(waited.is_err(), "nothing waits past 1, yet: {waited:?}");
    }
}
