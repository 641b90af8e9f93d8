//! Gateway benchmark (SPEC 11): requests/s and latency, direct vs through `mcpwatch gateway`,
//! against a local upstream, side by side in one run.
//!
//! A third column is the floor any HTTP proxy pays on this machine: a bare proxy of a few
//! lines (the same axum server and reqwest client as the gateway, on the same kind of
//! runtime, forwarding body and headers and streaming the answer back, nothing else). With a
//! zero-work upstream on 2 shared cores, one more HTTP hop costs about as much CPU as the
//! upstream and the client together, so the ratio to direct says what a hop costs; the ratio
//! to the bare proxy says what mcpwatch's own work (auth, policy, taps, monitoring, delivery)
//! adds on top. A second set of runs puts a tool behind the upstream that waits 1 ms (1–2 ms
//! with tokio's timer), as a tool waits on a disk or a service: what the ratio looks like in
//! use. Both are printed; the zero-work one is the SPEC's measure.
//!
//! Everything runs in this process on loopback: a minimal axum MCP-ish echo upstream (answers
//! each `tools/call` with a small JSON result), an accept-everything collector that counts the
//! events it gets, the gateway itself (`mcpwatch_capture::gateway::serve`, monitoring and
//! delivery on, no auth) and the load: closed-loop clients over keep-alive connections.
//! Throughput uses `CONCURRENCY` clients; latency one client, request after request.
//! The machine is shared and has 2 cores, so each phase runs `MCPWATCH_BENCH_ROUNDS` (default
//! 3) times and medians are reported, with ratios against the SPEC targets (≥ 90 % of direct
//! requests/s; ≤ 1 ms added at p99) and MET / NOT MET. The collector's event count shows the
//! monitoring kept up (3 events per call: execution_start, execution_complete,
//! request_performance).
//!
//! Run: `cargo bench -p mcpwatch-capture --bench gateway`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use mcpwatch_capture::delivery::DeliveryConfig;
use mcpwatch_capture::gateway::config::LimitsSection;
use mcpwatch_capture::gateway::{GatewayConfig, GatewayRun};
use mcpwatch_core::SystemClock;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const CONCURRENCY: usize = 16;
const LATENCY_REQUESTS: usize = 3_000;
const WARMUP: usize = 300;

fn main() {
    let rounds: usize = env_or("MCPWATCH_BENCH_ROUNDS", 3);
    let secs: u64 = env_or("MCPWATCH_BENCH_SECS", 3);
    let events = Arc::new(AtomicU64::new(0));
    let dropped = Arc::new(AtomicU64::new(0));
    let upstream = spawn_server(
        "bench-upstream",
        axum::Router::new()
            .route("/mcp", axum::routing::post(echo))
            .route("/mcp-slow", axum::routing::post(slow_echo)),
    );
    let (counted, dropped_seen) = (events.clone(), dropped.clone());
    let collector = spawn_server(
        "bench-collector",
        axum::Router::new().route(
            "/api/v1/events",
            axum::routing::post(move |body: Bytes| {
                let (counted, dropped_seen) = (counted.clone(), dropped_seen.clone());
                async move { accept(&counted, &dropped_seen, &body) }
            }),
        ),
    );
    let gateway = spawn_gateway(upstream, collector);
    let bare = spawn_bare_proxy(upstream);
    let direct_url = format!("http://{upstream}/mcp");
    let bare_url = format!("http://{bare}/mcp");
    let gateway_url = format!("http://{gateway}/mcp/echo");
    let slow = [
        ("direct", format!("http://{upstream}/mcp-slow")),
        ("bare", format!("http://{bare}/mcp-slow")),
        ("gateway", format!("http://{gateway}/mcp/slow")),
    ];

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let mut results: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
    let mut calls_through = 0u64;
    rt.block_on(async {
        for url in [&direct_url, &bare_url, &gateway_url] {
            latency(&client, url, WARMUP).await;
        }
        for round in 0..rounds {
            for (name, url) in [
                ("direct", &direct_url),
                ("bare", &bare_url),
                ("gateway", &gateway_url),
            ] {
                let cpu_before = thread_cpu();
                let (n, rps) = throughput(&client, url, Duration::from_secs(secs)).await;
                if name == "gateway" {
                    calls_through += n;
                }
                results
                    .entry(leak(format!("{name} rps")))
                    .or_default()
                    .push(rps);
                let mut lat = latency(&client, url, LATENCY_REQUESTS).await;
                if name == "gateway" {
                    calls_through += LATENCY_REQUESTS as u64;
                }
                let requests = (n + LATENCY_REQUESTS as u64) as f64;
                for (part, ns) in thread_cpu().since(&cpu_before) {
                    results
                        .entry(leak(format!("{name} cpu {part}")))
                        .or_default()
                        .push(ns / 1e3 / requests);
                }
                lat.sort_by(f64::total_cmp);
                results
                    .entry(leak(format!("{name} p50")))
                    .or_default()
                    .push(pct(&lat, 0.50));
                results
                    .entry(leak(format!("{name} p99")))
                    .or_default()
                    .push(pct(&lat, 0.99));
            }
            for (name, url) in &slow {
                let (n, rps) = throughput(&client, url, Duration::from_secs(secs)).await;
                if *name == "gateway" {
                    calls_through += n;
                }
                results
                    .entry(leak(format!("{name} slow rps")))
                    .or_default()
                    .push(rps);
            }
            eprintln!("round {}/{rounds} done", round + 1);
        }
    });
    // Let the monitor and delivery catch up (until the count stops growing, at most 60 s)
    // before counting what the collector got.
    let mut last = u64::MAX;
    for _ in 0..60 {
        std::thread::sleep(Duration::from_secs(1));
        let now = events.load(Ordering::Relaxed);
        if now == last {
            break;
        }
        last = now;
    }
    let m = |k: &str| median(results.get(k).cloned().unwrap_or_default());
    let (d_rps, b_rps, g_rps) = (m("direct rps"), m("bare rps"), m("gateway rps"));
    let (d50, b50, g50) = (m("direct p50"), m("bare p50"), m("gateway p50"));
    let (d99, b99, g99) = (m("direct p99"), m("bare p99"), m("gateway p99"));
    println!("\ngateway benchmark: {rounds} rounds × {secs} s, {CONCURRENCY} clients for throughput, 1 client for latency (medians)\n");
    println!(
        "{:<20}{:>10}{:>12}{:>10}{:>14}{:>14}",
        "", "direct", "bare proxy", "gateway", "gw/direct", "gw/bare"
    );
    println!(
        "{:<20}{:>10.0}{:>12.0}{:>10.0}{:>13.1}%{:>13.1}%",
        "requests/s",
        d_rps,
        b_rps,
        g_rps,
        100.0 * g_rps / d_rps,
        100.0 * g_rps / b_rps
    );
    for (what, d, b, g) in [
        ("latency p50 (µs)", d50, b50, g50),
        ("latency p99 (µs)", d99, b99, g99),
    ] {
        println!(
            "{:<20}{:>10.1}{:>12.1}{:>10.1}{:>+14.1}{:>+14.1}",
            what,
            d,
            b,
            g,
            g - d,
            g - b
        );
    }
    let (ds, bs, gs) = (
        m("direct slow rps"),
        m("bare slow rps"),
        m("gateway slow rps"),
    );
    println!(
        "{:<20}{:>10.0}{:>12.0}{:>10.0}{:>13.1}%{:>13.1}%",
        "req/s, 1 ms tool",
        ds,
        bs,
        gs,
        100.0 * gs / ds,
        100.0 * gs / bs
    );
    println!(
        "\nCPU per request by thread group (µs; schedstat, so contention does not inflate it):"
    );
    println!(
        "{:<20}{:>10}{:>12}{:>10}",
        "", "direct", "bare proxy", "gateway"
    );
    for part in PARTS.iter().map(|(_, p)| *p) {
        let c = |phase: &str| m(&format!("{phase} cpu {part}"));
        println!(
            "{:<20}{:>10.1}{:>12.1}{:>10.1}",
            part,
            c("direct"),
            c("bare"),
            c("gateway")
        );
    }
    let got = events.load(Ordering::Relaxed);
    println!(
        "\nmonitoring: {calls_through} calls through the gateway (+{WARMUP} warm-up), {got} events at the collector (3 expected per call), {} copies dropped by a monitor that fell behind",
        dropped.load(Ordering::Relaxed)
    );
    let verdict = |ok: bool| if ok { "MET" } else { "NOT MET" };
    println!("\nSPEC 11 targets:");
    println!(
        "  requests/s ≥ 90 % of direct: {:.1} %  {}",
        100.0 * g_rps / d_rps,
        verdict(g_rps >= 0.9 * d_rps)
    );
    println!(
        "  (the bare proxy, no monitoring, reaches {:.1} % of direct; the gateway {:.1} % of it)",
        100.0 * b_rps / d_rps,
        100.0 * g_rps / b_rps
    );
    println!(
        "  with a tool that takes 1 ms:  {:.1} %  {}",
        100.0 * gs / ds,
        verdict(gs >= 0.9 * ds)
    );
    println!(
        "  p99 added ≤ 1 ms:            {:+.3} ms  {}",
        (g99 - d99) / 1e3,
        verdict(g99 - d99 <= 1_000.0)
    );
    // A gateway that keeps its throughput by dropping copies is not monitoring.
    let lost = dropped.load(Ordering::Relaxed);
    println!(
        "  every call inspected:        {lost} copies dropped  {}",
        verdict(lost == 0)
    );
}

/// Thread-name prefixes (as the kernel truncates them) and what they are.
const PARTS: [(&str, &str); 6] = [
    ("gateway-", "client (bench)"),
    ("bench-upstream", "upstream"),
    ("bare-proxy", "bare proxy"),
    ("gateway", "gateway proxy"),
    ("mcpwatch-monito", "gateway monitor"),
    ("bench-collector", "collector"),
];

/// CPU time so far of each part, in ns, from `/proc/self/task/*/schedstat`.
#[derive(Default)]
struct Cpu(BTreeMap<&'static str, f64>);

impl Cpu {
    fn since(&self, before: &Cpu) -> Vec<(&'static str, f64)> {
        PARTS
            .iter()
            .map(|(_, p)| {
                let get = |c: &Cpu| c.0.get(p).copied().unwrap_or(0.0);
                (*p, get(self) - get(before))
            })
            .collect()
    }
}

fn thread_cpu() -> Cpu {
    let mut cpu = Cpu::default();
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return cpu;
    };
    for task in tasks.flatten() {
        let path = task.path();
        let comm = std::fs::read_to_string(path.join("comm")).unwrap_or_default();
        let comm = comm.trim();
        // The main thread is named after the bench binary, `gateway-<hash>`; so test it first.
        let part = PARTS.iter().find(|(prefix, _)| {
            if *prefix == "gateway" {
                comm == "gateway" || comm.starts_with("gateway") && !comm.starts_with("gateway-")
            } else {
                comm.starts_with(prefix)
            }
        });
        let Some((_, part)) = part else { continue };
        let ns: f64 = std::fs::read_to_string(path.join("schedstat"))
            .ok()
            .and_then(|s| s.split_whitespace().next().and_then(|n| n.parse().ok()))
            .unwrap_or(0.0);
        *cpu.0.entry(part).or_default() += ns;
    }
    cpu
}

fn env_or<T: std::str::FromStr>(key: &str, default: T) -> T {
    std::env::var(key)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len().max(1)) - 1;
    sorted.get(i).copied().unwrap_or(f64::NAN)
}

fn call_body(id: u64) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"echo","arguments":{{"message":"hello"}}}}}}"#
    )
}

async fn send(client: &reqwest::Client, url: &str, id: u64) {
    let resp = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-session-id", "bench-session")
        .body(call_body(id))
        .send()
        .await
        .expect("request");
    assert!(resp.status().is_success(), "{url}: {}", resp.status());
    resp.bytes().await.expect("body");
}

/// Closed loop, `CONCURRENCY` clients for `for_how_long`: (requests, requests per second).
async fn throughput(client: &reqwest::Client, url: &str, for_how_long: Duration) -> (u64, f64) {
    let done = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let deadline = start + for_how_long;
    let tasks: Vec<_> = (0..CONCURRENCY)
        .map(|c| {
            let (client, url, done) = (client.clone(), url.to_string(), done.clone());
            tokio::spawn(async move {
                let mut id = (c as u64) << 32;
                while Instant::now() < deadline {
                    id += 1;
                    send(&client, &url, id).await;
                    done.fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("client task");
    }
    let n = done.load(Ordering::Relaxed);
    (n, n as f64 / start.elapsed().as_secs_f64())
}

/// One client, `n` requests one after another: latencies in µs.
async fn latency(client: &reqwest::Client, url: &str, n: usize) -> Vec<f64> {
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let t = Instant::now();
        send(client, url, i as u64).await;
        out.push(t.elapsed().as_secs_f64() * 1e6);
    }
    out
}

/// The upstream: a JSON result carrying the request's id.
async fn echo(body: Bytes) -> impl IntoResponse {
    let text = std::str::from_utf8(&body).unwrap_or_default();
    let id = text
        .split_once("\"id\":")
        .and_then(|(_, rest)| rest.split([',', '}']).next())
        .unwrap_or("null");
    let reply = format!(
        r#"{{"jsonrpc":"2.0","id":{id},"result":{{"content":[{{"type":"text","text":"Echo: hello"}}],"isError":false}}}}"#
    );
    ([(header::CONTENT_TYPE, "application/json")], reply)
}

/// The upstream with a tool that waits 1 ms, as a tool waits on a disk or a service (tokio's
/// timer rounds up to its 1 ms tick, so a call takes 1–2 ms).
async fn slow_echo(body: Bytes) -> impl IntoResponse {
    tokio::time::sleep(Duration::from_millis(1)).await;
    echo(body).await
}

/// The collector: accepts every batch and counts its events (by their `event_type` keys, so
/// that counting costs the shared CPUs next to nothing) and the copies `capture_dropped`
/// events report.
fn accept(counted: &AtomicU64, dropped: &AtomicU64, body: &[u8]) -> impl IntoResponse {
    let n = memchr::memmem::find_iter(body, b"\"event_type\"").count();
    counted.fetch_add(n as u64, Ordering::Relaxed);
    let key = b"\"dropped_lines\":";
    for at in memchr::memmem::find_iter(body, key) {
        let digits = body[at + key.len()..]
            .iter()
            .take_while(|b| b.is_ascii_digit())
            .fold(0u64, |n, &b| n * 10 + u64::from(b - b'0'));
        dropped.fetch_add(digits, Ordering::Relaxed);
    }
    let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
    (
        axum::http::StatusCode::ACCEPTED,
        axum::Json(serde_json::json!({"accepted": n, "ids": ids})),
    )
}

/// Serves `app` on its own thread with a current-thread runtime; returns its address.
fn spawn_server(name: &str, app: axum::Router) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::Builder::new()
        .name(name.into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("serve");
            });
        })
        .expect("thread");
    addr
}

/// The floor: a proxy that forwards the body and headers to `upstream` with reqwest and streams
/// the answer back, on a multi-threaded runtime like the gateway's, and does nothing else.
fn spawn_bare_proxy(upstream: SocketAddr) -> SocketAddr {
    let base = format!("http://{upstream}");
    let client = reqwest::Client::builder()
        .no_proxy()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let app = axum::Router::new().route(
        "/{path}",
        axum::routing::post(
            move |uri: axum::http::Uri, headers: axum::http::HeaderMap, body: Bytes| {
                let (client, url) = (client.clone(), format!("{base}{}", uri.path()));
                async move {
                    let mut fwd = axum::http::HeaderMap::new();
                    for (k, v) in &headers {
                        if k != header::HOST && k != header::CONTENT_LENGTH {
                            fwd.append(k.clone(), v.clone());
                        }
                    }
                    let resp = client
                        .post(url)
                        .headers(fwd)
                        .body(body)
                        .send()
                        .await
                        .expect("upstream");
                    let status = resp.status();
                    let mut headers = axum::http::HeaderMap::new();
                    for (k, v) in resp.headers() {
                        if k != header::TRANSFER_ENCODING && k != header::CONNECTION {
                            headers.append(k.clone(), v.clone());
                        }
                    }
                    let mut out = axum::response::Response::new(axum::body::Body::from_stream(
                        resp.bytes_stream(),
                    ));
                    *out.status_mut() = status;
                    *out.headers_mut() = headers;
                    out
                }
            },
        ),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::Builder::new()
        .name("bench-bare-proxy".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .thread_name("bare-proxy")
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                axum::serve(listener, app).await.expect("serve");
            });
        })
        .expect("thread");
    addr
}

/// The gateway as `mcpwatch gateway` runs it (a multi-threaded runtime), in front of `upstream`.
fn spawn_gateway(upstream: SocketAddr, collector: SocketAddr) -> SocketAddr {
    let mut cfg = GatewayConfig::default();
    cfg.upstreams
        .insert("echo".into(), format!("http://{upstream}/mcp"));
    cfg.upstreams
        .insert("slow".into(), format!("http://{upstream}/mcp-slow"));
    let built = cfg.build(&|_| None).expect("valid config");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    listener.set_nonblocking(true).expect("nonblocking");
    std::thread::Builder::new()
        .name("bench-gateway".into())
        .spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .thread_name("gateway")
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let run = GatewayRun {
                    built,
                    limits: LimitsSection::default(),
                    delivery: DeliveryConfig::new(format!("http://{collector}")),
                    data_dir: None,
                    classification: Default::default(),
                    redactor: Default::default(),
                };
                let forever = std::future::pending::<()>();
                mcpwatch_capture::gateway::serve(listener, run, Arc::new(SystemClock), forever)
                    .await
                    .expect("gateway");
            });
        })
        .expect("thread");
    addr
}
