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

/// The writer's connection never checkpoints on its own; the checkpoint thread copies the WAL
/// into the database file, and everything committed is there.
#[test]
fn the_checkpoint_thread_moves_committed_pages_into_the_database_file() {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let mut writer = store.writer().unwrap();
    let db = store.path().to_owned();
    let size = |p: &std::path::Path| std::fs::metadata(p).map_or(0, |m| m.len());
    let before = size(&db);
    let pad = "x".repeat(2_000);
    let mut n: i64 = 0;
    for batch in 0..6 {
        let events: Vec<PreparedEvent> = (0..1_000)
            .map(|i| {
                n += 1;
                ev(
                    &format!("ck-{batch}-{i}"),
                    i,
                    "custom",
                    "note",
                    json!({"pad": pad}),
                )
            })
            .collect();
        let refs: Vec<&PreparedEvent> = events.iter().collect();
        assert_eq!(writer.append(&refs, true).unwrap(), 1_000);
    }
    // 12 MB of bodies went through the WAL: the database file must grow by most of that
    // without any further write, which only the checkpoint thread can do.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while size(&db) < before + 6_000_000 {
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {} bytes: no checkpoint ran",
            size(&db)
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut wal = db.as_os_str().to_owned();
    wal.push("-wal");
    assert!(size(std::path::Path::new(&wal)) <= checkpoint::WAL_LIMIT);
    drop(writer);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, n);
}
