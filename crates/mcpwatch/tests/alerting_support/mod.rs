//! The receivers and helpers the alerting end-to-end tests share: an HTTP receiver that
//! records every body (Slack, PagerDuty, webhook), a real SMTP server (aiosmtpd, installed by
//! scripts/install-peers), and polling of the alerts API with deadlines.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use serde_json::Value;

use crate::common::{auth_event, post, Serve};

/// What a receiver got: (path, body) per request.
pub type Log = Arc<Mutex<Vec<(String, Value)>>>;

/// An HTTP receiver that records every body and answers 202.
pub struct Receiver {
    pub addr: SocketAddr,
    pub got: Log,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    pub async fn start_on(addr: SocketAddr) -> Receiver {
        let got: Log = Arc::default();
        let app = axum::Router::new().fallback(
            |State(got): State<Log>, uri: Uri, body: Bytes| async move {
                let v = serde_json::from_slice(&body).unwrap_or(Value::Null);
                got.lock().unwrap().push((uri.path().to_owned(), v));
                (axum::http::StatusCode::ACCEPTED, r#"{"status":"success"}"#)
            },
        );
        let app = app.with_state(got.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, got, task }
    }

    pub async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
        let deadline = Instant::now() + within;
        while self.bodies().len() < n && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.bodies()
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A real SMTP server (aiosmtpd, installed by scripts/install-peers) on loopback.
pub struct SmtpSink {
    pub port: u16,
    child: Child,
    pub messages: std::sync::mpsc::Receiver<Value>,
}

impl SmtpSink {
    pub fn start() -> SmtpSink {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = root.join(".test-deps/venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/install-peers",
            python.display()
        );
        let port = free_port();
        let script = root.join("crates/mcpwatch-alert/tests/smtp_sink.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("start the SMTP sink");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line == "READY" {
                    let _ = ready_tx.send(());
                } else if let Ok(v) = serde_json::from_str(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        ready_rx
            .recv_timeout(Duration::from_secs(20))
            .expect("the SMTP sink did not start: is aiosmtpd installed (scripts/install-peers)?");
        SmtpSink {
            port,
            child,
            messages: rx,
        }
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.flush();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Host samples could raise threshold alerts on a busy machine; the tests look at theirs only.
pub const BRUTE: &str = "name=brute_force_detection";

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("mcpwatch.toml");
    let text = format!(
        "[metrics]\nhost_events = false\n[alerting]\nrepeat_interval = \"1h\"\n[alerting.delivery]\ninitial_backoff = \"100ms\"\nmax_backoff = \"300ms\"\ntimeout = \"2s\"\n{body}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

pub fn pagerduty(url: &str) -> String {
    format!("[channels.oncall]\ntype = \"pagerduty\"\nrouting_key = \"R0UTING\"\nurl = \"{url}\"\n")
}

pub async fn failures(client: &reqwest::Client, url: &str, user: &str, n: usize) {
    let batch: Vec<Value> = (0..n).map(|_| auth_event(user, "failure")).collect();
    let (status, body) = post(client, url, &Value::Array(batch)).await.unwrap();
    assert!((200..300).contains(&status), "{status} {body}");
}

pub async fn get(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Polls `GET /api/v1/alerts?{query}` until `done` holds for the list (or 20 s pass).
pub async fn wait_alerts(
    client: &reqwest::Client,
    base: &str,
    query: &str,
    done: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let page = get(client, &format!("{base}/api/v1/alerts?{query}")).await;
        let alerts = page["alerts"].as_array().cloned().unwrap_or_default();
        if done(&alerts) || Instant::now() > deadline {
            return alerts;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

pub fn channel_status(a: &Value, channel: &str) -> String {
    a["channels"][channel]["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

/// A `serve` with all four channels on local receivers: `mail` (the SMTP sink), `chat`
/// (Slack), `oncall` (PagerDuty) and `siem` (webhook, its section extended by `hook_extra`).
pub struct AllChannels {
    pub slack: Receiver,
    pub pd: Receiver,
    pub hook: Receiver,
    pub smtp: SmtpSink,
    pub serve: Serve,
    pub dir: tempfile::TempDir,
}

impl AllChannels {
    pub async fn start(hook_extra: &str) -> AllChannels {
        let dir = tempfile::tempdir().unwrap();
        let (slack, pd, hook) = (
            Receiver::start().await,
            Receiver::start().await,
            Receiver::start().await,
        );
        let smtp = SmtpSink::start();
        let config = write_config(
            dir.path(),
            &format!(
                "[channels.mail]\ntype = \"email\"\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"mcpwatch@example.com\"\nto = [\"secops@example.com\"]\n\
                 [channels.chat]\ntype = \"slack\"\nwebhook_url = \"{}\"\n{}\
                 [channels.siem]\ntype = \"webhook\"\nurl = \"{}\"\n{hook_extra}",
                smtp.port,
                slack.url("/services/T/B/X"),
                pagerduty(&pd.url("/v2/enqueue")),
                hook.url("/hook")
            ),
        );
        let serve = Serve::start(
            &dir.path().join("data"),
            &["--config", config.to_str().unwrap()],
        );
        AllChannels {
            slack,
            pd,
            hook,
            smtp,
            serve,
            dir,
        }
    }
}
