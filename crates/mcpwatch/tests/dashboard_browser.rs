//! The dashboard in a real headless Chromium, against `mcpwatch demo` (the real collector fed
//! by the built-in traffic generator through the ingest API): what a person sees on every
//! page, acknowledging an alert and creating a silence from the page (and the API agreeing),
//! and a new event appearing on the live page without a reload.

mod browser;

use std::time::Duration;

use browser::{wait_json, Browser, Demo};
use serde_json::{json, Value};

const LONG: Duration = Duration::from_secs(90);
const SHORT: Duration = Duration::from_secs(20);

fn first_str<'a>(v: &'a Value, list: &str, key: &str) -> &'a str {
    v[list][0][key]
        .as_str()
        .unwrap_or_else(|| panic!("no {list}[0].{key} in {v}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dashboard_in_chromium_shows_demo_traffic_and_acts_on_alerts() {
    let demo = Demo::start();
    let url = demo.url.clone();
    let alerts = wait_json(
        &format!("{url}/api/v1/alerts?name=brute_force_detection"),
        LONG,
        |v| v["alerts"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let alert_id = first_str(&alerts, "alerts", "id").to_owned();
    let tools = wait_json(&format!("{url}/api/v1/tools"), SHORT, |v| {
        v["tools"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let top_tool = first_str(&tools, "tools", "tool").to_owned();
    let users = wait_json(&format!("{url}/api/v1/users"), SHORT, |v| {
        v["users"].as_array().is_some_and(|a| !a.is_empty())
    })
    .await;
    let user = first_str(&users, "users", "user").to_owned();

    let b = Browser::start().await;
    // Overview: the five widgets with the demo's numbers.
    b.goto(&format!("{url}/")).await;
    let system = b.wait_text("#system", "Events/s", SHORT).await;
    assert!(
        system.contains("Stored") && system.contains("writing"),
        "{system}"
    );
    let perf = b.text("#performance").await;
    assert!(
        perf.contains("Throughput") && perf.contains("Availability"),
        "{perf}"
    );
    assert!(b.text("#security").await.contains("Security events"));
    // The brute force that raised the alert shows as failed sign-ins, apart from denials.
    let failed: u64 = b
        .text("#auth-failures")
        .await
        .replace(',', "")
        .trim()
        .parse()
        .expect("a count of failed sign-ins");
    assert!(failed >= 5, "the brute force's failed sign-ins: {failed}");
    assert!(b.text("#security").await.contains("authorization denials"));
    assert!(b.text("#alert-summary").await.contains("critical"));
    let tools_widget = b.wait_text("#tool-performance", &top_tool, SHORT).await;
    assert!(
        tools_widget.contains(" ms"),
        "latencies are shown: {tools_widget}"
    );
    let sparks = b
        .eval("return document.querySelectorAll('#tool-performance svg.spark polyline').length")
        .await;
    assert!(sparks.as_u64().unwrap_or(0) > 0, "one sparkline per tool");

    // Every other page shows what the API holds.
    b.goto(&format!("{url}/alerts")).await;
    b.wait_text("main", "brute_force_detection", SHORT).await;
    b.goto(&format!("{url}/events?range=1h")).await;
    b.wait_text("main", "execution_complete", SHORT).await;
    b.goto(&format!("{url}/tools")).await;
    b.wait_text("main", &top_tool, SHORT).await;
    b.goto(&format!("{url}/users")).await;
    b.wait_text("main", &user, SHORT).await;
    b.goto(&format!("{url}/rules")).await;
    b.wait_text("main", "brute_force_detection", SHORT).await;

    // Ack from the alert's page; the API agrees.
    b.goto(&format!("{url}/alerts/{alert_id}")).await;
    b.wait_text("main", "brute_force_detection", SHORT).await;
    b.click("form[action$='/ack'] button").await;
    b.wait_text("main", "acknowledged", SHORT).await;
    let api = wait_json(&format!("{url}/api/v1/alerts/{alert_id}"), SHORT, |v| {
        v["status"] == "acknowledged"
    })
    .await;
    assert!(api["acknowledged_at"].is_string(), "{api}");

    // A silence pre-filled from the alert's labels; the API lists it.
    b.click("a.button[href^='/silences?alert=']").await;
    let prefill = b
        .eval("return document.querySelector('textarea[name=matchers]').value")
        .await;
    let prefill = prefill.as_str().unwrap_or_default().to_owned();
    assert!(prefill.contains("name=brute_force_detection"), "{prefill}");
    b.client
        .find(fantoccini::Locator::Css("input[name=comment]"))
        .await
        .expect("comment field")
        .send_keys("browser test silence")
        .await
        .expect("type");
    b.click("form.silence button[type=submit]").await;
    b.wait_text("ul.silences", "browser test silence", SHORT)
        .await;
    let silences = wait_json(&format!("{url}/api/v1/silences"), SHORT, |v| {
        v["silences"]
            .as_array()
            .is_some_and(|a| a.iter().any(|s| s["comment"] == "browser test silence"))
    })
    .await;
    let s = silences["silences"]
        .as_array()
        .and_then(|a| a.iter().find(|s| s["comment"] == "browser test silence"))
        .expect("the silence");
    assert!(
        s["matchers"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m == "name=brute_force_detection")),
        "{s}"
    );

    // Live: a new event appears without a reload; paused, the next one is held back.
    b.goto(&format!("{url}/live?category=security")).await;
    b.wait_text("#live-status", "connected", SHORT).await;
    b.eval("window.__loaded_once = 'yes'; return 1").await;
    let http = reqwest::Client::new();
    let probe = |user: &str| {
        json!({"category": "security", "event_type": "authentication", "source": "browser-test",
                                    "message": format!("login for {user}"), "metadata": {"user_id": user, "result": "success"}})
    };
    let r = http
        .post(format!("{url}/api/v1/events"))
        .json(&probe("live-probe-one"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    b.wait_text("#live-rows", "live-probe-one", SHORT).await;
    assert_eq!(
        b.eval("return window.__loaded_once || 'reloaded'").await,
        json!("yes"),
        "no reload"
    );
    b.click("#pause").await;
    let r = http
        .post(format!("{url}/api/v1/events"))
        .json(&probe("live-probe-two"))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    b.wait_text("#live-buffered", "not shown", SHORT).await;
    assert!(
        !b.text("#live-rows").await.contains("live-probe-two"),
        "paused means held back"
    );
    b.close().await;
    drop(demo);
}
