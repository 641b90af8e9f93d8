//! One suite for the store traits, run against every backend: the embedded SQLite file and a
//! real PostgreSQL (started by `testing::TempPostgres`). Every behaviour a backend must have is
//! asserted once here; a backend's own tests cover only what is its own (file migrations,
//! partitions, several writers).

use std::time::Duration;

use mcpwatch_core::config::Durability;
use mcpwatch_core::{Event, Level, Timestamp};
use serde_json::{json, Value};

use crate::postgres::PgStore;
use crate::query::{Cursor, EventQuery, SeriesQuery, StatsQuery};
use crate::sqlite::SqliteStore;
use crate::testing::TempPostgres;
use crate::{EventWriter, PreparedEvent, RetentionPolicy, Store};

pub(crate) const T0: i64 = 1_790_000_000_000_000;

pub(crate) fn ev(
    id: &str,
    at_secs: i64,
    category: &str,
    event_type: &str,
    metadata: Value,
) -> PreparedEvent {
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

pub(crate) fn exec(
    id: &str,
    at_secs: i64,
    tool: &str,
    user: &str,
    secs: f64,
    outcome: &str,
) -> PreparedEvent {
    ev(
        id,
        at_secs,
        "tool_execution",
        "execution_complete",
        json!({"execution_id": id, "tool_name": tool, "server": "fs", "user_id": user, "execution_time": secs,
               "success": outcome == "success", "outcome": outcome, "parameters": {"path": "/a", "encoding": "utf8"}}),
    )
}

/// The backends under test.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Backend {
    Sqlite,
    Postgres,
}

/// What keeps a backend's data alive for the length of a test.
enum Home {
    Dir(tempfile::TempDir),
    Pg(TempPostgres, String),
}

pub(crate) struct Fixture {
    pub(crate) store: Box<dyn Store>,
    pub(crate) writer: Box<dyn EventWriter>,
    home: Home,
}

fn open(home: &Home) -> Box<dyn Store> {
    match home {
        Home::Dir(d) => Box::new(SqliteStore::open(d.path(), Durability::Normal).unwrap()),
        Home::Pg(_, url) => Box::new(PgStore::open(url, "test-writer").unwrap()),
    }
}

impl Fixture {
    pub(crate) fn new(b: Backend) -> Self {
        let home = match b {
            Backend::Sqlite => Home::Dir(tempfile::tempdir().unwrap()),
            Backend::Postgres => {
                let pg = TempPostgres::start();
                let url = pg.create_database("mcpwatch");
                Home::Pg(pg, url)
            }
        };
        let store = open(&home);
        let writer = store.writer().unwrap();
        Fixture {
            store,
            writer,
            home,
        }
    }

    /// The URL of the PostgreSQL database (Postgres fixtures only).
    pub(crate) fn pg(&self) -> (&TempPostgres, &str) {
        match &self.home {
            Home::Pg(pg, url) => (pg, url),
            Home::Dir(_) => panic!("not a PostgreSQL fixture"),
        }
    }

    /// Closes and opens the store again, with a new writer.
    pub(crate) fn reopen(&mut self) {
        let old = std::mem::replace(&mut self.writer, Box::new(Nothing));
        drop(old);
        self.store = open(&self.home);
        self.writer = self.store.writer().unwrap();
    }

    /// The writer vanishes without settling or closing; the store is opened again.
    pub(crate) fn crash(&mut self) {
        let old = std::mem::replace(&mut self.writer, Box::new(Nothing));
        std::mem::forget(old);
        if let Home::Pg(pg, _) = &self.home {
            // A process that dies loses its connections (and the locks they hold).
            pg.sql(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = 'mcpwatch'",
            );
            pg.wait_until(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'mcpwatch'",
                "0",
                "the connections of the crashed writer did not end",
            );
        }
        self.store = open(&self.home);
        self.writer = self.store.writer().unwrap();
    }

    pub(crate) fn append(&mut self, events: &[PreparedEvent]) -> usize {
        let refs: Vec<&PreparedEvent> = events.iter().collect();
        self.writer.append(&refs, true).unwrap()
    }

    pub(crate) fn ids(&self, q: EventQuery) -> Vec<String> {
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

/// A writer placeholder while the real one is swapped.
struct Nothing;

impl EventWriter for Nothing {
    fn append_marking(
        &mut self,
        _: &[&PreparedEvent],
        _: bool,
        _: &mut Vec<bool>,
    ) -> Result<usize, crate::StoreError> {
        unreachable!("replaced at once")
    }
    fn settle(&mut self) -> Result<(), crate::StoreError> {
        unreachable!("replaced at once")
    }
    fn retain(
        &mut self,
        _: &RetentionPolicy,
        _: Timestamp,
        _: usize,
    ) -> Result<crate::RetentionStep, crate::StoreError> {
        unreachable!("replaced at once")
    }
}

/// Each test, once per backend.
macro_rules! on_every_backend {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[test] fn $name() { super::$name(super::Backend::Sqlite) })*
        }
        mod postgres {
            $(#[test] fn $name() { super::$name(super::Backend::Postgres) })*
        }
    };
}

on_every_backend!(
    filters_select_the_right_events_newest_first,
    duplicate_ids_are_stored_once_and_counted_once,
    pages_have_no_duplicates_or_gaps_while_new_events_arrive,
    tool_stats_against_known_latencies,
    users_show_tools_counts_and_parameter_patterns,
    series_buckets_counts_and_errors,
    retention_by_age_deletes_in_steps_and_keeps_the_counts_true,
    reopening_keeps_everything,
    deferred_statistics_settle_on_request,
    a_crash_before_statistics_settle_loses_nothing_after_restart,
    hourly_series_agree_with_the_minute_rollup,
    security_series_tells_failed_sign_ins_from_denials,
);

fn filters_select_the_right_events_newest_first(b: Backend) {
    let mut f = Fixture::new(b);
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

fn duplicate_ids_are_stored_once_and_counted_once(b: Backend) {
    let mut f = Fixture::new(b);
    assert_eq!(f.append(&[exec("a", 1, "t", "u", 0.1, "success")]), 1);
    assert_eq!(
        f.append(&[
            exec("a", 1, "t", "u", 0.1, "success"),
            exec("b", 2, "t", "u", 0.1, "success")
        ]),
        1
    );
    // A resend in which every event is already stored adds nothing, and nothing of it is
    // counted when the next batch's statistics are written.
    assert_eq!(
        f.append(&[
            exec("a", 1, "t", "u", 0.1, "success"),
            exec("b", 2, "t", "u", 0.1, "success")
        ]),
        0
    );
    assert_eq!(f.append(&[exec("c", 3, "t", "u", 0.1, "success")]), 1);
    let r = f.store.reader();
    assert_eq!(r.stats().unwrap().events, 3);
    assert_eq!(r.tool_stats(&StatsQuery::default()).unwrap()[0].count, 3);
    let users = r.users(&StatsQuery::default()).unwrap();
    assert_eq!(users[0].count, 3);
    assert!(r.event("a").unwrap().is_some());
    assert!(r.event("zzz").unwrap().is_none());
}

fn pages_have_no_duplicates_or_gaps_while_new_events_arrive(b: Backend) {
    let mut f = Fixture::new(b);
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

fn tool_stats_against_known_latencies(b: Backend) {
    let mut f = Fixture::new(b);
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

fn users_show_tools_counts_and_parameter_patterns(b: Backend) {
    let mut f = Fixture::new(b);
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

fn series_buckets_counts_and_errors(b: Backend) {
    let mut f = Fixture::new(b);
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

fn retention_by_age_deletes_in_steps_and_keeps_the_counts_true(b: Backend) {
    let mut f = Fixture::new(b);
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

fn reopening_keeps_everything(b: Backend) {
    let mut f = Fixture::new(b);
    f.append(&[exec("a", 1, "t", "u", 0.1, "success")]);
    f.reopen();
    assert_eq!(f.store.reader().stats().unwrap().events, 1);
    assert!(f.store.reader().event("a").unwrap().is_some());
}

fn deferred_statistics_settle_on_request(b: Backend) {
    let mut f = Fixture::new(b);
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

fn a_crash_before_statistics_settle_loses_nothing_after_restart(b: Backend) {
    let mut f = Fixture::new(b);
    let settled: Vec<PreparedEvent> = (0..5)
        .map(|i| exec(&format!("s{i}"), i, "t", "alice", 0.1, "success"))
        .collect();
    f.append(&settled);
    let unsettled: Vec<PreparedEvent> = (0..7)
        .map(|i| exec(&format!("u{i}"), 100 + i, "t", "bob", 0.2, "tool_error"))
        .collect();
    f.writer
        .append(&unsettled.iter().collect::<Vec<_>>(), false)
        .unwrap();
    // The writer vanishes without settling: as if the process died here.
    f.crash();
    let stats = f.store.reader().tool_stats(&StatsQuery::default()).unwrap();
    assert_eq!((stats[0].count, stats[0].successes), (12, 5));
    assert_eq!(stats[0].failures.get("tool_error"), Some(&7));
    let users = f.store.reader().users(&StatsQuery::default()).unwrap();
    assert_eq!(users.iter().map(|u| u.count).sum::<u64>(), 12);
    // Recovering twice does not count twice.
    f.reopen();
    assert_eq!(
        f.store.reader().tool_stats(&StatsQuery::default()).unwrap()[0].count,
        12
    );
}

fn hourly_series_agree_with_the_minute_rollup(b: Backend) {
    let mut f = Fixture::new(b);
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

fn security_series_tells_failed_sign_ins_from_denials(b: Backend) {
    let mut f = Fixture::new(b);
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
    let got = security_counts(f.store.as_ref());
    let kc = |count, failures| crate::query::KindCount { count, failures };
    assert_eq!(
        got,
        vec![
            ("authentication".to_owned(), kc(3, 2)),
            ("authorization".to_owned(), kc(2, 1)),
        ]
    );
}

pub(crate) fn security(id: &str, at_secs: i64, event_type: &str, result: &str) -> PreparedEvent {
    ev(
        id,
        at_secs,
        "security",
        event_type,
        json!({"user_id": "mallory", "resource": "tool:delete", "action": "call", "result": result}),
    )
}

pub(crate) fn security_counts(store: &dyn Store) -> Vec<(String, crate::query::KindCount)> {
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
