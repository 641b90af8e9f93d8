//! Relay benchmark (SPEC 11): direct vs a bare byte-copying relay vs `wrap`, side by side.
//!
//! One binary plays every part: run plainly it is the driver; `--echo` is a minimal MCP-ish
//! server (answers each `tools/call` line with a result); `--bare -- CMD` is the floor any
//! wrapper pays (two threads copying bytes); `--wrap -- CMD` is `mcpwatch_capture::wrap::run`
//! delivering to an accept-everything collector the driver runs on loopback. Prints round-trip
//! p50/p99, pipelined throughput, and the ratios against the targets.
//! Run: `cargo bench -p mcpwatch-capture --bench relay`.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Instant;

const WARMUP: usize = 500;
const ROUND_TRIPS: usize = 5_000;
const PIPELINED: usize = 100_000;

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

/// A collector that accepts every batch (202), counting events.
fn accept_all_collector() -> String {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    std::thread::spawn(move || {
        for conn in listener.incoming().flatten() {
            std::thread::spawn(move || {
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
                    let reply = "{\"accepted\":0,\"ids\":[]}";
                    let resp = format!(
                        "HTTP/1.1 202 Accepted\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                        reply.len()
                    );
                    if conn.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    format!("http://{addr}")
}

struct Run {
    p50: f64,
    p99: f64,
    per_sec: f64,
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

fn request(i: usize) -> String {
    format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"tools/call\",\"params\":{{\"name\":\"echo\",\"arguments\":{{\"x\":{i}}}}}}}\n")
}

fn measure(cmd: &[String], collector: &str) -> Run {
    // Latency: one request in flight at a time.
    let mut child = spawn(cmd, collector);
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
    samples.sort_by(f64::total_cmp);
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];

    // Throughput: a writer thread pipelines, the reader counts answers.
    let mut child = spawn(cmd, collector);
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
    assert_eq!(answers, PIPELINED, "every request answered");
    Run {
        p50: pct(0.50),
        p99: pct(0.99),
        per_sec: PIPELINED as f64 / elapsed.as_secs_f64().max(f64::EPSILON),
    }
}

fn drive() {
    let me = std::env::current_exe()
        .expect("own path")
        .to_string_lossy()
        .into_owned();
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
    let collector = accept_all_collector();
    let runs = [
        ("direct", measure(&echo, &collector)),
        ("bare relay", measure(&via("--bare"), &collector)),
        ("wrap", measure(&via("--wrap"), &collector)),
    ];
    println!(
        "{:<12} {:>10} {:>10} {:>14}",
        "", "p50 µs", "p99 µs", "pipelined/s"
    );
    for (name, r) in &runs {
        println!(
            "{name:<12} {:>10.1} {:>10.1} {:>14.0}",
            r.p50, r.p99, r.per_sec
        );
    }
    let [(_, direct), (_, bare), (_, wrap)] = &runs;
    let added = |w: f64, b: f64, d: f64| (w - d) / (b - d).max(0.1);
    let p50 = added(wrap.p50, bare.p50, direct.p50);
    let p99 = added(wrap.p99, bare.p99, direct.p99);
    let tput = wrap.per_sec / bare.per_sec;
    let verdict = |ok: bool| if ok { "ok" } else { "MISSED" };
    println!();
    println!(
        "wrap added latency / bare added latency, p50: {p50:.2} (target ≤ 1.25) {}",
        verdict(p50 <= 1.25)
    );
    println!(
        "wrap added latency / bare added latency, p99: {p99:.2} (target ≤ 1.25) {}",
        verdict(p99 <= 1.25)
    );
    println!(
        "wrap throughput / bare throughput:         {:.0}% (target ≥ 90%) {}",
        tput * 100.0,
        verdict(tput >= 0.9)
    );
}
