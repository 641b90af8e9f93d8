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
use crate::hist;
use crate::query::{
    Cursor, EventPage, EventQuery, KindCount, Latency, SecurityPoint, SecurityQuery,
    SecuritySeries, Series, SeriesPoint, SeriesQuery, StatsQuery, Summary, ToolStats, UserTool,
    UserUsage,
};
use crate::{EventReader, StoreError, StoreStats};

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
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

fn raw(body: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(body)
        .map_err(|e| StoreError::BadQuery(format!("stored event is not JSON: {e}")))
}

/// Escapes `%`, `_` and `\` for a LIKE pattern with `ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
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
            sql.push_str(&format!(" AND (ts < ?{a} OR (ts = ?{a} AND id < ?{b}))"));
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
    let since = q.since.map_or(i64::MIN, |t| t.as_micros().div_euclid(HOUR));
    let until = q
        .until
        .map_or(i64::MAX, |t| (t.as_micros() + HOUR - 1).div_euclid(HOUR));
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

/// Stats of one tool being summed up: the stats, the sum of durations, the histogram.
type ToolAcc = (ToolStats, f64, Vec<(i64, u64)>);

fn tool_stats(conn: &Connection, q: &StatsQuery) -> Result<Vec<ToolStats>, StoreError> {
    let mut args = Vec::new();
    let filter = hour_filter(q, &mut args);
    let mut by_tool: BTreeMap<(String, String), ToolAcc> = BTreeMap::new();
    let sql = format!(
        "SELECT server, tool, outcome, sum(count), sum(sum_time), min(min_time), max(max_time), max(last_ts)
         FROM tool_hour WHERE {filter} GROUP BY server, tool, outcome"
    );
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        let (server, tool, outcome): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let (count, sum, min, max, last): (i64, f64, f64, f64, i64) =
            (r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?);
        let entry = by_tool
            .entry((server.clone(), tool.clone()))
            .or_insert_with(|| {
                let latency = Latency {
                    avg: 0.0,
                    min: f64::INFINITY,
                    max: 0.0,
                    p50: 0.0,
                    p95: 0.0,
                    p99: 0.0,
                };
                let stats = ToolStats {
                    server,
                    tool,
                    count: 0,
                    successes: 0,
                    failures: BTreeMap::new(),
                    success_rate: 0.0,
                    latency,
                    last_seen: Timestamp::from_micros(0),
                };
                (stats, 0.0, Vec::new())
            });
        let s = &mut entry.0;
        s.count += count as u64;
        if outcome == "success" {
            s.successes += count as u64;
        } else {
            *s.failures.entry(outcome).or_default() += count as u64;
        }
        entry.1 += sum;
        s.latency.min = s.latency.min.min(min);
        s.latency.max = s.latency.max.max(max);
        s.last_seen = s.last_seen.max(Timestamp::from_micros(last));
    }
    let sql = format!("SELECT server, tool, buckets FROM tool_hist WHERE {filter}");
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args.iter()))?;
    let mut hists: HashMap<(String, String), BTreeMap<i64, u64>> = HashMap::new();
    while let Some(r) = rows.next()? {
        let key: (String, String) = (r.get(0)?, r.get(1)?);
        let blob: Vec<u8> = r.get(2)?;
        hist::decode_into(&blob, hists.entry(key).or_default());
    }
    for (key, buckets) in hists {
        if let Some(entry) = by_tool.get_mut(&key) {
            entry.2 = buckets.into_iter().collect();
        }
    }
    let mut out: Vec<ToolStats> = by_tool
        .into_values()
        .map(|(mut s, sum, buckets)| {
            let l = &mut s.latency;
            if s.count > 0 {
                l.avg = sum / s.count as f64;
                s.success_rate = s.successes as f64 / s.count as f64;
            }
            if !l.min.is_finite() {
                l.min = 0.0;
            }
            let p = hist::percentiles(&buckets, &[0.5, 0.95, 0.99], l.min, l.max);
            (l.p50, l.p95, l.p99) = (p[0], p[1], p[2]);
            s
        })
        .collect();
    out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.tool.cmp(&b.tool)));
    if q.limit > 0 {
        out.truncate(q.limit);
    }
    Ok(out)
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
    let mut users: BTreeMap<String, UserUsage> = BTreeMap::new();
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        let (user, server, tool): (String, String, String) = (r.get(0)?, r.get(1)?, r.get(2)?);
        let (count, first, last): (i64, i64, i64) = (r.get(3)?, r.get(4)?, r.get(5)?);
        let u = users.entry(user.clone()).or_insert_with(|| UserUsage {
            user,
            count: 0,
            last_used: Timestamp::from_micros(0),
            tools: Vec::new(),
        });
        u.count += count as u64;
        u.last_used = u.last_used.max(Timestamp::from_micros(last));
        u.tools.push(UserTool {
            server,
            tool,
            count: count as u64,
            first_used: Timestamp::from_micros(first),
            last_used: Timestamp::from_micros(last),
            parameter_patterns: BTreeMap::new(),
        });
    }
    let mut out: Vec<UserUsage> = users.into_values().collect();
    out.sort_by(|a, b| {
        b.last_used
            .cmp(&a.last_used)
            .then_with(|| a.user.cmp(&b.user))
    });
    if q.limit > 0 {
        out.truncate(q.limit);
    }
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
        for t in &mut u.tools {
            if let Some(p) = patterns.remove(&(t.server.clone(), t.tool.clone())) {
                t.parameter_patterns = p;
            }
        }
        u.tools
            .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.tool.cmp(&b.tool)));
    }
    Ok(out)
}

/// The buckets of a series from `since` to `until`: (step, first minute, end minute, count).
fn buckets(
    since: Timestamp,
    until: Timestamp,
    bucket_minutes: i64,
) -> Result<(i64, i64, i64, i64), StoreError> {
    let step = bucket_minutes.max(1);
    let first = since.as_micros().div_euclid(MINUTE).div_euclid(step) * step;
    let end = (until.as_micros() + MINUTE - 1).div_euclid(MINUTE);
    let buckets = ((end - first) / step).max(0) + 1;
    if buckets > 10_000 {
        return Err(StoreError::BadQuery(format!(
            "{buckets} buckets is too many; widen the bucket or narrow the range"
        )));
    }
    Ok((step, first, end, buckets))
}

fn security_series(conn: &Connection, q: &SecurityQuery) -> Result<SecuritySeries, StoreError> {
    let (step, first, end, n) = buckets(q.since, q.until, q.bucket_minutes)?;
    let mut points: Vec<SecurityPoint> = (0..n)
        .map(|i| SecurityPoint {
            t: Timestamp::from_micros((first + i * step) * MINUTE),
            by_type: BTreeMap::new(),
        })
        .collect();
    let mut st = conn.prepare_cached(
        "SELECT (minute - ?1) / ?3, event_type, sum(count), sum(errors) FROM security_minute
         WHERE minute >= ?1 AND minute < ?2 GROUP BY 1, 2",
    )?;
    let mut rows = st.query(params![first, end + 1, step])?;
    while let Some(r) = rows.next()? {
        let i: i64 = r.get(0)?;
        let Some(p) = usize::try_from(i).ok().and_then(|i| points.get_mut(i)) else {
            continue;
        };
        let (kind, count, failures): (String, i64, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
        p.by_type.insert(
            kind,
            KindCount {
                count: count.max(0) as u64,
                failures: failures.max(0) as u64,
            },
        );
    }
    Ok(SecuritySeries {
        bucket_seconds: step * 60,
        points,
    })
}

fn series(conn: &Connection, q: &SeriesQuery) -> Result<Series, StoreError> {
    let (step, first, end, buckets) = buckets(q.since, q.until, q.bucket_minutes)?;
    // Whole-hour buckets without a tool filter read the hourly rollup: 60 times fewer rows.
    let hourly = step % 60 == 0 && first % 60 == 0 && q.tool.is_none();
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
    let mut points: Vec<(SeriesPoint, i64, f64)> = (0..buckets)
        .map(|i| {
            let t = Timestamp::from_micros((first + i * step) * MINUTE);
            (
                SeriesPoint {
                    t,
                    count: 0,
                    errors: 0,
                    avg_time: None,
                    by_category: BTreeMap::new(),
                },
                0,
                0.0,
            )
        })
        .collect();
    let mut st = conn.prepare_cached(&sql)?;
    let mut rows = st.query(params_from_iter(args.iter()))?;
    while let Some(r) = rows.next()? {
        let i: i64 = r.get(0)?;
        let Some((p, timed, sum)) = usize::try_from(i).ok().and_then(|i| points.get_mut(i)) else {
            continue;
        };
        let (cat, count, errors): (String, i64, i64) = (r.get(1)?, r.get(2)?, r.get(3)?);
        p.count += count as u64;
        p.errors += errors as u64;
        *timed += r.get::<_, i64>(4)?;
        *sum += r.get::<_, f64>(5)?;
        p.by_category.insert(cat, count as u64);
    }
    let points = points
        .into_iter()
        .map(|(mut p, timed, sum)| {
            p.avg_time = (timed > 0).then(|| sum / timed as f64);
            p
        })
        .collect();
    Ok(Series {
        bucket_seconds: step * 60,
        points,
    })
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
