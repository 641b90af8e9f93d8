//! Store tests against a real SQLite file: appends, filters, pagination, statistics against
//! known data, idempotent retries and retention.

use std::time::Duration;

use mcpwatch_core::{Event, Level, Timestamp};
use serde_json::{json, Value};

use super::*;
use crate::query::{Cursor, EventQuery, SeriesQuery, StatsQuery};
use crate::{PreparedEvent, RetentionPolicy};

const T0: i64 = 1_790_000_000_000_000;

fn ev(id: &str, at_secs: i64, category: &str, event_type: &str, metadata: Value) -> PreparedEvent {
    PreparedEvent::new(Event {
        id: id.into(),
        timestamp: Timestamp::from_micros(T0 + at_secs * 1_000_000),
        level: Level::Info,
        category: category.into(),
        source: "test".into(),
        event_type: event_type.into(),
        message: format!("event {id}"),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        tags: vec![],
    })
}

fn exec(id: &str, at_secs: i64, tool: &str, user: &str, secs: f64, outcome: &str) -> PreparedEvent {
    ev(
        id,
        at_secs,
        "tool_execution",
        "execution_complete",
        json!({"execution_id": id, "tool_name": tool, "server": "fs", "user_id": user, "execution_time": secs,
               "success": outcome == "success", "outcome": outcome, "parameters": {"path": "/a", "encoding": "utf8"}}),
    )
}

struct Fixture {
    _dir: tempfile::TempDir,
    store: SqliteStore,
    writer: Box<dyn EventWriter>,
}

fn fixture() -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(dir.path(), Durability::Normal).unwrap();
    let writer = store.writer().unwrap();
    Fixture {
        _dir: dir,
        store,
        writer,
    }
}

impl Fixture {
    fn append(&mut self, events: &[PreparedEvent]) -> usize {
        let refs: Vec<&PreparedEvent> = events.iter().collect();
        self.writer.append(&refs, true).unwrap()
    }

    fn ids(&self, q: EventQuery) -> Vec<String> {
        let limit = if q.limit == 0 { 100 } else { q.limit };
        let page = self
            .store
            .reader()
            .events(&EventQuery { limit, ..q })
            .unwrap();
        page.events
            .iter()
            .map(|r| {
                serde_json::from_str::<Value>(r.get()).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect()
    }
}

#[test]
fn filters_select_the_right_events_newest_first() {
    let mut f = fixture();
    f.append(&[
        exec("a", 1, "read_file", "alice", 0.01, "success"),
        exec("b", 2, "write_file", "bob", 0.02, "tool_error"),
        ev(
            "c",
            3,
            "security",
            "authentication",
            json!({"user_id": "alice", "result": "failure"}),
        ),
        exec("d", 4, "read_file", "bob", 0.03, "success"),
    ]);
    let check = |q: EventQuery, want: &[&str]| assert_eq!(f.ids(q), want);
    check(EventQuery::default(), &["d", "c", "b", "a"]);
    check(
        EventQuery {
            tool: Some("read_file".into()),
            ..Default::default()
        },
        &["d", "a"],
    );
    check(
        EventQuery {
            user: Some("alice".into()),
            ..Default::default()
        },
        &["c", "a"],
    );
    check(
        EventQuery {
            outcome: Some("tool_error".into()),
            ..Default::default()
        },
        &["b"],
    );
    check(
        EventQuery {
            category: Some("security".into()),
            ..Default::default()
        },
        &["c"],
    );
    check(
        EventQuery {
            event_type: Some("authentication".into()),
            ..Default::default()
        },
        &["c"],
    );
    check(
        EventQuery {
            server: Some("fs".into()),
            ..Default::default()
        },
        &["d", "b", "a"],
    );
    let at = |s: i64| Some(Timestamp::from_micros(T0 + s * 1_000_000));
    check(
        EventQuery {
            since: at(2),
            until: at(4),
            ..Default::default()
        },
        &["c", "b"],
    );
    check(
        EventQuery {
            text: Some("EVENT B".into()),
            ..Default::default()
        },
        &["b"],
    );
    check(
        EventQuery {
            text: Some("%".into()),
            ..Default::default()
        },
        &[],
    );
    check(
        EventQuery {
            level: Some(Level::Error),
            ..Default::default()
        },
        &[],
    );
}

#[test]
fn duplicate_ids_are_stored_once_and_counted_once() {
    let mut f = fixture();
    assert_eq!(f.append(&[exec("a", 1, "t", "u", 0.1, "success")]), 1);
    assert_eq!(
        f.append(&[
            exec("a", 1, "t", "u", 0.1, "success"),
            exec("b", 2, "t", "u", 0.1, "success")
        ]),
        1
    );
    let r = f.store.reader();
    assert_eq!(r.stats().unwrap().events, 2);
    assert_eq!(r.tool_stats(&StatsQuery::default()).unwrap()[0].count, 2);
    assert!(r.event("a").unwrap().is_some());
    assert!(r.event("zzz").unwrap().is_none());
}

#[test]
fn pages_have_no_duplicates_or_gaps_while_new_events_arrive() {
    let mut f = fixture();
    let first: Vec<PreparedEvent> = (0..250)
        .map(|i| exec(&format!("e{i:04}"), i / 3, "t", "u", 0.01, "success"))
        .collect();
    f.append(&first);
    let reader = f.store.reader();
    let mut seen = Vec::new();
    let mut cursor = None;
    let mut n = 0;
    loop {
        let page = reader
            .events(&EventQuery {
                cursor,
                limit: 40,
                ..Default::default()
            })
            .unwrap();
        for r in &page.events {
            seen.push(
                serde_json::from_str::<Value>(r.get()).unwrap()["id"]
                    .as_str()
                    .unwrap()
                    .to_owned(),
            );
        }
        // New, newer events land between page reads.
        f.append(&[exec(
            &format!("new{n}"),
            1000 + n,
            "t",
            "u",
            0.01,
            "success",
        )]);
        n += 1;
        match page.next_cursor {
            Some(c) => cursor = Some(Cursor::decode(&c).unwrap()),
            None => break,
        }
    }
    let mut want: Vec<String> = (0..250).map(|i| format!("e{i:04}")).collect();
    want.sort_by_key(|id| std::cmp::Reverse(id.clone()));
    assert_eq!(seen, want);
    assert!(Cursor::decode("garbage").is_err());
}

#[test]
fn tool_stats_against_known_latencies() {
    let mut f = fixture();
    let mut batch = Vec::new();
    for i in 1..=1000 {
        let outcome = match i % 10 {
            0 => "tool_error",
            5 => "rpc_error",
            _ => "success",
        };
        batch.push(exec(
            &format!("r{i}"),
            i % 3600,
            "read_file",
            "alice",
            i as f64 / 1000.0,
            outcome,
        ));
    }
    batch.push(exec("w1", 10, "write_file", "bob", 2.0, "timeout"));
    f.append(&batch[..500]);
    f.append(&batch[500..]);
    let stats = f.store.reader().tool_stats(&StatsQuery::default()).unwrap();
    assert_eq!(stats.len(), 2);
    let s = &stats[0];
    assert_eq!(
        (s.tool.as_str(), s.count, s.successes),
        ("read_file", 1000, 800)
    );
    assert_eq!(s.failures.get("tool_error"), Some(&100));
    assert_eq!(s.failures.get("rpc_error"), Some(&100));
    assert!((s.success_rate - 0.8).abs() < 1e-9);
    assert!((s.latency.avg - 0.5005).abs() < 1e-9);
    assert_eq!((s.latency.min, s.latency.max), (0.001, 1.0));
    for (got, want) in [
        (s.latency.p50, 0.5),
        (s.latency.p95, 0.95),
        (s.latency.p99, 0.99),
    ] {
        assert!((got - want).abs() / want < 0.02, "{got} vs {want}");
    }
    assert_eq!(stats[1].failures.get("timeout"), Some(&1));
    let only = f
        .store
        .reader()
        .tool_stats(&StatsQuery {
            tool: Some("write_file".into()),
            ..Default::default()
        })
        .unwrap();
    assert_eq!(only.len(), 1);
}

#[test]
fn users_show_tools_counts_and_parameter_patterns() {
    let mut f = fixture();
    let mut other = exec("x", 5, "search", "alice", 0.1, "success");
    other
        .event
        .metadata
        .insert("parameters".into(), json!({"query": "q"}));
    let other = PreparedEvent::new(other.event);
    f.append(&[
        exec("a", 1, "read_file", "alice", 0.1, "success"),
        exec("b", 2, "read_file", "alice", 0.1, "success"),
        other,
    ]);
    let users = f.store.reader().users(&StatsQuery::default()).unwrap();
    assert_eq!(users.len(), 1);
    let u = &users[0];
    assert_eq!((u.user.as_str(), u.count), ("alice", 3));
    assert_eq!(u.tools[0].tool, "read_file");
    assert_eq!(u.tools[0].parameter_patterns.get("encoding,path"), Some(&2));
    assert_eq!(u.tools[1].parameter_patterns.get("query"), Some(&1));
}

#[test]
fn series_buckets_counts_and_errors() {
    let mut f = fixture();
    f.append(&[
        exec("a", 0, "t", "u", 0.1, "success"),
        exec("b", 30, "t", "u", 0.3, "tool_error"),
        exec("c", 130, "t", "u", 0.2, "success"),
    ]);
    let q = SeriesQuery {
        since: Timestamp::from_micros(T0),
        until: Timestamp::from_micros(T0 + 180_000_000),
        bucket_minutes: 1,
        category: None,
        tool: None,
    };
    let s = f.store.reader().series(&q).unwrap();
    let counts: Vec<(u64, u64)> = s.points.iter().map(|p| (p.count, p.errors)).collect();
    // T0 is not minute-aligned, so the buckets start at the minute containing it.
    assert_eq!(counts.iter().map(|c| c.0).sum::<u64>(), 3);
    assert_eq!(counts.iter().map(|c| c.1).sum::<u64>(), 1);
    assert_eq!(s.bucket_seconds, 60);
}

#[test]
fn retention_by_age_deletes_in_steps_and_keeps_the_counts_true() {
    let mut f = fixture();
    let batch: Vec<PreparedEvent> = (0..100)
        .map(|i| exec(&format!("e{i}"), i * 60, "t", "u", 0.1, "success"))
        .collect();
    f.append(&batch);
    let policy = RetentionPolicy {
        max_age: Duration::from_secs(50 * 60),
        max_size: None,
    };
    let now = Timestamp::from_micros(T0 + 100 * 60_000_000);
    let mut total = 0;
    loop {
        let step = f.writer.retain(&policy, now, 20).unwrap();
        total += step.deleted;
        if !step.more {
            break;
        }
    }
    assert_eq!(total, 50);
    let r = f.store.reader();
    assert_eq!(r.stats().unwrap().events, 50);
    let ids = f.ids(EventQuery {
        limit: 100,
        ..Default::default()
    });
    assert_eq!(ids.len(), 50);
    assert!(!ids.contains(&"e49".to_string()) && ids.contains(&"e50".to_string()));
}

#[test]
fn retention_by_size_deletes_oldest_until_under_the_limit() {
    let mut f = fixture();
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
fn reopening_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
        let mut w = store.writer().unwrap();
        w.append(&[&exec("a", 1, "t", "u", 0.1, "success")], true)
            .unwrap();
    }
    let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
    assert_eq!(store.reader().stats().unwrap().events, 1);
}

#[test]
fn deferred_statistics_settle_on_request() {
    let mut f = fixture();
    let batch: Vec<PreparedEvent> = (0..10)
        .map(|i| exec(&format!("e{i}"), i, "t", "u", 0.1, "success"))
        .collect();
    let refs: Vec<&PreparedEvent> = batch.iter().collect();
    f.writer.append(&refs, false).unwrap();
    // The events are committed at once; their statistics may trail until settled.
    assert_eq!(f.ids(EventQuery::default()).len(), 10);
    f.writer.settle().unwrap();
    let stats = f.store.reader().tool_stats(&StatsQuery::default()).unwrap();
    assert_eq!(stats[0].count, 10);
}

#[test]
fn a_crash_before_statistics_settle_loses_nothing_after_restart() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
        let mut w = store.writer().unwrap();
        let settled: Vec<PreparedEvent> = (0..5)
            .map(|i| exec(&format!("s{i}"), i, "t", "alice", 0.1, "success"))
            .collect();
        w.append(&settled.iter().collect::<Vec<_>>(), true).unwrap();
        let unsettled: Vec<PreparedEvent> = (0..7)
            .map(|i| exec(&format!("u{i}"), 100 + i, "t", "bob", 0.2, "tool_error"))
            .collect();
        w.append(&unsettled.iter().collect::<Vec<_>>(), false)
            .unwrap();
        // Dropped without settling: as if the process died here.
        std::mem::forget(w);
    }
    let store = SqliteStore::open(dir.path(), Durability::Full).unwrap();
    let _writer = store.writer().unwrap();
    let stats = store.reader().tool_stats(&StatsQuery::default()).unwrap();
    assert_eq!((stats[0].count, stats[0].successes), (12, 5));
    assert_eq!(stats[0].failures.get("tool_error"), Some(&7));
    let users = store.reader().users(&StatsQuery::default()).unwrap();
    assert_eq!(users.iter().map(|u| u.count).sum::<u64>(), 12);
    // Recovering twice does not count twice.
    drop(_writer);
    let _again = store.writer().unwrap();
    assert_eq!(
        store.reader().tool_stats(&StatsQuery::default()).unwrap()[0].count,
        12
    );
}

#[test]
fn hourly_series_agree_with_the_minute_rollup() {
    let mut f = fixture();
    let batch: Vec<PreparedEvent> = (0..500)
        .map(|i| {
            exec(
                &format!("e{i}"),
                i * 37,
                if i % 2 == 0 { "a" } else { "b" },
                "u",
                0.01 * (i % 7) as f64,
                if i % 9 == 0 { "tool_error" } else { "success" },
            )
        })
        .collect();
    f.append(&batch);
    let r = f.store.reader();
    let since = Timestamp::from_micros(T0 - 3_600_000_000);
    let until = Timestamp::from_micros(T0 + 500 * 37 * 1_000_000);
    let hourly = r
        .series(&SeriesQuery {
            since,
            until,
            bucket_minutes: 60,
            category: None,
            tool: None,
        })
        .unwrap();
    // A tool filter forces the minute rollup; with every tool it must give the same totals.
    let by_tool: Vec<_> = ["a", "b"]
        .iter()
        .map(|t| {
            r.series(&SeriesQuery {
                since,
                until,
                bucket_minutes: 60,
                category: None,
                tool: Some(t.to_string()),
            })
            .unwrap()
        })
        .collect();
    assert_eq!(hourly.points.len(), by_tool[0].points.len());
    for (i, p) in hourly.points.iter().enumerate() {
        assert_eq!(
            p.count,
            by_tool[0].points[i].count + by_tool[1].points[i].count,
            "bucket {i}"
        );
        assert_eq!(
            p.errors,
            by_tool[0].points[i].errors + by_tool[1].points[i].errors,
            "bucket {i}"
        );
    }
    assert_eq!(hourly.points.iter().map(|p| p.count).sum::<u64>(), 500);
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

fn security(id: &str, at_secs: i64, event_type: &str, result: &str) -> PreparedEvent {
    ev(
        id,
        at_secs,
        "security",
        event_type,
        json!({"user_id": "mallory", "resource": "tool:delete", "action": "call", "result": result}),
    )
}

fn security_counts(store: &SqliteStore) -> Vec<(String, crate::query::KindCount)> {
    let s = store
        .reader()
        .security_series(&crate::query::SecurityQuery {
            since: Timestamp::from_micros(T0 - 3_600_000_000),
            until: Timestamp::from_micros(T0 + 3_600_000_000),
            bucket_minutes: 60,
        })
        .unwrap();
    let mut total: std::collections::BTreeMap<String, crate::query::KindCount> = Default::default();
    for p in &s.points {
        for (k, c) in &p.by_type {
            let t = total.entry(k.clone()).or_default();
            t.count += c.count;
            t.failures += c.failures;
        }
    }
    total.into_iter().collect()
}

#[test]
fn security_series_tells_failed_sign_ins_from_denials() {
    let mut f = fixture();
    f.append(&[
        security("s1", 1, "authentication", "failure"),
        security("s2", 2, "authentication", "failure"),
        security("s3", 3, "authentication", "success"),
        security("s4", 4, "authorization", "denied"),
        security("s5", 5, "authorization", "allowed"),
        exec("x1", 6, "read", "u", 0.1, "tool_error"),
    ]);
    // A resend of a stored event is not counted twice.
    f.append(&[security("s1", 1, "authentication", "failure")]);
    let got = security_counts(&f.store);
    let kc = |count, failures| crate::query::KindCount { count, failures };
    assert_eq!(
        got,
        vec![
            ("authentication".to_owned(), kc(3, 2)),
            ("authorization".to_owned(), kc(2, 1)),
        ]
    );
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
/// into the database file, and everything committed stays readable after a reopen.
#[test]
fn the_checkpoint_thread_moves_committed_pages_into_the_database_file() {
    let mut f = fixture();
    let db = f.store.path().to_owned();
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
        assert_eq!(f.append(&events), 1_000);
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
    drop(f.writer);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let stored: i64 = conn
        .query_row("SELECT count(*) FROM events", [], |r| r.get(0))
        .unwrap();
    assert_eq!(stored, n);
}
