//! Shared harness for end-to-end tests: runs the real `mcpwatch` binary.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

pub mod detect;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The binary under test.
pub fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mcpwatch"))
}

/// The repository's root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A peer installed by scripts/install-peers, or a failure saying how to get it.
pub fn peer(relative: &str) -> String {
    let p = root().join(".test-deps").join(relative);
    assert!(
        p.exists(),
        "{} is missing: run scripts/install-peers (needs npm and python3) and run the tests again",
        p.display()
    );
    p.to_string_lossy().into_owned()
}

/// A running `mcpwatch serve` on a free loopback port.
pub struct Serve {
    pub child: Child,
    pub url: String,
    /// Its last stderr lines.
    pub log: std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
}

/// Lines of a `serve`'s stderr kept for [`Serve::log_has`].
const KEPT_LOG_LINES: usize = 5_000;

impl Serve {
    /// Starts `serve` on `data_dir` and waits until it listens.
    pub fn start(data_dir: &Path, extra: &[&str]) -> Serve {
        Serve::start_on("127.0.0.1:0", data_dir, extra)
    }

    /// Starts `serve` on `listen` (an address a previous `serve` used, to restart it in place).
    pub fn start_on(listen: &str, data_dir: &Path, extra: &[&str]) -> Serve {
        Serve::start_with_env(listen, data_dir, extra, &[])
    }

    /// [`Serve::start_on`] with extra environment variables.
    pub fn start_with_env(
        listen: &str,
        data_dir: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Serve {
        let mut child = bin()
            .args(["serve", "--listen", listen, "--data-dir"])
            .arg(data_dir)
            .args(extra)
            .envs(env.iter().copied())
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn mcpwatch serve");
        let stderr = child.stderr.take().expect("stderr");
        let (tx, rx) = std::sync::mpsc::channel();
        let log = std::sync::Arc::new(std::sync::Mutex::new(std::collections::VecDeque::new()));
        let kept = log.clone();
        std::thread::spawn(move || {
            let mut sent = false;
            let echo = std::env::var_os("MCPWATCH_TEST_SERVE_LOG").is_some();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if echo {
                    eprintln!("serve: {line}");
                }
                {
                    let mut kept = kept.lock().unwrap_or_else(|p| p.into_inner());
                    if kept.len() == KEPT_LOG_LINES {
                        kept.pop_front();
                    }
                    kept.push_back(line.clone());
                }
                if !sent {
                    if let Some(rest) = line.split("listening on ").nth(1) {
                        let url = rest
                            .split_whitespace()
                            .next()
                            .unwrap_or_default()
                            .to_owned();
                        let _ = tx.send(url);
                        sent = true;
                    }
                }
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("serve did not report its address within 30s");
        Serve { child, url, log }
    }

    /// Whether a line of its stderr so far contains `text`.
    pub fn log_has(&self, text: &str) -> bool {
        self.log
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .any(|l| l.contains(text))
    }

    /// SIGKILL: no chance to flush anything.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM and wait for a clean exit.
    pub fn stop(mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        self.child.wait().expect("wait for serve")
    }
}

/// A collector the test did not stop is killed with it, so test runs leave no processes behind.
impl Drop for Serve {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// An authentication event for `user`.
pub fn auth_event(user: &str, result: &str) -> serde_json::Value {
    serde_json::json!({"category": "security", "event_type": "authentication", "source": "e2e",
                       "metadata": {"user_id": user, "result": result, "ip_address": "127.0.0.1"}})
}

/// Posts a JSON body; returns the status and the parsed body.
pub async fn post(
    client: &reqwest::Client,
    url: &str,
    body: &serde_json::Value,
) -> reqwest::Result<(u16, serde_json::Value)> {
    let resp = client
        .post(format!("{url}/api/v1/events"))
        .json(body)
        .send()
        .await?;
    let status = resp.status().as_u16();
    Ok((status, resp.json().await.unwrap_or(serde_json::Value::Null)))
}

/// Four clients post batches of 50 authentication events to `serve` until `target` have been
/// acknowledged (or `limit` passes), then `serve` gets SIGKILL. Returns the acknowledged ids.
pub async fn acked_until_kill9(serve: Serve, target: usize, limit: Duration) -> Vec<String> {
    let url = serve.url.clone();
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let client = reqwest::Client::new();
    let mut senders = Vec::new();
    for t in 0..4 {
        let (client, url, acked) = (client.clone(), url.clone(), acked.clone());
        senders.push(tokio::spawn(async move {
            for n in 0..10_000 {
                let batch: Vec<_> = (0..50)
                    .map(|i| auth_event(&format!("u{t}-{n}-{i}"), "failure"))
                    .collect();
                match post(&client, &url, &serde_json::json!(batch)).await {
                    Ok((202, body)) => {
                        let ids = body["ids"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|v| v.as_str().unwrap().to_owned());
                        acked.lock().unwrap().extend(ids);
                    }
                    Ok((status, body)) => panic!("unexpected {status}: {body}"),
                    Err(_) => return, // the collector is gone
                }
            }
        }));
    }
    let start = Instant::now();
    while acked.lock().unwrap().len() < target && start.elapsed() < limit {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    serve.kill9();
    for s in senders {
        s.await.unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    assert!(
        acked.len() >= 1_000,
        "only {} events were acknowledged before the kill",
        acked.len()
    );
    acked
}

/// Fails naming the acknowledged ids that `stored` lacks.
pub fn assert_none_lost(acked: &[String], stored: &std::collections::HashSet<String>) {
    let missing: Vec<&String> = acked.iter().filter(|id| !stored.contains(*id)).collect();
    assert!(
        missing.is_empty(),
        "{} of {} acknowledged events were lost, e.g. {:?}",
        missing.len(),
        acked.len(),
        &missing[..missing.len().min(3)]
    );
}

/// Every event id in the store, by paging through the API.
pub async fn all_ids(client: &reqwest::Client, url: &str) -> std::collections::HashSet<String> {
    listed_ids(client, url, &[]).await.into_iter().collect()
}

/// The id of every event the API lists with these query filters, paging through all of it;
/// an event listed twice is there twice.
pub async fn listed_ids(
    client: &reqwest::Client,
    url: &str,
    filters: &[(&str, &str)],
) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut q: Vec<(&str, String)> = vec![("limit", "10000".to_string())];
        q.extend(filters.iter().map(|&(k, v)| (k, v.to_string())));
        if let Some(c) = &cursor {
            q.push(("cursor", c.clone()));
        }
        let page: serde_json::Value = client
            .get(format!("{url}/api/v1/events"))
            .query(&q)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        for e in page["events"].as_array().unwrap() {
            ids.push(e["id"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => return ids,
        }
    }
}

/// The value of `name{edge="edge"}` on a `/metrics` page.
pub fn edge_gauge(metrics: &str, name: &str, edge: &str) -> Option<f64> {
    let series = format!("{name}{{edge=\"{edge}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

/// The state of the stream `name` as the NATS servers at `urls` report it; `None` while they
/// cannot say (a server down, an election under way, no stream yet).
pub async fn stream_state(
    urls: &str,
    name: &str,
) -> Option<mcpwatch_nats::async_nats::jetstream::stream::State> {
    let client = mcpwatch_nats::connect(urls, "test-probe", true)
        .await
        .ok()?;
    let js = mcpwatch_nats::async_nats::jetstream::new(client);
    let mut stream = js.get_stream(name).await.ok()?;
    match tokio::time::timeout(Duration::from_secs(2), stream.info()).await {
        Ok(Ok(info)) => Some(info.state.clone()),
        _ => None,
    }
}
