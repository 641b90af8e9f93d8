//! `mcpwatch demo`: a collector with the default config on a temporary data dir, fed by the
//! built-in traffic generator ([`crate::demo`]) through the real ingest API, like a client.
//! Normal traffic plus a few attacks in the first minute, so a newcomer sees events and
//! alerts right away. Ctrl-C stops it cleanly and removes the data unless `--keep-data`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use mcpwatch_core::clock::Clock as _;
use mcpwatch_core::config::Config;
use mcpwatch_core::time_fmt::parse_duration;
use mcpwatch_core::SystemClock;
use serde_json::Value;
use tokio::time::Instant;

use super::serve::Collector;
use crate::demo::attacks::EXPECTED;
use crate::demo::Generator;
use crate::term::sanitize;

/// How often the generator sends a batch.
const STEP: Duration = Duration::from_millis(250);
/// How often progress is printed.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);
/// Attacks are spread over this much of the start of the run (less for short runs).
const ATTACK_SPAN: Duration = Duration::from_secs(60);

/// `mcpwatch demo` options.
#[derive(clap::Args)]
pub struct DemoArgs {
    /// Address for the demo collector.
    #[arg(long, default_value = "127.0.0.1:7878")]
    pub listen: SocketAddr,
    /// How long to run, e.g. 30s, 5m, 1h.
    #[arg(long, default_value = "5m", value_parser = parse_run_time)]
    pub duration: Duration,
    /// Normal events per second (attacks come on top).
    #[arg(long, default_value_t = 25.0)]
    pub rate: f64,
    /// Seed of the traffic generator: the same seed sends the same traffic.
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Keep the data dir when the demo ends (its path is printed at start).
    #[arg(long)]
    pub keep_data: bool,
}

fn parse_run_time(s: &str) -> Result<Duration, String> {
    match parse_duration(s) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be longer than zero".into()),
        Err(e) => Err(format!("{e}; write it like 30s, 5m or 1h")),
    }
}

pub async fn run(args: DemoArgs) -> anyhow::Result<ExitCode> {
    super::serve::init_logging("warn");
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        anyhow::bail!("--rate must be a number of events per second, 0 or more");
    }
    let data_dir = make_data_dir()?;
    let result = run_in(&args, &data_dir).await;
    if args.keep_data {
        eprintln!("demo data kept in {}", data_dir.display());
    } else if let Err(e) = std::fs::remove_dir_all(&data_dir) {
        eprintln!(
            "warning: could not remove {}: {e}; delete it by hand",
            data_dir.display()
        );
    }
    result
}

async fn run_in(args: &DemoArgs, data_dir: &Path) -> anyhow::Result<ExitCode> {
    let mut config = Config::default();
    config.server.listen = args.listen;
    config.store.data_dir = Some(data_dir.to_owned());
    let detection: toml::Table =
        toml::from_str(crate::demo::DETECTION).context("the demo's detection config")?;
    config
        .extra
        .insert("detection".into(), toml::Value::Table(detection));
    let collector = Collector::start(config, Arc::new(SystemClock))
        .await
        .with_context(|| {
            format!(
                "the demo collector could not start on {}; if the port is busy (is `mcpwatch serve` running?), pass --listen 127.0.0.1:PORT, e.g. --listen 127.0.0.1:0 for any free port",
                args.listen
            )
        })?;
    let url = format!("http://{}", collector.addr);
    print_welcome(&url, &collector.addr, data_dir, args);
    let outcome = tokio::select! {
        r = drive(&url, args) => r,
        _ = super::serve::shutdown_signal() => {
            eprintln!("\ninterrupted: stopping the demo");
            Ok(())
        }
    };
    eprintln!("stopping the collector");
    collector.stop().await;
    outcome.map(|()| ExitCode::SUCCESS)
}

fn print_welcome(url: &str, addr: &SocketAddr, data_dir: &Path, args: &DemoArgs) {
    let span = ATTACK_SPAN.min(args.duration.mul_f64(2.0 / 3.0));
    eprintln!(
        "mcpwatch demo: dashboard at {url}/ — collector listening on {url} (data in {})",
        data_dir.display()
    );
    eprintln!(
        "sending ~{} normal events/s from 50 users on 5 MCP servers for {} s, seed {}; {} attacks within the first {} s:",
        args.rate,
        args.duration.as_secs(),
        args.seed,
        EXPECTED.len(),
        span.as_secs()
    );
    for (attack, name) in EXPECTED {
        eprintln!("  - {attack} → {name}");
    }
    let collector_env = if addr.port() == 7878 && addr.ip().is_loopback() {
        String::new()
    } else {
        format!("MCPWATCH_COLLECTOR={url} ")
    };
    eprintln!("in another terminal, try:");
    eprintln!("  {collector_env}mcpwatch events --follow");
    eprintln!("  curl '{url}/api/v1/events?category=security_alert'");
    eprintln!("  {collector_env}mcpwatch alerts list");
    eprintln!("press Ctrl-C to stop");
}

/// Sends the generator's traffic until the run time is over; prints progress.
async fn drive(url: &str, args: &DemoArgs) -> anyhow::Result<()> {
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .context("cannot build the HTTP client")?;
    let span = ATTACK_SPAN.min(args.duration.mul_f64(2.0 / 3.0));
    let mut generator = Generator::new(args.seed, args.rate, span, SystemClock.now());
    let started = Instant::now();
    let mut ticks = tokio::time::interval(STEP);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut next_progress = started + PROGRESS_EVERY;
    let (mut sent, mut rejected) = (0u64, 0u64);
    loop {
        ticks.tick().await;
        let elapsed = started.elapsed().min(args.duration);
        let batch = generator.step(elapsed);
        if !batch.is_empty() {
            match post(&client, url, &batch).await {
                Ok(()) => sent += batch.len() as u64,
                Err(e) => {
                    rejected += batch.len() as u64;
                    eprintln!(
                        "warning: a batch of {} events was not accepted: {e:#}",
                        batch.len()
                    );
                }
            }
        }
        let done = elapsed >= args.duration;
        if done || Instant::now() >= next_progress {
            next_progress += PROGRESS_EVERY;
            let found = findings_so_far(&client, url).await;
            print_progress(started.elapsed(), sent, rejected, &found);
        }
        if done {
            return Ok(());
        }
    }
}

async fn post(client: &reqwest::Client, url: &str, batch: &[Value]) -> anyhow::Result<()> {
    let resp = client
        .post(format!("{url}/api/v1/events"))
        .json(batch)
        .send()
        .await?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let body = resp.text().await.unwrap_or_default();
    anyhow::bail!(
        "HTTP {status}: {}",
        body.chars().take(300).collect::<String>()
    )
}

/// Detection output so far, by name: rule triggers, threats and anomalies.
async fn findings_so_far(client: &reqwest::Client, url: &str) -> BTreeMap<String, u64> {
    let mut found = BTreeMap::new();
    let queries: [(&[(&str, &str)], &str); 4] = [
        (&[("category", "security_alert")], "rule_name"),
        (
            &[("category", "security"), ("event_type", "threat_detected")],
            "threat_type",
        ),
        (&[("category", "anomaly")], "anomaly_type"),
        (
            &[
                ("category", "performance"),
                ("event_type", "threshold_exceeded"),
            ],
            "metric",
        ),
    ];
    for (query, key) in queries {
        let Ok(resp) = client
            .get(format!("{url}/api/v1/events"))
            .query(query)
            .query(&[("limit", "1000")])
            .send()
            .await
        else {
            continue;
        };
        let Ok(page) = resp.json::<Value>().await else {
            continue;
        };
        for e in page["events"].as_array().into_iter().flatten() {
            let name = e["metadata"][key].as_str().unwrap_or("?");
            *found.entry(name.to_owned()).or_default() += 1;
        }
    }
    found
}

fn print_progress(elapsed: Duration, sent: u64, rejected: u64, found: &BTreeMap<String, u64>) {
    let names: Vec<String> = found
        .iter()
        .map(|(n, c)| format!("{} {c}", sanitize(n)))
        .collect();
    let alerts = if names.is_empty() {
        "none yet".to_owned()
    } else {
        names.join(", ")
    };
    let rejected = if rejected > 0 {
        format!(" ({rejected} rejected)")
    } else {
        String::new()
    };
    eprintln!(
        "[{:>4}s] {sent} events sent{rejected}; detections so far: {alerts}",
        elapsed.as_secs()
    );
}

fn make_data_dir() -> anyhow::Result<PathBuf> {
    let base = std::env::temp_dir();
    for attempt in 0..100u32 {
        let dir = base.join(format!("mcpwatch-demo-{}-{attempt}", std::process::id()));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => {
                return Err(e).with_context(|| {
                    format!(
                    "cannot create a temporary data dir in {}; set TMPDIR to a writable directory",
                    base.display()
                )
                })
            }
        }
    }
    anyhow::bail!(
        "cannot create a temporary data dir in {}: too many leftovers named mcpwatch-demo-*; remove them",
        base.display()
    )
}
