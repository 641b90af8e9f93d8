//! Tests of what only the embedded store has: file migrations and size-bounded retention of a
//! file. Everything a backend must do is in the compliance suite (`compliance.rs`).

use std::time::Duration;

use mcpwatch_core::Timestamp;
use serde_json::json;

use super::*;
use crate::compliance::{ev, exec, security, security_counts, Backend, Fixture, T0};
use crate::query::{EventQuery, SeriesQuery};
use crate::{PreparedEvent, RetentionPolicy};

#[test]
fn retention_by_size_deletes_oldest_until_under_the_limit() {
    let mut f = Fixture::new(Backend::Sqlite);
    let pad = "x".repeat(2000);
    for chunk in 0..10 {
        let batch: Vec<PreparedEvent> = (0..200)
            .map(|i| {
                let n = chunk * 200 + i;
                ev(
                    &format!("e{n:05}"),
                    n,
                    "custom",
                    "blob",
                    json!({"pad": pad}),
                )
            })
            .collect();
        f.append(&batch);
    }
    let before = f.store.reader().stats().unwrap();
    assert!(before.used_bytes > 4_000_000, "{before:?}");
    let policy = RetentionPolicy {
        max_age: Duration::from_secs(365 * 86_400),
        max_size: Some(2_000_000),
    };
    let now = Timestamp::from_micros(T0 + 3_000_000_000);
    while f.writer.retain(&policy, now, 100).unwrap().more {}
    let after = f.store.reader().stats().unwrap();
    assert!(after.used_bytes <= 2_000_000, "{after:?}");
    assert!(after.events > 0 && after.events < 2000);
    let newest = f.ids(EventQuery {
        limit: 1,
        ..Default::default()
    });
    assert_eq!(newest, ["e01999"]);
}

#[test]
fn a_version_1_store_is_migrated_with_its_history() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
        let mut w = store.writer().unwrap();
        w.append(&[&exec("a", 1, "t", "u", 0.1, "success")], true)
            .unwrap();
    }
    // Make it look like a store written before version 2.
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch("DROP TABLE rollup_hour; DROP TABLE security_minute; DROP INDEX events_type_ts; PRAGMA user_version = 1;")
        .unwrap();
    drop(conn);
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let since = Timestamp::from_micros(T0 - 3_600_000_000);
    let until = Timestamp::from_micros(T0 + 3_600_000_000);
    let s = store
        .reader()
        .series(&SeriesQuery {
            since,
            until,
            bucket_minutes: 60,
            category: None,
            tool: None,
        })
        .unwrap();
    assert_eq!(s.points.iter().map(|p| p.count).sum::<u64>(), 1);
}

#[test]
fn a_version_2_store_gets_its_security_history_backfilled() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
        let mut w = store.writer().unwrap();
        let (a, b) = (
            security("s1", 1, "authentication", "failure"),
            security("s2", 2, "authorization", "denied"),
        );
        // A minute of data access alone: no `result` at all.
        let c = ev(
            "s3",
            600,
            "security",
            "data_access",
            json!({"user_id": "u", "data_type": "pii", "operation": "read"}),
        );
        w.append(&[&a, &b, &c], true).unwrap();
    }
    let conn = rusqlite::Connection::open(dir.path().join(DB_FILE)).unwrap();
    conn.execute_batch(
        "DROP TABLE security_minute; DROP INDEX events_type_ts; PRAGMA user_version = 2;",
    )
    .unwrap();
    drop(conn);
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let kc = |count, failures| crate::query::KindCount { count, failures };
    assert_eq!(
        security_counts(&store),
        vec![
            ("authentication".to_owned(), kc(1, 1)),
            ("authorization".to_owned(), kc(1, 1)),
            ("data_access".to_owned(), kc(1, 0)),
        ]
    );
}
