//! `mcpwatch config check FILE`, and loading the config file for the other commands.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use mcpwatch_core::auth::Authenticator;
use mcpwatch_core::config::{Config, ConfigError};
use mcpwatch_core::paths::process_env;

/// `mcpwatch config …`.
#[derive(clap::Subcommand)]
pub enum ConfigCommand {
    /// Validate a configuration file; prints every error with its line.
    Check {
        /// The TOML file.
        file: PathBuf,
    },
}

pub fn run(c: ConfigCommand) -> anyhow::Result<ExitCode> {
    match c {
        ConfigCommand::Check { file } => match load(&file) {
            Ok(_) => {
                println!("{}: OK", file.display());
                Ok(ExitCode::SUCCESS)
            }
            Err(Problems::Read(e)) => Err(e),
            Err(Problems::Invalid(errors)) => {
                for e in &errors {
                    eprintln!("{}", located(&file, e));
                }
                eprintln!(
                    "{}: {} error(s); fix them and run `mcpwatch config check {}` again",
                    file.display(),
                    errors.len(),
                    file.display()
                );
                Ok(ExitCode::from(1))
            }
        },
    }
}

/// Why a config file could not be used.
pub enum Problems {
    /// It could not be read.
    Read(anyhow::Error),
    /// It is invalid: every error found.
    Invalid(Vec<ConfigError>),
}

/// Reads and validates a config file, including what needs the environment (`${VAR}`).
pub fn load(path: &Path) -> Result<Config, Problems> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}; check the path (or leave --config out for the defaults)", path.display()))
        .map_err(Problems::Read)?;
    let config = Config::from_toml(&text).map_err(Problems::Invalid)?;
    // Every section owner checks its own; all errors are reported together.
    let mut errors = Authenticator::build(&config.auth, &process_env)
        .err()
        .unwrap_or_default();
    errors.extend(mcpwatch_alert::check(&config));
    errors.extend(crate::topology::check(&config));
    errors.extend(gateway_errors(&config));
    if !errors.is_empty() {
        mcpwatch_core::config::locate_errors(&text, &mut errors);
        return Err(Problems::Invalid(errors));
    }
    Ok(config)
}

/// Problems in `[gateway]`, which `mcpwatch gateway` reads from the same file.
fn gateway_errors(config: &Config) -> Vec<ConfigError> {
    let Some(value) = config.extra.get("gateway") else {
        return Vec::new();
    };
    let Some(table) = value.as_table() else {
        return vec![ConfigError::at("gateway", "must be a table: [gateway]")];
    };
    match mcpwatch_capture::gateway::GatewayConfig::from_table(table) {
        Ok(cfg) => cfg.build(&process_env).err().unwrap_or_default(),
        Err(errors) => errors,
    }
}

/// Loads a config file for a command, turning every error into one message.
pub fn load_for_command(path: Option<&Path>) -> anyhow::Result<Config> {
    let Some(path) = path else {
        return Ok(Config::default());
    };
    match load(path) {
        Ok(c) => Ok(c),
        Err(Problems::Read(e)) => Err(e),
        Err(Problems::Invalid(errors)) => {
            let lines: Vec<String> = errors.iter().map(|e| located(path, e)).collect();
            bail!(
                "invalid config:\n{}\n(run `mcpwatch config check {}` after fixing)",
                lines.join("\n"),
                path.display()
            )
        }
    }
}

fn located(file: &Path, e: &ConfigError) -> String {
    match (e.line, e.column) {
        (Some(l), Some(c)) => format!("{}:{l}:{c}: {}", file.display(), strip_position(e)),
        _ => format!("{}: {}", file.display(), strip_position(e)),
    }
}

fn strip_position(e: &ConfigError) -> String {
    ConfigError {
        line: None,
        column: None,
        ..e.clone()
    }
    .to_string()
}
