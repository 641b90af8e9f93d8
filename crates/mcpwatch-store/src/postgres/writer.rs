//! The writer of one process: a batch and its rollup deltas in one transaction, so statistics
//! never trail the events and a crash leaves nothing to recover. Each rollup row carries this
//! writer's name: writers on other nodes add to rows of their own.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use mcpwatch_core::clock::{Clock, SystemClock};
use mcpwatch_core::Timestamp;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::schema::{self, DAY};
use super::Db;
use crate::rollup::{Rollups, HOUR, MAX_PATTERNS_PER_USER_TOOL, MINUTE};
use crate::{EventWriter, PreparedEvent, RetentionPolicy, RetentionStep, StoreError};

/// Partitions made ahead of the current day.
const DAYS_AHEAD: i64 = 2;

const INSERT_EVENTS: &str = r#"INSERT INTO events(id, ts, level, category, event_type, server, tool, "user", session, outcome, body)
SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
ON CONFLICT DO NOTHING RETURNING id, ts"#;

/// Writes to the PostgreSQL store. Owned by the writer thread.
pub struct PgWriter {
    db: Db,
    name: String,
    /// Days known to have a partition.
    days: HashSet<i64>,
    /// The connection held across the steps of a batch; replaced after an error.
    conn: Option<Arc<deadpool_postgres::Object>>,
}

/// PostgreSQL text cannot hold NUL; such a character in a key column becomes U+FFFD (the body
/// is JSON, where NUL is always escaped).
fn text(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

fn owned(s: Option<&str>) -> Option<String> {
    s.map(|s| text(s).into_owned())
}

impl PgWriter {
    pub(super) fn new(db: Db, name: &str) -> Result<Self, StoreError> {
        let mut w = Self {
            db,
            name: text(name).into_owned(),
            days: HashSet::new(),
            conn: None,
        };
        w.ensure_ahead(SystemClock.now())?;
        Ok(w)
    }

    fn conn(&mut self) -> Result<Arc<deadpool_postgres::Object>, StoreError> {
        if let Some(c) = &self.conn {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(self.db.connection()?);
        self.conn = Some(c.clone());
        Ok(c)
    }

    /// Makes the partitions of `now`'s day and the next ones, so that ingest at midnight never
    /// waits on DDL.
    fn ensure_ahead(&mut self, now: Timestamp) -> Result<(), StoreError> {
        let today = now.as_micros().div_euclid(DAY);
        self.ensure_days((today..=today + DAYS_AHEAD).collect())
    }

    fn ensure_days(&mut self, days: BTreeSet<i64>) -> Result<(), StoreError> {
        let missing: Vec<i64> = days
            .into_iter()
            .filter(|d| !self.days.contains(d))
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        let conn = self.conn()?;
        let made = missing.clone();
        self.db.block(async move {
            for day in made {
                schema::ensure_partition(&conn, day).await?;
            }
            Ok(())
        })?;
        self.days.extend(missing);
        Ok(())
    }

    fn append_inner(
        &mut self,
        batch: &[&PreparedEvent],
        fresh: &mut Vec<bool>,
    ) -> Result<usize, StoreError> {
        if batch.is_empty() {
            return Ok(0);
        }
        self.ensure_days(
            batch
                .iter()
                .map(|p| p.event.timestamp.as_micros().div_euclid(DAY))
                .collect(),
        )?;
        let n = batch.len();
        let (mut ids, mut ts, mut level) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut category, mut kind, mut server, mut tool) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut user, mut session, mut outcome, mut body) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for p in batch {
            let e = &p.event;
            ids.push(text(&e.id).into_owned());
            ts.push(e.timestamp.as_micros());
            level.push(e.level.rank());
            category.push(text(&e.category).into_owned());
            kind.push(text(&e.event_type).into_owned());
            server.push(owned(e.server()));
            tool.push(owned(e.tool()));
            user.push(owned(e.user()));
            session.push(owned(e.session()));
            outcome.push(owned(e.metadata.get("outcome").and_then(Value::as_str)));
            body.push(p.body.clone());
        }
        let conn = self.conn()?;
        let c = conn.clone();
        let inserted: HashSet<(String, i64)> = self.db.block(async move {
            c.batch_execute("BEGIN").await?;
            let st = c.prepare_cached(INSERT_EVENTS).await?;
            let rows = c
                .query(
                    &st,
                    &[
                        &ids, &ts, &level, &category, &kind, &server, &tool, &user, &session,
                        &outcome, &body,
                    ],
                )
                .await?;
            Ok(rows.iter().map(|r| (r.get(0), r.get(1))).collect())
        })?;
        let mut rollups = Rollups::default();
        let mut seen = HashSet::with_capacity(inserted.len());
        for p in batch {
            let e = &p.event;
            let key = (text(&e.id).into_owned(), e.timestamp.as_micros());
            let new = inserted.contains(&key) && seen.insert(key);
            fresh.push(new);
            if new {
                rollups.add(e, 0);
            }
        }
        let added = seen.len();
        let flush = Flush::new(&rollups, &self.name);
        let (name, c) = (self.name.clone(), conn);
        self.db.block(async move {
            flush.write(&c).await?;
            if added > 0 {
                exec(
                    &c,
                    "INSERT INTO event_count(writer, value) VALUES ($1, $2)
                     ON CONFLICT (writer) DO UPDATE SET value = event_count.value + excluded.value",
                    &[&name, &(added as i64)],
                )
                .await?;
            }
            c.batch_execute("COMMIT").await?;
            Ok(())
        })?;
        Ok(added)
    }

    /// After a failed step the transaction may be open: roll it back, or drop the connection.
    fn abort(&mut self) {
        let Some(c) = self.conn.take() else { return };
        let back = c.clone();
        if self
            .db
            .block(async move { back.batch_execute("ROLLBACK").await.map_err(Into::into) })
            .is_ok()
        {
            self.conn = Some(c);
        }
    }
}

impl EventWriter for PgWriter {
    fn append_marking(
        &mut self,
        batch: &[&PreparedEvent],
        _settle: bool,
        fresh: &mut Vec<bool>,
    ) -> Result<usize, StoreError> {
        fresh.clear();
        let result = self.append_inner(batch, fresh);
        if result.is_err() {
            fresh.clear();
            self.abort();
        }
        result
    }

    fn settle(&mut self) -> Result<(), StoreError> {
        // Rollups are written with their batch: nothing waits.
        Ok(())
    }

    fn retain(
        &mut self,
        policy: &RetentionPolicy,
        now: Timestamp,
        budget: usize,
    ) -> Result<RetentionStep, StoreError> {
        self.ensure_ahead(now)?;
        let cutoff = now.saturating_sub(policy.max_age).as_micros();
        let conn = self.conn()?;
        let (name, max_size, today) = (
            self.name.clone(),
            policy.max_size,
            now.as_micros().div_euclid(DAY),
        );
        let result = self.db.block(async move {
            let c: &tokio_postgres::Client = &conn;
            c.batch_execute("BEGIN").await?;
            let mut deleted = 0u64;
            let mut dropped = Vec::new();
            // Whole days past the cutoff go at once.
            let days = schema::partitions(c).await?;
            for &day in &days {
                if (day + 1) * DAY <= cutoff {
                    deleted += drop_partition(c, day).await?;
                    dropped.push(day);
                }
            }
            // The day the cutoff falls in, a slice at a time.
            let n = c
                .execute(
                    "DELETE FROM events WHERE (id, ts) IN
                       (SELECT id, ts FROM events WHERE ts < $1 ORDER BY ts LIMIT $2)",
                    &[&cutoff, &(budget as i64)],
                )
                .await?;
            deleted += n;
            let mut more = n == budget as u64;
            if let Some(max) = max_size {
                // Over the size limit, the oldest day goes; never the current one.
                let left: Vec<i64> = days
                    .iter()
                    .copied()
                    .filter(|d| !dropped.contains(d))
                    .collect();
                if !more && used_bytes(c).await? > max {
                    if let Some(&oldest) = left.first().filter(|&&d| d < today) {
                        deleted += drop_partition(c, oldest).await?;
                        dropped.push(oldest);
                        more = true;
                    }
                }
            }
            if deleted > 0 {
                c.execute(
                    "INSERT INTO event_count(writer, value) VALUES ($1, $2)
                     ON CONFLICT (writer) DO UPDATE SET value = event_count.value + excluded.value",
                    &[&name, &-(deleted as i64)],
                )
                .await?;
            }
            let (minute, hour) = (cutoff.div_euclid(MINUTE), cutoff.div_euclid(HOUR));
            for table in ["rollup_minute", "security_minute"] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE minute < $1"),
                    &[&minute],
                )
                .await?;
            }
            for table in ["rollup_hour", "tool_hour", "tool_hist"] {
                c.execute(&format!("DELETE FROM {table} WHERE hour < $1"), &[&hour])
                    .await?;
            }
            for table in ["user_tool", "user_params"] {
                c.execute(
                    &format!("DELETE FROM {table} WHERE last_ts < $1"),
                    &[&cutoff],
                )
                .await?;
            }
            c.batch_execute("COMMIT").await?;
            Ok((RetentionStep { deleted, more }, dropped))
        });
        match result {
            Ok((step, dropped)) => {
                for d in dropped {
                    self.days.remove(&d);
                }
                Ok(step)
            }
            Err(e) => {
                self.abort();
                Err(e)
            }
        }
    }
}

/// Counts and drops the partition of `day`: instant, whatever its size, and never a long lock
/// on the rows ingest writes.
async fn drop_partition(c: &tokio_postgres::Client, day: i64) -> Result<u64, StoreError> {
    let name = schema::partition_name(day);
    let n: i64 = c
        .query_one(&format!("SELECT count(*) FROM {name}"), &[])
        .await?
        .get(0);
    c.batch_execute(&format!("DROP TABLE {name}")).await?;
    Ok(n.max(0) as u64)
}

/// Bytes used by the events and the rollups.
pub(super) async fn used_bytes(c: &tokio_postgres::Client) -> Result<u64, StoreError> {
    let n: i64 = c
        .query_one(
            "SELECT (coalesce((SELECT sum(pg_total_relation_size(inhrelid)) FROM pg_inherits
                               WHERE inhparent = 'events'::regclass), 0)
                    + pg_total_relation_size('rollup_minute') + pg_total_relation_size('rollup_hour')
                    + pg_total_relation_size('security_minute') + pg_total_relation_size('tool_hour')
                    + pg_total_relation_size('tool_hist') + pg_total_relation_size('user_tool')
                    + pg_total_relation_size('user_params'))::bigint",
            &[],
        )
        .await?
        .get(0);
    Ok(n.max(0) as u64)
}

/// Runs a statement prepared once per connection: an unprepared one costs a second round trip
/// (parse and describe) every time.
async fn exec(
    c: &deadpool_postgres::ClientWrapper,
    sql: &str,
    args: &[&(dyn ToSql + Sync)],
) -> Result<(), StoreError> {
    let st = c.prepare_cached(sql).await?;
    c.execute(&st, args).await?;
    Ok(())
}

/// A column of integers, of texts (the arrays one UNNEST parameter takes).
type Ints = Vec<i64>;
type Texts = Vec<String>;

/// The rollup deltas of one batch as arrays, one statement per table.
struct Flush {
    writer: String,
    minute: (Ints, Texts, Ints, Texts, Texts, Agg),
    hour: (Ints, Texts, Ints, Texts, Agg),
    security: (Ints, Texts, Ints, Ints),
    tool: ToolCols,
    hist: (Ints, Texts, Texts, Ints, Ints),
    user: (Texts, Texts, Texts, Ints, Ints, Ints),
    params: (Texts, Texts, Texts, Texts, Ints, Ints),
}

#[derive(Default)]
struct Agg {
    count: Vec<i64>,
    errors: Vec<i64>,
    timed: Vec<i64>,
    sum_time: Vec<f64>,
}

impl Agg {
    fn push(&mut self, a: &crate::rollup::MinuteAgg) {
        self.count.push(a.count);
        self.errors.push(a.errors);
        self.timed.push(a.timed);
        self.sum_time.push(a.sum_time);
    }
}

#[derive(Default)]
struct ToolCols {
    hour: Vec<i64>,
    server: Vec<String>,
    tool: Vec<String>,
    outcome: Vec<String>,
    count: Vec<i64>,
    sum_time: Vec<f64>,
    min_time: Vec<f64>,
    max_time: Vec<f64>,
    last_ts: Vec<i64>,
}

impl Flush {
    fn new(r: &Rollups, writer: &str) -> Self {
        let s = |i: u32| text(r.strings.name(i)).into_owned();
        let mut f = Flush {
            writer: writer.to_owned(),
            minute: Default::default(),
            hour: Default::default(),
            security: Default::default(),
            tool: Default::default(),
            hist: Default::default(),
            user: Default::default(),
            params: Default::default(),
        };
        for (&(minute, cat, level, tool, outcome), a) in &r.minute {
            let m = &mut f.minute;
            m.0.push(minute);
            m.1.push(s(cat));
            m.2.push(level);
            m.3.push(s(tool));
            m.4.push(s(outcome));
            m.5.push(a);
        }
        for (&(hour, cat, level, outcome), a) in &r.hour {
            let h = &mut f.hour;
            h.0.push(hour);
            h.1.push(s(cat));
            h.2.push(level);
            h.3.push(s(outcome));
            h.4.push(a);
        }
        for (&(minute, kind), &(count, errors)) in &r.security {
            let k = &mut f.security;
            k.0.push(minute);
            k.1.push(s(kind));
            k.2.push(count);
            k.3.push(errors);
        }
        for (&(hour, server, tool, outcome), a) in &r.tool {
            let t = &mut f.tool;
            t.hour.push(hour);
            t.server.push(s(server));
            t.tool.push(s(tool));
            t.outcome.push(s(outcome));
            t.count.push(a.count);
            t.sum_time.push(a.sum_time);
            t.min_time.push(a.min_time);
            t.max_time.push(a.max_time);
            t.last_ts.push(a.last_ts);
        }
        for (&(hour, server, tool, bucket), &n) in &r.hist {
            let h = &mut f.hist;
            h.0.push(hour);
            h.1.push(s(server));
            h.2.push(s(tool));
            h.3.push(bucket);
            h.4.push(n);
        }
        for (&(user, server, tool), a) in &r.user {
            let u = &mut f.user;
            u.0.push(s(user));
            u.1.push(s(server));
            u.2.push(s(tool));
            u.3.push(a.count);
            u.4.push(a.first_ts);
            u.5.push(a.last_ts);
        }
        // At most MAX_PATTERNS_PER_USER_TOOL new patterns per user and tool in one flush; the
        // statement adds none once a user and tool has that many (so a writer keeps fewer than
        // twice the cap, whatever the keys an attacker sends).
        let mut per: crate::rollup::HashMap<(u32, u32, u32), i64> = Default::default();
        for (&(user, server, tool, keys), &(n, last)) in &r.params {
            let c = per.entry((user, server, tool)).or_default();
            *c += 1;
            if *c > MAX_PATTERNS_PER_USER_TOOL {
                continue;
            }
            let p = &mut f.params;
            p.0.push(s(user));
            p.1.push(s(server));
            p.2.push(s(tool));
            p.3.push(s(keys));
            p.4.push(n);
            p.5.push(last);
        }
        f
    }

    async fn write(&self, c: &deadpool_postgres::ClientWrapper) -> Result<(), StoreError> {
        let w = &self.writer;
        let m = &self.minute;
        if !m.0.is_empty() {
            exec(
                c,
                "INSERT INTO rollup_minute(writer, minute, category, level, tool, outcome, count, errors, timed, sum_time)
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::text[], $7::bigint[], $8::bigint[], $9::bigint[], $10::float8[])
                 ON CONFLICT (minute, category, level, tool, outcome, writer) DO UPDATE SET
                   count = rollup_minute.count + excluded.count, errors = rollup_minute.errors + excluded.errors,
                   timed = rollup_minute.timed + excluded.timed, sum_time = rollup_minute.sum_time + excluded.sum_time",
                &[w, &m.0, &m.1, &m.2, &m.3, &m.4, &m.5.count, &m.5.errors, &m.5.timed, &m.5.sum_time],
            )
            .await?;
        }
        let h = &self.hour;
        if !h.0.is_empty() {
            exec(
                c,
                "INSERT INTO rollup_hour(writer, hour, category, level, outcome, count, errors, timed, sum_time)
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::text[], $6::bigint[], $7::bigint[], $8::bigint[], $9::float8[])
                 ON CONFLICT (hour, category, level, outcome, writer) DO UPDATE SET
                   count = rollup_hour.count + excluded.count, errors = rollup_hour.errors + excluded.errors,
                   timed = rollup_hour.timed + excluded.timed, sum_time = rollup_hour.sum_time + excluded.sum_time",
                &[w, &h.0, &h.1, &h.2, &h.3, &h.4.count, &h.4.errors, &h.4.timed, &h.4.sum_time],
            )
            .await?;
        }
        let k = &self.security;
        if !k.0.is_empty() {
            exec(
                c,
                "INSERT INTO security_minute(writer, minute, event_type, count, errors)
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::bigint[], $5::bigint[])
                 ON CONFLICT (minute, event_type, writer) DO UPDATE SET
                   count = security_minute.count + excluded.count, errors = security_minute.errors + excluded.errors",
                &[w, &k.0, &k.1, &k.2, &k.3],
            )
            .await?;
        }
        let t = &self.tool;
        if !t.hour.is_empty() {
            exec(
                c,
                "INSERT INTO tool_hour(writer, hour, server, tool, outcome, count, sum_time, min_time, max_time, last_ts)
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::float8[], $8::float8[], $9::float8[], $10::bigint[])
                 ON CONFLICT (hour, server, tool, outcome, writer) DO UPDATE SET
                   count = tool_hour.count + excluded.count, sum_time = tool_hour.sum_time + excluded.sum_time,
                   min_time = least(tool_hour.min_time, excluded.min_time),
                   max_time = greatest(tool_hour.max_time, excluded.max_time),
                   last_ts = greatest(tool_hour.last_ts, excluded.last_ts)",
                &[
                    w, &t.hour, &t.server, &t.tool, &t.outcome, &t.count, &t.sum_time, &t.min_time,
                    &t.max_time, &t.last_ts,
                ],
            )
            .await?;
        }
        let h = &self.hist;
        if !h.0.is_empty() {
            exec(
                c,
                "INSERT INTO tool_hist(writer, hour, server, tool, bucket, count)
                 SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
                 ON CONFLICT (hour, server, tool, bucket, writer) DO UPDATE SET count = tool_hist.count + excluded.count",
                &[w, &h.0, &h.1, &h.2, &h.3, &h.4],
            )
            .await?;
        }
        let u = &self.user;
        if !u.0.is_empty() {
            exec(
                c,
                r#"INSERT INTO user_tool(writer, "user", server, tool, count, first_ts, last_ts)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[], $7::bigint[])
                 ON CONFLICT ("user", server, tool, writer) DO UPDATE SET count = user_tool.count + excluded.count,
                   first_ts = least(user_tool.first_ts, excluded.first_ts),
                   last_ts = greatest(user_tool.last_ts, excluded.last_ts)"#,
                &[w, &u.0, &u.1, &u.2, &u.3, &u.4, &u.5],
            )
            .await?;
        }
        let p = &self.params;
        if !p.0.is_empty() {
            exec(
                c,
                r#"INSERT INTO user_params(writer, "user", server, tool, keys, count, last_ts)
                 SELECT $1, n.* FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
                   AS n("user", server, tool, keys, count, last_ts)
                 WHERE EXISTS (SELECT 1 FROM user_params o WHERE o."user" = n."user" AND o.server = n.server
                                 AND o.tool = n.tool AND o.keys = n.keys)
                    OR (SELECT count(DISTINCT keys) FROM user_params o WHERE o."user" = n."user"
                          AND o.server = n.server AND o.tool = n.tool) < $8
                 ON CONFLICT ("user", server, tool, keys, writer) DO UPDATE SET
                   count = user_params.count + excluded.count,
                   last_ts = greatest(user_params.last_ts, excluded.last_ts)"#,
                &[w, &p.0, &p.1, &p.2, &p.3, &p.4, &p.5, &MAX_PATTERNS_PER_USER_TOOL],
            )
            .await?;
        }
        Ok(())
    }
}
