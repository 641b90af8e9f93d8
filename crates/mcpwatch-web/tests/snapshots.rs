//! Snapshots of every page's HTML for a fixed data set: the recorded attack trace of
//! `crates/mcpwatch/tests/fixtures/replay` through the real pipeline, with detection and
//! alerting as a post-commit stage like `serve` wires them, read at a fixed time.
//! `UPDATE_EXPECT=1 cargo test -p mcpwatch-web --test snapshots` rewrites them.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use mcpwatch_alert::Alerting;
use mcpwatch_core::auth::Authenticator;
use mcpwatch_core::clock::{ManualClock, SharedClock};
use mcpwatch_core::config::{AuthConfig, Config};
use mcpwatch_core::time_fmt::parse_rfc3339;
use mcpwatch_core::{Event, EventSink, Redactor, Timestamp};
use mcpwatch_detect::{DetectConfig, Engine, Finding, RuleSet};
use mcpwatch_server::{Pipeline, PipelineConfig, Stage};
use mcpwatch_store::sqlite::SqliteStore;
use mcpwatch_store::{PreparedEvent, RetentionPolicy, Store};
use tower::ServiceExt;

/// Detection feeding alerting, as `serve`'s topology does.
struct DetectAndAlert {
    engine: Engine,
    alerting: Arc<Alerting>,
}

impl Stage for DetectAndAlert {
    fn name(&self) -> &'static str {
        "detect"
    }
    fn on_commit(&mut self, batch: &[PreparedEvent], emit: &mut Vec<Event>) {
        let mut findings: Vec<Finding> = Vec::new();
        for p in batch {
            self.engine.process(&p.event, &mut findings);
        }
        for f in findings {
            self.alerting.on_finding(&f).expect("alert stored");
            emit.push(f.event);
        }
    }
}

struct Fixture {
    app: axum::Router,
    alerting: Arc<Alerting>,
    _dir: tempfile::TempDir,
}

async fn fixture() -> Fixture {
    let dir = tempfile::tempdir().expect("dir");
    let now = parse_rfc3339("2026-11-01T10:30:00Z").expect("time");
    let clock: SharedClock = Arc::new(ManualClock::new(now));
    let store = SqliteStore::open(dir.path(), Default::default()).expect("store");
    let settings = mcpwatch_alert::build(&Config::default(), &|_| None).expect("alert settings");
    let alerting = Alerting::open(dir.path(), settings, clock.clone()).expect("alerts.db");
    let detect = DetectConfig::default().build().expect("detect settings");
    let engine = Engine::new(
        RuleSet::load(&[] as &[std::path::PathBuf], true).expect("default rules"),
        &detect,
    );
    let stage = DetectAndAlert {
        engine,
        alerting: alerting.clone(),
    };
    let config = PipelineConfig {
        max_pending_events: 10_000,
        retention: RetentionPolicy {
            max_age: Duration::from_secs(3650 * 86_400),
            max_size: None,
        },
        retention_interval: Duration::from_secs(3600),
    };
    let (pipeline, _writer) = Pipeline::start(
        store.writer().expect("writer"),
        Redactor::default(),
        clock.clone(),
        config,
        vec![Box::new(stage)],
    )
    .expect("pipeline");
    let trace = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mcpwatch/tests/fixtures/replay/attacks.jsonl");
    let events = mcpwatch_detect::load_events_jsonl(&trace).expect("fixture");
    let n = events.len() as u64;
    pipeline.submit(events).await.expect("committed");
    // Wait for the stage to see the batch, for its derived events to be committed and for the
    // statistics to count them.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let h = pipeline.health();
        let committed = h.committed_events.load(std::sync::atomic::Ordering::SeqCst);
        let pending = h.pending_events.load(std::sync::atomic::Ordering::SeqCst);
        let behind = h
            .statistics_behind
            .load(std::sync::atomic::Ordering::SeqCst);
        if committed > n && pending == 0 && !behind {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "detection did not finish"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let auth = Arc::new(Authenticator::build(&AuthConfig::default(), &|_| None).expect("auth"));
    let rules = RuleSet::load(&[] as &[std::path::PathBuf], true).expect("rules");
    let described: Vec<serde_json::Value> = rules
        .rules()
        .iter()
        .map(|r| {
            serde_json::json!({"name": r.name, "description": r.description, "when": r.when_text,
                                     "severity": r.severity.as_str(), "threshold": r.threshold,
                                     "window_seconds": r.window_us as f64 / 1e6})
        })
        .collect();
    let state = mcpwatch_web::WebState::new(
        store.reader(),
        pipeline,
        alerting.clone(),
        auth,
        clock,
        Arc::new(move || described.clone()),
    );
    Fixture {
        app: mcpwatch_web::router(state),
        alerting,
        _dir: dir,
    }
}

/// The page at `path`, with the per-process and random parts (CSRF token, alert ids) named.
async fn render(f: &Fixture, path: &str) -> String {
    let resp = f
        .app
        .clone()
        .oneshot(Request::get(path).body(Body::empty()).expect("request"))
        .await
        .expect("response");
    assert_eq!(resp.status(), 200, "{path}");
    let bytes = axum::body::to_bytes(resp.into_body(), 1 << 24)
        .await
        .expect("body");
    let mut html = String::from_utf8(bytes.to_vec()).expect("utf-8");
    if let Some(at) = html.find("name=\"csrf\" value=\"") {
        let token: String = html[at + 19..].chars().take_while(|c| *c != '"').collect();
        html = html.replace(&token, "CSRF");
    }
    let all = mcpwatch_alert::store::AlertFilter {
        limit: 1000,
        ..Default::default()
    };
    let (alerts, _) = f.alerting.list(&all).expect("alerts");
    for (i, a) in alerts.iter().enumerate() {
        html = html.replace(&a.alert.id, &format!("ALERT-{i}"));
    }
    html.replace("><", ">\n<")
}

fn first_alert(f: &Fixture) -> String {
    let (alerts, _) = f
        .alerting
        .list(&mcpwatch_alert::store::AlertFilter {
            limit: 1000,
            ..Default::default()
        })
        .expect("alerts");
    let mut ids: Vec<(Timestamp, String, String)> = alerts
        .iter()
        .map(|a| (a.alert.first_seen, a.alert.name.clone(), a.alert.id.clone()))
        .collect();
    ids.sort();
    ids.first()
        .map(|(_, _, id)| id.clone())
        .expect("the trace raises alerts")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_render_the_fixed_trace() {
    let f = fixture().await;
    let alert = first_alert(&f);
    let cases = [
        ("/", "overview.html"),
        ("/alerts", "alerts.html"),
        (
            "/events?since=2026-11-01T10:00:00Z&until=2026-11-01T10:10:00Z",
            "events.html",
        ),
        ("/events/evt-0001", "event.html"),
        ("/tools?range=24h", "tools.html"),
        ("/users", "users.html"),
        ("/users/bob", "user.html"),
        ("/rules", "rules.html"),
        ("/live?category=security", "live.html"),
    ];
    for (path, file) in cases {
        let html = render(&f, path).await;
        expect_test::expect_file![format!("snapshots/{file}")].assert_eq(&html);
    }
    let html = render(&f, &format!("/alerts/{alert}")).await;
    expect_test::expect_file!["snapshots/alert.html"].assert_eq(&html);
}
