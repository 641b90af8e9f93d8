//! `mcpwatch cluster status` (the nodes, which tasks each owns, each task's position in the
//! stream and its lag) and `mcpwatch cluster export` (the stream as JSON lines, for
//! `mcpwatch replay --stream`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context};
use mcpwatch_alert::postgres::cluster::{NodeRow, TaskRow};
use mcpwatch_alert::postgres::PgAlertStore;
use mcpwatch_core::config::expand_env;
use mcpwatch_core::paths::process_env;
use mcpwatch_store::postgres::{hide_password, is_url};

use crate::term::sanitize;

/// `mcpwatch cluster …`.
#[derive(clap::Subcommand)]
pub enum ClusterCommand {
    /// The nodes of a `serve --cluster` deployment, the tasks each owns, and how far each task
    /// has read the stream.
    Status(StatusArgs),
    /// Write every message of the stream, in stream order, to a file for `replay --stream`.
    Export(ExportArgs),
}

/// `mcpwatch cluster status` options.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The cluster's PostgreSQL store (`${NAME}` is read from the environment).
    #[arg(long, value_name = "URL")]
    pub store: String,
    /// The cluster's NATS: with it, each task's lag is measured in the stream itself (the
    /// next message of its partition past its position, and how far behind the stream's end
    /// that is).
    #[arg(long, value_name = "URL")]
    pub nats: Option<String>,
    /// The stream.
    #[arg(long, default_value = mcpwatch_nats::stream::DEFAULT_STREAM)]
    pub stream: String,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// `mcpwatch cluster export` options.
#[derive(clap::Args)]
pub struct ExportArgs {
    /// The cluster's NATS.
    #[arg(long, value_name = "URL")]
    pub nats: String,
    /// The stream.
    #[arg(long, default_value = mcpwatch_nats::stream::DEFAULT_STREAM)]
    pub stream: String,
    /// Where to write it (replaced atomically).
    #[arg(long, value_name = "FILE.jsonl")]
    pub out: PathBuf,
}

/// Runs a `cluster` subcommand.
pub async fn run(c: ClusterCommand) -> anyhow::Result<ExitCode> {
    match c {
        ClusterCommand::Status(args) => status(args).await,
        ClusterCommand::Export(args) => export(&args).await,
    }
}

async fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let store = args.store.clone();
    let (nodes, tasks) = tokio::task::spawn_blocking(move || read_status(&store)).await??;
    let lags = match &args.nats {
        Some(url) => Some(measure_lags(url, &args.stream, &tasks).await?),
        None => None,
    };
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&to_json(&nodes, &tasks, lags.as_ref()))?
        );
    } else {
        print!("{}", render(&nodes, &tasks, lags.as_ref()));
    }
    Ok(ExitCode::SUCCESS)
}

/// How far a task is behind, read from the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Lag {
    /// The stream's last sequence.
    last: u64,
    /// The sequence of the first message of the task's partition it has not committed.
    next: Option<u64>,
    /// How old that message is, in ms.
    age_ms: Option<i64>,
}

impl Lag {
    /// Stream messages from the first unprocessed one to the end (0 when caught up).
    fn behind(&self) -> u64 {
        self.next.map_or(0, |n| self.last.saturating_sub(n) + 1)
    }
}

/// Each task's lag: the next message of its filter past its position (a direct look-up on the
/// stream, which says exactly whether the task has read everything).
async fn measure_lags(
    url: &str,
    stream: &str,
    tasks: &[TaskRow],
) -> anyhow::Result<std::collections::BTreeMap<String, Lag>> {
    mcpwatch_nats::parse_urls(url).map_err(|e| anyhow::anyhow!("--nats: {e}"))?;
    let client = mcpwatch_nats::connect(url, "mcpwatch-cluster-status", true)
        .await
        .map_err(|e| anyhow::anyhow!("--nats: {e}"))?;
    let js = mcpwatch_nats::async_nats::jetstream::new(client);
    let mut s = js
        .get_stream(stream)
        .await
        .with_context(|| format!("cannot open stream {stream}"))?;
    let last = s
        .info()
        .await
        .context("cannot read the stream")?
        .state
        .last_sequence;
    let now = mcpwatch_core::clock::Clock::now(&mcpwatch_core::SystemClock);
    let mut out = std::collections::BTreeMap::new();
    for t in tasks {
        let Some(task) = mcpwatch_nats::subject::Task::parse(&t.task) else {
            continue;
        };
        let next = mcpwatch_nats::consume::next_message(&s, &task.filter(), t.position + 1).await;
        let lag = match next {
            Ok(Some((seq, published))) => Lag {
                last,
                next: Some(seq),
                age_ms: Some((now.as_micros() - published.as_micros()) / 1_000),
            },
            Ok(None) => Lag {
                last,
                next: None,
                age_ms: None,
            },
            Err(e) => anyhow::bail!("cannot read task {}'s lag from the stream: {e}", t.task),
        };
        out.insert(t.task.clone(), lag);
    }
    Ok(out)
}

fn read_status(store: &str) -> anyhow::Result<(Vec<NodeRow>, Vec<TaskRow>)> {
    let args_store = store;
    let url = expand_env(args_store, &process_env).map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    if !is_url(&url) {
        bail!(
            "--store takes the cluster's PostgreSQL URL (postgres://user:password@host:5432/database), not `{}`",
            sanitize(&hide_password(&url))
        );
    }
    let store = PgAlertStore::open(&url, "mcpwatch-cluster-status", Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("cannot open the cluster's store: {e}"))?;
    store
        .cluster()
        .status()
        .map_err(|e| anyhow::anyhow!("cannot read the cluster's state: {e}"))
}

type Lags = std::collections::BTreeMap<String, Lag>;

fn to_json(nodes: &[NodeRow], tasks: &[TaskRow], lags: Option<&Lags>) -> serde_json::Value {
    serde_json::json!({
        "nodes": nodes.iter().map(|n| serde_json::json!({
            "node": n.node, "info": n.info, "alive": n.alive,
            "started_at": mcpwatch_core::time_fmt::format_rfc3339(n.started_at), "expires_in_ms": n.expires_in_ms,
            "tasks": tasks.iter().filter(|t| t.owner.as_deref() == Some(n.node.as_str())).map(|t| t.task.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "tasks": tasks.iter().map(|t| serde_json::json!({
            "task": t.task, "owner": t.owner, "epoch": t.epoch, "lease_expires_in_ms": t.expires_in_ms,
            "position": t.position, "snapshot_position": t.snapshot_position,
            "snapshot_bytes": t.snapshot_bytes,
            "lag": lags.and_then(|l| l.get(&t.task)).map(|l| serde_json::json!({
                "behind": l.behind(), "next": l.next, "stream_last": l.last, "oldest_ms": l.age_ms,
            })),
        })).collect::<Vec<_>>(),
    })
}

fn render(nodes: &[NodeRow], tasks: &[TaskRow], lags: Option<&Lags>) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    let _ = writeln!(out, "{} node(s):", nodes.len());
    for n in nodes {
        let owned: Vec<&str> = tasks
            .iter()
            .filter(|t| t.owner.as_deref() == Some(n.node.as_str()))
            .map(|t| t.task.as_str())
            .collect();
        let _ = writeln!(
            out,
            "  {} ({}){}: {} task(s): {}",
            sanitize(&n.node),
            sanitize(&n.info),
            if n.alive { "" } else { " GONE" },
            owned.len(),
            owned.join(" ")
        );
    }
    let unowned = tasks
        .iter()
        .filter(|t| t.owner.is_none() || t.expires_in_ms.is_none_or(|ms| ms < 0))
        .count();
    let behind = |t: &TaskRow| lags.and_then(|l| l.get(&t.task)).map(Lag::behind);
    match lags {
        Some(l) => {
            let late = l.values().filter(|l| l.next.is_some()).count();
            let _ = writeln!(
                out,
                "{} task(s), {unowned} without a live owner, {late} not at the stream's end ({}):",
                tasks.len(),
                l.values().next().map_or(0, |l| l.last)
            );
        }
        None => {
            let _ = writeln!(
                out,
                "{} task(s), {unowned} without a live owner (pass --nats URL to see their lag):",
                tasks.len()
            );
        }
    }
    let _ = writeln!(
        out,
        "  {:<10} {:<28} {:>5} {:>12} {:>8} {:>12} {:>10}",
        "TASK", "OWNER", "EPOCH", "POSITION", "LAG", "SNAPSHOT AT", "LEASE"
    );
    for t in tasks {
        let lease = match t.expires_in_ms {
            Some(ms) if ms >= 0 && t.owner.is_some() => format!("{:.1}s", ms as f64 / 1e3),
            Some(_) if t.owner.is_some() => "expired".to_owned(),
            _ => "-".to_owned(),
        };
        let _ = writeln!(
            out,
            "  {:<10} {:<28} {:>5} {:>12} {:>8} {:>12} {:>10}",
            t.task,
            sanitize(t.owner.as_deref().unwrap_or("-")),
            t.epoch,
            t.position,
            behind(t).map_or_else(|| "?".to_owned(), |p| p.to_string()),
            t.snapshot_position,
            lease
        );
    }
    out
}

async fn export(args: &ExportArgs) -> anyhow::Result<ExitCode> {
    mcpwatch_nats::parse_urls(&args.nats).map_err(|e| anyhow::anyhow!("--nats: {e}"))?;
    let client = mcpwatch_nats::connect(&args.nats, "mcpwatch-cluster-export", true)
        .await
        .map_err(|e| anyhow::anyhow!("--nats: {e}"))?;
    let js = mcpwatch_nats::async_nats::jetstream::new(client);
    let n = crate::cluster::export_stream(&js, &args.stream, &args.out)
        .await
        .with_context(|| format!("cannot export stream {}", args.stream))?;
    eprintln!(
        "{n} message(s) of stream {} written to {}",
        sanitize(&args.stream),
        sanitize(&args.out.display().to_string())
    );
    Ok(ExitCode::SUCCESS)
}
