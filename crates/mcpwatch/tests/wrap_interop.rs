//! End-to-end tests of `mcpwatch wrap` against real peers and a real collector (`mcpwatch serve`).
//!
//! The official MCP Python SDK drives `@modelcontextprotocol/server-everything` and
//! `server-filesystem` once directly and once through `wrap`: the responses must be identical
//! and the collector must hold the right events. Peers come from `scripts/install-peers`; a
//! missing peer fails the test with that instruction, it never skips.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_mcpwatch")
}

/// A peer installed by scripts/install-peers, or a failure saying how to get it.
fn peer(relative: &str) -> String {
    let p = root().join(".test-deps").join(relative);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-peers (needs npm and python3) and run the tests again",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

fn python() -> String {
    peer("venv/bin/python")
}

fn client_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers/client.py")
        .to_string_lossy()
        .into_owned()
}

fn free_addr() -> String {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("an address").to_string()
}

/// `mcpwatch serve` on a temporary data dir; killed on drop.
struct Collector {
    child: Child,
    addr: String,
}

impl Collector {
    fn start(addr: &str, data_dir: &Path) -> Collector {
        let child = Command::new(bin())
            .args(["serve", "--listen", addr, "--data-dir"])
            .arg(data_dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("mcpwatch serve starts");
        let c = Collector {
            child,
            addr: addr.to_string(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while http_get(&c.addr, "/api/v1/events?limit=1").is_none() {
            assert!(
                Instant::now() < deadline,
                "mcpwatch serve did not come up on {addr}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        c
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Events of one type from one server.
    fn events(&self, event_type: &str, server: &str) -> Vec<Value> {
        let body = http_get(
            &self.addr,
            &format!("/api/v1/events?event_type={event_type}&limit=1000"),
        )
        .unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["events"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter(|e| e["metadata"]["server"] == server)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Waits until at least `n` such events are there.
    fn wait_events(&self, event_type: &str, server: &str, n: usize) -> Vec<Value> {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let got = self.events(event_type, server);
            if got.len() >= n || Instant::now() > deadline {
                return got;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for Collector {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn http_get(addr: &str, path: &str) -> Option<String> {
    let mut s = TcpStream::connect(addr).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    if !text.starts_with("HTTP/1.1 200") && !text.starts_with("HTTP/1.0 200") {
        return None;
    }
    text.split_once("\r\n\r\n").map(|(_, b)| b.to_string())
}

/// Runs the Python SDK client on a server command; returns its JSON lines.
fn run_client(scenario: &str, server: &[String], env: &[(&str, &str)]) -> Vec<Value> {
    let out = Command::new(python())
        .arg(client_script())
        .arg(scenario)
        .arg("--")
        .args(server)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("the Python client runs");
    assert!(
        out.status.success(),
        "client failed ({}) for {server:?}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("the client prints JSON lines"))
        .collect()
}

fn wrapped(name: &str, collector: &str, data_dir: &Path, server: &[String]) -> Vec<String> {
    let mut cmd = vec![
        bin().to_string(),
        "wrap".into(),
        "--name".into(),
        name.into(),
        "--user".into(),
        "tester".into(),
        "--collector".into(),
        collector.into(),
        "--data-dir".into(),
        data_dir.to_string_lossy().into_owned(),
        "--".into(),
    ];
    cmd.extend(server.iter().cloned());
    cmd
}

fn by_tool(events: &[Value]) -> Vec<(String, String, bool)> {
    let mut v: Vec<(String, String, bool)> = events
        .iter()
        .map(|e| {
            let m = &e["metadata"];
            (
                m["tool_name"].as_str().unwrap_or_default().to_string(),
                m["outcome"].as_str().unwrap_or_default().to_string(),
                m["success"].as_bool().unwrap_or(true),
            )
        })
        .collect();
    v.sort();
    v
}

#[test]
fn server_everything_direct_and_wrapped_are_identical_and_recorded() {
    let server = vec![peer("node/node_modules/.bin/mcp-server-everything")];
    let tmp = tempfile::tempdir().expect("a temp dir");
    let collector = Collector::start(&free_addr(), &tmp.path().join("serve"));
    let direct = run_client("everything", &server, &[]);
    let through = run_client(
        "everything",
        &wrapped(
            "everything",
            &collector.url(),
            &tmp.path().join("wrap"),
            &server,
        ),
        &[],
    );
    assert_eq!(
        direct, through,
        "responses through wrap differ from direct ones"
    );

    let done = collector.wait_events("execution_complete", "everything", 3);
    assert_eq!(
        by_tool(&done),
        vec![
            ("echo".into(), "success".into(), true),
            ("get-sum".into(), "success".into(), true),
            ("no-such-tool".into(), "tool_error".into(), false),
        ]
    );
    let start = collector.wait_events("session_start", "everything", 1);
    assert_eq!(start.len(), 1);
    assert_eq!(start[0]["metadata"]["client"]["name"], "mcp");
    assert_eq!(start[0]["source"], "wrap:everything");
    assert_eq!(start[0]["metadata"]["user_id"], "tester");
    let access = collector.wait_events("data_access", "everything", 1);
    assert_eq!(
        access[0]["metadata"]["uri"],
        "demo://resource/static/document/architecture.md"
    );
    let listed = collector.wait_events("tools_listed", "everything", 1);
    assert!(listed[0]["metadata"]["tools"]
        .as_array()
        .is_some_and(|t| t.len() > 5));
    let perf = collector.wait_events("request_performance", "everything", 6);
    assert!(
        perf.len() >= 6,
        "one request_performance per request, got {}",
        perf.len()
    );
    collector.wait_events("session_end", "everything", 1);
}

#[test]
fn server_filesystem_reading_outside_is_a_tool_error_not_a_success() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let dir = tmp.path().join("allowed");
    std::fs::create_dir_all(dir.join(".ssh")).expect("mkdir");
    std::fs::write(dir.join("a.txt"), "hello\n").expect("write");
    std::fs::write(dir.join(".ssh/id_rsa"), "not really a key\n").expect("write");
    let dir_s = dir
        .canonicalize()
        .expect("canonical")
        .to_string_lossy()
        .into_owned();
    let server = vec![
        peer("node/node_modules/.bin/mcp-server-filesystem"),
        dir_s.clone(),
    ];
    let collector = Collector::start(&free_addr(), &tmp.path().join("serve"));
    let env = [("FS_DIR", dir_s.as_str())];
    let direct = run_client("filesystem", &server, &env);
    let through = run_client(
        "filesystem",
        &wrapped(
            "filesystem",
            &collector.url(),
            &tmp.path().join("wrap"),
            &server,
        ),
        &env,
    );
    assert_eq!(direct, through);
    let outside = direct
        .iter()
        .find(|l| l["step"] == "read_outside")
        .expect("the outside read ran");
    assert_eq!(
        outside["value"]["isError"], true,
        "the peer must refuse the read"
    );

    let done = collector.wait_events("execution_complete", "filesystem", 4);
    assert_eq!(
        by_tool(&done),
        vec![
            ("list_directory".into(), "success".into(), true),
            ("read_text_file".into(), "success".into(), true),
            ("read_text_file".into(), "success".into(), true),
            ("read_text_file".into(), "tool_error".into(), false),
        ]
    );
    let access = collector.wait_events("data_access", "filesystem", 1);
    assert_eq!(
        access.len(),
        1,
        "only the .ssh read is sensitive: {access:#?}"
    );
    assert_eq!(access[0]["metadata"]["data_classification"], "sensitive");
}

/// Every file under `dir`, recursively (SQLite's WAL and the spool included).
fn files_under(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let p = entry.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

#[test]
fn a_dotenv_read_and_copied_through_wrap_leaves_no_secret_on_disk_or_in_the_api() {
    let fixtures = root().join("crates/mcpwatch-core/src/redact/fixtures");
    let dotenv = std::fs::read_to_string(fixtures.join("secrets.env")).expect("the fixture");
    let secrets: Vec<String> = std::fs::read_to_string(fixtures.join("secrets.expect"))
        .expect("the fixture")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(str::to_owned)
        .collect();
    let tmp = tempfile::tempdir().expect("a temp dir");
    let dir = tmp.path().join("project");
    std::fs::create_dir_all(&dir).expect("mkdir");
    std::fs::write(dir.join(".env"), &dotenv).expect("write");
    let dir_s = dir
        .canonicalize()
        .expect("canonical")
        .to_string_lossy()
        .into_owned();
    let server = vec![
        peer("node/node_modules/.bin/mcp-server-filesystem"),
        dir_s.clone(),
    ];
    let (serve_dir, wrap_dir) = (tmp.path().join("serve"), tmp.path().join("wrap"));
    let collector = Collector::start(&free_addr(), &serve_dir);
    let lines = run_client(
        "dotenv",
        &wrapped("secrets", &collector.url(), &wrap_dir, &server),
        &[("FS_DIR", dir_s.as_str())],
    );
    // The secrets really went through the relay: the client read them and copied them.
    let read = serde_json::to_string(&lines).expect("json");
    assert!(
        secrets.iter().all(|s| read.contains(s.as_str())),
        "the client read the .env"
    );
    let copied = std::fs::read_to_string(dir.join("env.backup")).expect("the copy was written");
    assert_eq!(copied, dotenv);

    let done = collector.wait_events("execution_complete", "secrets", 2);
    assert_eq!(done.len(), 2, "both calls are recorded: {done:#?}");
    let exposure = collector.wait_events("threat_detected", "secrets", 1);
    assert!(
        exposure
            .iter()
            .any(|e| e["metadata"]["threat_type"] == "secret_exposure"),
        "the read is reported as an exposure: {exposure:#?}"
    );
    let mut served = String::new();
    for path in [
        "/api/v1/events?limit=1000",
        "/api/v1/tools",
        "/api/v1/summary",
    ] {
        served.push_str(&http_get(&collector.addr, path).unwrap_or_default());
    }
    for e in done.iter().chain(&exposure) {
        let id = e["id"].as_str().unwrap_or_default();
        served.push_str(
            &http_get(&collector.addr, &format!("/api/v1/events/{id}")).unwrap_or_default(),
        );
    }
    assert!(served.contains("[REDACTED:"), "the API shows what was cut");
    drop(collector);
    let files = [files_under(&serve_dir), files_under(&wrap_dir)].concat();
    assert!(
        files.iter().any(|f| f.to_string_lossy().ends_with("-wal"))
            || files.iter().any(|f| f.to_string_lossy().ends_with(".db")),
        "the store was written: {files:?}"
    );
    for secret in &secrets {
        assert!(!served.contains(secret.as_str()), "the API serves {secret}");
        for f in &files {
            let bytes = std::fs::read(f).unwrap_or_default();
            let found = bytes.windows(secret.len()).any(|w| w == secret.as_bytes());
            assert!(!found, "{secret} is stored in {}", f.display());
        }
    }
}

#[test]
fn collector_down_during_calls_then_events_arrive_when_it_is_up() {
    let server = vec![peer("node/node_modules/.bin/mcp-server-everything")];
    let tmp = tempfile::tempdir().expect("a temp dir");
    let addr = free_addr();
    let release = tmp.path().join("release");
    let release_s = release.to_string_lossy().into_owned();
    let wrap_cmd = wrapped(
        "down",
        &format!("http://{addr}"),
        &tmp.path().join("wrap"),
        &server,
    );
    let client = std::thread::spawn(move || {
        run_client(
            "everything",
            &wrap_cmd,
            &[("WAIT_FOR_FILE", release_s.as_str())],
        )
    });
    // The calls happen while nothing listens; then the collector comes up mid-session.
    std::thread::sleep(Duration::from_secs(8));
    let collector = Collector::start(&addr, &tmp.path().join("serve"));
    let done = collector.wait_events("execution_complete", "down", 3);
    std::fs::write(&release, "").expect("release the client");
    let lines = client.join().expect("client thread");
    assert!(
        lines.iter().any(|l| l["step"] == "after_wait"),
        "every call succeeded"
    );
    assert_eq!(
        by_tool(&done).len(),
        3,
        "events spooled while the collector was down arrived: {done:#?}"
    );
    collector.wait_events("session_start", "down", 1);
}

/// A server that answers `initialize`, then dies with code 7 in the middle of a tool call.
const DYING_SERVER: &str = r#"
import sys, json
for line in sys.stdin:
    m = json.loads(line)
    if m.get("method") == "initialize":
        print(json.dumps({"jsonrpc": "2.0", "id": m["id"], "result": {"protocolVersion": "2025-06-18", "capabilities": {}, "serverInfo": {"name": "dying", "version": "1"}}}), flush=True)
    elif m.get("method") == "tools/call":
        sys.exit(7)
"#;

#[test]
fn server_dying_mid_call_is_a_transport_error_and_its_exit_code_passes_through() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let collector = Collector::start(&free_addr(), &tmp.path().join("serve"));
    let cmd = wrapped(
        "dying",
        &collector.url(),
        &tmp.path().join("wrap"),
        &["python3".into(), "-c".into(), DYING_SERVER.into()],
    );
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wrap starts");
    let mut stdin = child.stdin.take().expect("stdin");
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":1,"method":"initialize","params":{{"protocolVersion":"2025-06-18","capabilities":{{}},"clientInfo":{{"name":"t","version":"0"}}}}}}"#).expect("write");
    writeln!(stdin, r#"{{"jsonrpc":"2.0","id":2,"method":"tools/call","params":{{"name":"boom","arguments":{{}}}}}}"#).expect("write");
    let status = child.wait().expect("wrap exits");
    drop(stdin);
    assert_eq!(status.code(), Some(7), "wrap exits with the server's code");
    let done = collector.wait_events("execution_complete", "dying", 1);
    assert_eq!(
        by_tool(&done),
        vec![("boom".into(), "transport_error".into(), false)]
    );
    let end = collector.wait_events("session_end", "dying", 1);
    assert_eq!(end[0]["metadata"]["exit_code"], 7);
}

#[test]
fn hostile_frames_are_relayed_unchanged_and_reported() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let collector = Collector::start(&free_addr(), &tmp.path().join("serve"));
    let mut input: Vec<u8> = Vec::new();
    input.extend_from_slice(b"{not json\n");
    input.extend_from_slice(b"\xff\xfe\x00garbage\n");
    input.extend_from_slice(br#"{"jsonrpc":"2.0","id":"a","method":"unknown/method"}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#);
    input.push(b'\n');
    input.extend_from_slice(br#"{"jsonrpc":"2.0","id":42,"result":{}}"#);
    input.push(b'\n');
    let mut big = br#"{"jsonrpc":"2.0","method":"x","params":""#.to_vec();
    big.extend(std::iter::repeat_n(b'x', 10 * 1024 * 1024));
    big.extend_from_slice(b"\"}\n");
    input.extend_from_slice(&big);
    input.extend_from_slice(b"no newline at the end");
    // `cat` echoes every frame back: each is seen in both directions.
    let cmd = wrapped(
        "hostile",
        &collector.url(),
        &tmp.path().join("wrap"),
        &["cat".into()],
    );
    let mut child = Command::new(&cmd[0])
        .args(&cmd[1..])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("wrap starts");
    let mut stdin = child.stdin.take().expect("stdin");
    let feed = input.clone();
    let writer = std::thread::spawn(move || stdin.write_all(&feed));
    let mut output = Vec::new();
    child
        .stdout
        .take()
        .expect("stdout")
        .read_to_end(&mut output)
        .expect("read");
    writer.join().expect("writer").expect("written");
    let status = child.wait().expect("wrap exits");
    assert!(status.success());
    assert!(
        output == input,
        "output differs from input ({} vs {} bytes)",
        output.len(),
        input.len()
    );

    let errors = collector.wait_events("protocol_error", "hostile", 12);
    let mut kinds: Vec<String> = errors
        .iter()
        .map(|e| {
            format!(
                "{}:{}",
                e["metadata"]["kind"].as_str().unwrap_or_default(),
                e["metadata"]["direction"].as_str().unwrap_or_default()
            )
        })
        .collect();
    kinds.sort();
    for want in [
        "invalid_json:client_to_server",
        "invalid_utf8:client_to_server",
        "line_too_long:client_to_server",
        "line_too_long:server_to_client",
        "duplicate_request_id:client_to_server",
        "invalid_json:server_to_client",
    ] {
        assert!(
            kinds.iter().any(|k| k == want),
            "missing {want} in {kinds:?}"
        );
    }
    let perf = collector.wait_events("request_performance", "hostile", 1);
    assert!(perf
        .iter()
        .any(|e| e["metadata"]["method"] == "unknown/method"));
}
