//! Tests of what only the shared store has, against a real PostgreSQL: day partitions and
//! their retention, several writers on one database, and the errors of a bad URL. What every
//! backend must do is in the compliance suite.

use std::time::Duration;

use mcpwatch_core::Timestamp;
use serde_json::json;

use super::*;
use crate::compliance::{ev, exec, Backend, Fixture, T0};
use crate::query::{EventQuery, StatsQuery};
use crate::testing::TempPostgres;
use crate::{PreparedEvent, RetentionPolicy};

const DAY_SECS: i64 = 86_400;

#[test]
fn retention_drops_whole_days_and_keeps_the_counts_true() {
    let mut f = Fixture::new(Backend::Postgres);
    // Ten events a day for six days.
    let batch: Vec<PreparedEvent> = (0..60)
        .map(|i| {
            exec(
                &format!("e{i:02}"),
                (i / 10) * DAY_SECS + i % 10,
                "t",
                "u",
                0.1,
                "success",
            )
        })
        .collect();
    f.append(&batch);
    let (_, url) = f.pg();
    let store = PgStore::open(url, "other").unwrap();
    let before = day_partitions(&store);
    let policy = RetentionPolicy {
        max_age: Duration::from_secs(3 * DAY_SECS as u64),
        max_size: None,
    };
    // Now is day 5 + 1 s: days 0, 1 lie wholly before the cutoff (day 2 + 1 s), day 2 in part.
    let now = Timestamp::from_micros(T0 + (5 * DAY_SECS + 1) * 1_000_000);
    let mut total = 0;
    loop {
        let step = f.writer.retain(&policy, now, 1000).unwrap();
        total += step.deleted;
        if !step.more {
            break;
        }
    }
    let after = day_partitions(&store);
    let cutoff_day = (T0 + (2 * DAY_SECS + 1) * 1_000_000).div_euclid(schema::DAY);
    assert!(
        before.iter().any(|d| *d < cutoff_day) && after.iter().all(|d| *d >= cutoff_day),
        "before {before:?}, after {after:?}"
    );
    let r = f.store.reader();
    let left = f.ids(EventQuery::default());
    // Whatever of day 2 precedes the cutoff goes too, row by row.
    let want: Vec<String> = (0..60)
        .filter(|i| {
            T0 + ((i / 10) * DAY_SECS + i % 10) * 1_000_000 >= T0 + (2 * DAY_SECS + 1) * 1_000_000
        })
        .rev()
        .map(|i| format!("e{i:02}"))
        .collect();
    assert_eq!(left, want);
    assert_eq!(total, 60 - want.len() as u64);
    assert_eq!(r.stats().unwrap().events, want.len() as u64);
}

/// The days that have a partition.
fn day_partitions(store: &PgStore) -> Vec<i64> {
    store
        .db
        .run(|c| async move { schema::partitions(&c).await })
        .unwrap()
}

#[test]
fn partitions_are_made_ahead_of_today() {
    let f = Fixture::new(Backend::Postgres);
    let (_, url) = f.pg();
    let store = PgStore::open(url, "x").unwrap();
    let days = day_partitions(&store);
    let today = mcpwatch_core::clock::Clock::now(&mcpwatch_core::clock::SystemClock)
        .as_micros()
        .div_euclid(schema::DAY);
    for d in today..=today + 2 {
        assert!(days.contains(&d), "{d} not in {days:?}");
    }
}

#[test]
fn size_retention_drops_the_oldest_day_never_today() {
    let mut f = Fixture::new(Backend::Postgres);
    let pad = "x".repeat(4000);
    let batch: Vec<PreparedEvent> = (0..300)
        .map(|i| {
            ev(
                &format!("e{i:03}"),
                (i / 100) * DAY_SECS + i % 100,
                "custom",
                "blob",
                json!({"pad": pad}),
            )
        })
        .collect();
    f.append(&batch);
    let policy = RetentionPolicy {
        max_age: Duration::from_secs(365 * DAY_SECS as u64),
        max_size: Some(1),
    };
    let now = Timestamp::from_micros(T0 + (2 * DAY_SECS + 200) * 1_000_000);
    while f.writer.retain(&policy, now, 1000).unwrap().more {}
    // Over any size, the days before today go and today stays.
    let left = f.ids(EventQuery {
        limit: 1000,
        ..Default::default()
    });
    assert_eq!(left.len(), 100);
    assert_eq!(left.first().map(String::as_str), Some("e299"));
    assert_eq!(f.store.reader().stats().unwrap().events, 100);
}

#[test]
fn two_writers_on_one_database_count_every_event_once() {
    let f = Fixture::new(Backend::Postgres);
    let (_, url) = f.pg();
    let (a, b) = (
        PgStore::open(url, "node-a").unwrap(),
        PgStore::open(url, "node-b").unwrap(),
    );
    let (mut wa, mut wb) = (a.writer().unwrap(), b.writer().unwrap());
    let events: Vec<PreparedEvent> = (0..200)
        .map(|i| exec(&format!("e{i}"), i, "read", "alice", 0.01, "success"))
        .collect();
    // Both nodes see overlapping halves (a client retried against the other node).
    let (first, second) = (events[..120].to_vec(), &events[80..]);
    let ta = std::thread::spawn(move || {
        for chunk in first.chunks(10) {
            wa.append(&chunk.iter().collect::<Vec<_>>(), true).unwrap();
        }
    });
    for chunk in second.chunks(10) {
        wb.append(&chunk.iter().collect::<Vec<_>>(), true).unwrap();
    }
    ta.join().unwrap();
    let r = a.reader();
    assert_eq!(r.stats().unwrap().events, 200);
    let stats = r.tool_stats(&StatsQuery::default()).unwrap();
    assert_eq!(stats[0].count, 200);
    let users = r.users(&StatsQuery::default()).unwrap();
    assert_eq!(users[0].count, 200);
    assert_eq!(
        users[0].tools[0].parameter_patterns.get("encoding,path"),
        Some(&200)
    );
    // Each node wrote rollup rows of its own.
    let writers: Vec<String> =
        a.db.run(|c| async move {
            let rows = c
                .query("SELECT DISTINCT writer FROM tool_hour ORDER BY 1", &[])
                .await?;
            Ok(rows.iter().map(|r| r.get(0)).collect())
        })
        .unwrap();
    assert_eq!(writers, ["node-a", "node-b"]);
}

#[test]
fn per_tool_statistics_read_one_snapshot_while_rollups_are_written_beside_them() {
    let mut f = Fixture::new(Backend::Postgres);
    f.append(&[
        exec("a", 1, "read", "alice", 0.01, "success"),
        exec("b", 2, "read", "alice", 0.02, "success"),
    ]);
    let (pg, url) = f.pg();
    let store = PgStore::open(url, "reader").unwrap();
    let reader = store.reader();
    let before = reader.tool_stats(&StatsQuery::default()).unwrap();
    assert_eq!(before[0].count, 2);
    // A writer of rollups holds the histogram tables, so that the read stops between its
    // statements: the counts are read, the histograms wait.
    let db = store.db.clone();
    let holder = std::sync::Arc::new(db.connection().unwrap());
    let h = holder.clone();
    db.block(async move {
        h.batch_execute("BEGIN; LOCK TABLE tool_hist, tool_hist_day IN ACCESS EXCLUSIVE MODE")
            .await?;
        Ok(())
    })
    .unwrap();
    let read = std::thread::spawn(move || reader.tool_stats(&StatsQuery::default()).unwrap());
    pg.wait_until(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = 'mcpwatch' AND wait_event_type = 'Lock'",
        "1",
        "the read never waited for the histograms",
    );
    // The writer adds a slow call to the counts and the histogram, and commits.
    let (h, slow) = (holder.clone(), crate::hist::bucket_of(9.0));
    db.block(async move {
        h.batch_execute(&format!(
            "UPDATE tool_hour SET count = count + 1, sum_time = sum_time + 9, max_time = 9;
             INSERT INTO tool_hist(writer, hour, server, tool, bucket, count)
               SELECT writer, hour, server, tool, {slow}, 1 FROM tool_hour;
             INSERT INTO tool_hist_day(writer, day, server, tool, bucket, count)
               SELECT writer, floor(hour / 24.0)::bigint, server, tool, {slow}, 1 FROM tool_hour;
             COMMIT"
        ))
        .await?;
        Ok(())
    })
    .unwrap();
    let during = read.join().unwrap();
    assert_eq!(
        during, before,
        "the read saw the state it started in, counts and percentiles alike"
    );
    let after = store.reader().tool_stats(&StatsQuery::default()).unwrap();
    assert_eq!(after[0].count, 3);
    assert_ne!(after[0].latency, before[0].latency);
}

#[test]
fn a_bad_url_database_or_login_is_one_clear_error() {
    let f = Fixture::new(Backend::Postgres);
    let (pg, _) = f.pg();
    let err = |url: &str| match PgStore::open(url, "x") {
        Err(StoreError::Unavailable(m)) => m,
        Err(e) => panic!("{url}: not Unavailable: {e}"),
        Ok(_) => panic!("{url}: opened"),
    };
    let m = err(&pg.url("nosuchdb"));
    assert!(
        m.contains("does not exist") && m.contains("createdb"),
        "{m}"
    );
    assert!(!m.contains(TempPostgres::PASSWORD), "{m}");
    let wrong = format!("postgres://postgres:wrong@127.0.0.1:{}/mcpwatch", pg.port());
    let m = err(&wrong);
    assert!(
        m.contains("refused the login") && m.contains("password"),
        "{m}"
    );
    assert!(!m.contains("wrong"), "the password is hidden: {m}");
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let m = err(&format!("postgres://u:p@127.0.0.1:{port}/db"));
    assert!(m.contains("cannot connect") && m.contains("running"), "{m}");
    let m = err("postgres://u:p@host:notaport/db");
    assert!(m.contains("invalid store URL"), "{m}");
}

#[test]
fn a_newer_schema_is_refused_and_migrations_run_once() {
    let f = Fixture::new(Backend::Postgres);
    let (_, url) = f.pg();
    // Opening again (as a second node would) finds the schema done.
    let store = PgStore::open(url, "x").unwrap();
    let versions: Vec<i64> = store
        .db
        .run(|c| async move {
            let rows = c
                .query("SELECT version FROM mcpwatch_schema ORDER BY 1", &[])
                .await?;
            let v = rows.iter().map(|r| r.get(0)).collect();
            c.execute("INSERT INTO mcpwatch_schema(version) VALUES (99)", &[])
                .await?;
            Ok(v)
        })
        .unwrap();
    assert_eq!(versions, (1..=schema::VERSION).collect::<Vec<_>>());
    match PgStore::open(url, "x") {
        Err(StoreError::TooNew { found: 99, .. }) => {}
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a newer schema"),
    }
}

#[test]
fn nul_in_a_key_column_is_stored_not_refused() {
    let mut f = Fixture::new(Backend::Postgres);
    let e = exec("n", 1, "bad\0tool", "u\0ser", 0.1, "success");
    assert_eq!(f.append(&[e]), 1);
    let stats = f.store.reader().tool_stats(&StatsQuery::default()).unwrap();
    assert_eq!(stats[0].tool, "bad\u{fffd}tool");
    assert!(f.store.reader().event("n").unwrap().is_some());
}

#[test]
fn passwords_are_hidden_in_messages() {
    assert_eq!(
        hide_password("postgres://u:s3cret@h:5432/db"),
        "postgres://u:***@h:5432/db"
    );
    assert_eq!(hide_password("postgres://u@h/db"), "postgres://u@h/db");
    assert_eq!(hide_password("postgres://h/db"), "postgres://h/db");
}

/// Per-tool percentiles come from daily histogram rows for whole days and hourly ones for the
/// hours at either end: over any range they are what SQLite (hourly only) answers.
#[test]
fn tool_stats_over_days_and_partial_days_agree_with_sqlite() {
    let mut pg = Fixture::new(Backend::Postgres);
    let mut lite = Fixture::new(Backend::Sqlite);
    // Every 7 minutes for three days, latencies spread over many buckets.
    let batch: Vec<PreparedEvent> = (0..(3 * DAY_SECS / 420))
        .map(|i| {
            exec(
                &format!("e{i}"),
                i * 420,
                if i % 3 == 0 { "read" } else { "write" },
                "u",
                0.001 * (1 + (i * 37) % 900) as f64,
                if i % 11 == 0 { "tool_error" } else { "success" },
            )
        })
        .collect();
    for chunk in batch.chunks(100) {
        pg.append(chunk);
        lite.append(chunk);
    }
    let at = |h: i64| Some(Timestamp::from_micros(T0 + h * 3_600_000_000));
    for (since, until) in [
        (None, None),
        (at(5), at(53)),
        (at(-30), at(30)),
        (at(2), at(7)),
        (at(30), None),
    ] {
        let q = StatsQuery {
            since,
            until,
            ..Default::default()
        };
        let (a, b) = (
            pg.store.reader().tool_stats(&q).unwrap(),
            lite.store.reader().tool_stats(&q).unwrap(),
        );
        assert!(!a.is_empty(), "{since:?}..{until:?}");
        assert_eq!(a.len(), b.len());
        for (a, b) in a.iter().zip(&b) {
            assert_eq!(
                (&a.tool, a.count),
                (&b.tool, b.count),
                "{since:?}..{until:?}"
            );
            assert_eq!(
                (a.latency.p50, a.latency.p95, a.latency.p99),
                (b.latency.p50, b.latency.p95, b.latency.p99),
                "{} {since:?}..{until:?}",
                a.tool
            );
        }
    }
}

/// A writer that dies before writing its statistics leaves pending rows; the next writer to
/// start folds their events once, even when it has the same name (two nodes on one host).
#[test]
fn a_dead_writers_pending_statistics_are_folded_once_by_the_next() {
    let f = Fixture::new(Backend::Postgres);
    let (pg, url) = f.pg();
    let url = url.to_owned();
    let store = PgStore::open(&url, "node").unwrap();
    let mut dead = store.writer().unwrap();
    let events: Vec<PreparedEvent> = (0..50)
        .map(|i| exec(&format!("d{i}"), i, "read", "alice", 0.01, "success"))
        .collect();
    dead.append(&events.iter().collect::<Vec<_>>(), false)
        .unwrap();
    let started = pg.sql("SELECT clock_timestamp()");
    // A live writer of the same name must not take them while the first one lives.
    let live = PgStore::open(&url, "node").unwrap();
    let mut w = live.writer().unwrap();
    w.retain(
        &RetentionPolicy {
            max_age: Duration::from_secs(3650 * DAY_SECS as u64),
            max_size: None,
        },
        Timestamp::from_micros(T0),
        100,
    )
    .unwrap();
    let count = |s: &PgStore| {
        s.reader()
            .tool_stats(&StatsQuery::default())
            .unwrap()
            .first()
            .map_or(0, |t| t.count)
    };
    assert_eq!(count(&live), 0, "folded while its writer lives");
    // The first writer dies: its connections end.
    std::mem::forget(dead);
    std::mem::forget(store);
    pg.sql(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity
         WHERE datname = 'mcpwatch' AND backend_start < '{}'",
        started.trim()
    ));
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while count(&live) != 50 {
        assert!(
            std::time::Instant::now() < deadline,
            "the dead writer's statistics were not folded"
        );
        // Retention passes fold what dead writers left.
        let again = PgStore::open(&url, "node").unwrap();
        drop(again.writer().unwrap());
        std::thread::sleep(Duration::from_millis(20));
    }
    drop(w);
    // Folding again finds nothing left.
    let again = PgStore::open(&url, "node").unwrap();
    drop(again.writer().unwrap());
    assert_eq!(count(&again), 50);
}
