//! `serve --nats`: the collector's JetStream consumer, wired to the same pipeline as HTTP
//! ingest (mcpwatch-nats does the reading; this module only starts and stops it).
//!
//! On start `serve` connects (a collector that cannot reach its stream says so and exits,
//! unlike an edge, which spools), creates or updates the stream from `[nats]`, and runs one
//! durable consumer until `serve` stops.

use std::sync::Arc;

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::config::Config;
use mcpwatch_nats::config::NatsConfig;
use mcpwatch_nats::consume::{self, ConsumerHealth};
use mcpwatch_server::Pipeline;

/// A running consumer.
pub struct Consumer {
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

impl Consumer {
    /// Starts the consumer `[nats]` asks for; `None` when it names no servers.
    pub async fn start(
        config: &Config,
        pipeline: &Pipeline,
        clock: SharedClock,
        relay: mcpwatch_nats::consume::RelayCheck,
        health: Arc<ConsumerHealth>,
    ) -> anyhow::Result<Option<Consumer>> {
        let nats = match config.extra.get("nats") {
            None => NatsConfig::default(),
            Some(toml::Value::Table(t)) => NatsConfig::from_table(t).map_err(|errors| {
                anyhow::anyhow!(
                    "invalid [nats]:\n{}",
                    errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("\n")
                )
            })?,
            Some(_) => anyhow::bail!("[nats] must be a table"),
        };
        let Some(url) = nats.url.clone() else {
            return Ok(None);
        };
        let client = mcpwatch_nats::connect(&url, "mcpwatch-serve", true)
            .await
            .map_err(|e| {
                anyhow::anyhow!(
                    "serve --nats: {e}; check the URL and that nats-server runs there with JetStream on (-js)"
                )
            })?;
        let js = mcpwatch_nats::async_nats::jetstream::new(client);
        let replicas = mcpwatch_nats::ensure_stream(&js, &nats.stream).await?;
        let mut settings = nats.consumer.clone();
        settings.max_clock_skew = config.server.max_clock_skew;
        settings.relay = relay;
        eprintln!(
            "mcpwatch reading events from NATS at {url} (stream {}, {replicas} replica(s), consumer {})",
            nats.stream.name, settings.durable
        );
        let (stop, on_stop) = tokio::sync::oneshot::channel::<()>();
        let sink: Arc<dyn mcpwatch_core::EventSink> = Arc::new(pipeline.clone());
        let stream = nats.stream.clone();
        let task = tokio::spawn(async move {
            let stopped = async {
                let _ = on_stop.await;
            };
            if let Err(e) = consume::run(js, &stream, settings, sink, clock, health, stopped).await
            {
                tracing::error!("the NATS consumer stopped: {e}");
            }
        });
        Ok(Some(Consumer { stop, task }))
    }

    /// Stops reading; what is in hand and unacknowledged is delivered again later.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let _ = self.task.await;
    }
}

/// The stream's consumer and the cluster node on `/metrics`.
#[derive(Debug, Default)]
pub struct StreamHealth {
    /// The storing consumer's counters.
    pub consumer: Arc<ConsumerHealth>,
    /// The cluster node's.
    pub cluster: Arc<crate::cluster::ClusterHealth>,
}

impl mcpwatch_metrics::HealthSource for StreamHealth {
    fn report(&self, out: &mut Vec<mcpwatch_metrics::HealthValue>) {
        use std::sync::atomic::{AtomicU64, Ordering};
        let v = |a: &AtomicU64| a.load(Ordering::Relaxed) as f64;
        let mut put = |name, help, value, counter| {
            out.push(mcpwatch_metrics::HealthValue {
                name,
                help,
                value,
                counter,
            })
        };
        let (c, k) = (&self.consumer, &self.cluster);
        put(
            "mcpwatch_nats_events_stored",
            "Events from the stream the store committed",
            v(&c.stored),
            true,
        );
        put(
            "mcpwatch_nats_messages_invalid",
            "Stream messages dropped because they can never be stored",
            v(&c.invalid),
            true,
        );
        put(
            "mcpwatch_nats_overloaded",
            "Times the stream consumer waited because the pipeline was full",
            v(&c.overloaded),
            true,
        );
        put(
            "mcpwatch_cluster_tasks",
            "Cluster tasks this node runs",
            v(&k.tasks),
            false,
        );
        put(
            "mcpwatch_cluster_tasks_taken",
            "Cluster tasks this node took (at start, over from a dead node, or handed over)",
            v(&k.taken),
            true,
        );
        put(
            "mcpwatch_cluster_tasks_fenced",
            "Cluster tasks that stood down because their lease was another node's",
            v(&k.fenced),
            true,
        );
        put(
            "mcpwatch_cluster_commits",
            "Fenced detection transactions committed",
            v(&k.commits),
            true,
        );
        put(
            "mcpwatch_cluster_findings",
            "Findings the node's tasks committed",
            v(&k.findings),
            true,
        );
        put(
            "mcpwatch_cluster_messages",
            "Stream messages the node's tasks detected on",
            v(&k.messages),
            true,
        );
        put(
            "mcpwatch_cluster_consumers_stalled",
            "Task consumers made again because they delivered nothing while a message of theirs waited",
            v(&k.stalled),
            true,
        );
        put(
            "mcpwatch_cluster_leases_orphaned",
            "Leases this node held without running their task, released to be taken again",
            v(&k.orphans),
            true,
        );
    }
}
