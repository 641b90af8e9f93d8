//! End to end on NATS JetStream: the real `mcpwatch wrap` in front of the real
//! `@modelcontextprotocol/server-everything`, driven by the official Python SDK, publishes to a
//! real 3-node nats-server cluster (`TempNatsCluster`); `mcpwatch serve --nats` consumes the
//! stream into its store. Peers come from scripts/install-peers; a missing one fails the test
//! with that instruction, it never skips.

mod common;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_none_lost, peer, root, Serve};
use futures_util::StreamExt;
use mcpwatch_nats::async_nats;
use mcpwatch_nats::testing::TempNatsCluster;

const STREAM: &str = "MCPWATCH_EVENTS";

/// A config whose stream fits the test cluster's storage.
fn config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("mcpwatch.toml");
    std::fs::write(&path, "[nats]\nmax_bytes = \"256MB\"\n").expect("config");
    path
}

fn serve(cluster: &TempNatsCluster, dir: &Path) -> Serve {
    let cfg = config(dir);
    let data = dir.join("serve");
    Serve::start(
        &data,
        &[
            "--nats",
            &cluster.urls(),
            "--config",
            cfg.to_str().expect("utf-8 path"),
        ],
    )
}

/// The Python SDK's `load` scenario through `mcpwatch wrap --nats`: `calls` echo calls, 8 at a
/// time, progress in `progress`; the session stays open until `release` exists.
fn wrapped_load(
    cluster: &TempNatsCluster,
    dir: &Path,
    calls: usize,
) -> (Child, std::path::PathBuf, std::path::PathBuf) {
    let progress = dir.join("progress");
    let release = dir.join("release");
    let child = Command::new(peer("venv/bin/python"))
        .arg(root().join("crates/mcpwatch/tests/peers/client.py"))
        .args(["load", "--"])
        .arg(env!("CARGO_BIN_EXE_mcpwatch"))
        .args([
            "wrap",
            "--name",
            "everything",
            "--user",
            "tester",
            "--nats",
            &cluster.urls(),
            "--data-dir",
        ])
        .arg(dir.join("edge"))
        .arg("--")
        .arg(peer("node/node_modules/.bin/mcp-server-everything"))
        .env("LOAD_CALLS", calls.to_string())
        .env("LOAD_PROGRESS", &progress)
        .env("WAIT_FOR_FILE", &release)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("the Python client runs");
    (child, progress, release)
}

fn answered(progress: &Path) -> usize {
    std::fs::read_to_string(progress)
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Every stored event of `event_type` from `server`: id → how often the API lists it.
async fn stored(
    client: &reqwest::Client,
    url: &str,
    event_type: &str,
    server: &str,
) -> HashMap<String, usize> {
    let mut ids = HashMap::new();
    let filters = [("event_type", event_type), ("server", server)];
    for id in common::listed_ids(client, url, &filters).await {
        *ids.entry(id).or_default() += 1;
    }
    ids
}

/// Waits until `serve` holds at least `n` such events.
async fn wait_stored(
    client: &reqwest::Client,
    url: &str,
    server: &str,
    n: usize,
    limit: Duration,
) -> HashMap<String, usize> {
    let start = Instant::now();
    loop {
        let got = stored(client, url, "execution_complete", server).await;
        if got.len() >= n || start.elapsed() > limit {
            return got;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Every message id in the stream (JetStream acknowledged each to its publisher), read with an
/// ordered consumer from the start.
async fn stream_ids(urls: &str) -> Vec<String> {
    let client = mcpwatch_nats::connect(urls, "test-reader", true)
        .await
        .expect("connect");
    let js = async_nats::jetstream::new(client);
    let stream = js.get_stream(STREAM).await.expect("stream");
    let total = stream.cached_info().state.messages as usize;
    let consumer = stream
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let mut msgs = consumer.messages().await.expect("messages");
    let mut ids = Vec::with_capacity(total);
    while ids.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .expect("the stream is read to its end")
            .expect("more messages")
            .expect("a message");
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .expect("every message carries Nats-Msg-Id");
        ids.push(id);
    }
    ids
}

/// Every stored id, once it includes all of `ids` or 30 s have passed (the client's last
/// events, sent as its session closes, may still be on their way through the stream).
async fn all_stored(client: &reqwest::Client, url: &str, ids: &[String]) -> HashSet<String> {
    let start = Instant::now();
    loop {
        let all = common::all_ids(client, url).await;
        if ids.iter().all(|id| all.contains(id)) || start.elapsed() > Duration::from_secs(30) {
            return all;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// How many messages the stream holds, asked of `urls`; 0 while it cannot say.
async fn stream_messages(urls: &str) -> u64 {
    common::stream_state(urls, STREAM)
        .await
        .map_or(0, |state| state.messages)
}

/// The stream's messages are exactly `want`'s ids, each once; the store lists each once.
fn assert_once(stream: &[String], stored: &HashMap<String, usize>, calls: usize) {
    let distinct: HashSet<&String> = stream.iter().collect();
    assert_eq!(distinct.len(), stream.len(), "the stream holds an id twice");
    let twice: Vec<_> = stored.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "stored more than once: {twice:?}");
    assert_eq!(stored.len(), calls, "one execution_complete per call");
    let in_stream: HashSet<String> = stream.iter().cloned().collect();
    let stored_ids: HashSet<String> = stored.keys().cloned().collect();
    let exec_in_stream: Vec<String> = in_stream.intersection(&stored_ids).cloned().collect();
    assert_eq!(
        exec_in_stream.len(),
        calls,
        "every stored call came through the stream"
    );
}

fn finish(mut client: Child, release: &Path) -> serde_json::Value {
    std::fs::write(release, b"").expect("release the client");
    let out = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(_)) = client.try_wait() {
                break;
            }
            assert!(Instant::now() < deadline, "the client did not finish");
            std::thread::sleep(Duration::from_millis(50));
        }
        client.wait_with_output().expect("client output")
    };
    assert!(out.status.success(), "client failed: {}", out.status);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["step"] == "load")
        .map(|v| v["value"].clone())
        .expect("the load scenario reports")
}

/// Waits up to `limit` for `serve` at `url` to store the load's `calls` calls, lets the client
/// finish, and checks: every call answered, the stream and the store hold each call once, and
/// every event in the stream is stored.
async fn assert_load_stored(
    cluster: &TempNatsCluster,
    url: &str,
    (client, release): (Child, &Path),
    calls: usize,
    limit: Duration,
) {
    let http = reqwest::Client::new();
    let got = wait_stored(&http, url, "everything", calls, limit).await;
    let load = finish(client, release);
    assert_eq!(load["ok"], calls, "{load}");
    let stream = stream_ids(&cluster.urls()).await;
    if got.len() != calls {
        eprintln!("{}", cluster.logs());
    }
    assert_once(&stream, &got, calls);
    // Everything the stream holds is in the store (session and listing events too).
    let all = all_stored(&http, url, &stream).await;
    assert_none_lost(&stream, &all);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrap_publishes_to_the_cluster_and_serve_stores_every_event_once() {
    let cluster = TempNatsCluster::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let serve = serve(&cluster, tmp.path());
    let calls = 300;
    let (client, _progress, release) = wrapped_load(&cluster, tmp.path(), calls);
    assert_load_stored(
        &cluster,
        &serve.url,
        (client, &release),
        calls,
        Duration::from_secs(90),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_events_survive_a_kill9_of_the_stream_leader_mid_load() {
    let mut cluster = TempNatsCluster::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let serve = serve(&cluster, tmp.path());
    let calls = 3_000;
    let (client, progress, release) = wrapped_load(&cluster, tmp.path(), calls);
    let deadline = Instant::now() + Duration::from_secs(120);
    while answered(&progress) < calls / 3 {
        assert!(
            Instant::now() < deadline,
            "the load did not reach a third: {}",
            answered(&progress)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let leader = TempNatsCluster::stream_leader(&cluster.urls(), STREAM)
        .await
        .expect("the stream has a leader");
    let killed = cluster.index_of(&leader).expect("a node of ours");
    let at = answered(&progress);
    let survivors: Vec<String> = (0..3)
        .filter(|i| *i != killed)
        .map(|i| cluster.url(i))
        .collect();
    let before = stream_messages(&cluster.urls()).await;
    cluster.kill9(killed);
    let killed_at = Instant::now();
    eprintln!("killed the stream leader {leader} after {at} answered calls");
    // How long until the stream stores a publish again (the failover an edge sees).
    let failover = tokio::spawn(async move {
        let urls = survivors.join(",");
        loop {
            if stream_messages(&urls).await > before {
                return killed_at.elapsed();
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    while answered(&progress) < 2 * calls / 3 {
        assert!(
            Instant::now() < deadline,
            "the load stalled after the kill: {}",
            answered(&progress)
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    cluster.restart(killed);
    let failover = tokio::time::timeout(Duration::from_secs(60), failover)
        .await
        .expect("the stream took publishes again within 60s")
        .expect("the failover probe");
    eprintln!("the stream stored publishes again {failover:?} after its leader was killed");
    assert_load_stored(
        &cluster,
        &serve.url,
        (client, &release),
        calls,
        Duration::from_secs(120),
    )
    .await;
}

/// The size of the spool files of the wrapped server `everything` in the edge's data dir.
fn spooled_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir.join("edge/spool/everything")) else {
        return 0;
    };
    entries
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "ndjson"))
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_an_edge_publishes_before_the_stream_exists_wait_in_its_spool() {
    let cluster = TempNatsCluster::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    // No serve yet, so no stream: JetStream acknowledges nothing and the edge must keep it all.
    let calls = 100;
    let (client, progress, release) = wrapped_load(&cluster, tmp.path(), calls);
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered(&progress) < calls || spooled_bytes(tmp.path()) == 0 {
        assert!(
            Instant::now() < deadline,
            "{} calls answered, {} bytes spooled",
            answered(&progress),
            spooled_bytes(tmp.path())
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let probe = mcpwatch_nats::connect(&cluster.urls(), "test-probe", true)
        .await
        .expect("the cluster answers");
    assert!(
        async_nats::jetstream::new(probe)
            .get_stream(STREAM)
            .await
            .is_err(),
        "no stream before serve makes it"
    );
    // serve creates the stream; the edge's retries publish the spool to it.
    let serve = serve(&cluster, tmp.path());
    assert_load_stored(
        &cluster,
        &serve.url,
        (client, &release),
        calls,
        Duration::from_secs(90),
    )
    .await;
}

/// Runs the binary and returns its exit success and stderr.
fn run(args: &[&str]) -> (bool, String) {
    let out = common::bin()
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .expect("mcpwatch runs");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn a_bad_nats_url_or_an_unreachable_server_is_one_clear_error() {
    let tmp = tempfile::tempdir().expect("temp dir");
    let data = tmp.path().to_str().expect("utf-8");
    let (ok, err) = run(&[
        "wrap",
        "--nats",
        "http://127.0.0.1:4222",
        "--data-dir",
        data,
        "--",
        "true",
    ]);
    assert!(!ok && err.contains("nats://"), "{err}");
    let cfg = tmp.path().join("gw.toml");
    std::fs::write(&cfg, "[sink]\nnats = \"127.0.0.1:4222\"\nspeed = 3\n").expect("config");
    let (ok, err) = run(&[
        "gateway",
        "--config",
        cfg.to_str().expect("utf-8"),
        "--upstream",
        "x=http://127.0.0.1:9/mcp",
    ]);
    assert!(
        !ok && err.contains("sink.nats") && err.contains("sink.speed"),
        "{err}"
    );
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let (ok, err) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--nats",
        &url,
    ]);
    assert!(
        !ok && err.contains(&format!("127.0.0.1:{port}")) && err.contains("JetStream"),
        "{err}"
    );
    let (ok, err) = run(&[
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data,
        "--nats",
        "nats://",
    ]);
    assert!(!ok && err.contains("--nats"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gateway_with_sink_nats_and_a_collector_delivers_to_both() {
    let cluster = TempNatsCluster::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    // One collector reads the stream, the other takes the gateway's HTTP posts.
    let from_nats = serve(&cluster, tmp.path());
    let over_http = Serve::start(&tmp.path().join("http-collector"), &[]);
    let (_upstream, upstream) = common::detect::everything();
    let config = format!(
        "[gateway.upstreams]\neverything = \"{upstream}\"\n\n[sink]\nnats = \"{}\"\n",
        cluster.urls()
    );
    let (_gw, gw) = common::detect::gateway(&config, &over_http.url, tmp.path(), &[]);
    let out = Command::new(peer("venv/bin/python"))
        .arg(root().join("crates/mcpwatch/tests/peers/http_client.py"))
        .arg("everything")
        .arg(format!("{gw}/mcp/everything"))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("the Python client runs");
    assert!(out.status.success(), "client failed: {}", out.status);
    let http = reqwest::Client::new();
    let a = wait_stored(
        &http,
        &from_nats.url,
        "everything",
        3,
        Duration::from_secs(60),
    )
    .await;
    let b = wait_stored(
        &http,
        &over_http.url,
        "everything",
        3,
        Duration::from_secs(60),
    )
    .await;
    assert_eq!(
        a.len(),
        3,
        "echo, get-sum and no-such-tool through NATS: {a:?}"
    );
    let (a, b): (HashSet<_>, HashSet<_>) = (a.into_keys().collect(), b.into_keys().collect());
    assert_eq!(a, b, "the same events, by id, through NATS and over HTTP");
    let stream: HashSet<String> = stream_ids(&cluster.urls()).await.into_iter().collect();
    assert!(a.is_subset(&stream));
}

/// An edge that published to a stream that did not exist yet and then ended leaves its events
/// in its spool; `mcpwatch spool flush --nats` publishes them once `serve` has made the stream,
/// each once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_flush_publishes_what_a_gone_edge_left_to_the_stream() {
    let cluster = TempNatsCluster::start();
    let tmp = tempfile::tempdir().expect("temp dir");
    let calls = 50;
    let (client, progress, release) = wrapped_load(&cluster, tmp.path(), calls);
    let deadline = Instant::now() + Duration::from_secs(60);
    while answered(&progress) < calls || spooled_bytes(tmp.path()) == 0 {
        assert!(Instant::now() < deadline, "the load did not spool");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let load = finish(client, &release);
    assert_eq!(load["ok"], calls, "{load}");
    assert!(spooled_bytes(tmp.path()) > 0, "the gone edge's events wait");
    let serve = serve(&cluster, tmp.path());
    let out = Command::new(env!("CARGO_BIN_EXE_mcpwatch"))
        .args(["spool", "flush", "--nats", &cluster.urls(), "--data-dir"])
        .arg(tmp.path().join("edge"))
        .output()
        .expect("spool flush runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("to NATS at"), "{stdout}");
    let http = reqwest::Client::new();
    let got = wait_stored(
        &http,
        &serve.url,
        "everything",
        calls,
        Duration::from_secs(60),
    )
    .await;
    let stream = stream_ids(&cluster.urls()).await;
    assert_once(&stream, &got, calls);
    assert_eq!(
        spooled_bytes(tmp.path()),
        0,
        "the spool is empty after the flush"
    );
}
