//! `mcpwatch spool status | flush`: what `wrap` left on disk while the collector was away, and
//! delivering it by hand.
//!
//! A running `wrap` delivers its own spool, and at start the spools other server names left
//! behind; `flush` is for the rest (a server renamed, or not started again). It takes over every
//! segment whose process is gone (the spool module's atomic adoption, so a `wrap` starting at the
//! same moment never gets the same segment), posts it oldest first, and removes only what the
//! collector acknowledged. The data dir, collector and token resolve as for `wrap`.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{anyhow, bail};
use mcpwatch_capture::delivery::spool::{self, Orphans, SpoolStatus};
use mcpwatch_capture::delivery::{HttpSink, NatsSink, PostError, Target};
use mcpwatch_core::clock::Clock;
use mcpwatch_core::{Event, SystemClock, Timestamp};
use mcpwatch_nats::publish::DEFAULT_MAX_IN_FLIGHT;

use crate::cmd::wrap::{collector, data_dir, token};
use crate::term::sanitize;

/// `mcpwatch spool …`.
#[derive(clap::Subcommand)]
pub enum SpoolCommand {
    /// Show each server's spool: segments, events, bytes, oldest event, and whether a running
    /// wrap owns it.
    Status(StatusArgs),
    /// Deliver every spool whose wrap is gone to the collector, oldest first; what the
    /// collector does not acknowledge stays on disk.
    Flush(FlushArgs),
}

/// `mcpwatch spool status` options.
#[derive(clap::Args)]
pub struct StatusArgs {
    /// The data dir the wraps use [default: $MCPWATCH_DATA_DIR or the platform data dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// `mcpwatch spool flush` options.
#[derive(clap::Args)]
pub struct FlushArgs {
    /// The data dir the wraps use [default: $MCPWATCH_DATA_DIR or the platform data dir].
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Collector URL [default: $MCPWATCH_COLLECTOR or http://127.0.0.1:7878].
    #[arg(long)]
    collector: Option<String>,
    /// Token with the ingest role [default: $MCPWATCH_TOKEN].
    #[arg(long)]
    token: Option<String>,
    /// Publish to NATS JetStream at this URL instead, as `wrap --nats` does (with --collector
    /// too: to both, a batch delivered once both took it).
    #[arg(long, value_name = "URL")]
    nats: Option<String>,
}

pub async fn run(c: SpoolCommand) -> anyhow::Result<ExitCode> {
    match c {
        SpoolCommand::Status(args) => status(args),
        SpoolCommand::Flush(args) => flush(args).await,
    }
}

fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let root = spool::root(&data_dir(args.data_dir));
    let spools = spool::survey(&root)?;
    print!("{}", render_status(&root, &spools, SystemClock.now()));
    Ok(ExitCode::SUCCESS)
}

/// The status table, then what to do about it.
fn render_status(root: &std::path::Path, spools: &[SpoolStatus], now: Timestamp) -> String {
    let mut out = String::new();
    if spools.is_empty() {
        let _ = writeln!(out, "no spooled events under {}", root.display());
        return out;
    }
    let mut rows = vec![[
        "SERVER".to_string(),
        "SEGMENTS".into(),
        "EVENTS".into(),
        "BYTES".into(),
        "OLDEST EVENT".into(),
        "OWNER".into(),
    ]];
    for s in spools {
        rows.push([
            sanitize(&s.server),
            s.segments.to_string(),
            s.events.to_string(),
            human_bytes(s.bytes),
            s.oldest
                .map_or_else(|| "-".into(), |t| format!("{t} ({} ago)", age(now, t))),
            owner(s),
        ]);
    }
    let mut widths = [0usize; 6];
    for row in &rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    for row in &rows {
        let line: Vec<String> = row
            .iter()
            .zip(widths)
            .enumerate()
            .map(|(i, (cell, w))| match i {
                1..=3 => format!("{cell:>w$}"),
                _ => format!("{cell:<w$}"),
            })
            .collect();
        let _ = writeln!(out, "{}", line.join("  ").trim_end());
    }
    let events: u64 = spools.iter().map(|s| s.events).sum();
    let orphaned: u64 = spools.iter().map(|s| s.orphaned_events).sum();
    let _ = writeln!(out, "\n{events} events wait under {}.", root.display());
    if orphaned > 0 {
        let _ = writeln!(
            out,
            "Wraps that are gone left {orphaned} of them: `mcpwatch spool flush` delivers those."
        );
    }
    if orphaned < events {
        let _ = writeln!(
            out,
            "Spools of running wraps are delivered by those wraps once the collector answers."
        );
    }
    for s in spools {
        if let Some(code) = s.token_refused {
            let _ = writeln!(
                out,
                "{}: the collector refused the token (HTTP {code}); the events are kept. \
                 `mcpwatch spool flush --token TOKEN` delivers them once its wrap is gone, as \
                 does a wrap started with a valid $MCPWATCH_TOKEN.",
                sanitize(&s.server)
            );
        }
    }
    out
}

fn owner(s: &SpoolStatus) -> String {
    if s.live_owners.is_empty() {
        return "gone".into();
    }
    let pids: Vec<String> = s.live_owners.iter().map(u32::to_string).collect();
    let running = format!("running (pid {})", pids.join(", "));
    match s.orphaned_segments {
        0 => running,
        n => format!("{running}; {n} segment(s) gone"),
    }
}

fn age(now: Timestamp, then: Timestamp) -> String {
    let secs = (now.as_secs_f64() - then.as_secs_f64()).max(0.0) as u64;
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m", secs / 60),
        3600..=86_399 => format!("{}h", secs / 3600),
        _ => format!("{}d", secs / 86_400),
    }
}

fn human_bytes(n: u64) -> String {
    match n {
        0..=1023 => format!("{n} B"),
        1024..=1_048_575 => format!("{:.1} KiB", n as f64 / 1024.0),
        _ => format!("{:.1} MiB", n as f64 / 1_048_576.0),
    }
}

/// Events per POST: the ingest API's comfortable batch size, as `wrap` posts.
const BATCH: usize = 500;
/// How often a busy collector (429/503) is waited for before giving up.
const BUSY_RETRIES: u32 = 10;

/// What one server's spool gave.
#[derive(Default)]
struct Tally {
    delivered: u64,
    rejected: u64,
}

async fn flush(args: FlushArgs) -> anyhow::Result<ExitCode> {
    let root = spool::root(&data_dir(args.data_dir));
    let (mut sink, url) = match (&args.nats, args.collector) {
        (Some(n), c) => {
            let nats = NatsSink::new(n, "mcpwatch-spool-flush", DEFAULT_MAX_IN_FLIGHT)?;
            let shown = nats.shown().to_owned();
            match c {
                None => (Target::Nats(nats), format!("NATS at {shown}")),
                Some(c) => {
                    let url = collector(Some(c));
                    let http = HttpSink::new(&url, token(args.token))?;
                    (
                        Target::Both(nats, http),
                        format!("NATS at {shown} and the collector at {url}"),
                    )
                }
            }
        }
        (None, c) => {
            let url = collector(c);
            let http = HttpSink::new(&url, token(args.token))?;
            (Target::Http(http), format!("the collector at {url}"))
        }
    };
    let before = spool::survey(&root)?;
    let running: Vec<&SpoolStatus> = before
        .iter()
        .filter(|s| s.events > s.orphaned_events)
        .collect();
    let orphaned: u64 = before.iter().map(|s| s.orphaned_events).sum();
    if orphaned == 0 {
        println!(
            "nothing to flush: no spool under {} holds events of a wrap that is gone",
            root.display()
        );
        print_running(&running);
        return Ok(ExitCode::SUCCESS);
    }
    let mut orphans = Orphans::new(&root, None);
    let mut done = Done::default();
    let mut unreadable = 0usize;
    loop {
        let batch = match orphans.peek(BATCH) {
            Ok(Some(batch)) => batch,
            Ok(None) => break,
            Err(e) => {
                eprintln!("warning: skipping a spool that cannot be read: {e}");
                unreadable += 1;
                continue;
            }
        };
        let server = orphans.server().unwrap_or_default().to_owned();
        if done
            .current
            .as_ref()
            .is_some_and(|(name, _)| *name != server)
        {
            done.finish("");
        }
        let (_, tally) = done
            .current
            .get_or_insert_with(|| (server.clone(), Tally::default()));
        match post_all(&mut sink, &server, batch, tally).await {
            Ok(()) => orphans.consume(),
            Err(e) => {
                // The batch was not acknowledged, so it stays; what was is removed for good.
                let kept = orphans.checkpoint().err();
                done.finish(" before the collector stopped taking events");
                let left = orphaned.saturating_sub(done.total + done.rejected);
                let mut msg = failure(&url, &e);
                let _ = write!(
                    msg,
                    ". Nothing unacknowledged was removed: about {left} events still wait"
                );
                if let Some(k) = kept {
                    let _ = write!(msg, " (some delivered ones may be sent again: {k})");
                }
                bail!("{msg}; run `mcpwatch spool flush` again once the collector is fixed");
            }
        }
    }
    done.finish("");
    // The collector took this token: a refusal noted for a spool flushed whole is stale.
    for server in &done.flushed {
        if !running.iter().any(|s| s.server == *server) {
            spool::clear_token_refused(&root.join(server));
        }
    }
    println!(
        "delivered {} events from {} spool(s) to {url}",
        done.total, done.servers
    );
    print_running(&running);
    if unreadable > 0 {
        return Err(anyhow!(
            "{unreadable} spool(s) could not be read (see the warnings above); \
             fix their permissions and run `mcpwatch spool flush` again"
        ));
    }
    Ok(ExitCode::SUCCESS)
}

/// The servers flushed so far, each reported as soon as it is done.
#[derive(Default)]
struct Done {
    current: Option<(String, Tally)>,
    total: u64,
    rejected: u64,
    servers: usize,
    /// The spool folders delivered.
    flushed: Vec<String>,
}

impl Done {
    fn finish(&mut self, suffix: &str) {
        let Some((server, tally)) = self.current.take() else {
            return;
        };
        if tally.delivered + tally.rejected == 0 {
            return;
        }
        let rejected = match tally.rejected {
            0 => String::new(),
            n => format!(", dropped {n} the collector rejected as invalid"),
        };
        println!(
            "{}: delivered {} events{rejected}{suffix}",
            sanitize(&server),
            tally.delivered
        );
        self.total += tally.delivered;
        self.rejected += tally.rejected;
        self.servers += 1;
        self.flushed.push(server);
    }
}

fn print_running(running: &[&SpoolStatus]) {
    for s in running {
        let pids: Vec<String> = s.live_owners.iter().map(u32::to_string).collect();
        println!(
            "{}: {} events left to the running wrap (pid {}), which delivers them itself",
            sanitize(&s.server),
            s.events - s.orphaned_events,
            pids.join(", ")
        );
    }
}

/// Posts one spooled batch until the collector has acknowledged all of it, splitting what is too
/// large and dropping only what it rejects as invalid; any other answer stops the flush.
async fn post_all(
    sink: &mut Target,
    server: &str,
    batch: Vec<Event>,
    tally: &mut Tally,
) -> Result<(), PostError> {
    let mut work = vec![batch];
    let mut busy = 0;
    while let Some(batch) = work.pop() {
        if batch.is_empty() {
            continue;
        }
        match sink.deliver(&batch).await {
            Ok(()) => tally.delivered += batch.len() as u64,
            Err(PostError::Busy(after)) if busy < BUSY_RETRIES => {
                busy += 1;
                tokio::time::sleep(after.min(Duration::from_secs(30))).await;
                work.push(batch);
            }
            Err(PostError::TooLarge) if batch.len() > 1 => {
                let mut first = batch;
                let second = first.split_off(first.len() / 2);
                work.push(second);
                work.push(first);
            }
            Err(PostError::TooLarge) => {
                eprintln!(
                    "warning: {}: dropping event {}: larger than the collector accepts",
                    sanitize(server),
                    sanitize(&batch[0].id)
                );
                tally.rejected += 1;
            }
            Err(PostError::Rejected { bad, message })
                if !bad.is_empty() && bad.iter().all(|i| *i < batch.len()) =>
            {
                eprintln!(
                    "warning: {}: dropping {} event(s) the collector rejected as invalid: {}",
                    sanitize(server),
                    bad.len(),
                    sanitize(&message)
                );
                tally.rejected += bad.len() as u64;
                let keep: Vec<Event> = batch
                    .into_iter()
                    .enumerate()
                    .filter(|(i, _)| !bad.contains(i))
                    .map(|(_, e)| e)
                    .collect();
                work.push(keep);
            }
            Err(e) => return Err(e),
        }
    }
    Ok(())
}

/// Why the flush stopped, and what to do next.
fn failure(url: &str, e: &PostError) -> String {
    match e {
        PostError::Unreachable(why) if url.starts_with("NATS") => format!(
            "cannot publish to {url}: {}. Check --nats and that nats-server runs there with \
             JetStream and the stream `mcpwatch serve --nats` creates",
            sanitize(why)
        ),
        PostError::Unreachable(why) => format!(
            "cannot reach {url}: {}. Start it (`mcpwatch serve`) or point \
             --collector / $MCPWATCH_COLLECTOR at it",
            sanitize(why)
        ),
        PostError::Busy(_) => {
            format!("{url} stayed busy (429/503) after {BUSY_RETRIES} retries; try again later")
        }
        PostError::Unauthorized(code) => format!(
            "{url} refused the token (HTTP {code}): pass --token or set \
             $MCPWATCH_TOKEN to a token with the ingest role"
        ),
        PostError::Status(code, body) => format!(
            "{url} answered HTTP {code}: {}; check that --collector points at \
             `mcpwatch serve`",
            sanitize(body)
        ),
        other => format!(
            "{url} refused a batch: {}; check that the collector and mcpwatch \
             versions match",
            sanitize(&other.to_string())
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(spools: &[SpoolStatus], expected: &str) {
        let now = Timestamp::from_micros(1_790_000_000_000_000);
        let got = render_status(std::path::Path::new("/d/spool"), spools, now);
        assert_eq!(got, expected, "got:\n{got}");
    }

    #[test]
    fn status_table_says_who_delivers_what() {
        check(&[], "no spooled events under /d/spool\n");
        let orphaned = SpoolStatus {
            server: "fs\x1b[2J".into(),
            segments: 2,
            events: 120,
            bytes: 51_234,
            oldest: Some(Timestamp::from_micros(
                1_790_000_000_000_000 - 7_200_000_000,
            )),
            live_owners: vec![],
            orphaned_segments: 2,
            orphaned_events: 120,
            token_refused: Some(401),
        };
        let mixed = SpoolStatus {
            server: "everything".into(),
            segments: 3,
            events: 7,
            bytes: 900,
            oldest: Some(Timestamp::from_micros(1_790_000_000_000_000 - 30_000_000)),
            live_owners: vec![4242],
            orphaned_segments: 1,
            orphaned_events: 2,
            token_refused: None,
        };
        check(
            &[orphaned, mixed],
            "\
SERVER       SEGMENTS  EVENTS     BYTES  OLDEST EVENT                        OWNER
fs\\u{1b}[2J         2     120  50.0 KiB  2026-09-21T12:13:20.000Z (2h ago)   gone
everything          3       7     900 B  2026-09-21T14:12:50.000Z (30s ago)  running (pid 4242); 1 segment(s) gone

127 events wait under /d/spool.
Wraps that are gone left 122 of them: `mcpwatch spool flush` delivers those.
Spools of running wraps are delivered by those wraps once the collector answers.
fs\\u{1b}[2J: the collector refused the token (HTTP 401); the events are kept. `mcpwatch spool flush --token TOKEN` delivers them once its wrap is gone, as does a wrap started with a valid $MCPWATCH_TOKEN.
",
        );
    }
}
