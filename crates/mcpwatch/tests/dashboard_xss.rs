//! The dashboard's XSS suite, in a real headless Chromium. Payloads reach the collector the
//! way real traffic does: a hostile stdio MCP server (tool names, descriptions, results and
//! error messages) behind the real `mcpwatch wrap` (user id), and an application posting
//! authentication events (user ids, messages) to the ingest API, which also trips brute-force
//! detection so alert pages carry them too. Every page that shows them is rendered, and the
//! page must hold the payloads as text, with no injected element, handler, link or request.

mod browser;
mod common;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use browser::{wait_json, Browser};
use serde_json::{json, Value};

const PAYLOADS: [&str; 6] = [
    "<script>window.__xss=1</script>",
    "<img src=x onerror=\"window.__xss=2\">",
    "\"><svg onload=\"window.__xss=3\">",
    "</script><script>window.__xss=4</script>",
    "x\" hx-get=\"/evil\" hx-trigger=\"load\" data-x=\"",
    "javascript:window.__xss=5",
];
const WAIT: Duration = Duration::from_secs(60);

/// Drives the hostile server through `wrap` like an MCP client: initialize, list, one call per
/// payload-named tool, and an unknown method (answered with a payload error message).
fn run_hostile_session(collector: &str, user: &str, data_dir: &Path) {
    let server = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/hostile_server.py");
    let mut child = Command::new(env!("CARGO_BIN_EXE_mcpwatch"))
        .args([
            "wrap",
            "--name",
            "hostile",
            "--user",
            user,
            "--collector",
            collector,
            "--",
            "python3",
        ])
        .arg(&server)
        .env("PAYLOADS", serde_json::to_string(&PAYLOADS).expect("json"))
        .env("MCPWATCH_DATA_DIR", data_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn mcpwatch wrap (needs python3)");
    let mut stdin = child.stdin.take().expect("stdin");
    let mut out = BufReader::new(child.stdout.take().expect("stdout"));
    let mut frames = vec![
        json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": PAYLOADS[4], "version": "1"}}}),
        json!({"jsonrpc": "2.0", "method": "notifications/initialized"}),
        json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}),
    ];
    for (i, p) in PAYLOADS.iter().enumerate() {
        frames.push(json!({"jsonrpc": "2.0", "id": 10 + i, "method": "tools/call", "params": {"name": p, "arguments": {"path": p, "note": PAYLOADS[(i + 1) % PAYLOADS.len()]}}}));
    }
    frames.push(json!({"jsonrpc": "2.0", "id": 99, "method": PAYLOADS[0]}));
    let expected = frames.iter().filter(|f| f.get("id").is_some()).count();
    for f in &frames {
        writeln!(stdin, "{f}").expect("write a frame");
    }
    stdin.flush().expect("flush");
    let mut line = String::new();
    for _ in 0..expected {
        line.clear();
        out.read_line(&mut line).expect("read an answer");
        assert!(
            line.contains("\"id\""),
            "the hostile server answered through wrap: {line}"
        );
    }
    drop(stdin);
    let status = child.wait().expect("wrap exits when its client leaves");
    assert!(status.success(), "wrap exited with {status}");
}

/// What must be absent from a page that shows payloads, and the proof that it shows them.
const CHECK: &str = r#"
const origin = location.origin;
const allowed = ['/assets/', '/overview/widgets', '/live/stream'];
const foreign = performance.getEntriesByType('resource').map(e => e.name)
  .filter(n => !(n.startsWith(origin) && allowed.some(a => new URL(n).pathname.startsWith(a))));
const withHandlers = [...document.querySelectorAll('*')]
  .filter(e => [...e.attributes].some(a => a.name.toLowerCase().startsWith('on'))).length;
const ownScripts = [...document.scripts].filter(s => !s.src.startsWith(origin + '/assets/')).length;
return {
  xss: window.__xss || 0,
  scripts: ownScripts,
  imgs: document.querySelectorAll('img').length,
  svg_onload: document.querySelectorAll('svg[onload]').length,
  handlers: withHandlers,
  js_links: [...document.querySelectorAll('a[href]')].filter(a => a.protocol === 'javascript:').length,
  hx_injected: document.querySelectorAll('.payload [hx-get], .payload [hx-post], .payload [hx-trigger], #live-rows [hx-get], #live-alerts [hx-get]').length,
  foreign: foreign,
  shows_payload: ['<script>', '<img src=x onerror=', '<svg onload=', 'javascript:', 'hx-get="/evil"']
    .some(p => (document.body.innerText + [...document.querySelectorAll('textarea')].map(t => t.value).join(' ')).includes(p)),
};
"#;

async fn assert_clean(b: &Browser, page: &str, must_show_payload: bool) {
    let r = b.eval(CHECK).await;
    let zero = [
        "xss",
        "scripts",
        "imgs",
        "svg_onload",
        "handlers",
        "js_links",
        "hx_injected",
    ];
    for k in zero {
        assert_eq!(r[k], json!(0), "{page}: `{k}` is {} in {r}", r[k]);
    }
    assert_eq!(
        r["foreign"],
        json!([]),
        "{page}: requests left the page: {r}"
    );
    if must_show_payload {
        assert_eq!(
            r["shows_payload"],
            json!(true),
            "{page} should show the payloads as text: {r}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn xss_payloads_from_traffic_stay_text_on_every_page() {
    let dir = tempfile::tempdir().expect("data dir");
    let serve = common::Serve::start(dir.path(), &[]);
    let url = serve.url.clone();
    let user = PAYLOADS[1];
    let (collector, wrap_dir) = (url.clone(), dir.path().join("wrap"));
    tokio::task::spawn_blocking(move || run_hostile_session(&collector, user, &wrap_dir))
        .await
        .expect("session");
    // An application's failed logins under a payload user id: five make a brute-force alert.
    let http = reqwest::Client::new();
    let logins: Vec<Value> = (0..6)
        .map(|i| json!({"category": "security", "event_type": "authentication", "source": "app",
                         "message": format!("login failed {}", PAYLOADS[i % PAYLOADS.len()]),
                         "metadata": {"user_id": PAYLOADS[2], "result": "failure", "ip_address": "10.0.0.9", "user_agent": PAYLOADS[3]}}))
        .collect();
    let r = http
        .post(format!("{url}/api/v1/events"))
        .json(&json!(logins))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202, "{:?}", r.text().await);
    let done = wait_json(
        &format!("{url}/api/v1/events?event_type=execution_complete&limit=100"),
        WAIT,
        |v| {
            v["events"]
                .as_array()
                .is_some_and(|a| a.len() >= PAYLOADS.len())
        },
    )
    .await;
    let alerts = wait_json(
        &format!("{url}/api/v1/alerts?name=brute_force_detection"),
        WAIT,
        |v| v["alerts"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;
    let alert_id = alerts["alerts"][0]["id"]
        .as_str()
        .expect("alert id")
        .to_owned();
    let listed = wait_json(
        &format!("{url}/api/v1/events?event_type=tools_listed"),
        WAIT,
        |v| v["events"].as_array().is_some_and(|a| !a.is_empty()),
    )
    .await;

    let enc = |s: &str| s.bytes().map(|b| format!("%{b:02X}")).collect::<String>();
    let mut pages = vec![
        (format!("{url}/"), true),
        (format!("{url}/events?range=1h"), true),
        (format!("{url}/tools"), true),
        (format!("{url}/users"), true),
        (format!("{url}/users/{}", enc(user)), true),
        (format!("{url}/alerts"), true),
        (format!("{url}/alerts/{alert_id}"), true),
        (format!("{url}/silences?alert={alert_id}"), true),
        (format!("{url}/rules"), false),
        (
            format!("{url}/events?range=1h&user={}", enc(PAYLOADS[2])),
            true,
        ),
    ];
    for e in done["events"]
        .as_array()
        .into_iter()
        .flatten()
        .chain(listed["events"].as_array().into_iter().flatten())
        .take(8)
    {
        pages.push((
            format!("{url}/events/{}", e["id"].as_str().expect("id")),
            true,
        ));
    }
    let b = Browser::start().await;
    for (page, shows) in &pages {
        b.goto(page).await;
        b.wait_text("body", "mcpwatch", Duration::from_secs(10))
            .await;
        assert_clean(&b, page, *shows).await;
    }
    // Live: payload events streamed into an open page stay text as well.
    b.goto(&format!("{url}/live")).await;
    b.wait_text("#live-status", "connected", Duration::from_secs(20))
        .await;
    let r = http
        .post(format!("{url}/api/v1/events"))
        .json(&json!(logins))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status().as_u16(), 202);
    b.wait_text("#live-rows", "login failed", Duration::from_secs(20))
        .await;
    assert_clean(&b, "/live", true).await;
    b.close().await;
    drop(serve);
}
