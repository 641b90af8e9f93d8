//! `mcpwatch store migrate --from sqlite:DIR --to postgres://…`: copies the event history of a
//! SQLite data directory into PostgreSQL, then its alerts, findings, silences and outbox, with
//! progress on stderr; resumable, and verified by counts at the end (see
//! `mcpwatch_store::migrate` and `mcpwatch_alert::migrate`).

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mcpwatch_alert::migrate::{migrate_alerts, AlertSource, TableProgress};
use mcpwatch_alert::postgres::PgAlertStore;
use mcpwatch_core::config::expand_env;
use mcpwatch_core::paths::process_env;
use mcpwatch_store::migrate::{migrate, MigrateOptions, MigrateProgress};
use mcpwatch_store::postgres::{hide_password, is_url, PgStore};
use mcpwatch_store::sqlite::SqliteExport;

use crate::term::sanitize;

/// `mcpwatch store …`.
#[derive(clap::Subcommand)]
pub enum StoreCommand {
    /// Copy the events and alerts of a SQLite data directory into PostgreSQL; run it again to
    /// resume.
    Migrate(MigrateArgs),
}

/// `mcpwatch store migrate` options.
#[derive(clap::Args)]
pub struct MigrateArgs {
    /// The source: `sqlite:DIR`, the data directory of `mcpwatch serve`.
    #[arg(long, value_name = "sqlite:DIR")]
    pub from: String,
    /// The destination, e.g. postgres://mcpwatch:${PGPASSWORD}@db:5432/mcpwatch (`${NAME}` is
    /// read from the environment).
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// Events per transaction.
    #[arg(long, default_value_t = 5_000, value_parser = clap::value_parser!(u32).range(1..=50_000))]
    pub batch: u32,
    /// Copy at most this many events in this run, then stop (the next run continues).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    pub limit: Option<u64>,
}

/// The name of the destination's rollup rows written by a migration.
const WRITER: &str = "migrate";

/// Alert-side rows per transaction.
const ALERT_BATCH: usize = 500;

pub fn run(c: StoreCommand) -> anyhow::Result<ExitCode> {
    match c {
        StoreCommand::Migrate(args) => run_migrate(&args),
    }
}

fn run_migrate(args: &MigrateArgs) -> anyhow::Result<ExitCode> {
    let Some(dir) = args.from.strip_prefix("sqlite:") else {
        bail!(
            "--from takes sqlite:DIR, the data directory of `mcpwatch serve` (e.g. --from sqlite:/var/lib/mcpwatch), not `{}`",
            sanitize(&args.from)
        );
    };
    if dir.is_empty() {
        bail!("--from sqlite: needs a directory after the colon, e.g. --from sqlite:/var/lib/mcpwatch");
    }
    let url = expand_env(&args.to, &process_env).map_err(|e| anyhow::anyhow!("--to: {e}"))?;
    if !is_url(&url) {
        bail!(
            "--to takes a PostgreSQL URL (postgres://user:password@host:5432/database), not `{}`",
            sanitize(&hide_password(&url))
        );
    }
    let from = SqliteExport::open(&PathBuf::from(dir)).map_err(|e| anyhow::anyhow!("{e}"))?;
    let to = PgStore::open(&url, WRITER)
        .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL store: {e}"))?;
    let shown = sanitize(to.shown_url());
    eprintln!(
        "copying events from {} to {shown}",
        sanitize(&from.identity())
    );
    let started = Instant::now();
    let mut lines = ProgressLines::new();
    let mut report_progress = |p: MigrateProgress| {
        if let Some(pct) = lines.due(p.done, p.total) {
            eprintln!(
                "{}/{} events ({pct:.1}%), {} new in this run",
                p.done, p.total, p.inserted
            );
        }
    };
    let report = migrate(
        &from,
        &to,
        MigrateOptions {
            batch: args.batch as usize,
            limit: args.limit,
        },
        &mut report_progress,
    )
    .context("the copy stopped; run the same command again to continue from where it stopped")?;
    let secs = started.elapsed().as_secs_f64();
    if report.resumed_at > 0 {
        eprintln!(
            "resumed after {} events copied by an earlier run",
            report.resumed_at
        );
    }
    eprintln!(
        "read {} events in {secs:.1}s, {} of them new to the destination",
        report.read, report.inserted
    );
    if !report.complete {
        eprintln!(
            "stopped after --limit {}; {} of {} events copied; run the command again to continue",
            args.limit.unwrap_or(0),
            report.resumed_at + report.read,
            report.source
        );
        return Ok(ExitCode::SUCCESS);
    }
    let events_ok = report.verified == Some(report.source);
    if !events_ok {
        eprintln!(
            "verification failed: the source has {} events but {} of them are in {shown}",
            report.source,
            report.verified.unwrap_or(0)
        );
    }
    let alerts_ok = copy_alerts(&PathBuf::from(dir), &url, &shown)?;
    if !events_ok {
        bail!(
            "verification failed: the source has {} events but {} of them are in {shown}; run the command again to copy what is missing, and check that nothing deletes events on the destination (retention) meanwhile",
            report.source,
            report.verified.unwrap_or(0)
        );
    }
    println!(
        "verified: all {} source events are in {shown}",
        report.source
    );
    if !alerts_ok {
        bail!(
            "verification failed: some alert rows of the source are not in {shown} (see the lines above); run the command again to copy what is missing"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// Progress lines at most every half second, and always the last one.
struct ProgressLines {
    last: Instant,
}

impl ProgressLines {
    fn new() -> Self {
        Self {
            last: Instant::now() - Duration::from_secs(1),
        }
    }

    /// The percentage done, when a line is due.
    fn due(&mut self, done: u64, total: u64) -> Option<f64> {
        if self.last.elapsed() < Duration::from_millis(500) && done != total {
            return None;
        }
        self.last = Instant::now();
        Some(if total == 0 {
            100.0
        } else {
            done as f64 * 100.0 / total as f64
        })
    }
}

/// Copies the alert side (`alerts.db`): silences, alerts, findings, the outbox. Whether every
/// source row is on the destination.
fn copy_alerts(dir: &std::path::Path, url: &str, shown: &str) -> anyhow::Result<bool> {
    let Some(from) = AlertSource::open(dir).map_err(|e| anyhow::anyhow!("{e}"))? else {
        println!("no alerts.db in the source: no alerts to copy");
        return Ok(true);
    };
    let to = PgAlertStore::open(url, "migrate", Duration::from_secs(60))
        .map_err(|e| anyhow::anyhow!("cannot open the PostgreSQL alert store: {e}"))?;
    eprintln!(
        "copying alerts, findings, silences and deliveries from {} to {shown}",
        sanitize(from.identity())
    );
    let mut lines = ProgressLines::new();
    let mut report_progress = |p: TableProgress| {
        if let Some(pct) = lines.due(p.done, p.total) {
            eprintln!(
                "{}/{} {} ({pct:.1}%), {} new and {} updated in this run",
                p.done,
                p.total,
                p.table.name(),
                p.inserted,
                p.updated
            );
        }
    };
    let report = migrate_alerts(&from, &to, ALERT_BATCH, &mut report_progress).context(
        "the copy of the alerts stopped; run the same command again to finish it (nothing is copied twice)",
    )?;
    let mut ok = true;
    for t in &report.tables {
        if t.verified == t.source {
            println!(
                "verified: all {} source {} are in {shown}",
                t.source,
                t.table.name()
            );
        } else {
            ok = false;
            eprintln!(
                "verification failed: the source has {} {} but {} of them are in {shown}",
                t.source,
                t.table.name(),
                t.verified
            );
        }
    }
    if report.pending > 0 {
        eprintln!(
            "{} notifications were still pending in the source: the first collector started on {shown} sends them, once; stop `mcpwatch serve` on the SQLite directory before starting one, or both may send them{}",
            report.pending,
            if report.kept_ids {
                ""
            } else {
                " (the destination already had deliveries of its own, so the copied ones got new ids and receivers see new notification ids)"
            }
        );
    }
    Ok(ok)
}
