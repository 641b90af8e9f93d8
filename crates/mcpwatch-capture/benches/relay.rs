//! Relay benchmark (SPEC 11): direct vs a bare byte-copying relay vs `wrap`, side by side.
//!
//! One binary plays every part: run plainly it is the driver; `--echo` is a minimal MCP-ish
//! server (answers each `tools/call` line with a result); `--bare -- CMD` is the floor any
//! wrapper pays (two threads copying bytes with the same 64 KiB reads and `write_all` + `flush`
//! as `wrap`'s relay); `--wrap -- CMD` is `mcpwatch_capture::wrap::run` delivering to an
//! accept-everything collector the driver runs on loopback.
//!
//! The machine is shared and has 2 cores, so one run of each configuration says little: the
//! driver runs `MCPWATCH_BENCH_ROUNDS` (default 5) rounds, each measuring direct, bare and
//! wrap back to back, and reports medians. Beside wall-clock latency and throughput it reports
//! what contention distorts least: CPU time per message of the measured process tree
//! (`getrusage(RUSAGE_CHILDREN)` deltas, so the relay plus the echo server; direct is the echo
//! server alone). It also reports how many line copies `wrap` dropped and how many events the
//! collector got: a `wrap` that keeps up by dropping copies is not monitoring, and the numbers
//! say so. Ratios are printed against the SPEC 11 targets with MET / NOT MET.
//!
//! Run: `cargo bench -p mcpwatch-capture --bench relay`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nix::sys::resource::{getrusage, UsageWho};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const WARMUP: usize = 500;
const ROUND_TRIPS: usize = 5_000;
const PIPELINED: usize = 100_000;
const DEFAULT_ROUNDS: usize = 5;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--echo") => echo_server(),
        Some("--bare") => bare_relay(&args[3..]),
        Some("--wrap") => wrap_relay(&args[3..]),
        _ => drive(),
    }
}

/// Answers every request line with a small result carrying its id.
fn echo_server() {
    let stdin = std::io::stdin();
    let mut out = std::io::stdout().lock();
    let mut line = String::new();
    let mut input = stdin.lock();
    loop {
        line.clear();
        match input.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let id = line
            .split_once("\"id\":")
            .and_then(|(_, rest)| rest.split([',', '}']).next())
            .unwrap_or("null");
        let reply = format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"result\":{{\"content\":[{{\"type\":\"text\",\"text\":\"ok\"}}]}}}}\n"
        );
        if out
            .write_all(reply.as_bytes())
            .and_then(|()| out.flush())
            .is_err()
        {
            return;
        }
    }
}

/// The floor: spawn CMD, copy bytes both ways on two threads, nothing else.
fn bare_relay(cmd: &[String]) {
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn");
    let mut child_in = child.stdin.take().expect("stdin");
    let mut child_out = child.stdout.take().expect("stdout");
    std::thread::spawn(move || copy(&mut std::io::stdin(), &mut child_in));
    copy(&mut child_out, &mut std::io::stdout());
    let _ = child.wait();
}

fn copy(from: &mut impl Read, to: &mut impl Write) {
    let mut buf = vec![0u8; 64 * 1024];
    while let Ok(n) = from.read(&mut buf) {
        if n == 0 || to.write_all(&buf[..n]).and_then(|()| to.flush()).is_err() {
            return;
        }
    }
}

/// `wrap` itself, delivering to the collector named in MCPWATCH_COLLECTOR.
fn wrap_relay(cmd: &[String]) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let data = std::env::temp_dir().join(format!("mcpwatch-bench-{}", std::process::id()));
    let collector = std::env::var("MCPWATCH_COLLECTOR").unwrap_or_default();
    let cfg = mcpwatch_capture::wrap::WrapConfig::new(
        cmd.iter().map(Into::into).collect(),
        "bench".into(),
        collector,
        data.clone(),
    );
    let code = rt
        .block_on(mcpwatch_capture::wrap::run(
            cfg,
            Arc::new(mcpwatch_core::SystemClock),
        ))
        .expect("wrap runs");
    let _ = std::fs::remove_dir_all(data);
    std::process::exit(i32::from(code));
}

/// What the collector saw since the last [`Collector::take`].
#[derive(Debug, Default, Clone, Copy)]
struct Seen {
    events: u64,
    dropped_lines: u64,
}

/// A collector that accepts every batch (202), counting events and reported dropped copies.
#[derive(Clone)]
struct Collector {
    url: String,
    events: Arc<AtomicU64>,
    dropped_lines: Arc<AtomicU64>,
}

impl Collector {
    fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let url = format!("http://{}", listener.local_addr().expect("addr"));
        let c = Self {
            url,
            events: Arc::default(),
            dropped_lines: Arc::default(),
        };
        let counters = c.clone();
        std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let counters = counters.clone();
                std::thread::spawn(move || counters.serve(conn));
            }
        });
        c
    }

    fn serve(&self, conn: std::net::TcpStream) {
        let mut reader = BufReader::new(conn.try_clone().expect("clone"));
        let mut conn = conn;
        loop {
            let mut len = 0usize;
            let mut line = String::new();
            loop {
                line.clear();
                if reader.read_line(&mut line).unwrap_or(0) == 0 {
                    return;
                }
                let l = line.to_ascii_lowercase();
                if let Some(v) = l.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0u8; len];
            if reader.read_exact(&mut body).is_err() {
                return;
            }
            self.count(&body);
            let reply = "{\"accepted\":0,\"ids\":[]}";
            let resp = format!(
                "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                reply.len()
            );
            if conn.write_all(resp.as_bytes()).is_err() {
                return;
            }
        }
    }

    /// Counts the events of a batch and the `dropped_lines` of `capture_dropped` events.
    fn count(&self, body: &[u8]) {
        let events = serde_json::from_slice::<Vec<serde::de::IgnoredAny>>(body)
            .map(|v| v.len())
            .unwrap_or(0);
        self.events.fetch_add(events as u64, Ordering::Relaxed);
        let key = b"\"dropped_lines\":";
        for at in memchr::memmem::find_iter(body, key) {
            let digits: String = body[at + key.len()..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .map(|&b| char::from(b))
                .collect();
            let n: u64 = digits.parse().unwrap_or(0);
            self.dropped_lines.fetch_add(n, Ordering::Relaxed);
        }
    }

    fn take(&self) -> Seen {
        Seen {
            events: self.events.swap(0, Ordering::Relaxed),
            dropped_lines: self.dropped_lines.swap(0, Ordering::Relaxed),
        }
    }
}

/// One configuration measured once.
#[derive(Debug, Clone, Copy)]
struct Run {
    p50: f64,
    p99: f64,
    per_sec: f64,
    /// CPU µs of the process tree per round trip (latency phase).
    cpu_rt: f64,
    /// CPU µs of the process tree per message (pipelined phase).
    cpu_msg: f64,
    /// What the collector saw during the pipelined phase.
    pipelined: Seen,
    /// What the collector saw during the latency phase.
    latency: Seen,
}

fn spawn(cmd: &[String], collector: &str) -> Child {
    Command::new(&cmd[0])
        .args(&cmd[1..])
        .env("MCPWATCH_COLLECTOR", collector)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawn")
}

/// CPU time of the children waited for so far (and their waited-for children).
fn children_cpu() -> Duration {
    let u = getrusage(UsageWho::RUSAGE_CHILDREN).expect("getrusage");
    let tv = |t: nix::sys::time::TimeVal| {
        Duration::from_secs(t.tv_sec() as u64) + Duration::from_micros(t.tv_usec() as u64)
    };
    tv(u.user_time()) + tv(u.system_time())
}

fn request(i: usize) -> String {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"x\":{i}}}}}}}\n")
}

fn measure(cmd: &[String], collector: &Collector) -> Run {
    // Latency: one request in flight at a time.
    collector.take();
    let cpu0 = children_cpu();
    let mut child = spawn(cmd, &collector.url);
    let mut input = child.stdin.take().expect("stdin");
    let mut output = BufReader::new(child.stdout.take().expect("stdout"));
    let mut line = String::new();
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for i in 0..WARMUP + ROUND_TRIPS {
        let req = request(i);
        let start = Instant::now();
        input.write_all(req.as_bytes()).expect("write");
        line.clear();
        output.read_line(&mut line).expect("read");
        if i >= WARMUP {
            samples.push(start.elapsed().as_secs_f64() * 1e6);
        }
    }
    drop(input);
    let _ = child.wait();
    let cpu_rt = (children_cpu() - cpu0).as_secs_f64() * 1e6 / (WARMUP + ROUND_TRIPS) as f64;
    let latency = collector.take();
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];

    // Throughput: a writer thread pipelines, the reader counts answers.
    let cpu0 = children_cpu();
    let mut child = spawn(cmd, &collector.url);
    let mut input = child.stdin.take().expect("stdin");
    let output = BufReader::new(child.stdout.take().expect("stdout"));
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let mut buf = Vec::with_capacity(64 * 1024);
        for i in 0..PIPELINED {
            buf.extend_from_slice(request(i).as_bytes());
            if buf.len() > 32 * 1024 {
                input.write_all(&buf).expect("write");
                buf.clear();
            }
        }
        input.write_all(&buf).expect("write");
    });
    let answers = output.lines().take(PIPELINED).count();
    let elapsed = start.elapsed();
    writer.join().expect("writer");
    let _ = child.wait();
    let cpu_msg = (children_cpu() - cpu0).as_secs_f64() * 1e6 / PIPELINED as f64;
    assert_eq!(answers, PIPELINED, "every request answered");
    Run {
        p50: pct(0.50),
        p99: pct(0.99),
        per_sec: PIPELINED as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
        cpu_rt,
        cpu_msg,
        pipelined: collector.take(),
        latency,
    }
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    if n % 2 == 1 {
        xs[n / 2]
    } else {
        (xs[n / 2 - 1] + xs[n / 2]) / 2.0
    }
}

/// The medians of a configuration's rounds (counts are medians too).
fn summarize(runs: &[Run]) -> Run {
    let m = |f: &dyn Fn(&Run) -> f64| median(runs.iter().map(f).collect());
    let seen = |f: &dyn Fn(&Run) -> Seen| Seen {
        events: m(&|r| f(r).events as f64) as u64,
        dropped_lines: m(&|r| f(r).dropped_lines as f64) as u64,
    };
    Run {
        p50: m(&|r| r.p50),
        p99: m(&|r| r.p99),
        per_sec: m(&|r| r.per_sec),
        cpu_rt: m(&|r| r.cpu_rt),
        cpu_msg: m(&|r| r.cpu_msg),
        pipelined: seen(&|r| r.pipelined),
        latency: seen(&|r| r.latency),
    }
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".into())
}

fn drive() {
    let me = std::env::current_exe()
        .expect("own path")
        .to_string_lossy()
        .into_owned();
    let rounds: usize = std::env::var("MCPWATCH_BENCH_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(DEFAULT_ROUNDS);
    let echo = vec![me.clone(), "--echo".into()];
    let via = |mode: &str| {
        vec![
            me.clone(),
            mode.into(),
            "--".into(),
            me.clone(),
            "--echo".into(),
        ]
    };
    let configs = [
        ("direct", echo.clone()),
        ("bare relay", via("--bare")),
        ("wrap", via("--wrap")),
    ];
    let collector = Collector::start();
    println!("load average before: {}", load_average());
    let mut runs: Vec<Vec<Run>> = vec![Vec::new(); configs.len()];
    for round in 0..rounds {
        for (i, (_, cmd)) in configs.iter().enumerate() {
            runs[i].push(measure(cmd, &collector));
        }
        let w = runs[2][round];
        eprintln!(
            "round {}/{rounds}: p99 direct/bare/wrap {:.1}/{:.1}/{:.1} µs, pipelined/s {:.0}/{:.0}/{:.0}, wrap dropped {}",
            round + 1,
            runs[0][round].p99,
            runs[1][round].p99,
            w.p99,
            runs[0][round].per_sec,
            runs[1][round].per_sec,
            w.per_sec,
            w.pipelined.dropped_lines,
        );
    }
    println!("load average after:  {}", load_average());
    println!("medians of {rounds} interleaved rounds\n");
    let med: Vec<Run> = runs.iter().map(|r| summarize(r)).collect();
    println!(
        "{:<11} {:>8} {:>8} {:>12} {:>10} {:>10} {:>14} {:>10}",
        "",
        "p50 µs",
        "p99 µs",
        "pipelined/s",
        "CPU µs/rt",
        "CPU µs/msg",
        "copies dropped",
        "events"
    );
    for ((name, _), r) in configs.iter().zip(&med) {
        println!(
            "{name:<11} {:>8.1} {:>8.1} {:>12.0} {:>10.2} {:>10.2} {:>14} {:>10}",
            r.p50,
            r.p99,
            r.per_sec,
            r.cpu_rt,
            r.cpu_msg,
            r.pipelined.dropped_lines + r.latency.dropped_lines,
            r.pipelined.events + r.latency.events,
        );
    }
    let [direct, bare, wrap] = [med[0], med[1], med[2]];
    let added = |w: f64, b: f64, d: f64| (w - d) / (b - d).max(0.1);
    let p50 = added(wrap.p50, bare.p50, direct.p50);
    let p99 = added(wrap.p99, bare.p99, direct.p99);
    let tput = wrap.per_sec / bare.per_sec;
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    println!();
    println!(
        "added latency p50: wrap {:+.1} µs, bare {:+.1} µs, ratio {p50:.2} (target ≤ 1.25) {}",
        wrap.p50 - direct.p50,
        bare.p50 - direct.p50,
        verdict(p50 <= 1.25)
    );
    println!(
        "added latency p99: wrap {:+.1} µs, bare {:+.1} µs, ratio {p99:.2} (target ≤ 1.25) {}",
        wrap.p99 - direct.p99,
        bare.p99 - direct.p99,
        verdict(p99 <= 1.25)
    );
    println!(
        "pipelined throughput: wrap / bare {:.0}% (target ≥ 90%) {}",
        tput * 100.0,
        verdict(tput >= 0.9)
    );
    let lines = 2 * PIPELINED as u64;
    println!(
        "wrap monitoring: latency phase {} of {} line copies dropped; pipelined phase {} of {lines} dropped ({:.1}%), {} events delivered",
        wrap.latency.dropped_lines,
        2 * (WARMUP + ROUND_TRIPS),
        wrap.pipelined.dropped_lines,
        wrap.pipelined.dropped_lines as f64 * 100.0 / lines as f64,
        wrap.pipelined.events,
    );
    println!(
        "wrap CPU over bare: {:+.2} µs per round trip, {:+.2} µs per pipelined message",
        wrap.cpu_rt - bare.cpu_rt,
        wrap.cpu_msg - bare.cpu_msg
    );
}
