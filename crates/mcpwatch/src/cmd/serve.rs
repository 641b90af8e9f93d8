//! `mcpwatch serve`: wires config, store, pipeline and API into the collector and runs it.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{bail, Context};
use mcpwatch_core::auth::Authenticator;
use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::config::Config;
use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::paths::{default_data_dir, process_env};
use mcpwatch_core::SystemClock;
use mcpwatch_server::http::{router, AppState, IngestLimits};
use mcpwatch_server::{Pipeline, PipelineConfig, WriterHandle};
use mcpwatch_store::postgres::PgStore;
use mcpwatch_store::sqlite::SqliteStore;
use mcpwatch_store::{RetentionPolicy, Store};

use crate::topology::{self, RulesHandle, Topology};

/// `mcpwatch serve` options. Flags override the config file.
#[derive(clap::Args)]
pub struct ServeArgs {
    /// Configuration file (TOML); see `mcpwatch config check`.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Address to listen on [default: 127.0.0.1:7878].
    #[arg(long)]
    pub listen: Option<SocketAddr>,
    /// Data directory [default: $MCPWATCH_DATA_DIR, else the platform data dir].
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Keep events in PostgreSQL, e.g. postgres://mcpwatch:${PGPASSWORD}@db:5432/mcpwatch
    /// (`${NAME}` is read from the environment) [default: [store] url, else SQLite in the data
    /// directory].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// Read events from NATS JetStream at this URL (several separated by commas), as well as
    /// from the HTTP ingest API; the stream is created or updated on start [default: [nats] url].
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// Run as one node of a cluster: with --nats and a PostgreSQL --store, several `serve`
    /// detect as one, each task (partition of users, servers, IPs) on one node at a time,
    /// taken over when its node dies [default: [cluster] enabled].
    #[arg(long)]
    pub cluster: bool,
}

pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging("info");
    let mut config = super::config::load_for_command(args.config.as_deref())?;
    if let Some(l) = args.listen {
        config.server.listen = l;
    }
    if let Some(d) = args.data_dir {
        config.store.data_dir = Some(d);
    }
    if let Some(url) = args.store {
        if !mcpwatch_store::postgres::is_url(&url) {
            bail!("--store takes a PostgreSQL URL (postgres://user:password@host:5432/database); for SQLite pass --data-dir DIR");
        }
        config.store.url = Some(url);
    }
    if let Some(url) = args.nats {
        mcpwatch_nats::parse_urls(&url).map_err(|e| anyhow::anyhow!("--nats: {e}"))?;
        let section = config
            .extra
            .entry("nats")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section.as_table_mut() {
            Some(t) => {
                t.insert("url".into(), toml::Value::String(url));
            }
            None => bail!("[nats] must be a table"),
        }
    }
    if args.cluster {
        let section = config
            .extra
            .entry("cluster")
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        match section.as_table_mut() {
            Some(t) => {
                t.insert("enabled".into(), toml::Value::Boolean(true));
            }
            None => bail!("[cluster] must be a table"),
        }
    }
    let collector = Collector::start(config, Arc::new(SystemClock)).await?;
    eprintln!(
        "mcpwatch collector listening on http://{} (events in {}, alerts in {}, state in {})",
        collector.addr,
        collector.events_in,
        collector.alerts_in,
        collector.data_dir.display()
    );
    reload_on_sighup(collector.rules.clone());
    shutdown_signal().await;
    eprintln!("shutting down: finishing pending writes");
    collector.stop().await;
    Ok(ExitCode::SUCCESS)
}

/// A running collector.
pub struct Collector {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Where it keeps data.
    pub data_dir: PathBuf,
    /// Where the events are: the data directory, or the PostgreSQL URL (password hidden).
    pub events_in: String,
    /// Where the alerts are: `alerts.db`, or the PostgreSQL URL (password hidden).
    pub alerts_in: String,
    shutdown: tokio::sync::oneshot::Sender<()>,
    server: tokio::task::JoinHandle<()>,
    writer: WriterHandle,
    /// The JetStream consumer, when `[nats]` names servers.
    nats: Option<super::nats::Consumer>,
    /// The cluster node, with `--cluster`.
    node: Option<crate::cluster::Node>,
    /// Reloads the rule files.
    pub rules: RulesHandle,
}

impl Collector {
    /// Opens the store, starts the pipeline and the API.
    pub async fn start(config: Config, clock: SharedClock) -> anyhow::Result<Collector> {
        let auth = Authenticator::build(&config.auth, &process_env).map_err(|errs| {
            anyhow::anyhow!(
                "invalid [auth]: {}",
                errs.iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            )
        })?;
        let listen = config.server.listen;
        if !listen.ip().is_loopback() && !auth.enabled() {
            bail!(
                "refusing to listen on {listen} without API tokens: anyone who can reach it could read and write events. \
                 Add [[auth.tokens]] to the config (see README), or listen on 127.0.0.1"
            );
        }
        let data_dir = config
            .store
            .data_dir
            .clone()
            .unwrap_or_else(|| default_data_dir(&process_env));
        let cluster = crate::cluster::ClusterSettings::from_config(&config)?;
        if cluster.enabled {
            if config.store.url.is_none() {
                bail!("--cluster needs the shared PostgreSQL store: pass --store postgres://… (or set [store] url)");
            }
            if !matches!(config.extra.get("nats"), Some(toml::Value::Table(t)) if t.contains_key("url"))
            {
                bail!("--cluster needs the stream the nodes share: pass --nats nats://… (or set [nats] url)");
            }
        }
        let (store, events_in) = open_store(&config, &data_dir).await?;
        let redactor = config
            .redaction
            .build()
            .map_err(|e| anyhow::anyhow!("invalid [redaction]: {e:?}"))?;
        let pipeline_config = PipelineConfig {
            max_pending_events: config.server.max_pending_events,
            retention: RetentionPolicy {
                max_age: config.retention.max_age,
                max_size: config.retention.max_size,
            },
            retention_interval: config.retention.interval,
        };
        let auth = Arc::new(auth);
        let ctx = topology::Context {
            config: config.clone(),
            data_dir: data_dir.clone(),
            clock: clock.clone(),
            auth: auth.clone(),
            reader: store.reader(),
            stream_health: nats_named(&config).then(Arc::default),
        };
        let topology = Topology::build(&ctx, cluster.enabled)?;
        let stream_health = ctx.stream_health.clone().unwrap_or_default();
        let boot = match (cluster.enabled, topology.cluster) {
            (true, Some((node, leases))) => Some(
                crate::cluster::Boot::prepare(
                    &config,
                    cluster,
                    node,
                    leases,
                    topology.alerting,
                    redactor.clone(),
                    clock.clone(),
                    listen,
                    stream_health.cluster.clone(),
                )
                .await?,
            ),
            _ => None,
        };
        let alerts_in = topology.alerts_in.clone();
        let (pipeline, writer) = Pipeline::start(
            store.writer()?,
            redactor,
            clock.clone(),
            pipeline_config,
            topology.stages,
        )
        .context("cannot start the writer thread")?;
        let mut app = router(AppState {
            ingest_to: boot.as_ref().map(crate::cluster::Boot::ingest_relay),
            pipeline: pipeline.clone(),
            reader: store.reader(),
            auth,
            clock,
            limits: IngestLimits {
                max_body_bytes: usize::try_from(config.server.max_body_bytes).unwrap_or(usize::MAX),
                max_batch_events: config.server.max_batch_events,
                max_clock_skew: config.server.max_clock_skew,
            },
            ids: Arc::new(IdGenerator::new()),
        });
        for route in topology.routes {
            app = app.merge(route(&pipeline));
        }
        let relay = boot.as_ref().map_or(
            mcpwatch_nats::consume::RelayCheck::Refuse,
            crate::cluster::Boot::relay_check,
        );
        let nats = super::nats::Consumer::start(
            &config,
            &pipeline,
            ctx.clock.clone(),
            relay,
            stream_health.consumer.clone(),
        )
        .await?;
        let node = match boot {
            Some(boot) => Some(boot.start(&pipeline).await?),
            None => None,
        };
        drop(pipeline);
        let listener = tokio::net::TcpListener::bind(listen).await.with_context(|| {
            format!("cannot listen on {listen}; is another collector running? Pass --listen 127.0.0.1:PORT to use another port")
        })?;
        let addr = listener.local_addr()?;
        let (shutdown, on_shutdown) = tokio::sync::oneshot::channel::<()>();
        let limits = mcpwatch_listen::Limits {
            header_read_timeout: config.server.header_read_timeout,
            body_read_timeout: config.server.body_read_timeout,
            max_connections: config.server.max_connections,
            max_connections_per_address: config.server.max_connections_per_address,
        };
        let server = tokio::spawn(mcpwatch_listen::serve(
            listener,
            app,
            limits,
            Arc::default(),
            async {
                let _ = on_shutdown.await;
            },
        ));
        Ok(Collector {
            addr,
            data_dir,
            events_in,
            alerts_in,
            shutdown,
            server,
            writer,
            nats,
            node,
            rules: topology.rules,
        })
    }

    /// Stops accepting requests, lets open ones finish, commits what is pending.
    pub async fn stop(self) {
        if let Some(node) = self.node {
            node.stop().await;
        }
        let _ = self.shutdown.send(());
        // The consumer holds the pipeline: stop it first, leaving what it has not acknowledged
        // for JetStream to deliver again.
        if let Some(nats) = self.nats {
            nats.stop().await;
        }
        // Open live streams (SSE) never end by themselves: give requests a while, then cut them.
        let mut server = self.server;
        if tokio::time::timeout(Duration::from_secs(5), &mut server)
            .await
            .is_err()
        {
            server.abort();
            let _ = server.await;
        }
        let writer = self.writer;
        let _ = tokio::task::spawn_blocking(move || writer.join()).await;
    }
}

/// The event store the config names: PostgreSQL at `[store] url` (or `--store`), else the SQLite
/// file in the data directory. Also says where the events are, for the start-up line.
/// Whether `[nats]` names servers (so `serve` reads the stream).
fn nats_named(config: &Config) -> bool {
    matches!(config.extra.get("nats"), Some(toml::Value::Table(t)) if t.contains_key("url"))
}

async fn open_store(
    config: &Config,
    data_dir: &std::path::Path,
) -> anyhow::Result<(Box<dyn Store>, String)> {
    let url = config
        .store
        .expanded_url(&process_env)
        .map_err(|e| anyhow::anyhow!("invalid [store]: {e}"))?;
    let Some(url) = url else {
        let store = SqliteStore::open(data_dir, config.store.durability)
            .with_context(|| format!("cannot open the store in {}", data_dir.display()))?;
        return Ok((Box::new(store), data_dir.display().to_string()));
    };
    let writer = writer_name();
    // Connecting and migrating block: off the async threads.
    let store = tokio::task::spawn_blocking(move || PgStore::open(&url, &writer))
        .await
        .context("the store task failed")?
        .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL store: {e}"))?;
    let shown = store.shown_url().to_owned();
    Ok((Box::new(store), shown))
}

/// The name this process's rollup rows carry in a shared store: the host name, so that the
/// nodes of a cluster add to rows of their own. Two processes with one name are still counted
/// right (the rows are additive), they only contend on the same rows.
fn writer_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .or_else(|| process_env("HOSTNAME"))
        .unwrap_or_else(|| "mcpwatch".to_owned());
    host.chars().take(128).collect()
}

/// SIGHUP reloads the rule files; a bad file is rejected whole and the running rules stay.
fn reload_on_sighup(rules: RulesHandle) {
    #[cfg(unix)]
    tokio::spawn(async move {
        let Ok(mut hup) = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        else {
            return;
        };
        while hup.recv().await.is_some() {
            let rules = rules.clone();
            match tokio::task::spawn_blocking(move || rules.reload()).await {
                Ok(Ok(n)) => tracing::info!(rules = n, "SIGHUP: rules reloaded"),
                Ok(Err(e)) => {
                    tracing::error!("SIGHUP: rules not reloaded, the running rules stay:\n{e}")
                }
                Err(e) => tracing::error!(error = %e, "SIGHUP: reload failed"),
            }
        }
    });
    #[cfg(not(unix))]
    let _ = rules;
}

/// Logs to stderr at `$MCPWATCH_LOG`, else at `default_level`.
pub(crate) fn init_logging(default_level: &str) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCPWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_level));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
}

/// Resolves on Ctrl-C or SIGTERM.
pub(crate) async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
}
