//! API tests through the real router and a real SQLite store: validation, bad bodies, auth,
//! queries.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use mcpwatch_core::config::{AuthConfig, Durability, Role, TokenConfig};
use mcpwatch_core::{ManualClock, Redactor, Timestamp};
use mcpwatch_store::sqlite::SqliteStore;
use mcpwatch_store::{RetentionPolicy, Store};
use serde_json::{json, Value};
use tower::ServiceExt;

use super::*;
use crate::pipeline::PipelineConfig;

const NOW: i64 = 1_790_000_000_000_000;

struct Api {
    router: Router,
    pipeline: Pipeline,
    _dir: tempfile::TempDir,
}

fn api_with(tokens: Vec<TokenConfig>, max_body: usize) -> Api {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(NOW)));
    let config = PipelineConfig {
        max_pending_events: 100_000,
        retention: RetentionPolicy {
            max_age: Duration::from_secs(86_400 * 365),
            max_size: None,
        },
        retention_interval: Duration::from_secs(3600),
    };
    let (pipeline, _writer) = Pipeline::start(
        store.writer().unwrap(),
        Redactor::default(),
        clock.clone(),
        config,
        vec![],
    )
    .unwrap();
    let auth = Authenticator::build(&AuthConfig { tokens }, &|_| None).unwrap();
    let state = AppState {
        ingest_to: None,
        pipeline: pipeline.clone(),
        reader: store.reader(),
        auth: Arc::new(auth),
        clock,
        limits: IngestLimits {
            max_body_bytes: max_body,
            max_batch_events: 1000,
            max_clock_skew: Duration::from_secs(300),
        },
        ids: Arc::new(IdGenerator::new()),
    };
    Api {
        router: router(state),
        pipeline,
        _dir: dir,
    }
}

fn api() -> Api {
    api_with(vec![], 64 * 1024)
}

struct Reply {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: Value,
}

impl Api {
    async fn send(&self, req: Request<Body>) -> Reply {
        let resp = self.router.clone().oneshot(req).await.unwrap();
        let status = resp.status();
        let headers = resp.headers().clone();
        let bytes = axum::body::to_bytes(resp.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
        }
    }

    async fn post(&self, content_type: &str, body: impl Into<Body>) -> Reply {
        let req = Request::post("/api/v1/events")
            .header("content-type", content_type)
            .body(body.into())
            .unwrap();
        self.send(req).await
    }

    async fn get(&self, uri: &str) -> Reply {
        self.send(Request::get(uri).body(Body::empty()).unwrap())
            .await
    }

    /// The one place the tests post a JSON body and check status and error code.
    async fn check(&self, body: Value, status: StatusCode, code: Option<&str>) -> Reply {
        let r = self.post("application/json", body.to_string()).await;
        assert_eq!(r.status, status, "{}", r.body);
        assert_eq!(r.body["error"]["code"].as_str(), code, "{}", r.body);
        r
    }
}

fn auth_failure(user: &str) -> Value {
    json!({"category": "security", "event_type": "authentication", "source": "app",
           "metadata": {"user_id": user, "result": "failure", "ip_address": "10.0.0.1"}})
}

#[tokio::test]
async fn accepted_only_after_commit_and_readable_at_once() {
    let api = api();
    let r = api
        .check(
            json!([auth_failure("alice"), auth_failure("bob")]),
            StatusCode::ACCEPTED,
            None,
        )
        .await;
    assert_eq!(r.body["accepted"], 2);
    let ids: Vec<String> = r.body["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    let r = api.get(&format!("/api/v1/events/{}", ids[0])).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["metadata"]["user_id"], "alice");
    let r = api.get("/api/v1/events?user=bob").await;
    assert_eq!(r.body["events"].as_array().unwrap().len(), 1);
    assert_eq!(r.body["next_cursor"], Value::Null);
}

#[tokio::test]
async fn invalid_events_reject_the_whole_batch_with_every_problem() {
    let api = api();
    let bad = json!({"category": "security", "event_type": "authorization", "metadata": {"user_id": "a", "resource": 5}});
    let r = api
        .check(
            json!([auth_failure("alice"), bad]),
            StatusCode::BAD_REQUEST,
            Some("invalid_events"),
        )
        .await;
    let details = r.body["error"]["details"].as_array().unwrap();
    let fields: Vec<(u64, &str)> = details
        .iter()
        .map(|d| (d["index"].as_u64().unwrap(), d["field"].as_str().unwrap()))
        .collect();
    assert_eq!(
        fields,
        [
            (1, "metadata.resource"),
            (1, "metadata.action"),
            (1, "metadata.result")
        ]
    );
    let r = api.get("/api/v1/events").await;
    assert_eq!(
        r.body["events"].as_array().unwrap().len(),
        0,
        "nothing of a rejected batch is stored"
    );
}

#[tokio::test]
async fn bad_bodies_get_clear_errors() {
    let api = api();
    let r = api.post("application/json", "{not json").await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("invalid_body"))
    );
    let r = api
        .post("application/json", &b"{\"category\":\"\xff\"}"[..])
        .await;
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("UTF-8"));
    let deep = "[".repeat(500) + &"]".repeat(500);
    let r = api.post("application/json", deep).await;
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nesting"));
    let r = api.post("application/json", "[]").await;
    assert!(r.body["error"]["message"]
        .as_str()
        .unwrap()
        .contains("empty"));
    let r = api.post("text/plain", "{}").await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = api
        .send(
            Request::post("/api/v1/events")
                .body(Body::from("{}"))
                .unwrap(),
        )
        .await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let big = format!("[{}]", vec![auth_failure("x").to_string(); 1000].join(","));
    assert!(big.len() > 64 * 1024);
    let r = api.post("application/json", big).await;
    assert_eq!(
        (r.status, r.body["error"]["code"].as_str()),
        (StatusCode::PAYLOAD_TOO_LARGE, Some("body_too_large"))
    );
    // A chunked body with no Content-Length is cut off at the limit as well.
    let chunks: Vec<Result<String, std::io::Error>> =
        (0..100).map(|_| Ok("x".repeat(1024))).collect();
    let r = api
        .post(
            "application/json",
            Body::from_stream(futures_util::stream::iter(chunks)),
        )
        .await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
}

#[tokio::test]
async fn ndjson_bodies_are_accepted() {
    let api = api();
    let body = format!("{}\n{}\n", auth_failure("a"), auth_failure("b"));
    let r = api.post("application/x-ndjson", body).await;
    assert_eq!(r.status, StatusCode::ACCEPTED);
    assert_eq!(r.body["accepted"], 2);
}

#[tokio::test]
async fn tokens_and_roles_are_enforced() {
    let tok = |name: &str, token: &str, roles: &[Role], rate: Option<f64>| TokenConfig {
        name: name.into(),
        token: Some(token.into()),
        token_sha256: None,
        roles: roles.to_vec(),
        rate_limit: rate,
    };
    let api = api_with(
        vec![
            tok("ingester", "in-secret", &[Role::Ingest], Some(3.0)),
            tok("reader", "read-secret", &[Role::Read], None),
        ],
        64 * 1024,
    );
    let post = |token: Option<&str>| {
        let mut b = Request::post("/api/v1/events").header("content-type", "application/json");
        if let Some(t) = token {
            b = b.header("authorization", format!("Bearer {t}"));
        }
        b.body(Body::from(auth_failure("a").to_string())).unwrap()
    };
    let r = api.send(post(None)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.headers["www-authenticate"], "Bearer realm=\"mcpwatch\"");
    assert_eq!(
        api.send(post(Some("wrong"))).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        api.send(post(Some("read-secret"))).await.status,
        StatusCode::FORBIDDEN
    );
    let ok = api.send(post(Some("in-secret"))).await;
    assert_eq!(ok.status, StatusCode::ACCEPTED);
    let get = |t: &str| {
        Request::get("/api/v1/events")
            .header("authorization", format!("Bearer {t}"))
            .body(Body::empty())
            .unwrap()
    };
    assert_eq!(
        api.send(get("in-secret")).await.status,
        StatusCode::FORBIDDEN
    );
    let r = api.send(get("read-secret")).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.body["events"][0]["source"], "app");
    // The ingester's rate is 3/s with a burst of 3: the fourth request in a row is limited.
    api.send(post(Some("in-secret"))).await;
    api.send(post(Some("in-secret"))).await;
    let r = api.send(post(Some("in-secret"))).await;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(r.headers["retry-after"], "1");
}

#[tokio::test]
async fn query_parameters_are_checked() {
    let api = api();
    for (uri, needle) in [
        ("/api/v1/events?limit=0", "limit"),
        ("/api/v1/events?since=yesterday", "since"),
        ("/api/v1/events?level=loud", "level"),
        ("/api/v1/events?cursor=zz", "cursor"),
        ("/api/v1/events?colour=red", "colour"),
        ("/api/v1/series?bucket=10s", "bucket"),
    ] {
        let r = api.get(uri).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{uri}");
        assert!(
            r.body["error"]["message"]
                .as_str()
                .unwrap()
                .contains(needle),
            "{uri}: {}",
            r.body
        );
    }
    assert_eq!(
        api.get("/api/v2/nothing").await.status,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn tools_users_series_and_summary() {
    let api = api();
    let exec = |i: u32, outcome: &str| {
        json!({"category": "tool_execution", "event_type": "execution_complete", "timestamp": 1_789_999_990.0 - i as f64,
               "metadata": {"execution_id": format!("e{i}"), "tool_name": "read_file", "server": "fs", "user_id": "alice",
                            "execution_time": 0.01 * i as f64, "success": outcome == "success", "outcome": outcome,
                            "parameters": {"path": "/tmp/x"}}})
    };
    let batch: Vec<Value> = (1..=20)
        .map(|i| exec(i, if i % 5 == 0 { "tool_error" } else { "success" }))
        .collect();
    api.check(Value::Array(batch), StatusCode::ACCEPTED, None)
        .await;
    let r = api.get("/api/v1/tools").await;
    let t = &r.body["tools"][0];
    assert_eq!(
        (
            t["tool"].as_str(),
            t["count"].as_u64(),
            t["successes"].as_u64()
        ),
        (Some("read_file"), Some(20), Some(16))
    );
    assert_eq!(t["failures"]["tool_error"], 4);
    let r = api.get("/api/v1/users").await;
    assert_eq!(
        r.body["users"][0]["tools"][0]["parameter_patterns"]["path"],
        20
    );
    let r = api.get("/api/v1/series?since=1h&bucket=5m").await;
    assert_eq!(r.body["bucket_seconds"], 300);
    let total: u64 = r.body["points"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["count"].as_u64().unwrap())
        .sum();
    assert_eq!(total, 20);
    let r = api.get("/api/v1/summary").await;
    assert_eq!(r.body["total_events"], 20);
    assert_eq!(r.body["tool_executions_last_hour"], 20);
    assert_eq!(r.body["tool_failures_last_hour"], 4);
    assert_eq!(api.get("/healthz").await.status, StatusCode::OK);
    assert_eq!(api.get("/readyz").await.body["status"], "ready");
}

#[tokio::test]
async fn a_full_pipeline_answers_503_with_retry_after_and_stores_nothing() {
    let api = api();
    let pending = &api.pipeline.health().pending_events;
    pending.fetch_add(100_000, std::sync::atomic::Ordering::SeqCst);
    let r = api
        .post("application/json", auth_failure("a").to_string())
        .await;
    assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(r.headers["retry-after"], "1");
    assert_eq!(r.body["error"]["code"], "overloaded");
    pending.fetch_sub(100_000, std::sync::atomic::Ordering::SeqCst);
    assert_eq!(
        api.get("/api/v1/events").await.body["events"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    assert_eq!(
        api.post("application/json", auth_failure("a").to_string())
            .await
            .status,
        StatusCode::ACCEPTED
    );
}

mod bounds;
