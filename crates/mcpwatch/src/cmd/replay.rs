//! `mcpwatch replay`: recorded events (JSON lines) through detection offline, on event time,
//! with the rules and `[detection]` settings `serve` would use. Deterministic and delivers
//! nothing: it prints a summary per rule and detector and can write the alerts as JSON lines.
//!
//! The detection itself is [`mcpwatch_detect::replay`], the same engine as live; this module
//! reads the file (with progress), renders the summary and writes the alerts atomically.

use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{mpsc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use mcpwatch_core::Event;
use mcpwatch_detect::{replay_with, Alert, ReplaySummary, RuleSet};

use crate::term::sanitize;
use crate::topology::detection_from_config;

/// Alerts printed when they are not written to a file.
const PRINTED_ALERTS: usize = 20;
/// How often progress goes to stderr.
const PROGRESS_EVERY: Duration = Duration::from_secs(2);

/// `mcpwatch replay` options.
#[derive(clap::Args)]
pub struct ReplayArgs {
    /// Recorded events, one JSON event per line (e.g. from `mcpwatch events --json`).
    #[arg(
        long,
        value_name = "FILE.jsonl",
        required_unless_present = "stream",
        conflicts_with = "stream"
    )]
    pub events: Option<PathBuf>,
    /// An export of a cluster's stream (`mcpwatch cluster export`), replayed as the cluster's
    /// tasks detect: in stream order, each task on its partition, with the config's
    /// `[redaction]` and `[server] max_clock_skew` as the collector applies them.
    #[arg(long, value_name = "FILE.jsonl")]
    pub stream: Option<PathBuf>,
    /// With --stream: write every finding's derived event here as JSON lines (replaced
    /// atomically), to compare with what the cluster stored.
    #[arg(long, value_name = "FILE", requires = "stream")]
    pub findings_out: Option<PathBuf>,
    /// Rule files (YAML) to run, after the built-in rules and the config's `[rules] files`.
    #[arg(long = "rules", value_name = "FILE")]
    pub rules: Vec<PathBuf>,
    /// Configuration file: its `[detection]` and `[rules]` sections are used.
    #[arg(long, short)]
    pub config: Option<PathBuf>,
    /// Write the alerts here as JSON lines (replaced atomically).
    #[arg(long, value_name = "FILE")]
    pub alerts_out: Option<PathBuf>,
    /// Leave the built-in rules out.
    #[arg(long)]
    pub no_default_rules: bool,
}

pub fn run(args: ReplayArgs) -> anyhow::Result<ExitCode> {
    let config = super::config::load_for_command(args.config.as_deref())?;
    let (settings, mut files) = detection_from_config(&config)?;
    files.extend(args.rules.iter().cloned());
    let with_defaults = settings.default_rules && !args.no_default_rules;
    let rules = RuleSet::load(&files, with_defaults).map_err(|e| {
        anyhow::anyhow!("cannot load rules:\n{e}\n(check them with `mcpwatch rules check FILE…`)")
    })?;
    for out in args.alerts_out.iter().chain(&args.findings_out) {
        check_writable_dir(out)?;
    }
    if let Some(stream) = &args.stream {
        return run_stream(&args, &config, stream, rules, settings);
    }
    let Some(events_file) = &args.events else {
        bail!("give --events FILE.jsonl or --stream FILE.jsonl");
    };
    let started = Instant::now();
    let events = read_events(events_file)?;
    let read_in = started.elapsed();
    let n = events.len();
    // Fold like live alerting with the same `[alerting]` settings, resolution included.
    let policy = mcpwatch_alert::config::fold_policy(&config).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid [alerting] configuration:\n{}", lines.join("\n"))
    })?;
    let (alerts, summary) = replay_with(events, rules, &settings, policy);
    let total = started.elapsed();
    eprintln!(
        "replay: {n} events read in {:.2} s, detection in {:.2} s ({:.0} events/s overall)",
        read_in.as_secs_f64(),
        (total - read_in).as_secs_f64(),
        n as f64 / total.as_secs_f64().max(1e-9)
    );
    print_summary(events_file, &summary, &alerts);
    write_or_print_alerts(&args, &alerts)?;
    Ok(ExitCode::SUCCESS)
}

fn write_or_print_alerts(args: &ReplayArgs, alerts: &[Alert]) -> anyhow::Result<()> {
    match &args.alerts_out {
        Some(out) => {
            write_atomically(out, "alerts", alerts)?;
            println!("alerts written to {}", sanitize(&out.display().to_string()));
        }
        None => print_alerts(alerts),
    }
    Ok(())
}

/// `replay --stream`: an export of a cluster's stream through the cluster's tasks.
fn run_stream(
    args: &ReplayArgs,
    config: &mcpwatch_core::config::Config,
    path: &Path,
    rules: RuleSet,
    settings: mcpwatch_detect::DetectSettings,
) -> anyhow::Result<ExitCode> {
    let policy = mcpwatch_alert::config::fold_policy(config).map_err(|errors| {
        let lines: Vec<String> = errors.iter().map(ToString::to_string).collect();
        anyhow::anyhow!("invalid [alerting] configuration:\n{}", lines.join("\n"))
    })?;
    let redactor = config
        .redaction
        .build()
        .map_err(|e| anyhow::anyhow!("invalid [redaction]: {e:?}"))?;
    let spec = crate::cluster::DetectSpec {
        rules,
        settings,
        redactor,
        max_clock_skew: config.server.max_clock_skew,
        // The relay key is the cluster's; offline, a relayed message is taken as relayed.
        relay: mcpwatch_nats::consume::RelayCheck::Trust,
    };
    let started = Instant::now();
    let records = crate::cluster::read_export(path)?;
    let out = crate::cluster::replay_export(&records, &spec, policy)?;
    eprintln!(
        "replay: {} message(s) in {:.2} s, {} without a storable event",
        out.messages,
        started.elapsed().as_secs_f64(),
        out.skipped
    );
    println!(
        "replayed {} message(s) of the stream export {}",
        out.messages,
        sanitize(&path.display().to_string())
    );
    let mut by_name: std::collections::BTreeMap<(&str, &str), u64> = Default::default();
    for f in &out.findings {
        *by_name
            .entry((f.source.as_str(), f.name.as_str()))
            .or_default() += 1;
    }
    println!("{:<10} {:<40} {:>9}", "SOURCE", "NAME", "FINDINGS");
    for ((source, name), n) in &by_name {
        println!("{source:<10} {:<40} {n:>9}", sanitize(name));
    }
    println!("{} alert(s){}", out.alerts.len(), by_severity(&out.alerts));
    if let Some(f) = &args.findings_out {
        let events: Vec<&Event> = out.findings.iter().map(|f| &f.event).collect();
        write_atomically(f, "findings", &events)?;
        println!("findings written to {}", sanitize(&f.display().to_string()));
    }
    write_or_print_alerts(args, &out.alerts)?;
    Ok(ExitCode::SUCCESS)
}

/// Bytes read and parsed at a time; chunks end at a line end.
const CHUNK_BYTES: usize = 4 << 20;
/// The longest line accepted.
const MAX_LINE_BYTES: usize = 64 << 20;

/// A run of whole lines and the 1-based number of its first line.
struct Chunk {
    index: usize,
    first_line: usize,
    bytes: Vec<u8>,
}

type Parsed = (usize, anyhow::Result<Vec<Event>>);

/// Reads a JSON-lines file of events in file order; a bad line is an error naming the file
/// and the line. Lines are parsed on every core (parsing, not detection, is most of a replay's
/// time); progress goes to stderr for big files.
fn read_events(path: &Path) -> anyhow::Result<Vec<Event>> {
    let mut file = File::open(path).with_context(|| {
        format!(
            "cannot open {}; check the path (record events with `mcpwatch events --json > FILE.jsonl`)",
            path.display()
        )
    })?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get().min(8));
    let parsed_events = AtomicUsize::new(0);
    let (chunk_tx, chunk_rx) = mpsc::sync_channel::<Chunk>(workers * 2);
    let chunk_rx = Mutex::new(chunk_rx);
    let (done_tx, done_rx) = mpsc::channel::<Parsed>();
    let read = std::thread::scope(|scope| {
        for _ in 0..workers {
            let (chunk_rx, done_tx, counter) = (&chunk_rx, done_tx.clone(), &parsed_events);
            scope.spawn(move || loop {
                let next = chunk_rx.lock().unwrap_or_else(|p| p.into_inner()).recv();
                let Ok(chunk) = next else { return };
                let result = parse_chunk(path, &chunk, counter);
                if done_tx.send((chunk.index, result)).is_err() {
                    return;
                }
            });
        }
        drop(done_tx);
        let read = split_into_chunks(&mut file, path, &chunk_tx, &parsed_events);
        drop(chunk_tx);
        read
    });
    read?;
    let mut parts: Vec<Parsed> = done_rx.into_iter().collect();
    parts.sort_by_key(|(index, _)| *index);
    let mut events = Vec::with_capacity(parsed_events.load(Ordering::Relaxed));
    for (_, part) in parts {
        events.append(&mut part?);
    }
    Ok(events)
}

/// Reads the file into chunks of whole lines and hands them to the parsers.
fn split_into_chunks(
    file: &mut File,
    path: &Path,
    tx: &mpsc::SyncSender<Chunk>,
    parsed: &AtomicUsize,
) -> anyhow::Result<()> {
    let mut progress = Progress::new();
    let mut carry: Vec<u8> = Vec::new();
    let (mut index, mut next_line) = (0usize, 1usize);
    loop {
        let mut buf = std::mem::take(&mut carry);
        let start = buf.len();
        buf.resize(start + CHUNK_BYTES, 0);
        let n = file
            .read(&mut buf[start..])
            .with_context(|| format!("cannot read {}", path.display()))?;
        buf.truncate(start + n);
        let eof = n == 0;
        let line_end = buf.iter().rposition(|b| *b == b'\n');
        let cut = match (eof, line_end) {
            (true, _) => buf.len(),
            (false, Some(i)) => i + 1,
            (false, None) if buf.len() > MAX_LINE_BYTES => bail!(
                "{}:{next_line}: a line is longer than {} MB; is this a JSON-lines file (one event per line)?",
                path.display(),
                MAX_LINE_BYTES >> 20
            ),
            (false, None) => {
                carry = buf;
                continue;
            }
        };
        carry = buf.split_off(cut);
        if !buf.is_empty() {
            let lines = buf.iter().filter(|b| **b == b'\n').count();
            let chunk = Chunk {
                index,
                first_line: next_line,
                bytes: buf,
            };
            index += 1;
            next_line += lines;
            if tx.send(chunk).is_err() {
                bail!("the parser threads stopped; this is a bug, please report it");
            }
        }
        progress.tick(parsed.load(Ordering::Relaxed));
        if eof {
            return Ok(());
        }
    }
}

fn parse_chunk(path: &Path, chunk: &Chunk, parsed: &AtomicUsize) -> anyhow::Result<Vec<Event>> {
    let mut events = Vec::new();
    for (k, line) in chunk.bytes.split(|b| *b == b'\n').enumerate() {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let event = serde_json::from_slice::<Event>(line).map_err(|e| {
            anyhow::anyhow!(
                "{}:{}: not a valid event: {e}; fix or remove that line (one JSON event per line, each with id, timestamp, level, category, source, event_type)",
                path.display(),
                chunk.first_line + k
            )
        })?;
        events.push(event);
    }
    parsed.fetch_add(events.len(), Ordering::Relaxed);
    Ok(events)
}

/// Prints events read and the rate to stderr every few seconds.
struct Progress {
    started: Instant,
    last: Instant,
}

impl Progress {
    fn new() -> Self {
        let now = Instant::now();
        Self {
            started: now,
            last: now,
        }
    }

    fn tick(&mut self, events: usize) {
        if self.last.elapsed() < PROGRESS_EVERY {
            return;
        }
        self.last = Instant::now();
        let secs = self.started.elapsed().as_secs_f64();
        eprintln!(
            "replay: read {events} events ({:.0} events/s)",
            events as f64 / secs
        );
    }
}

fn print_summary(events_file: &Path, summary: &ReplaySummary, alerts: &[Alert]) {
    println!(
        "replayed {} events from {}",
        summary.events,
        sanitize(&events_file.display().to_string())
    );
    println!();
    let width = summary
        .rows
        .iter()
        .map(|r| r.name.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    println!(
        "{:<10} {:<width$} {:>9} {:>9} {:>10} {:>7}",
        "SOURCE", "NAME", "MATCHED", "FINDINGS", "SUPPRESSED", "ALERTS"
    );
    for r in &summary.rows {
        let matched = r.matched.map_or_else(|| "-".to_owned(), |m| m.to_string());
        println!(
            "{:<10} {:<width$} {:>9} {:>9} {:>10} {:>7}",
            r.source.as_str(),
            sanitize(&r.name),
            matched,
            r.findings,
            r.suppressed,
            r.alerts
        );
    }
    println!();
    // On stderr: the byte estimate follows allocation sizes, so it is not deterministic.
    let h = &summary.health;
    eprintln!(
        "replay: state at the end: {} tracked keys (~{} bytes), {} expired, {} evicted",
        h.tracked_keys, h.state_bytes, h.expired_keys, h.evicted_keys
    );
    println!("{} alert(s){}", alerts.len(), by_severity(alerts));
}

fn by_severity(alerts: &[Alert]) -> String {
    let mut counts = std::collections::BTreeMap::new();
    for a in alerts {
        *counts.entry(std::cmp::Reverse(a.severity)).or_insert(0u64) += 1;
    }
    if counts.is_empty() {
        return String::new();
    }
    let parts: Vec<String> = counts
        .iter()
        .map(|(s, n)| format!("{n} {}", s.0.as_str()))
        .collect();
    format!(": {}", parts.join(", "))
}

fn print_alerts(alerts: &[Alert]) {
    for a in alerts.iter().take(PRINTED_ALERTS) {
        let group: Vec<String> = a.group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        println!(
            "  {} {:<8} {:<9} {} [{}] x{}: {}",
            a.first_seen,
            a.severity.as_str(),
            a.source.as_str(),
            sanitize(&a.name),
            sanitize(&group.join(", ")),
            a.count,
            sanitize(&a.description)
        );
    }
    if alerts.len() > PRINTED_ALERTS {
        println!(
            "  … {} more; write them all with --alerts-out FILE",
            alerts.len() - PRINTED_ALERTS
        );
    }
}

fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

fn check_writable_dir(out: &Path) -> anyhow::Result<()> {
    let dir = parent_dir(out);
    if !dir.is_dir() {
        bail!(
            "cannot write alerts to {}: directory {} does not exist; create it or choose another --alerts-out",
            out.display(),
            dir.display()
        );
    }
    Ok(())
}

/// Writes the alerts to a temporary file beside `path`, then renames it over `path`, so a
/// failure never leaves half a file.
fn write_atomically(
    path: &Path,
    what: &str,
    items: &[impl serde::Serialize],
) -> anyhow::Result<()> {
    let Some(name) = path.file_name() else {
        bail!(
            "{} is not a file name; give a path like alerts.jsonl",
            path.display()
        );
    };
    let tmp = parent_dir(path).join(format!(
        ".{}.tmp-{}",
        name.to_string_lossy(),
        std::process::id()
    ));
    let written = write_lines(&tmp, items).and_then(|()| {
        std::fs::rename(&tmp, path).with_context(|| format!("cannot replace {}", path.display()))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written.with_context(|| {
        format!(
            "{} not written; {} is unchanged. Check the path and free space",
            what,
            path.display()
        )
    })
}

fn write_lines(tmp: &Path, items: &[impl serde::Serialize]) -> anyhow::Result<()> {
    let file = File::create(tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let mut w = BufWriter::new(file);
    for a in items {
        serde_json::to_writer(&mut w, a)?;
        w.write_all(b"\n")?;
    }
    let file = w.into_inner().map_err(|e| e.into_error())?;
    file.sync_all()?;
    Ok(())
}
