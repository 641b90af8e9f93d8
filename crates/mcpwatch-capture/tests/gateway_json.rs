//! The gateway in front of an upstream that answers with plain JSON and a `Content-Length`
//! (what most Streamable HTTP servers do for a single request): the client gets the upstream's
//! bytes unchanged and the collector gets the call's outcome.
//!
//! Regression: hyper stops polling a body once it has sent `Content-Length` bytes, so the end
//! of the upstream's stream was never seen and every such response was discarded as if the
//! client had gone away: no `execution_complete`, no `request_performance`, and each call
//! looked pending until it timed out.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::http::header;
use mcpwatch_capture::delivery::DeliveryConfig;
use mcpwatch_capture::gateway::config::LimitsSection;
use mcpwatch_capture::gateway::{GatewayConfig, GatewayRun};
use mcpwatch_core::SystemClock;
use serde_json::Value;

const RESULT_OK: &str = r#"{"content":[{"type":"text","text":"Echo: hi"}],"isError":false}"#;
const RESULT_TOOL_ERROR: &str =
    r#"{"content":[{"type":"text","text":"ENOENT: no such file"}],"isError":true}"#;

/// Answers `tools/call` of tool `fail` with `isError: true`, any other with success.
async fn upstream(body: Bytes) -> impl axum::response::IntoResponse {
    let req: Value = serde_json::from_slice(&body).expect("JSON request");
    let result = if req["params"]["name"] == "fail" {
        RESULT_TOOL_ERROR
    } else {
        RESULT_OK
    };
    let reply = format!(
        r#"{{"jsonrpc":"2.0","id":{},"result":{result}}}"#,
        req["id"]
    );
    ([(header::CONTENT_TYPE, "application/json")], reply)
}

async fn listen(app: axum::Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
    addr
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn json_responses_are_relayed_unchanged_and_their_outcomes_recorded() {
    let seen: Arc<Mutex<Vec<Value>>> = Arc::default();
    let collected = seen.clone();
    let collector = listen(axum::Router::new().route(
        "/api/v1/events",
        axum::routing::post(move |body: Bytes| {
            let collected = collected.clone();
            async move {
                let events: Vec<Value> = serde_json::from_slice(&body).expect("event batch");
                let n = events.len();
                collected.lock().expect("lock").extend(events);
                let ids: Vec<String> = (0..n).map(|i| format!("e{i}")).collect();
                (
                    axum::http::StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({"accepted": n, "ids": ids})),
                )
            }
        }),
    ))
    .await;
    let up = listen(axum::Router::new().route("/mcp", axum::routing::post(upstream))).await;

    let mut cfg = GatewayConfig::default();
    cfg.upstreams
        .insert("echo".into(), format!("http://{up}/mcp"));
    let built = cfg.build(&|_| None).expect("valid config");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let gw = listener.local_addr().expect("addr");
    let run = GatewayRun {
        built,
        limits: LimitsSection::default(),
        delivery: DeliveryConfig::new(format!("http://{collector}")),
        data_dir: None,
        classification: Default::default(),
        redactor: Default::default(),
    };
    tokio::spawn(mcpwatch_capture::gateway::serve(
        listener,
        run,
        Arc::new(SystemClock),
        std::future::pending::<()>(),
    ));

    let client = reqwest::Client::builder()
        .no_proxy()
        .build()
        .expect("client");
    for (id, tool) in [(1, "echo"), (2, "fail"), (3, "echo")] {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"{tool}","arguments":{{}}}}}}"#
        );
        let direct = client
            .post(format!("http://{up}/mcp"))
            .header("content-type", "application/json")
            .body(body.clone())
            .send()
            .await
            .expect("direct")
            .bytes()
            .await
            .expect("direct body");
        let resp = client
            .post(format!("http://{gw}/mcp/echo"))
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-session-id", "s-1")
            .body(body)
            .send()
            .await
            .expect("through the gateway");
        assert!(resp.status().is_success(), "{}", resp.status());
        assert_eq!(resp.bytes().await.expect("body"), direct, "call {id}");
    }

    // Delivery lingers up to 50 ms per batch; give it a few seconds on a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(20);
    let outcomes = loop {
        let outcomes: Vec<(String, String)> = seen
            .lock()
            .expect("lock")
            .iter()
            .filter(|e| e["event_type"] == "execution_complete")
            .map(|e| {
                (
                    e["metadata"]["request_id"]
                        .as_str()
                        .unwrap_or("")
                        .to_string(),
                    e["metadata"]["outcome"].as_str().unwrap_or("").to_string(),
                )
            })
            .collect();
        if outcomes.len() >= 3 || Instant::now() > deadline {
            break outcomes;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let mut outcomes = outcomes;
    outcomes.sort();
    assert_eq!(
        outcomes,
        [
            ("1".to_string(), "success".to_string()),
            ("2".to_string(), "tool_error".to_string()),
            ("3".to_string(), "success".to_string()),
        ]
    );
    let perf = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e["event_type"] == "request_performance")
        .count();
    assert_eq!(perf, 3, "one request_performance per call");
}
