//! `mcpwatch`: the one binary. Parses the command line and hands each subcommand to its
//! module under `cmd/`, which wires the pipeline stages together (like Vector's topology).

mod cluster;
mod cmd;
mod demo;
mod term;
mod topology;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Events are trees of small allocations made on one thread and freed on another; measured
/// with benches/ingest.rs, malloc and free were a quarter of the collector's CPU under load.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Runtime monitoring and threat detection for MCP deployments.
#[derive(Parser)]
#[command(name = "mcpwatch", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector: ingest API, store, queries, live stream.
    Serve(cmd::serve::ServeArgs),
    /// Run a stdio MCP server behind the capture relay: `mcpwatch wrap --name N -- CMD ARGS…`.
    Wrap(cmd::wrap::WrapArgs),
    /// Streamable HTTP proxy in front of MCP servers at /mcp/NAME, with auth, policy and rate limits.
    Gateway(cmd::gateway::GatewayArgs),
    /// Query or tail events from a running collector.
    Events(Box<cmd::events::EventsArgs>),
    /// Alert operations on a running collector: list, ack, resolve, silence, test a channel.
    Alerts(cmd::alerts::AlertsArgs),
    /// Configuration file tools.
    #[command(subcommand)]
    Config(cmd::config::ConfigCommand),
    /// Rule file tools: `mcpwatch rules check FILE…`.
    #[command(subcommand)]
    Rules(cmd::rules::RulesCommand),
    /// What `wrap` spooled while the collector was away: `status`, and `flush` to deliver it.
    #[command(subcommand)]
    Spool(cmd::spool::SpoolCommand),
    /// Store tools: `migrate` a SQLite history into PostgreSQL.
    #[command(subcommand)]
    Store(cmd::store::StoreCommand),
    /// MCP client configs on this machine: list their servers, `watch` or `unwatch` them.
    Clients(cmd::clients::ClientsArgs),
    /// A `serve --cluster` deployment: `status` of its nodes and tasks, `export` of its stream.
    #[command(subcommand)]
    Cluster(cmd::cluster::ClusterCommand),
    /// Run recorded events through detection offline, deterministically; delivers nothing.
    Replay(cmd::replay::ReplayArgs),
    /// A collector on a temporary data dir fed with realistic traffic and a few attacks.
    Demo(cmd::demo::DemoArgs),
}

/// mimalloc asks for transparent huge pages on its arenas, and it returns freed memory to the
/// kernel after a short delay. With THP on, that costs twice, measured with benches/ingest.rs
/// (`BENCH_ONLY=rss`) and benches/proxies.rs under `perf record`:
/// - idle memory: every 2 MiB region touched once stays resident whole (start-up builds the
///   detectors' automata, then frees most of it): 70 of the collector's 87 MB idle were huge
///   pages;
/// - CPU and latency: the gateway re-faulted purged arena memory as huge pages, each fault
///   zeroing 2 MiB (`do_huge_pmd_anonymous_page` → `folio_zero_user`): 9 % of its CPU at 16
///   connections, and a few hundred microseconds for the request that took the fault.
///
/// So every long-running command keeps to 4 KiB pages; ingest throughput was the same within
/// noise.
fn small_pages() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_thp_disable(true) {
        tracing::debug!(error = %e, "could not turn transparent huge pages off");
    }
}

fn main() -> ExitCode {
    // `wrap` starts its server through this binary (a parent-death signal, then exec).
    mcpwatch_capture::wrap::launcher_main();
    let cli = Cli::parse();
    small_pages();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => cmd::serve::run(args).await,
            Command::Wrap(args) => cmd::wrap::run(args).await,
            Command::Gateway(args) => cmd::gateway::run(args).await,
            Command::Events(args) => cmd::events::run(*args).await,
            Command::Alerts(args) => cmd::alerts::run(args).await,
            Command::Config(c) => cmd::config::run(c),
            Command::Rules(c) => cmd::rules::run(c),
            Command::Spool(c) => cmd::spool::run(c).await,
            // Blocking: the PostgreSQL client runs on a runtime of its own.
            Command::Store(c) => cmd::store::run(c),
            Command::Clients(args) => cmd::clients::run(args),
            Command::Replay(args) => cmd::replay::run(args),
            Command::Cluster(c) => cmd::cluster::run(c).await,
            Command::Demo(args) => cmd::demo::run(args).await,
        }
    });
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
