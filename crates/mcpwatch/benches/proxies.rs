//! Proxies benchmark (SPEC 11, issues "gateway tail latency" and "performance"): the real
//! `mcpwatch gateway` binary against nginx and against no proxy at all, driven by an external
//! load generator, side by side in one run.
//!
//! `benches/gateway.rs` in `mcpwatch-capture` runs everything in one process with a reqwest
//! client; its latency client is not what an agent's HTTP client does and it never saw the
//! gateway's tail. Here the load is `wrk` (a separate process, as an agent is), the gateway is
//! the binary users run, and the collector is a real `mcpwatch serve` on the same machine:
//!
//! - **upstream**: a zero-work Streamable HTTP MCP server (axum on a current-thread runtime in
//!   this process): `initialize` answers with an `Mcp-Session-Id`, `tools/call` with a small
//!   result, notifications with 202.
//! - **direct**: wrk straight at the upstream.
//! - **nginx**: Debian's nginx as a `proxy_pass` with a keepalive upstream block, one worker
//!   process (`master_process off`, so that no orphaned worker outlives the run), access log
//!   off: what a platform team would otherwise put in front of its MCP servers.
//! - **gateway, collector down**: `mcpwatch gateway` whose collector URL points at a closed
//!   port (events go to its spool).
//! - **gateway, collector up**: `mcpwatch gateway` delivering to `mcpwatch serve`, which stores
//!   and runs detection on every event.
//!
//! Each target gets an `initialize` first; wrk then replays `tools/call` with that session id
//! and a fresh JSON-RPC id per request. Two phases per round: latency with one connection (p50,
//! p90, p99, p99.9 from wrk's histogram) and throughput with 16 connections. Each phase runs
//! `MCPWATCH_BENCH_ROUNDS` (default 3) times, for `MCPWATCH_BENCH_SECS` (default 5) seconds,
//! in turn across the targets; medians of the rounds are printed with the targets' verdicts:
//! gateway p99 ≤ direct p99 + 0.5 ms and p99.9 ≤ 2 ms at one connection with the collector up;
//! requests/s ≥ 0.6× nginx at 16 connections with the collector up.
//!
//! Needs `wrk` and `nginx` on PATH (Debian: `apt-get install wrk nginx-light`); it stops with
//! that message when either is missing.
//!
//! Run: `cargo bench -p mcpwatch --bench proxies`. `MCPWATCH_BENCH_BIN=PATH` runs another
//! `mcpwatch` binary (an older build, to compare before and after in one sitting);
//! `MCPWATCH_BENCH_ONLY=TEXT` runs only the targets whose name contains TEXT.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};

const SESSION: &str = "bench-session";

fn main() {
    for tool in ["wrk", "nginx"] {
        if Command::new(tool)
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_err()
        {
            eprintln!(
                "error: `{tool}` is not installed; this benchmark needs wrk and nginx (Debian: apt-get install wrk nginx-light)"
            );
            std::process::exit(1);
        }
    }
    let rounds: usize = env_or("MCPWATCH_BENCH_ROUNDS", 3);
    let secs: u64 = env_or("MCPWATCH_BENCH_SECS", 5);
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::write(dir.path().join("call.lua"), WRK_SCRIPT).expect("wrk script");

    let upstream = spawn_upstream();
    let nginx = Nginx::start(dir.path(), upstream);
    let serve = Proc::serve(&dir.path().join("serve"));
    let closed = free_port();
    let gw_up = Proc::gateway(&dir.path().join("gw-up"), upstream, &serve.url);
    let gw_down = Proc::gateway(
        &dir.path().join("gw-down"),
        upstream,
        &format!("http://127.0.0.1:{closed}"),
    );
    let targets: Vec<(&str, String)> = vec![
        ("direct", format!("http://{upstream}/mcp")),
        ("nginx", format!("http://{}/mcp", nginx.addr)),
        ("gw, collector down", format!("{}/mcp/echo", gw_down.url)),
        ("gw, collector up", format!("{}/mcp/echo", gw_up.url)),
    ];
    for (name, url) in &targets {
        initialize(url).unwrap_or_else(|e| panic!("{name}: initialize at {url}: {e}"));
    }
    println!(
        "proxies benchmark: wrk, {rounds} rounds × {secs} s per phase; zero-work upstream; load average at start: {}",
        load_average()
    );

    // Whose CPU each target's requests cost: the proxy's process, and the collector's.
    let me = std::process::id();
    let parts = |name: &str| -> Vec<(&'static str, u32, Option<&'static str>)> {
        let mut v = vec![("upstream", me, Some("bench-upstream"))];
        match name {
            "nginx" => v.push(("proxy", nginx.child.id(), None)),
            "gw, collector down" => v.push(("proxy", gw_down.child.id(), None)),
            "gw, collector up" => {
                v.push(("proxy", gw_up.child.id(), None));
                v.push(("collector", serve.child.id(), None));
            }
            _ => {}
        }
        v
    };
    let only = std::env::var("MCPWATCH_BENCH_ONLY").ok();
    let targets: Vec<_> = targets
        .into_iter()
        .filter(|(name, _)| only.as_deref().is_none_or(|o| name.contains(o)))
        .collect();
    let mut results: BTreeMap<(String, &str), Vec<f64>> = BTreeMap::new();
    for round in 0..rounds {
        for (connections, phase) in [(1, "lat"), (16, "tput")] {
            for (name, url) in &targets {
                let before: Vec<u64> = parts(name)
                    .iter()
                    .map(|(_, pid, thread)| cpu_ns(*pid, *thread))
                    .collect();
                let w = wrk(dir.path(), url, connections, secs);
                // Let the collector finish what the gateway sent before the next target runs,
                // and count its work.
                std::thread::sleep(Duration::from_millis(500));
                let mut put = |k: &'static str, v: f64| {
                    results.entry((name.to_string(), k)).or_default().push(v);
                };
                if phase == "tput" {
                    for ((part, pid, thread), was) in parts(name).iter().zip(before) {
                        let ns = cpu_ns(*pid, *thread).saturating_sub(was) as f64;
                        put(part, ns / 1e3 / w.requests);
                    }
                }
                if phase == "lat" {
                    put("p50", w.p50);
                    put("p90", w.p90);
                    put("p99", w.p99);
                    put("p99.9", w.p999);
                    put("rps1", w.rps);
                } else {
                    put("rps16", w.rps);
                    put("p99x16", w.p99);
                }
                put("errors", w.errors as f64);
            }
        }
        eprintln!("round {}/{rounds} done", round + 1);
    }

    let m = |name: &str, k: &str| {
        median(
            results
                .get(&(name.to_string(), k))
                .cloned()
                .unwrap_or_default(),
        )
    };
    println!(
        "\n{:<22}{:>9}{:>9}{:>9}{:>9}{:>12}{:>12}{:>9}",
        "", "p50 µs", "p90 µs", "p99 µs", "p99.9 µs", "req/s ×1", "req/s ×16", "errors"
    );
    for (name, _) in &targets {
        println!(
            "{:<22}{:>9.0}{:>9.0}{:>9.0}{:>9.0}{:>12.0}{:>12.0}{:>9.0}",
            name,
            m(name, "p50"),
            m(name, "p90"),
            m(name, "p99"),
            m(name, "p99.9"),
            m(name, "rps1"),
            m(name, "rps16"),
            m(name, "errors"),
        );
    }
    println!(
        "\nCPU µs per request at 16 connections (schedstat of each process; wrk not counted):"
    );
    println!(
        "{:<22}{:>10}{:>10}{:>11}",
        "", "upstream", "proxy", "collector"
    );
    for (name, _) in &targets {
        println!(
            "{:<22}{:>10.1}{:>10.1}{:>11.1}",
            name,
            m(name, "upstream"),
            m(name, "proxy"),
            m(name, "collector")
        );
    }
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    let (d99, g99, g999) = (
        m("direct", "p99"),
        m("gw, collector up", "p99"),
        m("gw, collector up", "p99.9"),
    );
    let (n16, g16) = (m("nginx", "rps16"), m("gw, collector up", "rps16"));
    println!("\ntargets (gateway with the collector up):");
    println!(
        "  p99 ≤ direct p99 + 0.5 ms:   {:+.3} ms over direct  {}",
        (g99 - d99) / 1e3,
        verdict(g99 - d99 <= 500.0)
    );
    println!(
        "  p99.9 ≤ 2 ms:                {:.3} ms  {}",
        g999 / 1e3,
        verdict(g999 <= 2_000.0)
    );
    println!(
        "  req/s ≥ 0.6× nginx, 16 conn: {:.2}×  {}",
        g16 / n16,
        verdict(g16 >= 0.6 * n16)
    );
    println!("  load average at the end: {}", load_average());
    drop((gw_up, gw_down, serve, nginx));
}

/// wrk's request: `tools/call` with the session id and a fresh id each time; `done` prints the
/// figures on one line (latencies in µs) for this program to read.
const WRK_SCRIPT: &str = r#"
local id = 0
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Accept"] = "application/json, text/event-stream"
wrk.headers["Mcp-Session-Id"] = "bench-session"
request = function()
  id = id + 1
  return wrk.format(nil, nil, nil,
    '{"jsonrpc":"2.0","id":' .. id .. ',"method":"tools/call","params":{"name":"echo","arguments":{"message":"hello"}}}')
end
done = function(summary, latency, requests)
  local errors = summary.errors.status + summary.errors.connect + summary.errors.read
    + summary.errors.write + summary.errors.timeout
  io.write(string.format("MCPW %d %d %d %d %d %d %d\n", summary.requests, errors,
    summary.duration, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
"#;

struct Wrk {
    requests: f64,
    rps: f64,
    errors: u64,
    p50: f64,
    p90: f64,
    p99: f64,
    p999: f64,
}

fn wrk(dir: &Path, url: &str, connections: usize, secs: u64) -> Wrk {
    let out = Command::new("wrk")
        .args(["-t1", &format!("-c{connections}"), &format!("-d{secs}s")])
        .arg("-s")
        .arg(dir.join("call.lua"))
        .arg(url)
        .output()
        .expect("wrk runs");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("MCPW "))
        .unwrap_or_else(|| panic!("wrk printed no figures for {url}:\n{text}"));
    let f: Vec<f64> = line
        .split_whitespace()
        .map(|n| n.parse().expect("number"))
        .collect();
    Wrk {
        requests: f[0].max(1.0),
        rps: f[0] / (f[2] / 1e6),
        errors: f[1] as u64,
        p50: f[3],
        p90: f[4],
        p99: f[5],
        p999: f[6],
    }
}

/// `initialize` and `notifications/initialized` through `url`, over a plain HTTP/1.1 exchange.
fn initialize(url: &str) -> Result<(), String> {
    let init = r#"{"jsonrpc":"2.0","id":0,"method":"initialize","params":{"protocolVersion":"2025-06-18","capabilities":{},"clientInfo":{"name":"bench","version":"1"}}}"#;
    let (status, headers) = post(url, init, None)?;
    if status != 200 {
        return Err(format!("initialize answered {status}"));
    }
    if !headers.to_ascii_lowercase().contains("mcp-session-id") {
        return Err("initialize answered without an Mcp-Session-Id".into());
    }
    let (status, _) = post(
        url,
        r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#,
        Some(SESSION),
    )?;
    if status != 202 {
        return Err(format!("notifications/initialized answered {status}"));
    }
    Ok(())
}

fn post(url: &str, body: &str, session: Option<&str>) -> Result<(u16, String), String> {
    let rest = url.strip_prefix("http://").ok_or("not an http URL")?;
    let (host, path) = rest.split_once('/').ok_or("no path")?;
    let mut s = TcpStream::connect(host).map_err(|e| format!("connect {host}: {e}"))?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    let session = session
        .map(|s| format!("Mcp-Session-Id: {s}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\n{session}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .map_err(|e| e.to_string())?;
    let mut reply = String::new();
    s.read_to_string(&mut reply).map_err(|e| e.to_string())?;
    let status = reply
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("no HTTP status in {reply:?}"))?;
    let headers = reply
        .split("\r\n\r\n")
        .next()
        .unwrap_or_default()
        .to_owned();
    Ok((status, headers))
}

/// The zero-work upstream on its own thread; its address.
fn spawn_upstream() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::Builder::new()
        .name("bench-upstream".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let app = axum::Router::new().route("/mcp", axum::routing::post(mcp));
                axum::serve(listener, app).await.expect("serve");
            });
        })
        .expect("thread");
    addr
}

async fn mcp(headers: HeaderMap, body: Bytes) -> Response {
    let text = std::str::from_utf8(&body).unwrap_or_default();
    let Some((_, rest)) = text.split_once("\"id\":") else {
        // A notification.
        return StatusCode::ACCEPTED.into_response();
    };
    let id = rest.split([',', '}']).next().unwrap_or("null");
    if text.contains("\"method\":\"initialize\"") {
        let reply = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"result":{{"protocolVersion":"2025-06-18","capabilities":{{"tools":{{}}}},"serverInfo":{{"name":"bench-upstream","version":"1"}}}}}}"#
        );
        return (
            [
                (header::CONTENT_TYPE, "application/json"),
                (header::HeaderName::from_static("mcp-session-id"), SESSION),
            ],
            reply,
        )
            .into_response();
    }
    debug_assert!(headers.contains_key("mcp-session-id"));
    let reply = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"Echo: hello"}}],"isError":false}}}}"#
    );
    ([(header::CONTENT_TYPE, "application/json")], reply).into_response()
}

struct Nginx {
    child: Child,
    addr: SocketAddr,
}

impl Nginx {
    fn start(dir: &Path, upstream: SocketAddr) -> Nginx {
        let port = free_port();
        let root = dir.join("nginx");
        std::fs::create_dir_all(root.join("tmp")).expect("nginx dir");
        let conf = format!(
            r#"worker_processes 1;
master_process off;
daemon off;
pid {root}/nginx.pid;
error_log {root}/error.log warn;
events {{ worker_connections 1024; }}
http {{
  access_log off;
  client_body_temp_path {root}/tmp/body;
  proxy_temp_path {root}/tmp/proxy;
  fastcgi_temp_path {root}/tmp/fastcgi;
  uwsgi_temp_path {root}/tmp/uwsgi;
  scgi_temp_path {root}/tmp/scgi;
  upstream mcp {{ server {upstream}; keepalive 32; }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://mcp;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_buffering off;
    }}
  }}
}}
"#,
            root = root.display()
        );
        let conf_path = root.join("nginx.conf");
        std::fs::write(&conf_path, conf).expect("nginx.conf");
        let child = Command::new("nginx")
            .arg("-c")
            .arg(&conf_path)
            .arg("-p")
            .arg(&root)
            .stderr(Stdio::null())
            .spawn()
            .expect("nginx starts");
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
        await_listener(addr, "nginx", &root.join("error.log"));
        Nginx { child, addr }
    }
}

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `mcpwatch serve` or `mcpwatch gateway`, killed when dropped.
struct Proc {
    child: Child,
    url: String,
}

impl Proc {
    fn serve(dir: &Path) -> Proc {
        Proc::start(
            Command::new(binary())
                .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
                .arg(dir),
        )
    }

    fn gateway(dir: &Path, upstream: SocketAddr, collector: &str) -> Proc {
        Proc::start(
            Command::new(binary())
                .args(["gateway", "--listen", "127.0.0.1:0", "--upstream"])
                .arg(format!("echo=http://{upstream}/mcp"))
                .args(["--collector", collector, "--data-dir"])
                .arg(dir),
        )
    }

    fn start(cmd: &mut Command) -> Proc {
        let mut child = cmd
            .env("MCPWATCH_LOG", "warn")
            .stderr(Stdio::piped())
            .spawn()
            .expect("mcpwatch starts");
        let stderr = child.stderr.take().expect("stderr");
        let mut lines = BufReader::new(stderr).lines();
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            assert!(Instant::now() < deadline, "mcpwatch did not start in 30 s");
            let line = lines
                .next()
                .expect("mcpwatch exited before listening")
                .expect("stderr");
            if let Some(rest) = line.split("listening on ").nth(1) {
                break rest.split_whitespace().next().expect("url").to_owned();
            }
        };
        std::thread::spawn(move || for _ in lines {});
        Proc { child, url }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn binary() -> String {
    std::env::var("MCPWATCH_BENCH_BIN").unwrap_or_else(|_| env!("CARGO_BIN_EXE_mcpwatch").into())
}

fn await_listener(addr: SocketAddr, what: &str, log: &Path) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while TcpStream::connect(addr).is_err() {
        if Instant::now() > deadline {
            panic!(
                "{what} did not listen on {addr} in 10 s: {}",
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// CPU time of process `pid` so far, in ns: all its threads, or only those whose name starts
/// with `thread` (from `/proc/PID/task/*/schedstat`).
fn cpu_ns(pid: u32, thread: Option<&str>) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .flatten()
        .filter(|t| {
            thread.is_none_or(|prefix| {
                std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix))
            })
        })
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| {
            s.split_whitespace()
                .next()
                .and_then(|n| n.parse::<u64>().ok())
        })
        .sum()
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
