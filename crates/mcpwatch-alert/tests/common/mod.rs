//! Local receivers for the channel and delivery tests: an HTTP receiver that records every
//! request and answers with a status the test chooses, and a real SMTP server (aiosmtpd from
//! `.test-deps/venv`, installed by `scripts/install-peers`). Loopback only.

#![allow(
    dead_code,
    reason = "each test file uses a different part of the harness"
)]

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[macro_use]
pub mod backend;
pub mod lifecycle;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use mcpwatch_alert::AlertRecord;
use mcpwatch_core::Timestamp;
use mcpwatch_detect::{Alert, AlertStatus, FindingSource, Severity};

/// One request a receiver got.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
}

impl Received {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the body is JSON")
    }
}

#[derive(Clone, Default)]
struct Shared {
    got: Arc<Mutex<Vec<Received>>>,
    status: Arc<AtomicU16>,
}

/// An HTTP receiver on a loopback port.
pub struct Receiver {
    pub addr: SocketAddr,
    shared: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    /// Starts on a free port answering `status`.
    pub async fn start(status: u16) -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap(), status).await
    }

    /// Starts on `addr` (to come back up on the same port).
    pub async fn start_on(addr: SocketAddr, status: u16) -> Receiver {
        let shared = Shared::default();
        shared.status.store(status, Ordering::SeqCst);
        let app = axum::Router::new()
            .fallback(record)
            .with_state(shared.clone());
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().unwrap();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Receiver { addr, shared, task }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn set_status(&self, status: u16) {
        self.shared.status.store(status, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.shared.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` requests arrived (or `within` passed) and returns them.
    pub async fn wait_for(&self, n: usize, within: Duration) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let got = self.received();
            if got.len() >= n || tokio::time::Instant::now() > deadline {
                return got;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops listening (the port refuses connections).
    pub async fn stop(self) {
        self.task.abort();
        let _ = self.task.await;
    }
}

async fn record(
    State(s): State<Shared>,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> (StatusCode, String) {
    s.got.lock().unwrap().push(Received {
        path: uri.path().to_owned(),
        headers,
        body: body.to_vec(),
    });
    let status = StatusCode::from_u16(s.status.load(Ordering::SeqCst)).unwrap_or(StatusCode::OK);
    let body = if status.is_success() {
        r#"{"status":"success","message":"Event processed"}"#
    } else {
        "try later"
    };
    (status, body.to_owned())
}

/// A real SMTP server (aiosmtpd) on loopback; every message arrives as one JSON line.
pub struct SmtpSink {
    pub port: u16,
    child: Child,
    messages: std::sync::mpsc::Receiver<serde_json::Value>,
}

impl SmtpSink {
    /// Plain SMTP.
    pub fn start() -> SmtpSink {
        Self::start_with(&[])
    }

    /// TLS (`"implicit"` or `"starttls"`) with a private CA it makes and writes to
    /// `certs/ca.pem` (and an unrelated one to `certs/other-ca.pem`).
    pub fn start_tls(mode: &str, certs: &std::path::Path) -> SmtpSink {
        Self::start_with(&["--tls", mode, "--certs", certs.to_str().unwrap()])
    }

    fn start_with(args: &[&str]) -> SmtpSink {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
        let python = root.join(".test-deps/venv/bin/python");
        assert!(
            python.exists(),
            "{} is missing: run scripts/install-peers (it installs aiosmtpd into .test-deps/venv)",
            python.display()
        );
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/smtp_sink.py");
        let mut child = Command::new(python)
            .arg(script)
            .arg(port.to_string())
            .args(args)
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
            .expect("the SMTP sink did not start within 20s: is aiosmtpd installed (scripts/install-peers)?");
        SmtpSink {
            port,
            child,
            messages: rx,
        }
    }

    /// The next message, if one arrives within `within`.
    pub fn next(&self, within: Duration) -> Option<serde_json::Value> {
        self.messages.recv_timeout(within).ok()
    }
}

impl Drop for SmtpSink {
    fn drop(&mut self) {
        if let Some(mut stdin) = self.child.stdin.take() {
            let _ = stdin.write_all(b"");
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub const T0: i64 = 1_767_225_600_000_000;

/// A fixed alert: brute force against alice, high, six firings.
pub fn record_for(name: &str) -> AlertRecord {
    let at = Timestamp::from_micros(T0);
    AlertRecord {
        alert: Alert {
            id: "0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f".into(),
            fingerprint: "4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f".into(),
            source: FindingSource::Rule,
            name: name.into(),
            severity: Severity::High,
            status: AlertStatus::New,
            first_seen: at,
            last_seen: Timestamp::from_micros(T0 + 90_000_000),
            count: 6,
            description: "6 failed authentications for <alice> & co in 5m".into(),
            recommended_action: "Lock or rate-limit the account".into(),
            group: [("metadata.user_id".to_owned(), "alice".to_owned())].into(),
            event_ids: vec!["e1".into(), "e2".into()],
        },
        tags: vec!["authentication".into(), "brute_force".into()],
        updated_at: at,
        notified_at: None,
        acknowledged_at: None,
        resolved_at: None,
        channels: Default::default(),
        deliveries: None,
    }
}
