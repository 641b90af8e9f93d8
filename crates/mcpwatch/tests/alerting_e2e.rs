//! Alerting end to end through the real binary: failed logins become one `high` alert that
//! reaches email (a real SMTP server), Slack and PagerDuty but not the webhook; repeats fold
//! without re-notifying; a receiver that is down gets the alert once it is up; deliveries
//! pending at a crash are sent after the restart; silences, ack and resolve work through the
//! API and the CLI; a bad config reports every error at once. Loopback only.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::State;
use axum::http::Uri;
use common::{auth_event, bin, post, Serve};
use serde_json::Value;

/// What a receiver got: (path, body) per request.
type Log = Arc<Mutex<Vec<(String, Value)>>>;

/// An HTTP receiver that records every body and answers 202.
struct Receiver {
    addr: SocketAddr,
    got: Log,
    task: tokio::task::JoinHandle<()>,
}

impl Receiver {
    async fn start_on(addr: SocketAddr) -> Receiver {
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

    async fn start() -> Receiver {
        Self::start_on("127.0.0.1:0".parse().unwrap()).await
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn bodies(&self) -> Vec<Value> {
        self.got
            .lock()
            .unwrap()
            .iter()
            .map(|(_, v)| v.clone())
            .collect()
    }

    async fn wait_for(&self, n: usize, within: Duration) -> Vec<Value> {
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
struct SmtpSink {
    port: u16,
    child: Child,
    messages: std::sync::mpsc::Receiver<Value>,
}

impl SmtpSink {
    fn start() -> SmtpSink {
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
const BRUTE: &str = "name=brute_force_detection";

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn write_config(dir: &Path, body: &str) -> PathBuf {
    let path = dir.join("mcpwatch.toml");
    let text = format!(
        "[metrics]\nhost_events = false\n[alerting]\nrepeat_interval = \"1h\"\n[alerting.delivery]\ninitial_backoff = \"100ms\"\nmax_backoff = \"300ms\"\ntimeout = \"2s\"\n{body}"
    );
    std::fs::write(&path, text).unwrap();
    path
}

fn pagerduty(url: &str) -> String {
    format!("[channels.oncall]\ntype = \"pagerduty\"\nrouting_key = \"R0UTING\"\nurl = \"{url}\"\n")
}

async fn failures(client: &reqwest::Client, url: &str, user: &str, n: usize) {
    let batch: Vec<Value> = (0..n).map(|_| auth_event(user, "failure")).collect();
    let (status, body) = post(client, url, &Value::Array(batch)).await.unwrap();
    assert!((200..300).contains(&status), "{status} {body}");
}

async fn get(client: &reqwest::Client, url: &str) -> Value {
    client.get(url).send().await.unwrap().json().await.unwrap()
}

/// Polls `GET /api/v1/alerts?{query}` until `done` holds for the list (or 20 s pass).
async fn wait_alerts(
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

fn channel_status(a: &Value, channel: &str) -> String {
    a["channels"][channel]["status"]
        .as_str()
        .unwrap_or("")
        .to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn six_failed_logins_alert_email_slack_and_pagerduty_once_and_repeats_fold() {
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
             [channels.siem]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"s3cret\"\n",
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
    let client = reqwest::Client::new();
    failures(&client, &serve.url, "alice", 6).await;
    let alerts = wait_alerts(&client, &serve.url, BRUTE, |a| {
        a.len() == 1
            && ["mail", "chat", "oncall"]
                .iter()
                .all(|c| channel_status(&a[0], c) == "delivered")
    })
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    let alert = &alerts[0];
    assert_eq!(
        (
            alert["name"].as_str(),
            alert["severity"].as_str(),
            alert["status"].as_str(),
            alert["count"].as_u64()
        ),
        (
            Some("brute_force_detection"),
            Some("high"),
            Some("sent"),
            Some(1)
        ),
        "{alert}"
    );
    assert_eq!(alert["group"]["metadata.user_id"], "alice");
    let mail = smtp
        .messages
        .recv_timeout(Duration::from_secs(10))
        .expect("the email arrived");
    assert!(
        mail["data"]
            .as_str()
            .unwrap()
            .contains("brute_force_detection"),
        "{mail}"
    );
    assert_eq!(slack.bodies().len(), 1);
    let pd_bodies = pd.bodies();
    assert_eq!(pd_bodies.len(), 1);
    assert_eq!(pd_bodies[0]["event_action"], "trigger");
    assert_eq!(pd_bodies[0]["dedup_key"], alert["fingerprint"]);
    assert!(
        alert["channels"].get("siem").is_none(),
        "high does not go to the webhook: {alert}"
    );

    failures(&client, &serve.url, "alice", 4).await;
    let alerts = wait_alerts(&client, &serve.url, BRUTE, |a| {
        a.first().is_some_and(|a| a["count"] == 2)
    })
    .await;
    assert_eq!(alerts.len(), 1, "the same alert: {alerts:?}");
    assert_eq!(alerts[0]["id"], alert["id"]);
    assert_eq!(alerts[0]["count"], 2);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let one = get(
        &client,
        &format!(
            "{}/api/v1/alerts/{}",
            serve.url,
            alert["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(
        slack.bodies().len(),
        1,
        "no second notification before the repeat interval: {:?} {one}",
        slack.bodies()
    );
    assert_eq!(pd.bodies().len(), 1);
    assert!(smtp.messages.try_recv().is_err(), "no second email");
    assert!(
        hook.bodies().is_empty(),
        "the webhook only takes critical alerts"
    );
    let one = get(
        &client,
        &format!(
            "{}/api/v1/alerts/{}",
            serve.url,
            alert["id"].as_str().unwrap()
        ),
    )
    .await;
    assert_eq!(one["deliveries"].as_array().unwrap().len(), 3, "{one}");
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_that_was_down_gets_the_alert_once_it_is_up() {
    let dir = tempfile::tempdir().unwrap();
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(dir.path(), &pagerduty(&format!("http://{addr}/v2/enqueue")));
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let client = reqwest::Client::new();
    failures(&client, &serve.url, "alice", 5).await;
    let alerts = wait_alerts(&client, &serve.url, BRUTE, |a| {
        a.first()
            .is_some_and(|a| a["channels"]["oncall"]["attempts"].as_u64().unwrap_or(0) >= 2)
    })
    .await;
    let d = &alerts[0]["channels"]["oncall"];
    assert_eq!(d["status"], "pending", "{d}");
    assert!(
        d["last_error"]
            .as_str()
            .unwrap()
            .contains("cannot reach the receiver"),
        "{d}"
    );
    let pd = Receiver::start_on(addr).await;
    let alerts = wait_alerts(&client, &serve.url, BRUTE, |a| {
        channel_status(&a[0], "oncall") == "delivered"
    })
    .await;
    assert_eq!(channel_status(&alerts[0], "oncall"), "delivered");
    tokio::time::sleep(Duration::from_millis(800)).await;
    let bodies = pd.bodies();
    assert_eq!(bodies.len(), 1, "delivered once: {bodies:?}");
    assert_eq!(bodies[0]["dedup_key"], alerts[0]["fingerprint"]);
    // The retries and the delivery show on /metrics.
    let metrics = client
        .get(format!("{}/metrics", serve.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let value = |name: &str| -> f64 {
        metrics
            .lines()
            .find_map(|l| {
                l.strip_prefix(name)
                    .and_then(|rest| rest.trim().parse().ok())
            })
            .unwrap_or_else(|| panic!("{name} missing from /metrics"))
    };
    assert!(value("mcpwatch_alert_delivery_retries_total ") >= 1.0);
    assert_eq!(value("mcpwatch_alert_notifications_delivered_total "), 1.0);
    assert_eq!(value("mcpwatch_alert_delivery_failures_total "), 0.0);
    serve.stop();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_pending_when_serve_dies_are_sent_after_the_restart() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
    let config = write_config(dir.path(), &pagerduty(&format!("http://{addr}/v2/enqueue")));
    let args = ["--config", config.to_str().unwrap()];
    let serve = Serve::start(&data, &args);
    let client = reqwest::Client::new();
    failures(&client, &serve.url, "alice", 5).await;
    let alerts = wait_alerts(&client, &serve.url, BRUTE, |a| {
        a.first()
            .is_some_and(|a| a["channels"]["oncall"]["attempts"].as_u64().unwrap_or(0) >= 1)
    })
    .await;
    let fingerprint = alerts[0]["fingerprint"].clone();
    serve.kill9();
    let pd = Receiver::start_on(addr).await;
    let serve = Serve::start(&data, &args);
    let bodies = pd.wait_for(1, Duration::from_secs(20)).await;
    assert_eq!(bodies.len(), 1, "{bodies:?}");
    assert_eq!(bodies[0]["dedup_key"], fingerprint);
    let alerts = wait_alerts(&client, &serve.url, BRUTE, |a| {
        channel_status(&a[0], "oncall") == "delivered"
    })
    .await;
    assert_eq!(alerts.len(), 1);
    assert_eq!(alerts[0]["status"], "sent");
    serve.stop();
}

/// Runs `mcpwatch alerts ARGS… --collector URL`; returns (success, stdout, stderr).
fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = bin()
        .arg("alerts")
        .args(args)
        .args(["--collector", url])
        .env_remove("MCPWATCH_TOKEN")
        .output()
        .expect("run mcpwatch alerts");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json_lines(s: &str) -> Vec<Value> {
    s.lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silences_ack_resolve_and_channel_tests_through_the_cli_and_the_api() {
    let dir = tempfile::tempdir().unwrap();
    let pd = Receiver::start().await;
    let config = write_config(dir.path(), &pagerduty(&pd.url("/v2/enqueue")));
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let url = serve.url.clone();
    let client = reqwest::Client::new();

    let (ok, out, err) = cli(
        &url,
        &[
            "silence",
            "--matcher",
            "name=brute_force_detection",
            "-m",
            "metadata.user_id=alice",
            "--for",
            "1h",
            "--comment",
            "pen test",
        ],
    );
    assert!(ok, "{err}");
    assert!(out.starts_with("silenced: "), "{out}");
    let (_, out, _) = cli(&url, &["silences", "--json"]);
    let silences = json_lines(&out);
    assert_eq!(silences.len(), 1, "{out}");
    assert_eq!(
        silences[0]["matchers"],
        serde_json::json!(["name=brute_force_detection", "metadata.user_id=alice"])
    );
    assert_eq!(silences[0]["comment"], "pen test");

    failures(&client, &url, "alice", 5).await;
    failures(&client, &url, "bob", 5).await;
    let alerts = wait_alerts(&client, &url, BRUTE, |a| {
        a.len() == 2 && a.iter().any(|a| channel_status(a, "oncall") == "delivered")
    })
    .await;
    assert_eq!(alerts.len(), 2, "{alerts:?}");
    let (_, out, _) = cli(&url, &["list", "--status", "suppressed", "--json"]);
    let suppressed = json_lines(&out);
    assert_eq!(suppressed.len(), 1, "{out}");
    assert_eq!(suppressed[0]["group"]["metadata.user_id"], "alice");
    assert!(
        suppressed[0]["channels"].as_object().unwrap().is_empty(),
        "a silenced alert is not sent"
    );
    let bodies = pd.wait_for(1, Duration::from_secs(5)).await;
    assert_eq!(bodies.len(), 1, "only bob's alert was sent: {bodies:?}");
    let bob = alerts
        .iter()
        .find(|a| a["group"]["metadata.user_id"] == "bob")
        .unwrap();
    let bob_id = bob["id"].as_str().unwrap();

    let (ok, out, err) = cli(&url, &["list"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("brute_force_detection") && out.contains("oncall:delivered"),
        "{out}"
    );
    let (ok, out, err) = cli(&url, &["ack", bob_id]);
    assert!(ok && out.contains("acknowledged"), "{out}{err}");
    let (ok, out, err) = cli(&url, &["resolve", bob_id]);
    assert!(ok && out.contains("resolved"), "{out}{err}");
    let bodies = pd.wait_for(2, Duration::from_secs(10)).await;
    assert_eq!(bodies.len(), 2, "{bodies:?}");
    assert_eq!(bodies[1]["event_action"], "resolve");
    assert_eq!(bodies[1]["dedup_key"], bob["fingerprint"]);

    let resp = client
        .post(format!("{url}/api/v1/alerts/{bob_id}/ack"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        resp.status(),
        409,
        "a resolved alert cannot be acknowledged"
    );
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["error"]["code"], "conflict");
    let resp = client
        .get(format!("{url}/api/v1/alerts/nope"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    let resp = client
        .get(format!("{url}/api/v1/alerts?severity=urgent"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 400);
    let page = get(
        &client,
        &format!("{url}/api/v1/alerts?status=resolved&limit=1"),
    )
    .await;
    assert_eq!(page["alerts"].as_array().unwrap().len(), 1);
    assert_eq!(page["next_cursor"], Value::Null);

    let (ok, out, _) = cli(&url, &["unsilence", silences[0]["id"].as_str().unwrap()]);
    assert!(ok && out.starts_with("ended: "), "{out}");
    let (_, out, _) = cli(&url, &["silences"]);
    assert_eq!(out.trim(), "no silences");

    let (ok, out, err) = cli(&url, &["test", "--channel", "oncall"]);
    assert!(ok, "{err}");
    assert!(
        out.contains("oncall: delivered; the receiver answered: trigger: 202"),
        "{out}"
    );
    let (ok, _, err) = cli(&url, &["test", "--channel", "sms"]);
    assert!(!ok);
    assert!(
        err.contains("no channel `sms`; configured channels: oncall"),
        "{err}"
    );
    serve.stop();
}

#[test]
fn a_bad_alerting_config_reports_every_error_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(
        &path,
        "[channels.chat]\ntype = \"slack\"\n\n\
         [channels.mail]\ntype = \"email\"\nurl = \"smtp//nowhere\"\nfrom = \"a@example.com\"\nto = [\"b@example.com\"]\n\n\
         [channels.oncall]\ntype = \"pagerduty\"\nrouting_key = \"${MCPWATCH_E2E_UNSET_PD_KEY}\"\n\n\
         [[routes]]\nseverity = [\"high\"]\nchannels = [\"oncall\", \"sms\"]\n",
    )
    .unwrap();
    let out = bin()
        .args(["config", "check"])
        .arg(&path)
        .env_remove("MCPWATCH_E2E_UNSET_PD_KEY")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for want in [
        "channels.chat: missing field `webhook_url`",
        "channels.mail.url: is not a valid SMTP URL",
        "channels.oncall.routing_key: environment variable MCPWATCH_E2E_UNSET_PD_KEY is not set",
        "routes[0].channels[1]: unknown channel `sms`",
        "4 error(s)",
    ] {
        assert!(err.contains(want), "missing `{want}` in:\n{err}");
    }
    let serve = bin()
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--config")
        .arg(&path)
        .env_remove("MCPWATCH_E2E_UNSET_PD_KEY")
        .output()
        .unwrap();
    assert!(
        !serve.status.success(),
        "serve refuses a bad alerting config"
    );
    assert!(String::from_utf8_lossy(&serve.stderr).contains("unknown channel `sms`"));
}
