//! The gateway against an attacker, end to end in process: the gateway as `mcpwatch gateway`
//! runs it, a JSON-RPC upstream that counts what reaches it, and a collector.
//!
//! Each test reproduces a way past the gateway that worked before: spellings of a denied
//! resource URI, bodies that are no JSON-RPC, batches that outran the rate limit, methods
//! that name a prompt or resource without policy or limits, sessions usable by anyone after
//! a restart, upstream names told to strangers, unthrottled key guessing.

mod common;

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use axum::body::Bytes;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::IntoResponse;
use mcpwatch_capture::gateway::config::LimitsSection;
use mcpwatch_capture::gateway::GatewayConfig;
use serde_json::{json, Value};

use mcpwatch_core::{ManualClock, Timestamp};

use common::{await_events, collector, listen, start_gateway, start_gateway_at};

const CAROL: &str = "carol-key-0123456789abcdef";
const ROOT: &str = "root-key-0123456789abcdef";
const DAVE: &str = "dave-key-0123456789abcdef";

/// Answers every request with `{"method": …}` as its result, a batch with a batch, and
/// `initialize` with a fresh `Mcp-Session-Id`; counts the bodies that reach it.
async fn upstream() -> (SocketAddr, Arc<AtomicU64>) {
    let hits = Arc::new(AtomicU64::new(0));
    let counted = hits.clone();
    let sessions = Arc::new(AtomicU64::new(0));
    let addr = listen(axum::Router::new().route(
        "/mcp",
        axum::routing::post(move |body: Bytes| {
            counted.fetch_add(1, Ordering::Relaxed);
            let sessions = sessions.clone();
            async move {
                let req: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
                let answer = |m: &Value| {
                    json!({"jsonrpc": "2.0", "id": m["id"], "result": {"method": m["method"]}})
                };
                let mut headers = HeaderMap::new();
                headers.insert(header::CONTENT_TYPE, "application/json".parse().expect("h"));
                let reply = match &req {
                    Value::Array(items) => Value::Array(
                        items
                            .iter()
                            .filter(|m| m.get("id").is_some())
                            .map(answer)
                            .collect(),
                    ),
                    m if m["method"] == "initialize" => {
                        let n = sessions.fetch_add(1, Ordering::Relaxed);
                        let id = format!("upstream-session-{n}");
                        headers.insert("mcp-session-id", id.parse().expect("h"));
                        answer(m)
                    }
                    m if m.get("id").is_none() => return StatusCode::ACCEPTED.into_response(),
                    m => answer(m),
                };
                (headers, reply.to_string()).into_response()
            }
        }),
    ))
    .await;
    (addr, hits)
}

fn config(up: SocketAddr, extra: &str) -> GatewayConfig {
    let text = format!(
        r#"
[upstreams]
echo = "http://{up}/mcp"
[[auth.api_keys]]
user_id = "carol"
key = "{CAROL}"
roles = ["dev"]
[[auth.api_keys]]
user_id = "root"
key = "{ROOT}"
[[auth.api_keys]]
user_id = "dave"
key = "{DAVE}"
[policy.roles.dev]
deny = ["resource:file:///etc/**", "tool:echo/secret", "prompt:echo/secret"]
{extra}
"#
    );
    let table: toml::Table = toml::from_str(&text).expect("TOML");
    GatewayConfig::from_table(&table).expect("valid gateway section")
}

async fn gateway(up: SocketAddr, extra: &str, limits: LimitsSection) -> (SocketAddr, common::Seen) {
    let (collector, seen) = collector().await;
    let built = config(up, extra).build(&|_| None).expect("valid config");
    (start_gateway(built, collector, limits).await, seen)
}

/// [`gateway`] on a clock that stands still, for what depends on how fast the test runs.
async fn frozen_gateway(up: SocketAddr) -> (SocketAddr, common::Seen) {
    let (collector, seen) = collector().await;
    let built = config(up, "").build(&|_| None).expect("valid config");
    let clock = Arc::new(ManualClock::new(
        Timestamp::from_unix_seconds(1_700_000_000.0).expect("ts"),
    ));
    let gw = start_gateway_at(built, collector, LimitsSection::default(), clock).await;
    (gw, seen)
}

/// An answer: status, `Retry-After`, the body as JSON (Null if it is not).
struct Answer {
    status: u16,
    retry_after: Option<u64>,
    json: Value,
}

async fn send(
    client: &reqwest::Client,
    url: &str,
    key: &str,
    session: Option<&str>,
    body: impl Into<String>,
) -> Answer {
    let mut req = client
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("x-api-key", key);
    if let Some(s) = session {
        req = req.header("mcp-session-id", s);
    }
    let resp = req
        .body(body.into())
        .send()
        .await
        .expect("through the gateway");
    let status = resp.status().as_u16();
    let retry_after = resp
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok());
    let text = resp.text().await.unwrap_or_default();
    Answer {
        status,
        retry_after,
        json: serde_json::from_str(&text).unwrap_or(Value::Null),
    }
}

fn client() -> reqwest::Client {
    client_from([127, 0, 0, 1].into())
}

/// A client whose connections come from `local` (any 127.x address on Linux loopback).
fn client_from(local: IpAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .local_address(local)
        .build()
        .expect("client")
}

fn read(id: u64, uri: &str) -> String {
    json!({"jsonrpc": "2.0", "id": id, "method": "resources/read", "params": {"uri": uri}})
        .to_string()
}

fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_spelling_of_a_denied_resource_is_denied_and_unspellable_uris_refused() {
    let (up, hits) = upstream().await;
    let (gw, seen) = gateway(up, "", LimitsSection::default()).await;
    let url = format!("http://{gw}/mcp/echo");
    let c = client();
    let spellings = [
        "file:///etc/passwd",
        "file:///tmp/../etc/passwd",
        "file:////etc/passwd",
        "file:///%65tc/passwd",
        "FILE:///etc/passwd",
        "file://localhost/etc/passwd",
        "file:///./etc/passwd",
        "file:/etc/passwd",
        // Host `etc` to some servers, the relative path etc/passwd to others: refused.
        "file://etc/passwd",
    ];
    for (i, uri) in spellings.iter().enumerate() {
        let a = send(&c, &url, CAROL, None, read(i as u64, uri)).await;
        assert_eq!(a.json["error"]["code"], -32001, "{uri}: {}", a.json);
    }
    let a = send(&c, &url, CAROL, None, read(50, "file:///etc%2Fpasswd")).await;
    assert_eq!(a.json["error"]["code"], -32001, "{}", a.json);
    assert!(
        a.json["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("no canonical spelling"),
        "{}",
        a.json
    );
    // Other methods that name the resource or a denied prompt are judged too.
    for body in [
        request(
            60,
            "resources/subscribe",
            json!({"uri": "file:///tmp/../etc/shadow"}),
        ),
        request(
            61,
            "completion/complete",
            json!({"ref": {"type": "ref/resource", "uri": "FILE:///etc/{x}"}, "argument": {"name": "x", "value": ""}}),
        ),
        request(
            62,
            "completion/complete",
            json!({"ref": {"type": "ref/prompt", "name": "secret"}, "argument": {"name": "a", "value": ""}}),
        ),
    ] {
        let a = send(&c, &url, CAROL, None, body.to_string()).await;
        assert_eq!(a.json["error"]["code"], -32001, "{body}: {}", a.json);
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "nothing denied went upstream"
    );
    let a = send(&c, &url, CAROL, None, read(70, "file:///tmp/notes.txt")).await;
    assert_eq!(a.json["result"]["method"], "resources/read", "{}", a.json);
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    // Whom no policy restricts reaches any spelling: the upstream decides.
    let a = send(&c, &url, ROOT, None, read(71, "file:///etc%2Fpasswd")).await;
    assert_eq!(a.json["result"]["method"], "resources/read", "{}", a.json);
    let denied = await_events(&seen, spellings.len() + 4, |e| {
        e["event_type"] == "authorization" && e["metadata"]["user_id"] == "carol"
    })
    .await;
    assert_eq!(denied, spellings.len() + 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bodies_that_are_no_jsonrpc_are_refused_to_everyone() {
    let (up, hits) = upstream().await;
    let (gw, _seen) = gateway(up, "", LimitsSection::default()).await;
    let url = format!("http://{gw}/mcp/echo");
    let c = client();
    let call = r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"secret"}}"#;
    let bodies = [
        format!("[[{call}]]"),
        "[]".to_string(),
        " [ ] ".to_string(),
        r#"{"hello":"world"}"#.to_string(),
        r#"{"jsonrpc":"2.0","id":1}"#.to_string(),
        r#"{"id":1,"method":"tools/call","params":{"name":"secret"}}"#.to_string(),
        format!(r#"[{call},"tools/call"]"#),
        format!(r#"[{call},{{"jsonrpc":"1.0","id":2,"method":"ping"}}]"#),
    ];
    for key in [CAROL, ROOT] {
        for body in &bodies {
            let a = send(&c, &url, key, None, body.clone()).await;
            assert_eq!(
                (a.status, &a.json["error"]["code"]),
                (400, &json!(-32600)),
                "{body}: {}",
                a.json
            );
        }
    }
    assert_eq!(
        hits.load(Ordering::Relaxed),
        0,
        "nothing unjudged went upstream"
    );
    // A response from the client (to a server's request) is JSON-RPC and passes.
    let a = send(
        &c,
        &url,
        CAROL,
        None,
        r#"{"jsonrpc":"2.0","id":9,"result":{}}"#,
    )
    .await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(hits.load(Ordering::Relaxed), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_count_messages_and_cover_every_method_that_names_a_target() {
    let (up, hits) = upstream().await;
    let limits = r#"
[rate_limits]
per_principal = { rate = 0.001, burst = 20 }
per_tool = { rate = 0.001, burst = 1 }
"#;
    let (gw, seen) = gateway(up, limits, LimitsSection::default()).await;
    let url = format!("http://{gw}/mcp/echo");
    let c = client();
    let batch = |n: u64| {
        Value::Array(
            (0..n)
                .map(|i| request(i, "tools/list", json!({})))
                .collect(),
        )
        .to_string()
    };
    let a = send(&c, &url, CAROL, None, batch(200)).await;
    assert_eq!(a.status, 429, "{}", a.json);
    assert!(
        a.json["error"]
            .as_str()
            .unwrap_or_default()
            .contains("send smaller batches"),
        "{}",
        a.json
    );
    let a = send(&c, &url, CAROL, None, batch(15)).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(a.json.as_array().map(Vec::len), Some(15));
    let a = send(&c, &url, CAROL, None, batch(10)).await;
    assert_eq!(a.status, 429, "5 tokens left for 10 messages: {}", a.json);
    assert!(a.retry_after.is_some_and(|r| r >= 1));
    assert_eq!(hits.load(Ordering::Relaxed), 1);

    // Per target: a prompt, completions of it, and a server's resources share buckets.
    let prompt = request(1, "prompts/get", json!({"name": "greet"}));
    let complete = request(
        2,
        "completion/complete",
        json!({"ref": {"type": "ref/prompt", "name": "greet"}, "argument": {"name": "a", "value": ""}}),
    );
    let a = send(&c, &url, DAVE, None, prompt.to_string()).await;
    assert_eq!(a.json["result"]["method"], "prompts/get", "{}", a.json);
    let a = send(&c, &url, DAVE, None, complete.to_string()).await;
    assert_eq!(a.json["error"]["code"], -32003, "{}", a.json);
    let a = send(&c, &url, DAVE, None, read(3, "file:///tmp/a")).await;
    assert_eq!(a.json["result"]["method"], "resources/read", "{}", a.json);
    let sub = request(4, "resources/subscribe", json!({"uri": "file:///tmp/b"}));
    let a = send(&c, &url, DAVE, None, sub.to_string()).await;
    assert_eq!(a.json["error"]["code"], -32003, "{}", a.json);
    let limited = await_events(&seen, 4, |e| e["event_type"] == "rate_limited").await;
    assert_eq!(limited, 4);
    let targets: Vec<Value> = seen
        .lock()
        .expect("lock")
        .iter()
        .filter(|e| e["event_type"] == "rate_limited" && e["metadata"]["scope"] == "tool")
        .map(|e| e["metadata"]["target"].clone())
        .collect();
    assert_eq!(
        targets,
        [json!("prompt:echo/greet"), json!("resource:file:///tmp/b")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_without_a_known_owner_is_refused_until_its_owner_initializes_again() {
    let (up, _hits) = upstream().await;
    let (first, _) = gateway(up, "", LimitsSection::default()).await;
    let c = client();
    let init = || {
        request(1, "initialize", json!({"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}})).to_string()
    };
    let open = |gw: SocketAddr| {
        let c = c.clone();
        async move {
            let resp = c
                .post(format!("http://{gw}/mcp/echo"))
                .header("content-type", "application/json")
                .header("x-api-key", CAROL)
                .body(init())
                .send()
                .await
                .expect("initialize");
            assert_eq!(resp.status(), 200);
            resp.headers()
                .get("mcp-session-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
                .expect("a session id")
        }
    };
    let session = open(first).await;
    let ping = request(2, "ping", json!({})).to_string();
    let url = format!("http://{first}/mcp/echo");
    let a = send(&c, &url, CAROL, Some(&session), ping.clone()).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let a = send(&c, &url, DAVE, Some(&session), ping.clone()).await;
    assert_eq!(a.status, 403, "{}", a.json);

    // A restarted gateway knows no owners: nobody rides on the session, not even its owner.
    let (second, seen) = gateway(up, "", LimitsSection::default()).await;
    let url = format!("http://{second}/mcp/echo");
    for key in [DAVE, CAROL] {
        let a = send(&c, &url, key, Some(&session), ping.clone()).await;
        assert_eq!(a.status, 404, "{}", a.json);
        assert!(
            a.json["error"]["message"]
                .as_str()
                .unwrap_or_default()
                .contains("start a new session with initialize"),
            "{}",
            a.json
        );
    }
    let again = open(second).await;
    let a = send(&c, &url, CAROL, Some(&again), ping).await;
    assert_eq!(a.status, 200, "{}", a.json);
    let refused = await_events(&seen, 2, |e| {
        e["event_type"] == "authorization" && e["metadata"]["resource"] == "session:echo"
    })
    .await;
    assert_eq!(refused, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_learn_no_upstream_names_and_key_guessing_is_slowed_per_address() {
    let (up, hits) = upstream().await;
    let (gw, seen) = frozen_gateway(up).await;
    let c = client();
    let unknown = send(&c, &format!("http://{gw}/mcp/nope"), "wrong", None, "{}").await;
    assert_eq!(unknown.status, 404);
    assert!(
        !unknown.json.to_string().contains("echo"),
        "{}",
        unknown.json
    );

    let url = format!("http://{gw}/mcp/echo");
    let ping = request(1, "ping", json!({})).to_string();
    let (mut unauthorized, mut throttled) = (0, 0);
    for i in 0..300 {
        let a = send(
            &c,
            &url,
            &format!("guess-{i:04}-0123456789"),
            None,
            ping.clone(),
        )
        .await;
        match a.status {
            401 => unauthorized += 1,
            429 => {
                assert!(a.retry_after.is_some_and(|r| r >= 1), "Retry-After");
                throttled += 1;
            }
            other => panic!("guess {i}: {other} {}", a.json),
        }
    }
    // Ten failures are free; the eleventh is checked too, and shuts the address out.
    assert_eq!((unauthorized, throttled), (11, 289));
    // The right key from the same address waits too; from another address it does not.
    let a = send(&c, &url, CAROL, None, ping.clone()).await;
    assert_eq!(a.status, 429, "{}", a.json);
    let elsewhere = client_from([127, 0, 0, 2].into());
    let a = send(&elsewhere, &url, CAROL, None, ping).await;
    assert_eq!(a.status, 200, "{}", a.json);
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    // Every attempt is an authentication event, for brute-force detection.
    let failures = await_events(&seen, 301, |e| {
        e["event_type"] == "authentication" && e["metadata"]["result"] == "failure"
    })
    .await;
    assert_eq!(failures, 301);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_nested_past_the_parse_depth_is_refused_under_policy_and_recorded_otherwise() {
    let (up, hits) = upstream().await;
    let (gw, seen) = gateway(up, "", LimitsSection::default()).await;
    let url = format!("http://{gw}/mcp/echo");
    let c = client();
    let deep = format!("{}\"../../etc/passwd\"{}", "[".repeat(200), "]".repeat(200));
    let call = |id: u64| {
        format!(
            r#"{{"jsonrpc":"2.0","id":{id},"method":"tools/call","params":{{"name":"read","arguments":{{"path":{deep}}}}}}}"#
        )
    };
    // The tool is allowed by name, but policy cannot judge what the monitor cannot read.
    for body in [call(1), format!("[{}]", call(2))] {
        let a = send(&c, &url, CAROL, None, body).await;
        assert_eq!((a.status, &a.json["error"]["code"]), (400, &json!(-32600)));
        let msg = a.json["error"]["message"].as_str().unwrap_or_default();
        assert!(msg.contains("nested deeper than 127 levels"), "{msg}");
    }
    assert_eq!(hits.load(Ordering::Relaxed), 0, "nothing went upstream");
    let denied = |e: &Value| {
        e["event_type"] == "authorization"
            && e["metadata"]["reason"]
                .as_str()
                .is_some_and(|r| r.contains("nested deeper"))
    };
    assert_eq!(await_events(&seen, 2, denied).await, 2);

    // A principal no policy applies to is forwarded, and the call is recorded with the
    // evasion flagged.
    // (The test upstream's own parser cannot read it either, so it answers 202.)
    let a = send(&c, &url, ROOT, None, call(3)).await;
    assert!((200..300).contains(&a.status), "{}", a.json);
    assert_eq!(hits.load(Ordering::Relaxed), 1);
    let started =
        |e: &Value| e["event_type"] == "execution_start" && e["metadata"]["tool_name"] == "read";
    assert_eq!(await_events(&seen, 1, started).await, 1);
    let flagged =
        |e: &Value| e["event_type"] == "nesting_evasion" && e["metadata"]["tool_name"] == "read";
    assert_eq!(await_events(&seen, 1, flagged).await, 1);
}
