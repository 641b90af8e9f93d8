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
    let (p, h) =
        Pipeline::start(store.writer().unwrap(), Redactor::default(), clock, config).unwrap();
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
    assert_eq!(committed[0].event.metadata["password"], "[REDACTED]");
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
