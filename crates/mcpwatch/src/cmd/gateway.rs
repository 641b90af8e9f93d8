//! `mcpwatch gateway`: the Streamable HTTP proxy of mcpwatch-capture, with auth, policy and
//! rate limits from the config file's `[gateway]` section, flags for the simple case.
//!
//! `mcpwatch gateway --upstream everything=http://127.0.0.1:3001/mcp` serves it, unauthenticated,
//! at http://127.0.0.1:7880/mcp/everything; `--config FILE` adds keys, JWT issuers, policy and
//! limits. Prints `listening on http://ADDR` to stderr once it accepts connections. Like
//! `serve`, it refuses a non-loopback address without authentication, unless told
//! `--allow-unauthenticated-network`.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use mcpwatch_capture::delivery::DeliveryConfig;
use mcpwatch_capture::gateway::config::DEFAULT_LISTEN;
use mcpwatch_capture::gateway::{GatewayConfig, GatewayRun};
use mcpwatch_core::paths::{default_collector, default_data_dir, process_env};
use mcpwatch_core::SystemClock;

/// `mcpwatch gateway` options; flags override the config file.
#[derive(clap::Args)]
pub struct GatewayArgs {
    /// Config file with a `[gateway]` section (upstreams, auth, policy, rate_limits, limits).
    #[arg(long)]
    config: Option<PathBuf>,
    /// Address to listen on [default: gateway.listen or 127.0.0.1:7880].
    #[arg(long)]
    listen: Option<String>,
    /// An upstream MCP server, served at /mcp/NAME: `--upstream NAME=URL` (repeatable).
    #[arg(long, value_name = "NAME=URL")]
    upstream: Vec<String>,
    /// Collector URL [default: gateway.collector, $MCPWATCH_COLLECTOR or http://127.0.0.1:7878]. Token: $MCPWATCH_TOKEN.
    #[arg(long)]
    collector: Option<String>,
    /// Publish events to NATS JetStream at this URL [default: [sink] nats]; see `wrap --nats`.
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
    /// Where tool pins and the delivery spool live [default: gateway.data_dir, $MCPWATCH_DATA_DIR or the platform data dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Serve without authentication on an address other machines can reach. Without it, a
    /// non-loopback --listen needs [[gateway.auth.api_keys]] or [[gateway.auth.jwt]].
    #[arg(long)]
    allow_unauthenticated_network: bool,
}

/// Runs the gateway until SIGINT or SIGTERM.
pub async fn run(args: GatewayArgs) -> anyhow::Result<ExitCode> {
    let filter = tracing_subscriber::EnvFilter::try_from_env("MCPWATCH_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .try_init();
    let file = super::config::load_for_command(args.config.as_deref())?;
    let shown = args
        .config
        .as_ref()
        .map_or("flags".to_string(), |p| p.display().to_string());
    let mut cfg = match file.extra.get("gateway").map(|v| v.as_table()) {
        Some(Some(t)) => GatewayConfig::from_table(t).map_err(|errors| invalid(&shown, &errors))?,
        Some(None) => bail!("{shown}: gateway must be a table: write [gateway]"),
        None => GatewayConfig::default(),
    };
    for u in &args.upstream {
        let Some((name, url)) = u.split_once('=') else {
            bail!("--upstream {u:?}: write NAME=URL, e.g. --upstream everything=http://127.0.0.1:3001/mcp");
        };
        cfg.upstreams.insert(name.to_string(), url.to_string());
    }
    let built = cfg
        .build(&process_env)
        .map_err(|errors| invalid(&shown, &errors))?;
    let listen = match (&args.listen, cfg.listen) {
        (Some(l), _) => l.clone(),
        (None, Some(a)) => a.to_string(),
        (None, None) => DEFAULT_LISTEN.to_string(),
    };
    let env = |k: &str| process_env(k);
    let sink = match file.extra.get("sink") {
        Some(v) => SinkSection::from_value(v).map_err(|errors| invalid(&shown, &errors))?,
        None => SinkSection::default(),
    };
    let explicit_collector = args.collector.is_some() || cfg.collector.is_some();
    let collector = args
        .collector
        .or(cfg.collector.clone())
        .unwrap_or_else(|| default_collector(&env));
    let data_dir = args
        .data_dir
        .or(cfg.data_dir.clone())
        .unwrap_or_else(|| default_data_dir(&env));
    let redactor = file
        .redaction
        .build()
        .map_err(|errors| invalid(&shown, &errors))?;
    let mut delivery = DeliveryConfig::new(collector);
    delivery.token = process_env("MCPWATCH_TOKEN");
    delivery.nats = args.nats.or(sink.nats);
    delivery.nats_and_http = explicit_collector;
    let names: Vec<String> = built.upstreams.keys().cloned().collect();
    let auth = if built.auth.enabled() {
        "on"
    } else {
        "off (no keys or JWT issuers configured)"
    };
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}; pick a free address with --listen"))?;
    let addr = listener
        .local_addr()
        .context("the listener has no address")?;
    if !addr.ip().is_loopback() && !built.auth.enabled() && !args.allow_unauthenticated_network {
        bail!(
            "refusing to listen on {addr} without authentication: anyone who can reach it could call every upstream as `anonymous`. \
             Add [[gateway.auth.api_keys]] or [[gateway.auth.jwt]] to the config (see README), listen on 127.0.0.1, \
             or pass --allow-unauthenticated-network if that is what you mean"
        );
    }
    eprintln!(
        "mcpwatch gateway listening on http://{addr} (upstreams: {}; auth {auth})",
        names
            .iter()
            .map(|n| format!("/mcp/{n}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let run = GatewayRun {
        built,
        limits: cfg.limits.clone(),
        delivery,
        data_dir: Some(data_dir),
        classification: Default::default(),
        redactor,
    };
    mcpwatch_capture::gateway::serve(listener, run, Arc::new(SystemClock), shutdown_signal())
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// `[sink]`: where the gateway's events go besides (or instead of) the collector.
#[derive(Default)]
struct SinkSection {
    /// NATS servers to publish events to a JetStream stream.
    nats: Option<String>,
}

impl SinkSection {
    fn from_value(v: &toml::Value) -> Result<Self, Vec<mcpwatch_core::config::ConfigError>> {
        use mcpwatch_core::config::ConfigError;
        let Some(table) = v.as_table() else {
            return Err(vec![ConfigError::at(
                "sink",
                "must be a table: write [sink]",
            )]);
        };
        let mut out = SinkSection::default();
        let mut errors = Vec::new();
        for (key, value) in table {
            match (key.as_str(), value) {
                ("nats", toml::Value::String(s)) => match mcpwatch_nats::parse_urls(s) {
                    Ok(_) => out.nats = Some(s.clone()),
                    Err(e) => errors.push(ConfigError::at("sink.nats", e.to_string())),
                },
                ("nats", _) => errors.push(ConfigError::at(
                    "sink.nats",
                    "must be a string such as \"nats://127.0.0.1:4222\"",
                )),
                _ => errors.push(ConfigError::at(
                    format!("sink.{key}"),
                    "unknown key; expected nats",
                )),
            }
        }
        if errors.is_empty() {
            Ok(out)
        } else {
            Err(errors)
        }
    }
}

fn invalid(file: &str, errors: &[mcpwatch_core::config::ConfigError]) -> anyhow::Error {
    let lines: Vec<String> = errors.iter().map(|e| format!("{file}: {e}")).collect();
    anyhow::anyhow!("invalid gateway config:\n{}", lines.join("\n"))
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => std::future::pending::<()>().await,
    }
}
