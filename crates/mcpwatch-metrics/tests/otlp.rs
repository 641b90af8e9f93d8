//! OTLP export against a receiver on loopback that decodes the protobuf: spans for a
//! successful call, an `isError: true` call and JSON-RPC errors carry the MCP conventions'
//! names and attributes; the metrics arrive with their OTel names; a full queue drops and counts.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use axum::Router;
use mcpwatch_core::{Event, Level, SystemClock, Timestamp};
use mcpwatch_metrics::{DetectorHealth, Metrics, MetricsSettings, OtlpConfig, Sources};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{json, Value};
use tokio::sync::mpsc;

const END_US: i64 = 1_800_000_000_000_000;

fn event(category: &str, event_type: &str, id: &str, metadata: Value) -> Event {
    Event {
        id: id.into(),
        timestamp: Timestamp::from_micros(END_US),
        level: Level::Info,
        category: category.into(),
        source: "wrap:filesystem".into(),
        event_type: event_type.into(),
        message: String::new(),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        tags: vec![],
    }
}

enum Got {
    Traces(ExportTraceServiceRequest),
    Metrics(ExportMetricsServiceRequest),
}

async fn receiver() -> (String, mpsc::UnboundedReceiver<Got>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let app = Router::new()
        .route(
            "/v1/traces",
            post(
                |State(tx): State<mpsc::UnboundedSender<Got>>, body: Bytes| async move {
                    let _ = tx.send(Got::Traces(
                        ExportTraceServiceRequest::decode(body).expect("valid trace protobuf"),
                    ));
                },
            ),
        )
        .route(
            "/v1/metrics",
            post(
                |State(tx): State<mpsc::UnboundedSender<Got>>, body: Bytes| async move {
                    let _ = tx.send(Got::Metrics(
                        ExportMetricsServiceRequest::decode(body).expect("valid metrics protobuf"),
                    ));
                },
            ),
        )
        .with_state(tx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, rx)
}

fn metrics_with_otlp(toml_text: &str) -> Metrics {
    let otlp: OtlpConfig = toml::from_str(toml_text).unwrap();
    let settings = MetricsSettings {
        host_interval: None,
        ..MetricsSettings::default()
    };
    Metrics::build(
        &settings,
        Sources {
            clock: Arc::new(SystemClock),
            reader: None,
            detector: Arc::new(DetectorHealth::default()),
            data_dir: std::env::temp_dir(),
            otlp: Some(otlp.build().expect("valid [otlp]")),
            extra: Vec::new(),
        },
    )
}

fn attr(span: &Span, key: &str) -> Option<String> {
    let v = span
        .attributes
        .iter()
        .find(|a| a.key == key)?
        .value
        .as_ref()?
        .value
        .as_ref()?;
    match v {
        any_value::Value::StringValue(s) => Some(s.clone()),
        other => Some(format!("{other:?}")),
    }
}

#[tokio::test]
async fn spans_and_metrics_reach_an_otlp_receiver() {
    let (url, mut rx) = receiver().await;
    let mut m = metrics_with_otlp(&format!(
        "endpoint = \"{url}\"\ninterval = \"200ms\"\nheaders = {{ x-tenant = \"e2e\" }}\nservice_name = \"mcpwatch-test\"\n"
    ));
    m.endpoint.start_export();
    let tool = |id: &str, outcome: &str, extra: Value| {
        let mut meta = json!({"server": "filesystem", "tool_name": "read_file", "outcome": outcome,
            "success": outcome == "success", "execution_time": 0.25, "execution_id": "x",
            "request_id": "7", "session_id": "s-1", "user_id": "alice"});
        meta.as_object_mut()
            .unwrap()
            .extend(extra.as_object().cloned().unwrap_or_default());
        event("tool_execution", "execution_complete", id, meta)
    };
    m.stage.observe(&tool(
        "0193a5b2-0000-7000-8000-000000000001",
        "success",
        json!({}),
    ));
    // As capture records a call that came with W3C trace context.
    m.stage.observe(&tool(
        "0193a5b2-0000-7000-8000-000000000002",
        "tool_error",
        json!({"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"}),
    ));
    m.stage.observe(&tool(
        "0193a5b2-0000-7000-8000-000000000003",
        "rpc_error",
        json!({"error_code": -32602, "error_message": "Invalid params"}),
    ));
    m.stage.observe(&event(
        "performance",
        "request_performance",
        "0193a5b2-0000-7000-8000-000000000004",
        json!({"server": "filesystem", "method": "resources/read", "outcome": "rpc_error", "success": false,
               "response_time": 0.5, "request_id": "8", "error_code": -32002, "error_message": "Resource not found"}),
    ));
    // tools/call's request_performance is not a second span: its execution_complete is the span.
    m.stage.observe(&event(
        "performance",
        "request_performance",
        "0193a5b2-0000-7000-8000-000000000005",
        json!({"server": "filesystem", "method": "tools/call", "outcome": "success", "success": true, "response_time": 0.25}),
    ));

    let mut spans: Vec<Span> = vec![];
    let mut metric_names: Vec<String> = vec![];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while spans.len() < 4 || metric_names.is_empty() {
        let got = tokio::time::timeout_at(deadline, rx.recv())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "only {} spans and metrics {metric_names:?} arrived",
                    spans.len()
                )
            })
            .expect("receiver open");
        match got {
            Got::Traces(t) => {
                for rs in t.resource_spans {
                    let service = rs.resource.as_ref().map(|r| r.attributes[0].clone());
                    assert_eq!(
                        service.and_then(|a| a.value).and_then(|v| v.value),
                        Some(any_value::Value::StringValue("mcpwatch-test".into()))
                    );
                    spans.extend(rs.scope_spans.into_iter().flat_map(|s| s.spans));
                }
            }
            Got::Metrics(req) => {
                for rm in req.resource_metrics {
                    metric_names.extend(
                        rm.scope_metrics
                            .into_iter()
                            .flat_map(|s| s.metrics)
                            .map(|m| m.name),
                    );
                }
            }
        }
    }
    assert_eq!(spans.len(), 4, "{spans:#?}");
    let by_name = |name: &str, error: Option<&str>| {
        spans
            .iter()
            .find(|s| s.name == name && attr(s, "error.type").as_deref() == error)
            .unwrap_or_else(|| panic!("no span {name} with error.type {error:?} in {spans:#?}"))
    };
    let ok = by_name("tools/call read_file", None);
    assert_eq!(attr(ok, "mcp.method.name").as_deref(), Some("tools/call"));
    assert_eq!(attr(ok, "gen_ai.tool.name").as_deref(), Some("read_file"));
    assert_eq!(
        attr(ok, "gen_ai.operation.name").as_deref(),
        Some("execute_tool")
    );
    assert_eq!(attr(ok, "jsonrpc.request.id").as_deref(), Some("7"));
    assert_eq!(attr(ok, "mcp.session.id").as_deref(), Some("s-1"));
    assert_eq!(attr(ok, "network.transport").as_deref(), Some("pipe"));
    assert_eq!(ok.kind, 2, "SPAN_KIND_SERVER");
    assert_eq!(ok.end_time_unix_nano, END_US as u64 * 1000);
    assert_eq!(ok.end_time_unix_nano - ok.start_time_unix_nano, 250_000_000);
    assert_eq!(
        ok.status.as_ref().map(|s| s.code),
        Some(0),
        "unset status on success"
    );
    assert_eq!(ok.trace_id.len(), 16);
    assert_eq!(ok.span_id.len(), 8);
    assert!(ok.parent_span_id.is_empty(), "no caller trace: a root span");
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let joined = by_name("tools/call read_file", Some("tool_error"));
    assert_eq!(hex(&joined.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
    assert_eq!(hex(&joined.parent_span_id), "00f067aa0ba902b7");
    assert_ne!(
        hex(&joined.span_id),
        "00f067aa0ba902b7",
        "a span of its own"
    );

    let tool_error = by_name("tools/call read_file", Some("tool_error"));
    assert_eq!(
        tool_error.status.as_ref().map(|s| s.code),
        Some(2),
        "ERROR status"
    );

    let rpc = by_name("tools/call read_file", Some("-32602"));
    assert_eq!(
        attr(rpc, "rpc.response.status_code").as_deref(),
        Some("-32602")
    );
    assert_eq!(
        rpc.status.as_ref().map(|s| (s.code, s.message.as_str())),
        Some((2, "Invalid params"))
    );

    let read = by_name("resources/read", Some("-32002"));
    assert_eq!(attr(read, "gen_ai.tool.name"), None);
    assert_eq!(
        read.end_time_unix_nano - read.start_time_unix_nano,
        500_000_000
    );

    for name in [
        "mcp.server.operation.duration",
        "mcpwatch_tool_executions",
        "mcpwatch_requests",
    ] {
        assert!(
            metric_names.iter().any(|n| n == name),
            "{name} not exported: {metric_names:?}"
        );
    }
}

#[tokio::test]
async fn a_full_queue_drops_and_counts_instead_of_waiting() {
    let m = metrics_with_otlp("endpoint = \"http://127.0.0.1:9\"\nmax_queue = 2\n");
    let mut m = m;
    // The exporter is not started: nothing drains the queue.
    for i in 0..5 {
        m.stage.observe(&event(
            "tool_execution",
            "execution_complete",
            &format!("id-{i}"),
            json!({"tool_name": "t", "outcome": "success", "success": true, "execution_time": 0.1}),
        ));
    }
    let text = m.endpoint.encode();
    assert!(
        text.contains("mcpwatch_otlp_dropped_spans_total 3\n"),
        "{text}"
    );
    assert!(
        text.contains("mcpwatch_otlp_queued_spans 2.0\n")
            || text.contains("mcpwatch_otlp_queued_spans 2\n"),
        "{text}"
    );
}

/// A receiver that answers the first `fail` trace requests with `status`, then takes them;
/// returns its URL and the spans it took.
async fn flaky_receiver(fail: usize, status: u16) -> (String, Arc<std::sync::Mutex<Vec<Span>>>) {
    use axum::http::StatusCode;
    let got: Arc<std::sync::Mutex<Vec<Span>>> = Arc::default();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (g, s) = (got.clone(), seen.clone());
    let app = Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| async move {
            if s.fetch_add(1, std::sync::atomic::Ordering::SeqCst) < fail {
                return StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
            }
            let req = ExportTraceServiceRequest::decode(body).expect("valid trace protobuf");
            for rs in req.resource_spans {
                for ss in rs.scope_spans {
                    g.lock().unwrap().extend(ss.spans);
                }
            }
            StatusCode::OK
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, got)
}

fn observe_calls(m: &mut Metrics, n: usize) {
    for i in 0..n {
        m.stage.observe(&event(
            "tool_execution",
            "execution_complete",
            &format!("0193a5b2-0000-7000-8000-{i:012}"),
            json!({"server": "fs", "tool_name": "t", "outcome": "success", "success": true, "execution_time": 0.1}),
        ));
    }
}

/// Waits until `/metrics` shows `line`.
async fn wait_metric(m: &Metrics, line: &str) -> String {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = m.endpoint.encode();
        if text.contains(line) || std::time::Instant::now() > deadline {
            return text;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_failed_span_batch_is_retried_until_the_receiver_takes_it() {
    let (url, got) = flaky_receiver(2, 503).await;
    let mut m = metrics_with_otlp(&format!("endpoint = \"{url}\"\ninterval = \"100ms\"\n"));
    m.endpoint.start_export();
    observe_calls(&mut m, 3);
    let text = wait_metric(&m, "mcpwatch_otlp_exported_spans_total 3\n").await;
    assert!(
        text.contains("mcpwatch_otlp_exported_spans_total 3\n"),
        "{text}"
    );
    assert!(
        text.contains("mcpwatch_otlp_dropped_spans_total 0\n"),
        "{text}"
    );
    assert!(
        text.contains("mcpwatch_otlp_span_export_failures_total 2\n"),
        "{text}"
    );
    assert_eq!(got.lock().unwrap().len(), 3, "each span arrives once");
}

#[tokio::test]
async fn a_refused_span_batch_is_dropped_once_and_counted() {
    let (url, got) = flaky_receiver(1, 400).await;
    let mut m = metrics_with_otlp(&format!("endpoint = \"{url}\"\ninterval = \"100ms\"\n"));
    m.endpoint.start_export();
    observe_calls(&mut m, 2);
    let text = wait_metric(&m, "mcpwatch_otlp_dropped_spans_total 2\n").await;
    assert!(
        text.contains("mcpwatch_otlp_dropped_spans_total 2\n"),
        "{text}"
    );
    // What comes after a refusal is sent as usual.
    observe_calls(&mut m, 1);
    let text = wait_metric(&m, "mcpwatch_otlp_exported_spans_total 1\n").await;
    assert!(
        text.contains("mcpwatch_otlp_exported_spans_total 1\n"),
        "{text}"
    );
    assert_eq!(got.lock().unwrap().len(), 1);
}
