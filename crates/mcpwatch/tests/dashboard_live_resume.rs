//! The live page in a real headless Chromium keeps its place across a collector restart: the
//! browser's stream breaks, events are stored while it is away, and when the collector is back
//! on the same address the page shows exactly the events it missed (from the store, resumed from
//! the last event id the browser saw), each once, without a reload.

mod browser;
mod common;

use std::time::Duration;

use browser::Browser;
use common::Serve;
use serde_json::{json, Value};

const SHORT: Duration = Duration::from_secs(30);

fn login(user: &str) -> Value {
    json!({"category": "security", "event_type": "authentication", "source": "resume-test",
           "message": format!("login for {user}"), "metadata": {"user_id": user, "result": "success"}})
}

async fn ingest(url: &str, user: &str) {
    let (status, body) = common::post(&reqwest::Client::new(), url, &login(user))
        .await
        .expect("post");
    assert_eq!(status, 202, "{body}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_page_resumes_from_the_last_event_after_the_collector_restarts() {
    let dir = tempfile::tempdir().expect("data dir");
    let first = Serve::start(dir.path(), &[]);
    let url = first.url.clone();
    let listen = url.trim_start_matches("http://").to_owned();

    let b = Browser::start().await;
    b.goto(&format!("{url}/live?category=security")).await;
    b.wait_text("#live-status", "connected", SHORT).await;
    b.eval("window.__loaded_once = 'yes'; return 1").await;
    ingest(&url, "before-restart").await;
    b.wait_text("#live-rows", "before-restart", SHORT).await;

    // The collector goes away; while the browser cannot reach it, another collector on the same
    // data directory (another port) stores the events the page will have missed.
    assert!(first.stop().success(), "serve stopped cleanly");
    let other = Serve::start(dir.path(), &[]);
    ingest(&other.url, "missed-one").await;
    ingest(&other.url, "missed-two").await;
    assert!(other.stop().success(), "serve stopped cleanly");

    // Back on the same address: the browser reconnects on its own and sends Last-Event-ID.
    let _again = Serve::start_on(&listen, dir.path(), &[]);
    b.wait_text("#live-rows", "missed-two", SHORT).await;
    let rows = b.text("#live-rows").await;
    assert!(rows.contains("missed-one"), "both missed events: {rows}");
    for user in ["before-restart", "missed-one", "missed-two"] {
        assert_eq!(
            rows.matches(&format!("login for {user}")).count(),
            1,
            "{user} is shown once: {rows}"
        );
    }
    assert_eq!(
        b.eval("return window.__loaded_once || 'reloaded'").await,
        json!("yes"),
        "resumed without a reload"
    );
    // And the stream is live again.
    ingest(&url, "after-restart").await;
    b.wait_text("#live-rows", "after-restart", SHORT).await;
    b.close().await;
}
