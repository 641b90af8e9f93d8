//! `mcpwatch wrap`: runs one stdio MCP server behind the capture relay (mcpwatch-capture).
//!
//! Resolves flags and environment (identity, collector, data dir, token) into a `WrapConfig`
//! and exits with the server's exit code. Diagnostics go to stderr, which the MCP client
//! already collects as the server's log; stdout belongs to the protocol. `mcpwatch spool`
//! resolves the data dir, collector and token with the same functions, so it finds and
//! delivers what `wrap` spooled.

use std::ffi::OsString;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_capture::wrap::{parse_duration, resolve_user, WrapConfig};
use mcpwatch_core::paths::{default_collector, default_data_dir, process_env};
use mcpwatch_core::SystemClock;

/// `mcpwatch wrap` options.
#[derive(clap::Args)]
pub struct WrapArgs {
    /// Name of the server in events (`metadata.server`, source `wrap:<name>`) [default: the command's name].
    #[arg(long)]
    name: Option<String>,
    /// Who is using the server [default: $MCPWATCH_USER, else the OS user].
    #[arg(long)]
    user: Option<String>,
    /// Collector URL [default: $MCPWATCH_COLLECTOR or http://127.0.0.1:7878]. Token: $MCPWATCH_TOKEN.
    #[arg(long)]
    collector: Option<String>,
    /// Publish events to NATS JetStream at this URL (several separated by commas), instead of
    /// posting them to the collector; also to the collector when --collector is given too.
    /// The stream is made by `mcpwatch serve --nats`.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Where tool pins and the delivery spool live [default: $MCPWATCH_DATA_DIR or the platform data dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// A request without a response after this long is recorded as a timeout.
    #[arg(long, default_value = "60s", value_parser = parse_duration)]
    request_timeout: Duration,
    /// The MCP server command and its arguments, after `--`.
    #[arg(last = true, required = true, value_name = "CMD")]
    command: Vec<OsString>,
}

/// Runs the server behind the relay; exits with its code (128 + signal if it was killed).
pub async fn run(args: WrapArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCPWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let env = |k: &str| process_env(k);
    let user = resolve_user(args.user, &env);
    let explicit_collector = args.collector.is_some();
    let mut cfg = WrapConfig::new(
        args.command,
        user,
        collector(args.collector),
        data_dir(args.data_dir),
    );
    cfg.delivery.nats_and_http = explicit_collector;
    cfg.delivery.nats = args.nats;
    if let Some(name) = args.name {
        cfg.name = name;
    }
    cfg.request_timeout = args.request_timeout;
    cfg.delivery.token = token(None);
    let code = mcpwatch_capture::wrap::run(cfg, Arc::new(SystemClock)).await?;
    Ok(ExitCode::from(code))
}

/// Where pins and spools live: `--data-dir`, else `$MCPWATCH_DATA_DIR`, else the platform data dir.
pub fn data_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(|| default_data_dir(&process_env))
}

/// Where events go: `--collector`, else `$MCPWATCH_COLLECTOR`, else `http://127.0.0.1:7878`.
pub fn collector(flag: Option<String>) -> String {
    flag.unwrap_or_else(|| default_collector(&process_env))
}

/// The ingest token: the flag, else `$MCPWATCH_TOKEN`; none when empty.
pub fn token(flag: Option<String>) -> Option<String> {
    flag.or_else(|| process_env("MCPWATCH_TOKEN"))
        .filter(|t| !t.is_empty())
}
