//! `mcpwatch rules check FILE…`: compiles rule files the way `serve` and `replay` load them and
//! reports every error with file, rule, line and column, so a rule is fixed before it is
//! deployed.

use std::path::PathBuf;
use std::process::ExitCode;

use mcpwatch_detect::{check_rule_files, DetectError, RuleError, RuleSet};

use crate::term::sanitize;

/// `mcpwatch rules …`.
#[derive(clap::Subcommand)]
pub enum RulesCommand {
    /// Validate rule files (YAML); prints every error with file, rule, line and column.
    Check(CheckArgs),
}

/// `mcpwatch rules check` options.
#[derive(clap::Args)]
pub struct CheckArgs {
    /// Rule files to check.
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// Do not check names against the built-in rules (for configs with
    /// `[detection] default_rules = false`).
    #[arg(long)]
    pub no_default_rules: bool,
}

pub fn run(c: RulesCommand) -> anyhow::Result<ExitCode> {
    match c {
        RulesCommand::Check(args) => Ok(check(&args)),
    }
}

fn check(args: &CheckArgs) -> ExitCode {
    let counts = match check_rule_files(&args.files) {
        Ok(counts) => counts,
        Err(errors) => return report_errors(&errors, args),
    };
    // Each file compiles on its own; names must also be unique across the files and the
    // built-in rules, as `serve` loads them together.
    if let Err(e) = RuleSet::load(&args.files, !args.no_default_rules) {
        return match e {
            DetectError::Rules(errors) => report_errors(&errors, args),
            other => {
                eprintln!("error: {other}");
                ExitCode::FAILURE
            }
        };
    }
    let mut total = 0;
    for (file, n) in &counts {
        println!("{}: {n} rule(s)", sanitize(file));
        total += n;
    }
    println!(
        "OK: {total} rule(s) in {} file(s); load them with `[rules] files = [...]` in the config or `mcpwatch replay --rules FILE`",
        counts.len()
    );
    ExitCode::SUCCESS
}

fn report_errors(errors: &[RuleError], args: &CheckArgs) -> ExitCode {
    for e in errors {
        eprintln!("{}", sanitize(&e.to_string()));
    }
    let files: Vec<String> = args
        .files
        .iter()
        .map(|f| sanitize(&f.display().to_string()))
        .collect();
    eprintln!(
        "{} error(s); nothing would be loaded. Fix them and run `mcpwatch rules check {}` again",
        errors.len(),
        files.join(" ")
    );
    ExitCode::from(1)
}
