//! `serve --cluster` (SPEC 10): several collectors on one JetStream stream and one PostgreSQL
//! database, detecting as one.
//!
//! Storing is unchanged: every node's durable consumer stores what JetStream gives it, each
//! event once. Detection leaves the per-node pipeline and runs in *tasks* (`mcpwatch_nats::
//! subject::Task`): one per partition of each key family (user, server, IP, 17 each with the
//! partition of events without that key) and one `global`. Each task's engine runs only the
//! rules and detectors whose state is keyed by its family's key (`mcpwatch_detect::Scope`), so a
//! key's whole history is in one task, read in stream order.
//!
//! Tasks are leased in PostgreSQL (`mcpwatch_alert::postgres::cluster`): a node heartbeats every
//! third of the lease, keeps the tasks it still holds, stops those it lost, hands over what is
//! above its share when another node joins (a last checkpoint with a snapshot, then a release),
//! and takes free or expired tasks up to its share (`ceil(tasks / live nodes)`). A node that
//! dies loses its leases when they expire; the others take its tasks over from their
//! snapshots. `task.rs` runs one task; `detector.rs` is the detection both it and
//! `replay --stream` run; `replay.rs` is that replay.

mod detector;
mod relay;
mod replay;
mod task;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_alert::postgres::cluster::{Fence, PgCluster};
use mcpwatch_alert::Alerting;
use mcpwatch_core::clock::SharedClock;
use mcpwatch_nats::async_nats;
use mcpwatch_nats::consume::RelayCheck;
use mcpwatch_nats::subject::Task;
use mcpwatch_server::Pipeline;

pub use detector::DetectSpec;
pub use relay::IngestRelay;
pub use replay::{export_stream, read_export, replay_export};

use task::{Control, Exit, TaskDeps};

/// `[cluster]` in the config file.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterSettings {
    /// Run as a node of a cluster (`serve --cluster`).
    pub enabled: bool,
    /// How long a task's lease lasts without a heartbeat: the longest a dead node's tasks wait
    /// for another node. Heartbeats come every third of it.
    #[serde(with = "secs", rename = "lease_seconds")]
    pub lease: Duration,
    /// How often a task writes its engine's state with its checkpoint.
    #[serde(with = "secs", rename = "snapshot_seconds")]
    pub snapshot_every: Duration,
    /// Most messages a task detects on between two commits.
    pub batch: usize,
    /// How long a task waits for more messages before committing what it has.
    #[serde(skip)]
    pub linger: Duration,
}

impl Default for ClusterSettings {
    fn default() -> Self {
        Self {
            enabled: false,
            lease: Duration::from_secs(15),
            snapshot_every: Duration::from_secs(30),
            batch: 1_000,
            linger: Duration::from_millis(200),
        }
    }
}

mod secs {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let secs = f64::deserialize(d)?;
        if !(0.5..=3600.0).contains(&secs) {
            return Err(serde::de::Error::custom(
                "must be between 0.5 and 3600 seconds",
            ));
        }
        Ok(Duration::from_secs_f64(secs))
    }
}

impl ClusterSettings {
    /// `[cluster]` of `config`, checked.
    pub fn from_config(config: &mcpwatch_core::config::Config) -> anyhow::Result<Self> {
        let s: Self = match config.extra.get("cluster") {
            None => Self::default(),
            Some(v) => v.clone().try_into().map_err(|e: toml::de::Error| {
                anyhow::anyhow!("invalid [cluster]: {}", e.message())
            })?,
        };
        if s.batch == 0 || s.batch > 100_000 {
            anyhow::bail!("invalid [cluster]: batch must be between 1 and 100000");
        }
        Ok(s)
    }
}

/// What a node's tasks did, for `/metrics`.
#[derive(Debug, Default)]
pub struct ClusterHealth {
    /// Tasks this node runs now.
    pub tasks: std::sync::atomic::AtomicU64,
    /// Tasks taken (at start, from a dead node, or handed over).
    pub taken: std::sync::atomic::AtomicU64,
    /// Tasks that stood down because their lease was another node's.
    pub fenced: std::sync::atomic::AtomicU64,
    /// Fenced transactions committed.
    pub commits: std::sync::atomic::AtomicU64,
    /// Findings committed.
    pub findings: std::sync::atomic::AtomicU64,
    /// Messages detected on, over all tasks.
    pub messages: std::sync::atomic::AtomicU64,
    /// Task consumers made again because they delivered nothing while a message waited.
    pub stalled: std::sync::atomic::AtomicU64,
    /// Leases this node held without running their task, released.
    pub orphans: std::sync::atomic::AtomicU64,
}

/// What a node runs with.
pub struct NodeParts {
    /// This node's name in leases (unique per process).
    pub node: String,
    /// What `cluster status` shows about it (its address).
    pub info: String,
    /// The leases.
    pub cluster: Arc<PgCluster>,
    /// Alerting on the shared store.
    pub alerting: Arc<Alerting>,
    /// The stream.
    pub js: async_nats::jetstream::Context,
    /// The stream's name.
    pub stream: String,
    /// Detection.
    pub spec: DetectSpec,
    /// Where derived events are stored (set when the pipeline runs).
    pub pipeline: Option<Pipeline>,
    /// Wall time, for alert housekeeping.
    pub clock: SharedClock,
    /// `[cluster]`.
    pub settings: ClusterSettings,
    /// Its counters, for `/metrics`.
    pub health: Arc<ClusterHealth>,
}

/// A node on its way into the cluster: connected to the stream, with the cluster's relay key,
/// before the collector's pipeline and API exist (the API needs [`Boot::ingest_relay`]).
pub struct Boot {
    parts: NodeParts,
    key: mcpwatch_nats::relay::RelayKey,
    client: async_nats::Client,
    redactor: mcpwatch_core::Redactor,
}

impl Boot {
    /// Connects to `[nats]`, reads the relay key (made by the first node) and loads detection
    /// as `[detection]`, `[rules]` and `[redaction]` say.
    #[allow(
        clippy::too_many_arguments,
        reason = "the parts of a collector a node runs on"
    )]
    pub async fn prepare(
        config: &mcpwatch_core::config::Config,
        settings: ClusterSettings,
        node: String,
        leases: PgCluster,
        alerting: Arc<Alerting>,
        redactor: mcpwatch_core::Redactor,
        clock: SharedClock,
        listen: std::net::SocketAddr,
        health: Arc<ClusterHealth>,
    ) -> anyhow::Result<Boot> {
        let nats = match config.extra.get("nats").and_then(toml::Value::as_table) {
            Some(t) => mcpwatch_nats::config::NatsConfig::from_table(t)
                .map_err(|_| anyhow::anyhow!("invalid [nats] (run `mcpwatch config check`)"))?,
            None => anyhow::bail!("--cluster needs [nats] url or --nats"),
        };
        let Some(url) = nats.url.clone() else {
            anyhow::bail!("--cluster needs [nats] url or --nats");
        };
        let client = mcpwatch_nats::connect(&url, "mcpwatch-cluster", true)
            .await
            .map_err(|e| anyhow::anyhow!("serve --cluster: {e}"))?;
        let leases = Arc::new(leases);
        let l = leases.clone();
        let key = tokio::task::spawn_blocking(move || {
            l.relay_key().map(mcpwatch_nats::relay::RelayKey::new)
        })
        .await?
        .map_err(|e| anyhow::anyhow!("cannot read the cluster's relay key: {e}"))?;
        let (detect, files) = crate::topology::detection_from_config(config)?;
        let rules = mcpwatch_detect::RuleSet::load(&files, detect.default_rules)
            .map_err(|e| anyhow::anyhow!("cannot load rules: {e}"))?;
        let parts = NodeParts {
            info: format!("pid {} on {listen}", std::process::id()),
            node,
            cluster: leases,
            alerting,
            js: async_nats::jetstream::new(client.clone()),
            stream: nats.stream.name.clone(),
            spec: DetectSpec {
                rules,
                settings: detect,
                redactor: redactor.clone(),
                max_clock_skew: config.server.max_clock_skew,
                relay: RelayCheck::Verify(key.clone()),
            },
            pipeline: None,
            clock,
            settings,
            health,
        };
        Ok(Boot {
            parts,
            key,
            client,
            redactor,
        })
    }

    /// The ingest API's sink: to the stream, with the relay MAC.
    pub fn ingest_relay(&self) -> Arc<dyn mcpwatch_core::EventSink> {
        let publisher = mcpwatch_nats::Publisher::new(
            self.client.clone(),
            mcpwatch_nats::publish::DEFAULT_MAX_IN_FLIGHT,
        )
        .relaying(self.key.clone());
        Arc::new(IngestRelay::new(publisher, self.redactor.clone()))
    }

    /// How the node's consumer checks relayed messages.
    pub fn relay_check(&self) -> RelayCheck {
        RelayCheck::Verify(self.key.clone())
    }

    /// Joins the cluster; derived events are stored through `pipeline`.
    pub async fn start(mut self, pipeline: &Pipeline) -> anyhow::Result<Node> {
        self.parts.pipeline = Some(pipeline.clone());
        eprintln!(
            "mcpwatch cluster node {} joining (lease {:?}, snapshots every {:?})",
            self.parts.node, self.parts.settings.lease, self.parts.settings.snapshot_every
        );
        Node::start(self.parts).await
    }
}

/// A running cluster node.
pub struct Node {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Node {
    /// Joins the cluster.
    pub async fn start(parts: NodeParts) -> anyhow::Result<Node> {
        let Some(pipeline) = parts.pipeline.clone() else {
            anyhow::bail!("a cluster node needs the collector's pipeline");
        };
        let names: Vec<String> = Task::all().into_iter().map(Task::name).collect();
        let cluster = parts.cluster.clone();
        tokio::task::spawn_blocking(move || cluster.ensure_tasks(&names))
            .await?
            .map_err(|e| anyhow::anyhow!("cannot set up the cluster's tasks: {e}"))?;
        let (stop, on_stop) = tokio::sync::oneshot::channel();
        let task = tokio::spawn(run_node(parts, pipeline, on_stop));
        Ok(Node { stop, task })
    }

    /// Hands every task over and leaves the cluster.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

struct Running {
    fence: Fence,
    ctl: Arc<Control>,
    thread: std::thread::JoinHandle<Exit>,
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Option<T> {
    tokio::task::spawn_blocking(f).await.ok()
}

async fn run_node(
    parts: NodeParts,
    pipeline: Pipeline,
    mut on_stop: tokio::sync::oneshot::Receiver<()>,
) {
    let deps = Arc::new(TaskDeps {
        js: parts.js.clone(),
        stream: parts.stream.clone(),
        spec: parts.spec.clone(),
        alerting: parts.alerting.clone(),
        pipeline,
        runtime: tokio::runtime::Handle::current(),
        settings: parts.settings.clone(),
        health: parts.health.clone(),
    });
    let total = Task::all().len();
    let lease = parts.settings.lease;
    let mut running: BTreeMap<String, Running> = BTreeMap::new();
    let mut beat = tokio::time::interval(lease / 3);
    beat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut housekeeping = tokio::time::interval(Duration::from_secs(1));
    housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    tracing::info!(node = %parts.node, "joined the cluster");
    loop {
        tokio::select! {
            _ = &mut on_stop => break,
            _ = housekeeping.tick() => {
                let (alerting, now) = (parts.alerting.clone(), parts.clock.now());
                if let Some(Err(e)) = blocking(move || alerting.tick(now)).await {
                    tracing::error!("alert housekeeping failed; will retry: {e}");
                }
                reap(&parts, &mut running).await;
            }
            _ = beat.tick() => {
                reap(&parts, &mut running).await;
                balance(&parts, &deps, &mut running, total).await;
            }
        }
    }
    // Shutdown: hand every task over with a snapshot, then leave.
    for r in running.values() {
        r.ctl.hand_over.store(true, Ordering::Relaxed);
        r.ctl.stop.store(true, Ordering::Relaxed);
    }
    for (name, r) in std::mem::take(&mut running) {
        let exit = blocking(move || r.thread.join()).await;
        tracing::debug!(task = %name, "stopped: {exit:?}");
    }
    let (cluster, node) = (parts.cluster.clone(), parts.node.clone());
    if let Some(Err(e)) = blocking(move || cluster.forget_node(&node)).await {
        tracing::warn!("cannot leave the cluster cleanly (its leases expire instead): {e}");
    }
}

/// Collects tasks that ended; one that was stopped for a hand-over is released.
async fn reap(parts: &NodeParts, running: &mut BTreeMap<String, Running>) {
    let done: Vec<String> = running
        .iter()
        .filter(|(_, r)| r.thread.is_finished())
        .map(|(n, _)| n.clone())
        .collect();
    for name in done {
        let Some(r) = running.remove(&name) else {
            continue;
        };
        let handed_over = r.ctl.hand_over.load(Ordering::Relaxed);
        let exit = blocking(move || r.thread.join()).await;
        parts.health.tasks.fetch_sub(1, Ordering::Relaxed);
        match exit {
            Some(Ok(Exit::Fenced(why))) => {
                parts.health.fenced.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(task = %name, "{why}");
            }
            Some(Ok(Exit::Failed(why))) => tracing::error!(task = %name, "task failed: {why}"),
            Some(Ok(Exit::Stopped)) => {}
            _ => tracing::error!(task = %name, "task thread panicked"),
        }
        if handed_over {
            let (cluster, fence) = (parts.cluster.clone(), r.fence.clone());
            if let Some(Err(e)) = blocking(move || cluster.release(&fence)).await {
                tracing::warn!(task = %name, "cannot release (its lease expires instead): {e}");
            }
        }
    }
}

/// Renews the leases, stops lost tasks, and moves towards this node's share.
async fn balance(
    parts: &NodeParts,
    deps: &Arc<TaskDeps>,
    running: &mut BTreeMap<String, Running>,
    total: usize,
) {
    let (cluster, node, info, lease) = (
        parts.cluster.clone(),
        parts.node.clone(),
        parts.info.clone(),
        parts.settings.lease,
    );
    let held = match blocking(move || cluster.heartbeat(&node, &info, lease)).await {
        Some(Ok(h)) => h,
        Some(Err(e)) => {
            tracing::error!(
                "cluster heartbeat failed (tasks keep running while their leases last): {e}"
            );
            return;
        }
        None => return,
    };
    // A lease this node renews but runs no task for would be held, and its partition left
    // undetected, for as long as the node lives: give it back so it is taken again (by this
    // node or another) from its checkpoint. `running` has every task this node started that
    // has not been reaped, and every reaped one released or lost its lease, so this is only
    // ever a fault somewhere else; it is said loudly.
    for f in held.iter().filter(|f| !running.contains_key(&f.task)) {
        tracing::warn!(
            task = %f.task,
            epoch = f.epoch,
            "this node holds the lease of a task it does not run; releasing it so it is taken again"
        );
        parts.health.orphans.fetch_add(1, Ordering::Relaxed);
        let (cluster, fence) = (parts.cluster.clone(), f.clone());
        if let Some(Err(e)) = blocking(move || cluster.release(&fence)).await {
            tracing::warn!(task = %f.task, "cannot release (its lease expires instead): {e}");
        }
    }
    let mut unsure = 0;
    for (name, r) in running.iter() {
        if !held.iter().any(|f| f == &r.fence) && !r.ctl.hand_over.load(Ordering::Relaxed) {
            // Let the fence decide: the task's next write is refused if the lease is gone.
            tracing::debug!(task = %name, "the heartbeat did not renew the lease; checking it");
            r.ctl.verify.store(true, Ordering::Relaxed);
            unsure += 1;
        }
    }
    if unsure > 0 {
        // Until those tasks know, this node's share is not known either.
        return;
    }
    let cluster = parts.cluster.clone();
    let Some(Ok(live)) = blocking(move || cluster.live_nodes()).await else {
        return;
    };
    let share = total.div_ceil(live.len().max(1));
    let active: Vec<String> = running
        .iter()
        .filter(|(_, r)| !r.ctl.stop.load(Ordering::Relaxed))
        .map(|(n, _)| n.clone())
        .collect();
    if active.len() > share {
        // Hand the surplus over to the nodes that joined.
        for name in active.iter().skip(share) {
            if let Some(r) = running.get(name) {
                r.ctl.hand_over.store(true, Ordering::Relaxed);
                r.ctl.stop.store(true, Ordering::Relaxed);
            }
        }
        return;
    }
    let mut want = share - active.len();
    if want == 0 {
        return;
    }
    let cluster = parts.cluster.clone();
    let Some(Ok((_, tasks))) = blocking(move || cluster.status()).await else {
        return;
    };
    for t in tasks {
        if want == 0 {
            break;
        }
        let free = t.owner.is_none() || t.expires_in_ms.is_none_or(|ms| ms < 0);
        if !free || running.contains_key(&t.task) {
            continue;
        }
        let (cluster, node, name) = (parts.cluster.clone(), parts.node.clone(), t.task.clone());
        let claimed = match blocking(move || cluster.try_acquire(&name, &node, lease)).await {
            Some(Ok(Some(c))) => c,
            Some(Ok(None)) | None => continue,
            Some(Err(e)) => {
                tracing::warn!(task = %t.task, "cannot take the task: {e}");
                continue;
            }
        };
        tracing::info!(
            task = %t.task,
            epoch = claimed.fence.epoch,
            from = claimed.snapshot.as_ref().map_or(0, |(p, _)| *p),
            "took the task"
        );
        let ctl = Arc::new(Control::default());
        let (d, c, fence) = (deps.clone(), ctl.clone(), claimed.fence.clone());
        let thread = std::thread::Builder::new()
            .name(format!("mcpwatch-task-{}", t.task))
            .spawn(move || task::run(&d, claimed, &c));
        match thread {
            Ok(thread) => {
                parts.health.tasks.fetch_add(1, Ordering::Relaxed);
                parts.health.taken.fetch_add(1, Ordering::Relaxed);
                running.insert(t.task.clone(), Running { fence, ctl, thread });
                want -= 1;
            }
            Err(e) => {
                tracing::error!(task = %t.task, "cannot start a thread: {e}");
                let cluster = parts.cluster.clone();
                let _ = blocking(move || cluster.release(&fence)).await;
            }
        }
    }
}
