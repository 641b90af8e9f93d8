//! What the detection contract tests share: the collector's API read with curl, waits with a
//! deadline, and the real gateway in front of server-everything.

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

/// GET `url` as JSON (`Null` when it fails).
pub fn get(url: &str) -> Value {
    let out = Command::new("curl")
        .args(["-sf", url])
        .output()
        .expect("curl runs");
    serde_json::from_slice(&out.stdout).unwrap_or(Value::Null)
}

/// Polls `what` until `done` holds or 60 s pass; returns the last value.
pub fn wait_until<T>(what: impl Fn() -> T, done: impl Fn(&T) -> bool) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let v = what();
        if done(&v) || Instant::now() > deadline {
            return v;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// The collector's alerts.
pub fn alerts(url: &str) -> Vec<Value> {
    get(&format!("{url}/api/v1/alerts?limit=500"))["alerts"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// The alerts called `name`.
pub fn named<'a>(alerts: &'a [Value], name: &str) -> Vec<&'a Value> {
    alerts.iter().filter(|a| a["name"] == name).collect()
}

/// Waits until the collector's learning period (2 s of event time) is over.
pub fn wait_past_learning() {
    let first = Instant::now();
    wait_until(
        || Value::Bool(first.elapsed() >= Duration::from_secs(3)),
        |v| v == &Value::Bool(true),
    );
}

/// What the attack phase of a contract test must raise, as its alerts word it.
pub struct Contract<'a> {
    /// "server/tool called 10 times in a row".
    pub the_loop: &'a str,
    /// "`param` is 6…": the outlying size of the attack's oversized argument.
    pub outlying: &'a str,
    /// The normal work's session, which must raise no anomaly.
    pub work_session: &'a str,
}

/// Waits for the attack's alerts on `url` and checks each names user `tester`, and that the
/// normal work raised no anomaly (the attack's alerts prove detection has seen everything
/// before them).
pub fn check_contract(url: &str, c: &Contract<'_>) {
    let want = ["repetition", "unusual_parameters", "path_traversal"];
    let got = wait_until(
        || Value::Array(alerts(url)),
        |v| {
            let a = v.as_array().cloned().unwrap_or_default();
            want.iter().all(|n| !named(&a, n).is_empty())
        },
    );
    let got = got.as_array().cloned().unwrap_or_default();
    let names: Vec<&str> = got.iter().filter_map(|a| a["name"].as_str()).collect();

    let rep = named(&got, "repetition");
    assert_eq!(rep.len(), 1, "only the true loop is a loop: {names:?}");
    let d = rep[0]["description"].as_str().unwrap_or_default();
    assert!(d.contains(c.the_loop), "{d}");
    assert!(d.contains("user tester"), "{d}");
    assert_eq!(rep[0]["group"]["metadata.user_id"], "tester");
    assert_ne!(rep[0]["group"]["metadata.session_id"], c.work_session);

    let unusual = named(&got, "unusual_parameters");
    assert_eq!(unusual.len(), 1, "{got:#?}");
    let d = unusual[0]["description"].as_str().unwrap_or_default();
    assert!(d.contains("called by user tester, session "), "{d}");
    assert!(d.contains("never-seen key `exec`"), "{d}");
    assert!(d.contains(c.outlying), "the 6 kB argument is outlying: {d}");
    assert_eq!(unusual[0]["group"]["metadata.user_id"], "tester");

    let traversal = named(&got, "path_traversal");
    assert_eq!(
        traversal[0]["group"]["metadata.user_id"], "tester",
        "{traversal:#?}"
    );

    for a in got.iter().filter(|a| a["source"] == "anomaly") {
        let d = a["description"].as_str().unwrap_or_default();
        assert!(
            !d.contains(c.work_session),
            "normal work raised {}: {d}",
            a["name"]
        );
    }
}

/// A child process killed on drop.
pub struct Proc(pub Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A loopback port nothing listens on.
pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").expect("a free port");
    l.local_addr().expect("an address").port()
}

/// Waits until something listens on `port`.
pub fn await_listener(what: &str, port: u16) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "{what} did not listen on {port} within 30 s"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// server-everything in Streamable HTTP mode; returns the process and its MCP URL.
pub fn everything() -> (Proc, String) {
    let script =
        super::peer("node/node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    let port = free_port();
    let child = Command::new("node")
        .arg(script)
        .arg("streamableHttp")
        .env("PORT", port.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs (install Node.js and run scripts/install-peers)");
    let proc = Proc(child);
    await_listener("server-everything", port);
    (proc, format!("http://127.0.0.1:{port}/mcp"))
}

/// `mcpwatch gateway` with a config file; returns the process and its base URL.
pub fn gateway(config: &str, collector: &str, dir: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    gateway_on("127.0.0.1:0", config, collector, dir, env)
}

/// `mcpwatch gateway` on `listen` with a config file; returns the process and its base URL.
pub fn gateway_on(
    listen: &str,
    config: &str,
    collector: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> (Proc, String) {
    let file = dir.join("gateway.toml");
    std::fs::write(&file, config).expect("write config");
    let mut child = super::bin()
        .args(["gateway", "--listen", listen, "--config"])
        .arg(&file)
        .args(["--collector", collector, "--data-dir"])
        .arg(dir.join("gw-data"))
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn mcpwatch gateway");
    let stderr = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(rest) = line.split("listening on ").nth(1) {
                let _ = tx.send(
                    rest.split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_owned(),
                );
            } else {
                eprintln!("gateway: {line}");
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("gateway did not report its address within 30 s");
    (Proc(child), url)
}
