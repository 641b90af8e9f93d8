//! The detection contract on the gateway's capture path: the official MCP Python SDK client
//! drives `@modelcontextprotocol/server-everything` (Streamable HTTP) through `mcpwatch gateway`,
//! authenticated by an API key as user `tester`, into a real `serve` with a demo-sized learning
//! period. The alerts that come out are what the traffic deserves: varied normal work raises no
//! anomaly, a true loop raises `repetition`, a call with a new key and an outlying size raises
//! `unusual_parameters` naming the user, a `../` path raises `path_traversal` naming the user.

mod common;

use std::path::Path;
use std::process::{Command, Stdio};

use common::detect::{
    check_contract, everything, gateway, get, wait_past_learning, wait_until, Contract,
};
use common::Serve;
use serde_json::Value;

const KEY: &str = "tester-key-0123456789abcdef";

fn client(phase: &str, mcp: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/http_client.py");
    let status = Command::new(common::peer("venv/bin/python"))
        .arg(script)
        .args(["detection", mcp])
        .env("MCP_TOKEN", KEY)
        .env("PHASE", phase)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .status()
        .expect("the Python client runs");
    assert!(status.success(), "the {phase} client failed: {status}");
}

#[test]
fn gateway_traffic_gets_the_alerts_it_deserves() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let cfg = tmp.path().join("mcpwatch.toml");
    std::fs::write(
        &cfg,
        "[detection.anomaly]\nlearning_period = \"2s\"\nmin_samples = 5\n",
    )
    .expect("write config");
    let serve = Serve::start(
        &tmp.path().join("serve"),
        &["--config", cfg.to_str().unwrap()],
    );
    let url = serve.url.clone();
    let (_ev, upstream) = everything();
    let config = format!(
        "[gateway.upstreams]\neverything = \"{upstream}\"\n\
         [[gateway.auth.api_keys]]\nuser_id = \"tester\"\nkey = \"${{TESTER_KEY}}\"\n"
    );
    let (_gw, gw) = gateway(&config, &url, tmp.path(), &[("TESTER_KEY", KEY)]);
    let mcp = format!("{gw}/mcp/everything");
    let done = |url: &str| {
        get(&format!(
            "{url}/api/v1/events?event_type=execution_complete&limit=1000"
        ))
    };
    let count = |v: &Value| v["events"].as_array().map_or(0, Vec::len);

    client("work", &mcp);
    let work = wait_until(|| done(&url), |v| count(v) >= 42);
    assert_eq!(
        count(&work),
        42,
        "every call of the normal work is recorded"
    );
    let events = work["events"].as_array().cloned().unwrap_or_default();
    assert!(
        events.iter().all(|e| e["metadata"]["user_id"] == "tester"
            && e["metadata"]["server"] == "everything"
            && e["metadata"]["outcome"] == "success"),
        "the gateway records who called what: {:#?}",
        events[0]
    );
    let work_session = events[0]["metadata"]["session_id"]
        .as_str()
        .expect("a session id")
        .to_owned();
    wait_past_learning();
    client("attack", &mcp);
    check_contract(
        &url,
        &Contract {
            the_loop: "everything/echo called 10 times in a row",
            outlying: "`message` is 6",
            work_session: &work_session,
        },
    );
    serve.stop();
}
