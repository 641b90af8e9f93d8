//! A batch the gateway answers in part and the upstream refuses whole (an HTTP error status):
//! the client still gets an answer for every request it sent, the gateway's own errors
//! included, instead of only the upstream's error.

mod common;

use axum::http::StatusCode;
use mcpwatch_capture::gateway::config::LimitsSection;
use mcpwatch_capture::gateway::GatewayConfig;
use serde_json::{json, Value};

use common::{await_events, collector, listen, start_gateway};

const CAROL: &str = "carol-key-0123456789abcdef";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_the_upstream_refuses_still_gets_every_answer() {
    // An upstream that takes no batches, as some servers do: 400 with an id-less error.
    let up = listen(axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async {
            (
                StatusCode::BAD_REQUEST,
                [("content-type", "application/json")],
                r#"{"jsonrpc":"2.0","id":null,"error":{"code":-32600,"message":"Batches are not supported"}}"#,
            )
        }),
    ))
    .await;
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
    let (collector, seen) = collector().await;
    let gw = start_gateway(
        cfg.build(&|_| None).expect("config"),
        collector,
        LimitsSection::default(),
    )
    .await;
    let call = |id: u64, name: &str| json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": name}});
    let batch = json!([call(1, "secret"), call(2, "echo"), call(3, "echo")]);
    let resp = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client")
        .post(format!("http://{gw}/mcp/echo"))
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-api-key", CAROL)
        .body(batch.to_string())
        .send()
        .await
        .expect("through the gateway");
    assert_eq!(resp.status(), 200);
    let answers: Value = resp.json().await.expect("a JSON answer");
    let mut by_id: Vec<(u64, i64, String)> = answers
        .as_array()
        .expect("a batch answer")
        .iter()
        .map(|m| {
            (
                m["id"].as_u64().unwrap_or(0),
                m["error"]["code"].as_i64().unwrap_or(0),
                m["error"]["message"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
            )
        })
        .collect();
    by_id.sort();
    let codes: Vec<(u64, i64)> = by_id.iter().map(|(i, c, _)| (*i, *c)).collect();
    assert_eq!(codes, [(1, -32001), (2, -32004), (3, -32004)], "{answers}");
    assert!(
        by_id[1].2.contains("HTTP 400") && by_id[1].2.contains("Batches are not supported"),
        "{answers}"
    );
    // The forwarded calls are recorded as failed at once, the refused one as denied.
    let done = await_events(&seen, 3, |e| e["event_type"] == "execution_complete").await;
    assert_eq!(done, 3);
    let mut outcomes: Vec<(String, String)> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e["event_type"] == "execution_complete")
        .map(|e| {
            let m = &e["metadata"];
            (
                m["request_id"].as_str().unwrap_or_default().to_string(),
                m["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect();
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("1".into(), "denied".into()),
            ("2".into(), "transport_error".into()),
            ("3".into(), "transport_error".into())
        ]
    );
}
