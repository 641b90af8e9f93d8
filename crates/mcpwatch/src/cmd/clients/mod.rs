//! `mcpwatch clients`: find the MCP clients' config files and put their servers under watch.
//!
//! `discovery` knows where each client keeps its file; `jsonc` reads a file keeping the byte
//! span of every value; `edit` computes the few replacements that route a stdio server through
//! `mcpwatch wrap` (or undo that); `file` reads, backs up and replaces a file safely; `cli` is
//! the command: list, diff, confirm, write.

mod cli;
mod discovery;
mod edit;
mod file;
mod gateway;
mod jsonc;
#[cfg(test)]
mod tests;

use std::path::PathBuf;

pub use cli::run;
use discovery::Client;

/// `mcpwatch clients` options.
#[derive(clap::Args)]
pub struct ClientsArgs {
    #[command(subcommand)]
    action: Option<Action>,
    /// Only this client's files.
    #[arg(long, global = true, value_enum)]
    client: Option<Client>,
    /// A config file to use instead of the known locations (repeatable).
    #[arg(long = "config", global = true, value_name = "FILE")]
    configs: Vec<PathBuf>,
}

#[derive(clap::Subcommand)]
enum Action {
    /// Route stdio servers through `mcpwatch wrap --name <server>` (and HTTP servers through
    /// the gateway with --gateway); backs up each file first.
    Watch(EditArgs),
    /// Restore the launch lines and URLs `watch` changed.
    Unwatch(EditArgs),
}

#[derive(clap::Args)]
struct EditArgs {
    /// Only these servers (repeatable) [default: every server in the files].
    #[arg(long = "server", value_name = "NAME")]
    servers: Vec<String>,
    /// Write without asking.
    #[arg(long, short)]
    yes: bool,
    /// `watch`: also route HTTP servers through this `mcpwatch gateway` (its URL or listen
    /// address, e.g. 127.0.0.1:7880); each server's URL becomes ADDR/mcp/<server>.
    #[arg(long, value_name = "ADDR")]
    gateway: Option<String>,
}
