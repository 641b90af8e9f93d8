//! List filtering of SSE answers fails closed and loses nothing: an event too large to filter
//! ends the stream with an error instead of reaching the caller whole, and a last event the
//! upstream left unfinished still reaches the caller, filtered.

mod common;

use std::net::SocketAddr;

use axum::body::Bytes;
use mcpwatch_capture::gateway::config::LimitsSection;
use mcpwatch_capture::gateway::GatewayConfig;
use serde_json::{json, Value};

use common::{collector, listen, start_gateway};

const CAROL: &str = "carol-key-0123456789abcdef";

/// Answers `tools/list` over SSE: id 1 with one event of 17 MiB, id 2 with an event that the
/// stream ends before its blank line.
async fn upstream() -> SocketAddr {
    listen(axum::Router::new().route(
        "/mcp",
        axum::routing::post(|body: Bytes| async move {
            let req: Value = serde_json::from_slice(&body).expect("JSON");
            let padding = if req["id"] == 1 {
                "x".repeat(17 << 20)
            } else {
                String::new()
            };
            let result = json!({"jsonrpc": "2.0", "id": req["id"], "result": {"tools": [
                {"name": "echo", "description": "echoes"},
                {"name": "secret", "description": padding},
            ]}});
            let mut sse = format!("event: message\ndata: {result}");
            if req["id"] == 1 {
                sse.push_str("\n\n");
            }
            ([("content-type", "text/event-stream")], sse)
        }),
    ))
    .await
}

async fn list(gw: SocketAddr, id: u64) -> String {
    reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("http://{gw}/mcp/echo"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-api-key", CAROL)
        .body(json!({"jsonrpc": "2.0", "id": id, "method": "tools/list"}).to_string())
        .send()
        .await
        .expect("through the gateway")
        .text()
        .await
        .expect("the body")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sse_list_filtering_fails_closed_on_huge_events_and_keeps_the_last_unfinished_one() {
    let up = upstream().await;
    let text = format!(
        r#"
[upstreams]
echo = "http://{up}/mcp"
[[auth.api_keys]]
user_id = "carol"
key = "{CAROL}"
roles = ["dev"]
[policy.roles.dev]
deny = ["tool:echo/secret"]
"#
    );
    let table: toml::Table = toml::from_str(&text).expect("TOML");
    let cfg = GatewayConfig::from_table(&table).expect("valid gateway section");
    let (collector, _seen) = collector().await;
    let gw = start_gateway(
        cfg.build(&|_| None).expect("config"),
        collector,
        LimitsSection::default(),
    )
    .await;

    let huge = list(gw, 1).await;
    assert!(
        huge.len() < 1 << 20,
        "the 17 MiB event reached the caller ({} bytes)",
        huge.len()
    );
    assert!(
        !huge.contains("\"secret\""),
        "{}",
        &huge[..huge.len().min(300)]
    );
    assert!(huge.contains("cannot filter by policy"), "{huge}");

    let unfinished = list(gw, 2).await;
    let data = unfinished
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or_else(|| panic!("the unfinished event was lost: {unfinished:?}"));
    let v: Value = serde_json::from_str(data).expect("JSON-RPC");
    assert_eq!(
        v["result"]["tools"],
        json!([{"name": "echo", "description": "echoes"}])
    );
}
