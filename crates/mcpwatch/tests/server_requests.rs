//! Server-initiated requests (issue 22) on the real capture path: `peers/sampling_server.py`, on
//! the official MCP Python SDK, asks its client (`peers/sampling_client.py`, the SDK client
//! with sampling, elicitation and roots callbacks) to sample twice (an ordinary summary and the
//! injected "Ignore all previous instructions…"), to elicit twice (a project name, accepted;
//! an API key and a password, declined) and for its roots, through `mcpwatch wrap` into a real
//! `serve`. Each request is an event with its answer correlated; the injected sampling request
//! raises `prompt_injection` and the credential elicitation `elicitation_phishing`, naming the
//! server; the ordinary ones raise neither; first use of sampling and of elicitation by the
//! server is one `new_capability_use` anomaly each.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::detect::{alerts, await_listener, free_port, gateway, get, named, wait_until, Proc};
use common::{peer, Serve};
use serde_json::Value;

fn events(url: &str, event_type: &str) -> Vec<Value> {
    let mut v = get(&format!(
        "{url}/api/v1/events?event_type={event_type}&limit=100"
    ))["events"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    v.sort_by_key(|e| e["timestamp"].as_str().unwrap_or_default().to_owned());
    v
}

/// What the SDK client printed: one line per tool call, and how often each of its callbacks
/// (sampling, elicitation, roots) was called.
struct Ran {
    calls: Vec<Value>,
    callbacks: Value,
}

/// Runs the SDK client with `args` (and `MCP_TOKEN`, if given).
fn client(args: &[&str], token: Option<&str>) -> Ran {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/sampling_client.py");
    let out = Command::new(peer("venv/bin/python"))
        .arg(script)
        .args(args)
        .envs(token.map(|t| ("MCP_TOKEN", t)))
        .stdin(Stdio::null())
        .stderr(Stdio::inherit())
        .output()
        .expect("the Python client runs");
    assert!(out.status.success(), "the client failed: {}", out.status);
    let lines: Vec<Value> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("the client prints JSON lines"))
        .collect();
    let (calls, rest): (Vec<Value>, Vec<Value>) =
        lines.into_iter().partition(|l| l.get("tool").is_some());
    let callbacks = rest
        .into_iter()
        .find_map(|l| l.get("callbacks").cloned())
        .expect("the client says which callbacks ran");
    Ran { calls, callbacks }
}

/// The client answered everything itself: five calls without error, every callback run.
fn check_answered(ran: &Ran) {
    assert_eq!(ran.calls.len(), 5, "{:#?}", ran.calls);
    assert!(
        ran.calls.iter().all(|l| l["error"] == false),
        "{:#?}",
        ran.calls
    );
    assert_eq!(
        ran.callbacks,
        serde_json::json!({"sampling": 2, "elicitation": 2, "roots": 1})
    );
}

fn server_script() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/peers/sampling_server.py")
        .to_string_lossy()
        .into_owned()
}

/// What every path must have recorded and raised for the client's five calls to `server`.
fn check_recorded_and_alerted(url: &str, server: &str) {
    let sampling = wait_until(|| events(url, "sampling_response"), |v| v.len() >= 2);
    assert_eq!(sampling.len(), 2, "{sampling:#?}");
    let requests = events(url, "sampling_request");
    assert_eq!(requests.len(), 2, "{requests:#?}");
    for (req, resp) in requests.iter().zip(&sampling) {
        assert_eq!(req["category"], "session");
        assert_eq!(req["metadata"]["server"], server);
        assert_eq!(req["metadata"]["user_id"], "tester");
        assert!(req["metadata"]["session_id"].is_string());
        assert_eq!(
            req["metadata"]["system_prompt"],
            "You are a helpful summariser."
        );
        assert_eq!(req["metadata"]["max_tokens"], 64);
        assert_eq!(resp["metadata"]["request_event_id"], req["id"], "{resp:#?}");
        assert_eq!(
            resp["metadata"]["request_id"],
            req["metadata"]["request_id"]
        );
        assert_eq!(resp["metadata"]["answer"], "accepted");
        assert_eq!(resp["metadata"]["model"], "test-model-1");
        assert_eq!(resp["metadata"]["stop_reason"], "endTurn");
    }
    let texts: Vec<&str> = requests
        .iter()
        .map(|r| r["metadata"]["messages"][0]["text"].as_str().unwrap_or(""))
        .collect();
    assert!(
        texts[0].starts_with("Summarise this changelog"),
        "{texts:?}"
    );
    assert!(
        texts[1].starts_with("Ignore all previous instructions"),
        "{texts:?}"
    );

    let elicit = wait_until(|| events(url, "elicitation_response"), |v| v.len() >= 2);
    let asked = events(url, "elicitation_request");
    assert_eq!(
        (asked.len(), elicit.len()),
        (2, 2),
        "{asked:#?} {elicit:#?}"
    );
    assert_eq!(asked[0]["metadata"]["requested_fields"][0]["name"], "name");
    assert_eq!(
        asked[0]["metadata"]["message"],
        "Which project should I set up?"
    );
    let fields: Vec<&str> = asked[1]["metadata"]["requested_fields"]
        .as_array()
        .map(|a| a.iter().filter_map(|f| f["name"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(fields, ["api_key", "password"], "{asked:#?}");
    assert_eq!(elicit[0]["metadata"]["request_event_id"], asked[0]["id"]);
    assert_eq!(elicit[0]["metadata"]["answer"], "accepted");
    assert_eq!(elicit[0]["metadata"]["answered_fields"][0], "name");
    assert_eq!(elicit[1]["metadata"]["request_event_id"], asked[1]["id"]);
    assert_eq!(elicit[1]["metadata"]["answer"], "declined");

    let roots = wait_until(|| events(url, "roots_response"), |v| !v.is_empty());
    assert_eq!(roots.len(), 1, "{roots:#?}");
    assert_eq!(roots[0]["metadata"]["answer"], "accepted");
    assert_eq!(roots[0]["metadata"]["roots"], 1);
    assert_eq!(events(url, "roots_request").len(), 1);

    let want = [
        "prompt_injection",
        "elicitation_phishing",
        "new_capability_use",
    ];
    let got = wait_until(
        || alerts(url),
        |a| {
            want.iter().all(|n| !named(a, n).is_empty())
                && named(a, "new_capability_use").len() >= 2
        },
    );
    let names: Vec<&str> = got.iter().filter_map(|a| a["name"].as_str()).collect();
    let pi = named(&got, "prompt_injection");
    assert_eq!(pi.len(), 1, "{names:?}");
    let text = pi[0].to_string();
    assert!(text.contains(server), "the alert names the server: {text}");
    assert!(
        text.to_lowercase()
            .contains("ignore all previous instructions"),
        "the evidence is the injected text: {text}"
    );
    assert!(
        !text.contains("Summarise this changelog"),
        "the ordinary sampling raised nothing: {text}"
    );
    let phishing = named(&got, "elicitation_phishing");
    assert_eq!(phishing.len(), 1, "{names:?}");
    assert_eq!(phishing[0]["severity"], "high");
    assert_eq!(
        phishing[0]["group"]["metadata.server"], server,
        "{:#?}",
        phishing[0]
    );
    let text = phishing[0].to_string();
    assert!(
        text.contains(asked[1]["id"].as_str().unwrap_or("?")),
        "the alert is the credential elicitation's: {text}"
    );
    assert!(
        !text.contains(asked[0]["id"].as_str().unwrap_or("?")),
        "the project-name elicitation raised nothing: {text}"
    );
    let firsts = named(&got, "new_capability_use");
    assert_eq!(
        firsts.len(),
        2,
        "once for sampling, once for elicitation: {names:?}"
    );
}

#[test]
fn wrap_records_server_requests_with_their_answers_and_alerts_on_the_hostile_ones() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("serve"), &[]);
    let url = serve.url.clone();
    let python = peer("venv/bin/python");
    let script = server_script();
    let data = tmp.path().join("wrap");
    let out = client(
        &[
            "stdio",
            "--",
            env!("CARGO_BIN_EXE_mcpwatch"),
            "wrap",
            "--name",
            "requester",
            "--user",
            "tester",
            "--collector",
            &url,
            "--data-dir",
            data.to_str().expect("utf-8 path"),
            "--",
            &python,
            &script,
        ],
        None,
    );
    check_answered(&out);
    check_recorded_and_alerted(&url, "requester");
    serve.stop();
}

/// `sampling_server.py` over Streamable HTTP; returns the process and its MCP URL.
fn http_server() -> (Proc, String) {
    let port = free_port();
    let child = Command::new(peer("venv/bin/python"))
        .arg(server_script())
        .args(["http", &port.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("the Python server runs");
    let proc = Proc(child);
    await_listener("sampling_server.py", port);
    (proc, format!("http://127.0.0.1:{port}/mcp"))
}

const KEY: &str = "tester-key-0123456789abcdef";
const REVIEWER_KEY: &str = "reviewer-key-0123456789abcdef";

fn gateway_config(upstream: &str, deny: &str) -> String {
    format!(
        r#"
[gateway.upstreams]
requester = "{upstream}"
[[gateway.auth.api_keys]]
user_id = "tester"
key = "${{TESTER_KEY}}"
roles = ["dev"]
[[gateway.auth.api_keys]]
user_id = "reviewer"
key = "${{REVIEWER_KEY}}"
roles = ["ops"]
[gateway.policy.roles.dev]
allow = ["tool:**"]
deny = [{deny}]
[gateway.policy.roles.ops]
allow = ["tool:**"]
"#
    )
}

#[test]
fn gateway_records_server_requests_with_their_answers_and_alerts_on_the_hostile_ones() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("serve"), &[]);
    let (_up, upstream) = http_server();
    let (_gw, gw) = gateway(
        &gateway_config(&upstream, ""),
        &serve.url,
        tmp.path(),
        &[("TESTER_KEY", KEY), ("REVIEWER_KEY", REVIEWER_KEY)],
    );
    let out = client(&["http", &format!("{gw}/mcp/requester")], Some(KEY));
    check_answered(&out);
    check_recorded_and_alerted(&serve.url, "requester");
    serve.stop();
}

/// The events of `event_type` on behalf of `user`.
fn events_of(url: &str, event_type: &str, user: &str) -> Vec<Value> {
    let mut v = events(url, event_type);
    v.retain(|e| e["metadata"]["user_id"] == user);
    v
}

/// Policy denies sampling and elicitation from `requester` to role `dev`: the client's
/// callbacks never run, the server gets the gateway's JSON-RPC error for each request (its tools
/// report what they received), each request is recorded with answer `denied` and an
/// `authorization` event naming server, method, user and role. The ordinary sampling request
/// travels on the tool call's POST response stream, the injected one on the GET stream (the
/// SDK server sends a request related to no client request there, and nowhere else: were the
/// GET stream not relayed and judged, the tool would never return). Role `ops`, through the
/// same gateway to the same server, is unaffected.
#[test]
fn gateway_policy_denies_sampling_and_elicitation_per_role_on_post_and_get_streams() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("serve"), &[]);
    let (_up, upstream) = http_server();
    let (_gw, gw) = gateway(
        &gateway_config(
            &upstream,
            r#""sampling:requester", "elicitation:requester""#,
        ),
        &serve.url,
        tmp.path(),
        &[("TESTER_KEY", KEY), ("REVIEWER_KEY", REVIEWER_KEY)],
    );
    let mcp = format!("{gw}/mcp/requester");
    let denied = client(&["http", &mcp], Some(KEY));
    assert_eq!(
        denied.callbacks,
        serde_json::json!({"sampling": 0, "elicitation": 0, "roots": 1}),
        "the client never saw the denied requests: {:#?}",
        denied.calls
    );
    let texts: Vec<&str> = denied
        .calls
        .iter()
        .map(|c| c["text"].as_str().unwrap_or_default())
        .collect();
    assert_eq!(texts.len(), 5, "{:#?}", denied.calls);
    for (text, method) in texts[..4].iter().zip([
        "sampling/createMessage",
        "sampling/createMessage",
        "elicitation/create",
        "elicitation/create",
    ]) {
        assert!(
            text.starts_with("refused code=-32001 message=Forbidden: tester may not receive"),
            "the server got the gateway's error: {texts:?}"
        );
        assert!(text.contains(method) && text.contains("role dev"), "{text}");
    }
    assert_eq!(texts[4], "roots=1", "roots are not denied");

    let url = &serve.url;
    for kind in ["sampling", "elicitation"] {
        let answers = wait_until(
            || events_of(url, &format!("{kind}_response"), "tester"),
            |v| v.len() >= 2,
        );
        let asked = events_of(url, &format!("{kind}_request"), "tester");
        assert_eq!(
            (asked.len(), answers.len()),
            (2, 2),
            "{asked:#?} {answers:#?}"
        );
        for (req, resp) in asked.iter().zip(&answers) {
            assert_eq!(resp["metadata"]["request_event_id"], req["id"]);
            assert_eq!(resp["metadata"]["answer"], "denied", "{resp:#?}");
            let reason = resp["metadata"]["reason"].as_str().unwrap_or_default();
            assert!(reason.contains("role dev"), "{reason}");
        }
    }
    let refusals = |user: &str| {
        let mut v = events_of(url, "authorization", user);
        v.retain(|e| e["metadata"]["action"] == "receive");
        v
    };
    let recorded = wait_until(|| refusals("tester"), |v| v.len() >= 4);
    let mut seen: Vec<(String, String)> = recorded
        .iter()
        .map(|e| {
            let m = &e["metadata"];
            assert_eq!(m["server"], "requester", "{e:#?}");
            assert_eq!(m["role"], "dev", "{e:#?}");
            assert_eq!(m["result"], "denied", "{e:#?}");
            assert!(m["session_id"].is_string(), "{e:#?}");
            (
                m["resource"].as_str().unwrap_or_default().to_owned(),
                m["method"].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    seen.sort();
    let pair = |r: &str, m: &str| (r.to_owned(), m.to_owned());
    assert_eq!(
        seen,
        [
            pair("elicitation:requester", "elicitation/create"),
            pair("elicitation:requester", "elicitation/create"),
            pair("sampling:requester", "sampling/createMessage"),
            pair("sampling:requester", "sampling/createMessage"),
        ]
    );

    let allowed = client(&["http", &mcp], Some(REVIEWER_KEY));
    check_answered(&allowed);
    let answers = wait_until(
        || events_of(url, "sampling_response", "reviewer"),
        |v| v.len() >= 2,
    );
    assert!(
        answers
            .iter()
            .all(|a| a["metadata"]["answer"] == "accepted"),
        "{answers:#?}"
    );
    assert!(
        refusals("reviewer").is_empty(),
        "nothing was denied to ops: {:#?}",
        refusals("reviewer")
    );
    assert_eq!(refusals("tester").len(), 4);
    serve.stop();
}
