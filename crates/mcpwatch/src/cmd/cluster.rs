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
        ClusterCommand::Status(args) => {
            tokio::task::spawn_blocking(move || status(&args)).await?
        }
        ClusterCommand::Export(args) => export(&args).await,
    }
}

fn status(args: &StatusArgs) -> anyhow::Result<ExitCode> {
    let url = expand_env(&args.store, &process_env).map_err(|e| anyhow::anyhow!("--store: {e}"))?;
    if !is_url(&url) {
        bail!(
            "--store takes the cluster's PostgreSQL URL (postgres://user:password@host:5432/database), not `{}`",
            sanitize(&hide_password(&url))
        );
    }
    let store = PgAlertStore::open(&url, "mcpwatch-cluster-status", Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("cannot open the cluster's store: {e}"))?;
    let (nodes, tasks) = store
        .cluster()
        .status()
        .map_err(|e| anyhow::anyhow!("cannot read the cluster's state: {e}"))?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&to_json(&nodes, &tasks))?);
    } else {
        print!("{}", render(&nodes, &tasks));
    }
    Ok(ExitCode::SUCCESS)
}

fn to_json(nodes: &[NodeRow], tasks: &[TaskRow]) -> serde_json::Value {
    serde_json::json!({
        "nodes": nodes.iter().map(|n| serde_json::json!({
            "node": n.node, "info": n.info, "alive": n.alive,
            "started_at": mcpwatch_core::time_fmt::format_rfc3339(n.started_at), "expires_in_ms": n.expires_in_ms,
            "tasks": tasks.iter().filter(|t| t.owner.as_deref() == Some(n.node.as_str())).map(|t| t.task.clone()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "tasks": tasks.iter().map(|t| serde_json::json!({
            "task": t.task, "owner": t.owner, "epoch": t.epoch, "lease_expires_in_ms": t.expires_in_ms,
            "position": t.position, "lag": t.pending, "snapshot_position": t.snapshot_position,
            "snapshot_bytes": t.snapshot_bytes,
        })).collect::<Vec<_>>(),
    })
}

fn render(nodes: &[NodeRow], tasks: &[TaskRow]) -> String {
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
    let lag: u64 = tasks.iter().filter_map(|t| t.pending).sum();
    let _ = writeln!(
        out,
        "{} task(s), {unowned} without a live owner, {lag} message(s) behind in all:",
        tasks.len()
    );
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
            t.pending.map_or_else(|| "?".to_owned(), |p| p.to_string()),
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
