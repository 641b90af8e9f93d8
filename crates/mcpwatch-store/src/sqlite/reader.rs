//! Queries over the embedded store. Events come from the event table (newest first, keyset
//! pagination on `(ts, seq)`); statistics come from the rollup tables only.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::Mutex;

use mcpwatch_core::{Level, Timestamp};
use rusqlite::types::Value as SqlValue;
use rusqlite::{params, params_from_iter, Connection, OptionalExtension};
use serde_json::value::RawValue;

use super::writer::used_bytes;
use super::Pool;
use crate::fold::{
    self, like_escape, raw, SecurityFold, SeriesFold, SeriesRow, ToolFold, ToolRow, UserFold,
};
use crate::query::{
    Cursor, EventPage, EventQuery, SecurityQuery, SecuritySeries, Series, SeriesQuery, StatsQuery,
    Summary, ToolStats, UserUsage,
};
use crate::{EventReader, StoreError, StoreStats};

use crate::rollup::{HOUR, MINUTE};

const DAY: i64 = 24 * HOUR;

/// Reads the SQLite store through a small connection pool.
pub struct SqliteReader {
    pool: Pool,
}

impl SqliteReader {
    pub(super) fn new(path: PathBuf) -> Self {
        Self {
            pool: Pool {
                path,
                idle: Mutex::new(Vec::new()),
            },
        }
    }
}

impl EventReader for SqliteReader {
    fn events(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        let mut sql = String::from("SELECT id, ts, body FROM events WHERE 1=1");
        let mut args: Vec<SqlValue> = Vec::new();
        let mut push = |sql: &mut String, clause: &str, v: SqlValue| {
            args.push(v);
            sql.push_str(&format!(" AND {clause} ?{}", args.len()));
        };
        if let Some(t) = q.since {
            push(&mut sql, "ts >=", t.as_micros().into());
        }
        if let Some(t) = q.until {
            push(&mut sql, "ts <", t.as_micros().into());
        }
        if let Some(l) = q.level {
            push(&mut sql, "level =", l.rank().into());
        }
        let text_filters = [
            ("category =", &q.category),
            ("event_type =", &q.event_type),
            ("server =", &q.server),
            ("tool =", &q.tool),
            ("user =", &q.user),
            ("session =", &q.session),
            ("outcome =", &q.outcome),
        ];
        for (clause, v) in text_filters {
            if let Some(v) = v {
                push(&mut sql, clause, v.clone().into());
            }
        }
        if let Some(text) = &q.text {
            args.push(like_escape(text).into());
            sql.push_str(&format!(
                " AND json_extract(body, '$.message') LIKE ?{} ESCAPE '\\'",
                args.len()
            ));
        }
        if let Some(c) = &q.cursor {
            args.push(c.ts.into());
            args.push(c.id.clone().into());
            let (a, b) = (args.len() - 1, args.len());
            sql.push_str(&format!(" AND ts <= ?{a} AND (ts < ?{a} OR id < ?{b})"));
        }
        let limit = q.limit.clamp(1, 10_000);
        // The time index gives the order; ties on a timestamp (rare) are sorted by id.
        sql.push_str(&format!(" ORDER BY ts DESC, id DESC LIMIT {}", limit + 1));
        self.pool.with(|conn| {
            let mut st = conn.prepare_cached(&sql)?;
            let mut rows = st.query(params_from_iter(args.iter()))?;
            let mut events = Vec::with_capacity(limit.min(1024));
            let mut last = None;
            let mut has_more = false;
            while let Some(row) = rows.next()? {
                if events.len() == limit {
                    has_more = true;
                    break;
                }
                let (id, ts, body): (String, i64, String) = (row.get(0)?, row.get(1)?, row.get(2)?);
                events.push(raw(body)?);
                last = Some(Cursor { ts, id });
            }
            let next_cursor = if has_more {
                last.map(|c: Cursor| c.encode())
            } else {
                None
            };
            Ok(EventPage {
                events,
                next_cursor,
            })
        })
    }

    fn event(&self, id: &str) -> Result<Option<Box<RawValue>>, StoreError> {
        self.pool.with(|conn| {
            let body: Option<String> = conn
                .query_row("SELECT body FROM events WHERE id = ?1", [id], |r| r.get(0))
                .optional()?;
            body.map(raw).transpose()
        })
    }

    fn tool_stats(&self, q: &StatsQuery) -> Result<Vec<ToolStats>, StoreError> {
        self.pool.with(|conn| tool_stats(conn, q))
    }

    fn users(&self, q: &StatsQuery) -> Result<Vec<UserUsage>, StoreError> {
        self.pool.with(|conn| users(conn, q))
    }

    fn series(&self, q: &SeriesQuery) -> Result<Series, StoreError> {
        self.pool.with(|conn| series(conn, q))
    }

    fn summary(&self, now: Timestamp) -> Result<Summary, StoreError> {
        self.pool.with(|conn| summary(conn, now))
    }

    fn security_series(&self, q: &SecurityQuery) -> Result<SecuritySeries, StoreError> {
        self.pool.with(|conn| security_series(conn, q))
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.pool.with(store_stats)
    }
}

fn store_stats(conn: &Connection) -> Result<StoreStats, StoreError> {
    let events: i64 = conn.query_row(
        "SELECT value FROM counters WHERE name = 'events'",
        [],
        |r| r.get(0),
    )?;
    Ok(StoreStats {
        events: events.max(0) as u64,
        used_bytes: used_bytes(conn)?,
    })
}

/// `hour >= since_hour AND hour < until_hour` bounds, plus optional server/tool filters.
fn hour_filter(q: &StatsQuery, args: &mut Vec<SqlValue>) -> String {
    let (since, until) = fold::hour_range(q);
    args.push(since.into());
    args.push(until.into());
    let mut sql = String::from("hour >= ?1 AND hour < ?2");
    for (col, v) in [("server", &q.server), ("tool", &q.tool)] {
        if let Some(v) = v {
            args.push(v.clone().into());
            sql.push_str(&format!(" AND {col} = ?{}", args.len()));
        }
    }
    sql
}

fn tool_stats(conn: &Connection, q: &StatsQuery) -> Result<Vec<ToolStats>, StoreError> {
    let mut args = Vec::new();
    let filter = hour_filter(q, &mut args);
    let mut fold = ToolFold::default();
    let sql = format!(
        "SELECT server, tool, outcome, sum(count), sum(sum_time), min(min_time), max(max_time), max(last_ts)
         FROM tool_hour WHERE {filter} GROUP BY server, tool, outcome"
    );
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        fold.row(ToolRow {
            server: r.get(0)?,
            tool: r.get(1)?,
            outcome: r.get(2)?,
            count: r.get(3)?,
            sum_time: r.get(4)?,
            min_time: r.get(5)?,
            max_time: r.get(6)?,
            last_ts: r.get(7)?,
        });
    }
    let sql = format!("SELECT server, tool, buckets FROM tool_hist WHERE {filter}");
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        let blob: Vec<u8> = r.get(2)?;
        fold.encoded(r.get(0)?, r.get(1)?, &blob);
    }
    Ok(fold.finish(q.limit))
}

fn users(conn: &Connection, q: &StatsQuery) -> Result<Vec<UserUsage>, StoreError> {
    let mut sql = String::from("SELECT user, server, tool, count, first_ts, last_ts FROM user_tool WHERE last_ts >= ?1 AND first_ts < ?2");
    let mut args: Vec<SqlValue> = vec![
        q.since.map_or(i64::MIN, |t| t.as_micros()).into(),
        q.until.map_or(i64::MAX, |t| t.as_micros()).into(),
    ];
    for (col, v) in [("user", &q.user), ("server", &q.server), ("tool", &q.tool)] {
        if let Some(v) = v {
            args.push(v.clone().into());
            sql.push_str(&format!(" AND {col} = ?{}", args.len()));
        }
    }
    let mut fold = UserFold::default();
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        fold.row(
            r.get(0)?,
            r.get(1)?,
            r.get(2)?,
            r.get(3)?,
            r.get(4)?,
            r.get(5)?,
        );
    }
    let mut out = fold.finish(q.limit);
    let mut st =
        conn.prepare_cached("SELECT server, tool, keys, count FROM user_params WHERE user = ?1")?;
    for u in &mut out {
        let mut patterns: HashMap<(String, String), BTreeMap<String, u64>> = HashMap::new();
        let mut rows = st.query([&u.user])?;
        while let Some(r) = rows.next()? {
            let key: (String, String) = (r.get(0)?, r.get(1)?);
            patterns
                .entry(key)
                .or_default()
                .insert(r.get(2)?, r.get::<_, i64>(3)? as u64);
        }
        fold::patterns_into(u, patterns);
    }
    Ok(out)
}

fn security_series(conn: &Connection, q: &SecurityQuery) -> Result<SecuritySeries, StoreError> {
    let (step, first, end, n) = fold::buckets(q.since, q.until, q.bucket_minutes)?;
    let mut fold = SecurityFold::new(step, first, n);
    let mut st = conn.prepare_cached(
        "SELECT (minute - ?1) / ?3, event_type, sum(count), sum(errors) FROM security_minute
         WHERE minute >= ?1 AND minute < ?2 GROUP BY 1, 2",
    )?;
    let mut rows = st.query(params![first, end + 1, step])?;
    while let Some(r) = rows.next()? {
        fold.row(r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?);
    }
    Ok(fold.finish())
}

fn series(conn: &Connection, q: &SeriesQuery) -> Result<Series, StoreError> {
    let (step, first, end, buckets) = fold::buckets(q.since, q.until, q.bucket_minutes)?;
    let hourly = fold::hourly(step, first, q.tool.as_deref());
    let (table, unit) = if hourly {
        ("rollup_hour", 60)
    } else {
        ("rollup_minute", 1)
    };
    let mut sql = format!(
        "SELECT ({col} - ?1) / ?3, category, sum(count), sum(errors), sum(timed), sum(sum_time)
         FROM {table} WHERE {col} >= ?1 AND {col} < ?2",
        col = if hourly { "hour" } else { "minute" }
    );
    let mut args: Vec<SqlValue> = vec![
        (first / unit).into(),
        (end + unit - 1).div_euclid(unit).into(),
        (step / unit).into(),
    ];
    for (col, v) in [("category", &q.category), ("tool", &q.tool)] {
        if let Some(v) = v {
            args.push(v.clone().into());
            sql.push_str(&format!(" AND {col} = ?{}", args.len()));
        }
    }
    sql.push_str(" GROUP BY 1, 2");
    let mut fold = SeriesFold::new(step, first, buckets);
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        fold.row(SeriesRow {
            bucket: r.get(0)?,
            category: r.get(1)?,
            count: r.get(2)?,
            errors: r.get(3)?,
            timed: r.get(4)?,
            sum_time: r.get(5)?,
        });
    }
    Ok(fold.finish())
}

fn summary(conn: &Connection, now: Timestamp) -> Result<Summary, StoreError> {
    let now_min = now.as_micros().div_euclid(MINUTE);
    let mut last_hour_by_category = BTreeMap::new();
    let mut st = conn.prepare_cached(
        "SELECT category, sum(count) FROM rollup_minute WHERE minute > ?1 GROUP BY category",
    )?;
    let mut rows = st.query([now_min - 60])?;
    while let Some(r) = rows.next()? {
        last_hour_by_category.insert(r.get::<_, String>(0)?, r.get::<_, i64>(1)? as u64);
    }
    let mut last_day_by_level = BTreeMap::new();
    let mut st = conn.prepare_cached(
        "SELECT level, sum(count) FROM rollup_minute WHERE minute > ?1 GROUP BY level",
    )?;
    let mut rows = st.query([now_min - 24 * 60])?;
    while let Some(r) = rows.next()? {
        let level = Level::from_rank(r.get(0)?).map_or("unknown", Level::as_str);
        last_day_by_level.insert(level.to_owned(), r.get::<_, i64>(1)? as u64);
    }
    let (execs, failures): (i64, i64) = conn.query_row(
        "SELECT coalesce(sum(count), 0), coalesce(sum(errors), 0) FROM rollup_minute
         WHERE minute > ?1 AND category = 'tool_execution' AND outcome != ''",
        [now_min - 60],
        |r| Ok((r.get(0)?, r.get(1)?)),
    )?;
    let day_ago = Timestamp::from_micros(now.as_micros() - DAY);
    let top_tools = tool_stats(
        conn,
        &StatsQuery {
            since: Some(day_ago),
            limit: 10,
            ..Default::default()
        },
    )?;
    let active_users: i64 = conn.query_row(
        "SELECT count(DISTINCT user) FROM user_tool WHERE last_ts >= ?1",
        params![day_ago.as_micros()],
        |r| r.get(0),
    )?;
    Ok(Summary {
        at: now,
        total_events: store_stats(conn)?.events,
        last_hour_by_category,
        last_day_by_level,
        tool_executions_last_hour: execs as u64,
        tool_failures_last_hour: failures as u64,
        top_tools,
        active_users_last_day: active_users as u64,
        store: store_stats(conn)?,
    })
}
