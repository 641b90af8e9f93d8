//! Pipeline tests: commit before acknowledge and publish, redaction, backpressure.

use std::sync::Arc;
use std::time::Duration;

use mcpwatch_core::config::Durability;
use mcpwatch_core::{Event, Level, ManualClock, Timestamp};
use mcpwatch_store::sqlite::SqliteStore;
use mcpwatch_store::{EventQuery, Store};
use serde_json::json;

use super::*;

fn event(id: &str, metadata: serde_json::Value) -> Event {
    Event {
        id: id.into(),
        timestamp: Timestamp::from_micros(1_790_000_000_000_000),
        level: Level::Info,
        category: "custom".into(),
        source: "test".into(),
        event_type: "x".into(),
        message: String::new(),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        tags: vec![],
    }
}

fn start(dir: &std::path::Path, max_pending: usize) -> (Pipeline, WriterHandle, SqliteStore) {
    start_with(dir, max_pending, vec![])
}

fn start_with(
    dir: &std::path::Path,
    max_pending: usize,
    stages: Vec<Box<dyn Stage>>,
) -> (Pipeline, WriterHandle, SqliteStore) {
    let store = SqliteStore::open(dir, Durability::Normal).unwrap();
    let config = PipelineConfig {
        max_pending_events: max_pending,
        retention: RetentionPolicy {
            max_age: Duration::from_secs(365 * 86_400 * 100),
            max_size: None,
        },
        retention_interval: Duration::from_secs(3600),
    };
    let clock = Arc::new(ManualClock::new(Timestamp::from_micros(
        1_790_000_000_000_000,
    )));
    let (p, h) = Pipeline::start(
        store.writer().unwrap(),
        Redactor::default(),
        clock,
        config,
        stages,
    )
    .unwrap();
    (p, h, store)
}

#[tokio::test]
async fn acknowledged_events_are_stored_redacted_and_published_after_commit() {
    let dir = tempfile::tempdir().unwrap();
    let (p, h, store) = start(dir.path(), 1000);
    let mut sub = p.subscribe();
    let ids = p
        .submit_events(vec![
            event("a", json!({"password": "hunter2"})),
            event("b", json!({})),
        ])
        .await
        .unwrap();
    assert_eq!(ids, ["a", "b"]);
    // Acknowledged means readable now.
    let page = store
        .reader()
        .events(&EventQuery {
            limit: 10,
            ..Default::default()
        })
        .unwrap();
    assert_eq!(page.events.len(), 2);
    let committed = sub.recv().await.unwrap();
    assert_eq!(committed.len(), 2);
    assert_eq!(
        committed[0].event.metadata["password"],
        "[REDACTED:password]"
    );
    drop(p);
    h.join();
    let raw = std::fs::read(dir.path().join("events.db")).unwrap();
    let wal = std::fs::read(dir.path().join("events.db-wal")).unwrap_or_default();
    for bytes in [raw, wal] {
        assert!(!bytes.windows(7).any(|w| w == b"hunter2"));
    }
}

#[tokio::test]
async fn a_full_pipeline_answers_overloaded_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _h, _store) = start(dir.path(), 10);
    // Hold the pending count up as if ten events were in flight.
    p.health().pending_events.fetch_add(10, Ordering::SeqCst);
    let err = p
        .submit_events(vec![event("x", json!({}))])
        .await
        .unwrap_err();
    assert_eq!(
        err,
        SinkError::Overloaded {
            retry_after_secs: 1
        }
    );
    assert_eq!(p.health().overloaded_batches.load(Ordering::SeqCst), 1);
    p.health().pending_events.fetch_sub(10, Ordering::SeqCst);
    assert!(p.submit_events(vec![event("y", json!({}))]).await.is_ok());
}

#[tokio::test]
async fn concurrent_submitters_are_grouped_and_all_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let (p, _h, store) = start(dir.path(), 100_000);
    let mut tasks = Vec::new();
    for t in 0..20 {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let batch: Vec<Event> = (0..100)
                .map(|i| event(&format!("{t}-{i}"), json!({})))
                .collect();
            p.submit_events(batch).await.unwrap().len()
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 2000);
    assert_eq!(store.reader().stats().unwrap().events, 2000);
    assert_eq!(p.health().pending_events.load(Ordering::SeqCst), 0);
}

/// Records what it sees and emits one event per batch.
struct Echo {
    seen: Arc<std::sync::Mutex<Vec<String>>>,
}

impl Stage for Echo {
    fn name(&self) -> &'static str {
        "echo"
    }

    fn on_commit(&mut self, batch: &[PreparedEvent], emit: &mut Vec<Event>) {
        let mut seen = self.seen.lock().unwrap();
        for p in batch {
            seen.push(p.event.id.clone());
            if p.event.source != "echo" {
                let mut e = event(
                    &format!("derived-{}", p.event.id),
                    json!({"secret": "s3cr3t"}),
                );
                e.source = "echo".into();
                emit.push(e);
            }
        }
    }
}

#[tokio::test]
async fn stages_see_every_batch_in_order_and_their_events_are_stored_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (p, h, store) = start_with(
        dir.path(),
        1000,
        vec![Box::new(Echo { seen: seen.clone() })],
    );
    for i in 0..5 {
        p.submit_events(vec![event(&format!("e{i}"), json!({}))])
            .await
            .unwrap();
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.reader().stats().unwrap().events < 10 && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let derived = store
        .reader()
        .event("derived-e3")
        .unwrap()
        .expect("the stage's event is stored");
    assert!(derived.get().contains("[REDACTED:") && !derived.get().contains("s3cr3t"));
    let originals: Vec<String> = seen
        .lock()
        .unwrap()
        .iter()
        .filter(|id| id.starts_with('e'))
        .cloned()
        .collect();
    assert_eq!(originals, ["e0", "e1", "e2", "e3", "e4"]);
    drop(p);
    h.join();
    // Everything was seen by the stage, including its own events, and nothing is pending.
    assert_eq!(seen.lock().unwrap().len(), 10);
}

/// Records the ids it sees, emits nothing.
struct Seen(Arc<std::sync::Mutex<Vec<String>>>);

impl Stage for Seen {
    fn name(&self) -> &'static str {
        "seen"
    }
    fn on_commit(&mut self, batch: &[PreparedEvent], _emit: &mut Vec<Event>) {
        let mut seen = self.0.lock().unwrap();
        seen.extend(batch.iter().map(|p| p.event.id.clone()));
    }
}

#[tokio::test]
async fn resent_events_are_acknowledged_but_processed_once() {
    let dir = tempfile::tempdir().unwrap();
    let seen: Arc<std::sync::Mutex<Vec<String>>> = Arc::default();
    let (p, h, store) = start_with(dir.path(), 1000, vec![Box::new(Seen(seen.clone()))]);
    let mut sub = p.subscribe();
    let batch = || vec![event("r1", json!({})), event("r2", json!({}))];
    for _ in 0..6 {
        let ids = p.submit_events(batch()).await.unwrap();
        assert_eq!(ids, ["r1", "r2"], "every resend is acknowledged");
    }
    // A batch mixing a resent event with a new one, and the same id twice in one batch.
    p.submit_events(vec![
        event("r1", json!({})),
        event("r3", json!({})),
        event("r3", json!({})),
    ])
    .await
    .unwrap();
    let health = p.health().clone();
    drop(p);
    h.join();
    assert_eq!(seen.lock().unwrap().as_slice(), ["r1", "r2", "r3"]);
    assert_eq!(health.duplicate_events.load(Ordering::SeqCst), 12);
    assert_eq!(health.committed_events.load(Ordering::SeqCst), 3);
    assert_eq!(
        health.pending_events.load(Ordering::SeqCst),
        0,
        "nothing stays counted"
    );
    let mut published = Vec::new();
    while let Ok(b) = sub.try_recv() {
        published.extend(b.iter().map(|e| e.event.id.clone()));
    }
    assert_eq!(
        published,
        ["r1", "r2", "r3"],
        "subscribers see each event once"
    );
    assert_eq!(store.reader().stats().unwrap().events, 3);
}

#[tokio::test]
async fn retention_runs_in_the_background_between_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let now = Timestamp::from_micros(1_790_000_000_000_000);
    let clock = Arc::new(ManualClock::new(now));
    let config = PipelineConfig {
        max_pending_events: 100_000,
        retention: RetentionPolicy {
            max_age: Duration::from_secs(3600),
            max_size: None,
        },
        retention_interval: Duration::from_millis(50),
    };
    let (p, _h) = Pipeline::start(
        store.writer().unwrap(),
        Redactor::default(),
        clock.clone(),
        config,
        vec![],
    )
    .unwrap();
    let aged = |id: &str, secs_ago: u64| {
        let mut e = event(id, json!({}));
        e.timestamp = now.saturating_sub(Duration::from_secs(secs_ago));
        e
    };
    p.submit_events(vec![aged("old", 7200), aged("new", 60)])
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while store.reader().event("old").unwrap().is_some() && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        store.reader().event("old").unwrap().is_none(),
        "an event past max_age is deleted"
    );
    assert!(store.reader().event("new").unwrap().is_some());
    assert_eq!(p.health().retention_deleted.load(Ordering::SeqCst), 1);
    // Ingest still works while retention keeps running.
    assert!(p.submit_events(vec![aged("later", 1)]).await.is_ok());
}

/// Batches that follow each other closely are not settled one by one; the writer settles the
/// statistics on its own shortly after the last of them, with nothing else arriving.
#[tokio::test]
async fn statistics_settle_shortly_after_the_last_of_quick_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (p, h, store) = start(dir.path(), 10_000);
    for i in 0..5 {
        p.submit_events(vec![event(&format!("q{i}"), json!({}))])
            .await
            .unwrap();
    }
    let now = Timestamp::from_micros(1_790_000_000_000_000);
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let s = store.reader().summary(now).unwrap();
        if s.last_hour_by_category.get("custom") == Some(&5) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "statistics never caught up with the log: {:?}",
            s.last_hour_by_category
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(p);
    h.join();
}
