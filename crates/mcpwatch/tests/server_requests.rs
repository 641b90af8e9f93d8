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

/// Runs the SDK client with `args` (and `MCP_TOKEN`, if given); returns its JSON lines.
fn client(args: &[&str], token: Option<&str>) -> Vec<Value> {
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
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("the client prints JSON lines"))
        .collect()
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
    assert_eq!(out.len(), 5, "{out:#?}");
    assert!(out.iter().all(|l| l["error"] == false), "{out:#?}");
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

fn gateway_config(upstream: &str, deny: &str) -> String {
    format!(
        r#"
[gateway.upstreams]
requester = "{upstream}"
[[gateway.auth.api_keys]]
user_id = "tester"
key = "${{TESTER_KEY}}"
roles = ["dev"]
[gateway.policy.roles.dev]
allow = ["tool:**"]
deny = [{deny}]
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
        &[("TESTER_KEY", KEY)],
    );
    let out = client(&["http", &format!("{gw}/mcp/requester")], Some(KEY));
    assert_eq!(out.len(), 5, "{out:#?}");
    assert!(out.iter().all(|l| l["error"] == false), "{out:#?}");
    check_recorded_and_alerted(&serve.url, "requester");
    serve.stop();
}
