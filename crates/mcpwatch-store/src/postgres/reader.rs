//! Queries over the shared store: the same answers as the embedded store's (both fold their rows
//! in `fold.rs`), from rollup rows summed over writers.

use std::collections::{BTreeMap, HashMap};

use mcpwatch_core::{Level, Timestamp};
use serde_json::value::RawValue;
use tokio_postgres::types::ToSql;
use tokio_postgres::Client;

use super::writer::used_bytes;
use super::Db;
use super::{refs, Args};
use crate::fold::{
    self, like_escape, raw, SecurityFold, SeriesFold, SeriesRow, ToolFold, ToolRow, UserFold,
};
use crate::query::{
    Cursor, EventPage, EventQuery, SecurityQuery, SecuritySeries, Series, SeriesQuery, StatsQuery,
    Summary, ToolStats, UserUsage,
};
use crate::rollup::{HOUR, MINUTE};
use crate::{EventReader, StoreError, StoreStats};

/// Reads the PostgreSQL store through the pool.
pub struct PgReader {
    db: Db,
}

impl PgReader {
    pub(super) fn new(db: Db) -> Self {
        Self { db }
    }
}

impl EventReader for PgReader {
    fn events(&self, q: &EventQuery) -> Result<EventPage, StoreError> {
        let q = q.clone();
        self.db.run(move |c| async move { events(&c, &q).await })
    }

    fn event(&self, id: &str) -> Result<Option<Box<RawValue>>, StoreError> {
        let id = id.to_owned();
        self.db.run(move |c| async move {
            let row = c
                .query_opt("SELECT body FROM events WHERE id = $1 LIMIT 1", &[&id])
                .await?;
            row.map(|r| raw(r.get(0))).transpose()
        })
    }

    fn tool_stats(&self, q: &StatsQuery) -> Result<Vec<ToolStats>, StoreError> {
        let q = q.clone();
        self.db
            .run(move |c| async move { snapshot(&c, tool_stats(&c, &q)).await })
    }

    fn users(&self, q: &StatsQuery) -> Result<Vec<UserUsage>, StoreError> {
        let q = q.clone();
        self.db
            .run(move |c| async move { snapshot(&c, users(&c, &q)).await })
    }

    fn series(&self, q: &SeriesQuery) -> Result<Series, StoreError> {
        let q = q.clone();
        self.db
            .run(move |c| async move { snapshot(&c, series(&c, &q)).await })
    }

    fn summary(&self, now: Timestamp) -> Result<Summary, StoreError> {
        self.db
            .run(move |c| async move { snapshot(&c, summary(&c, now)).await })
    }

    fn security_series(&self, q: &SecurityQuery) -> Result<SecuritySeries, StoreError> {
        let q = *q;
        self.db
            .run(move |c| async move { security_series(&c, &q).await })
    }

    fn stats(&self) -> Result<StoreStats, StoreError> {
        self.db.run(move |c| async move { store_stats(&c).await })
    }
}

/// Runs a read of several statements in one snapshot. Read committed, the default, takes one
/// per statement: a write of the rollups that committed between a tool's counts and its
/// latency histogram showed the counts of one moment with the percentiles of another.
async fn snapshot<T>(
    c: &Client,
    read: impl std::future::Future<Output = Result<T, StoreError>>,
) -> Result<T, StoreError> {
    c.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .await?;
    match read.await {
        Ok(v) => {
            c.batch_execute("COMMIT").await?;
            Ok(v)
        }
        Err(e) => {
            // The failed statement aborted the transaction; its error is the one to tell.
            let _ = c.batch_execute("ROLLBACK").await;
            Err(e)
        }
    }
}

async fn events(c: &Client, q: &EventQuery) -> Result<EventPage, StoreError> {
    let mut sql = String::from("SELECT id, ts, body FROM events WHERE true");
    let mut args: Args = Vec::new();
    let mut push = |sql: &mut String, clause: &str, v: Box<dyn ToSql + Sync + Send>| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ${}", args.len()));
    };
    if let Some(t) = q.since {
        push(&mut sql, "ts >=", Box::new(t.as_micros()));
    }
    if let Some(t) = q.until {
        push(&mut sql, "ts <", Box::new(t.as_micros()));
    }
    if let Some(l) = q.level {
        push(&mut sql, "level =", Box::new(l.rank()));
    }
    let text_filters = [
        ("category =", &q.category),
        ("event_type =", &q.event_type),
        ("server =", &q.server),
        ("tool =", &q.tool),
        ("\"user\" =", &q.user),
        ("session =", &q.session),
        ("outcome =", &q.outcome),
    ];
    for (clause, v) in text_filters {
        if let Some(v) = v {
            push(&mut sql, clause, Box::new(v.clone()));
        }
    }
    if let Some(text) = &q.text {
        push(
            &mut sql,
            "(body::json ->> 'message') ILIKE",
            Box::new(like_escape(text)),
        );
    }
    if let Some(cur) = &q.cursor {
        args.push(Box::new(cur.ts));
        args.push(Box::new(cur.id.clone()));
        let (a, b) = (args.len() - 1, args.len());
        // `ts <= $a` bounds the time index scan; the rest orders ties by id.
        sql.push_str(&format!(" AND ts <= ${a} AND (ts < ${a} OR id < ${b})"));
    }
    let limit = q.limit.clamp(1, 10_000);
    sql.push_str(&format!(" ORDER BY ts DESC, id DESC LIMIT {}", limit + 1));
    let rows = c.query(&sql, &refs(&args)).await?;
    let has_more = rows.len() > limit;
    let mut events = Vec::with_capacity(rows.len().min(limit));
    let mut last = None;
    for r in rows.into_iter().take(limit) {
        let (id, ts, body): (String, i64, String) = (r.get(0), r.get(1), r.get(2));
        events.push(raw(body)?);
        last = Some(Cursor { ts, id });
    }
    let next_cursor = if has_more {
        last.map(|c| c.encode())
    } else {
        None
    };
    Ok(EventPage {
        events,
        next_cursor,
    })
}

async fn store_stats(c: &Client) -> Result<StoreStats, StoreError> {
    let events: i64 = c
        .query_one(
            "SELECT coalesce(sum(value), 0)::bigint FROM event_count",
            &[],
        )
        .await?
        .get(0);
    Ok(StoreStats {
        events: events.max(0) as u64,
        used_bytes: used_bytes(c).await?,
    })
}

/// `hour >= $1 AND hour < $2`, plus optional server/tool filters.
fn hour_filter(q: &StatsQuery, args: &mut Args) -> String {
    let (since, until) = fold::hour_range(q);
    range_filter("hour", since, until, q, args)
}

/// `{col} >= $1 AND {col} < $2`, plus optional server/tool filters.
fn range_filter(col: &str, since: i64, until: i64, q: &StatsQuery, args: &mut Args) -> String {
    args.push(Box::new(since));
    args.push(Box::new(until));
    let mut sql = format!("{col} >= $1 AND {col} < $2");
    for (col, v) in [("server", &q.server), ("tool", &q.tool)] {
        if let Some(v) = v {
            args.push(Box::new(v.clone()));
            sql.push_str(&format!(" AND {col} = ${}", args.len()));
        }
    }
    sql
}

async fn tool_stats(c: &Client, q: &StatsQuery) -> Result<Vec<ToolStats>, StoreError> {
    let mut args = Vec::new();
    let filter = hour_filter(q, &mut args);
    let mut fold = ToolFold::default();
    let sql = format!(
        "SELECT server, tool, outcome, sum(count)::bigint, sum(sum_time), min(min_time), max(max_time), max(last_ts)
         FROM tool_hour WHERE {filter} GROUP BY server, tool, outcome"
    );
    for r in c.query(&sql, &refs(&args)).await? {
        fold.row(ToolRow {
            server: r.get(0),
            tool: r.get(1),
            outcome: r.get(2),
            count: r.get(3),
            sum_time: r.get(4),
            min_time: r.get(5),
            max_time: r.get(6),
            last_ts: r.get(7),
        });
    }
    // Latency histograms: whole days from the daily rows, the hours before and after them
    // from the hourly ones.
    let (since, until) = fold::hour_range(q);
    let first_day = since.div_euclid(24) + (since.rem_euclid(24) != 0) as i64;
    let end_day = until.div_euclid(24);
    let mut parts = Vec::new();
    if first_day < end_day {
        parts.push(("tool_hist_day", "day", first_day, end_day));
        parts.push(("tool_hist", "hour", since, first_day * 24));
        parts.push(("tool_hist", "hour", end_day.saturating_mul(24), until));
    } else {
        parts.push(("tool_hist", "hour", since, until));
    }
    for (table, col, from, to) in parts {
        if from >= to {
            continue;
        }
        let mut args = Vec::new();
        let filter = range_filter(col, from, to, q, &mut args);
        let sql = format!(
            "SELECT server, tool, bucket, sum(count)::bigint FROM {table} WHERE {filter}
             GROUP BY server, tool, bucket"
        );
        for r in c.query(&sql, &refs(&args)).await? {
            let n: i64 = r.get(3);
            fold.bucket(r.get(0), r.get(1), r.get(2), n.max(0) as u64);
        }
    }
    Ok(fold.finish(q.limit))
}

/// One user's parameter patterns: counts by key set, per server and tool.
type Patterns = HashMap<(String, String), BTreeMap<String, u64>>;

async fn users(c: &Client, q: &StatsQuery) -> Result<Vec<UserUsage>, StoreError> {
    let mut args: Args = vec![
        Box::new(q.since.map_or(i64::MIN, |t| t.as_micros())),
        Box::new(q.until.map_or(i64::MAX, |t| t.as_micros())),
    ];
    let mut filter = String::new();
    for (col, v) in [
        ("\"user\"", &q.user),
        ("server", &q.server),
        ("tool", &q.tool),
    ] {
        if let Some(v) = v {
            args.push(Box::new(v.clone()));
            filter.push_str(&format!(" AND {col} = ${}", args.len()));
        }
    }
    let sql = format!(
        r#"SELECT "user", server, tool, sum(count)::bigint, min(first_ts), max(last_ts) FROM user_tool
           WHERE true {filter} GROUP BY "user", server, tool
           HAVING max(last_ts) >= $1 AND min(first_ts) < $2"#
    );
    let mut fold = UserFold::default();
    for r in c.query(&sql, &refs(&args)).await? {
        fold.row(r.get(0), r.get(1), r.get(2), r.get(3), r.get(4), r.get(5));
    }
    let mut out = fold.finish(q.limit);
    // The patterns of every user on the page in one statement, not one round trip per user.
    let names: Vec<&str> = out.iter().map(|u| u.user.as_str()).collect();
    let mut patterns: HashMap<String, Patterns> = HashMap::new();
    let rows = c
        .query(
            r#"SELECT "user", server, tool, keys, sum(count)::bigint FROM user_params
               WHERE "user" = ANY($1) GROUP BY "user", server, tool, keys"#,
            &[&names],
        )
        .await?;
    for r in rows {
        let n: i64 = r.get(4);
        patterns
            .entry(r.get(0))
            .or_default()
            .entry((r.get(1), r.get(2)))
            .or_default()
            .insert(r.get(3), n.max(0) as u64);
    }
    for u in &mut out {
        fold::patterns_into(u, patterns.remove(&u.user).unwrap_or_default());
    }
    Ok(out)
}

async fn security_series(c: &Client, q: &SecurityQuery) -> Result<SecuritySeries, StoreError> {
    let (step, first, end, n) = fold::buckets(q.since, q.until, q.bucket_minutes)?;
    let mut fold = SecurityFold::new(step, first, n);
    let rows = c
        .query(
            "SELECT (minute - $1) / $3, event_type, sum(count)::bigint, sum(errors)::bigint
             FROM security_minute WHERE minute >= $1 AND minute < $2 GROUP BY 1, 2",
            &[&first, &(end + 1), &step],
        )
        .await?;
    for r in rows {
        fold.row(r.get(0), r.get(1), r.get(2), r.get(3));
    }
    Ok(fold.finish())
}

async fn series(c: &Client, q: &SeriesQuery) -> Result<Series, StoreError> {
    let (step, first, end, buckets) = fold::buckets(q.since, q.until, q.bucket_minutes)?;
    let hourly = fold::hourly(step, first, q.tool.as_deref());
    let (table, col, unit) = if hourly {
        ("rollup_hour", "hour", 60)
    } else {
        ("rollup_minute", "minute", 1)
    };
    let mut sql = format!(
        "SELECT ({col} - $1) / $3, category, sum(count)::bigint, sum(errors)::bigint,
                sum(timed)::bigint, sum(sum_time)
         FROM {table} WHERE {col} >= $1 AND {col} < $2"
    );
    let mut args: Args = vec![
        Box::new(first / unit),
        Box::new((end + unit - 1).div_euclid(unit)),
        Box::new(step / unit),
    ];
    for (col, v) in [("category", &q.category), ("tool", &q.tool)] {
        if let Some(v) = v {
            args.push(Box::new(v.clone()));
            sql.push_str(&format!(" AND {col} = ${}", args.len()));
        }
    }
    sql.push_str(" GROUP BY 1, 2");
    let mut fold = SeriesFold::new(step, first, buckets);
    for r in c.query(&sql, &refs(&args)).await? {
        fold.row(SeriesRow {
            bucket: r.get(0),
            category: r.get(1),
            count: r.get(2),
            errors: r.get(3),
            timed: r.get(4),
            sum_time: r.get(5),
        });
    }
    Ok(fold.finish())
}

async fn summary(c: &Client, now: Timestamp) -> Result<Summary, StoreError> {
    let now_min = now.as_micros().div_euclid(MINUTE);
    let mut last_hour_by_category = BTreeMap::new();
    let rows = c
        .query(
            "SELECT category, sum(count)::bigint FROM rollup_minute WHERE minute > $1 GROUP BY category",
            &[&(now_min - 60)],
        )
        .await?;
    for r in rows {
        last_hour_by_category.insert(r.get::<_, String>(0), r.get::<_, i64>(1) as u64);
    }
    let mut last_day_by_level = BTreeMap::new();
    let rows = c
        .query(
            "SELECT level, sum(count)::bigint FROM rollup_minute WHERE minute > $1 GROUP BY level",
            &[&(now_min - 24 * 60)],
        )
        .await?;
    for r in rows {
        let level = Level::from_rank(r.get(0)).map_or("unknown", Level::as_str);
        last_day_by_level.insert(level.to_owned(), r.get::<_, i64>(1) as u64);
    }
    let row = c
        .query_one(
            "SELECT coalesce(sum(count), 0)::bigint, coalesce(sum(errors), 0)::bigint FROM rollup_minute
             WHERE minute > $1 AND category = 'tool_execution' AND outcome != ''",
            &[&(now_min - 60)],
        )
        .await?;
    let (execs, failures): (i64, i64) = (row.get(0), row.get(1));
    let day_ago = Timestamp::from_micros(now.as_micros() - 24 * HOUR);
    let top_tools = tool_stats(
        c,
        &StatsQuery {
            since: Some(day_ago),
            limit: 10,
            ..Default::default()
        },
    )
    .await?;
    let active_users: i64 = c
        .query_one(
            r#"SELECT count(DISTINCT "user") FROM user_tool WHERE last_ts >= $1"#,
            &[&day_ago.as_micros()],
        )
        .await?
        .get(0);
    let store = store_stats(c).await?;
    Ok(Summary {
        at: now,
        total_events: store.events,
        last_hour_by_category,
        last_day_by_level,
        tool_executions_last_hour: execs as u64,
        tool_failures_last_hour: failures as u64,
        top_tools,
        active_users_last_day: active_users as u64,
        store,
    })
}
