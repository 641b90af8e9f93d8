//! The one writing connection: appends batches with their rollups in one transaction, and
//! deletes history in small steps so retention never stalls ingest.

use std::collections::HashMap;

use mcpwatch_core::{Event, Outcome, Timestamp};
use rusqlite::{params, Connection, Transaction};
use serde_json::Value;

use crate::hist;
use crate::{EventWriter, PreparedEvent, RetentionPolicy, RetentionStep, StoreError};

const MINUTE: i64 = 60_000_000;
const HOUR: i64 = 60 * MINUTE;
/// Distinct parameter-key patterns kept per user and tool: keys are attacker-controlled.
const MAX_PATTERNS_PER_USER_TOOL: i64 = 64;
/// Longest parameter-key pattern kept, in bytes.
const MAX_PATTERN_BYTES: usize = 256;

/// Writes to the SQLite store. Owned by the writer thread.
pub struct SqliteWriter {
    conn: Connection,
}

impl SqliteWriter {
    pub(super) fn new(conn: Connection) -> Self {
        Self { conn }
    }
}

impl EventWriter for SqliteWriter {
    fn append(&mut self, batch: &[&PreparedEvent]) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut agg = Rollups::default();
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO events(id, ts, level, category, event_type, server, tool, user, session, outcome, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            for p in batch {
                let e = &p.event;
                let inserted = insert.execute(params![
                    e.id,
                    e.timestamp.as_micros(),
                    e.level.rank(),
                    e.category,
                    e.event_type,
                    e.server(),
                    e.tool(),
                    e.user(),
                    e.session(),
                    e.metadata.get("outcome").and_then(Value::as_str),
                    p.body,
                ])?;
                if inserted == 1 {
                    agg.add(e);
                }
            }
        }
        let added = agg.added;
        agg.flush(&tx)?;
        tx.commit()?;
        Ok(added)
    }

    fn retain(
        &mut self,
        policy: &RetentionPolicy,
        now: Timestamp,
        budget: usize,
    ) -> Result<RetentionStep, StoreError> {
        let cutoff = now.saturating_sub(policy.max_age).as_micros();
        let tx = self.conn.transaction()?;
        let mut deleted = delete_oldest(&tx, Some(cutoff), budget)?;
        let mut more = deleted == budget as u64;
        if let Some(max) = policy.max_size {
            if !more && used_bytes(&tx)? > max {
                // Delete a slice of the oldest; the next step measures again.
                let n = delete_oldest(&tx, None, budget)?;
                deleted += n;
                more = n > 0;
            }
        }
        if deleted > 0 {
            tx.execute(
                "UPDATE counters SET value = max(0, value - ?1) WHERE name = 'events'",
                [deleted as i64],
            )?;
        }
        tx.execute(
            "DELETE FROM rollup_minute WHERE minute < ?1",
            [cutoff.div_euclid(MINUTE)],
        )?;
        for table in ["tool_hour", "tool_hist"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE hour < ?1"),
                [cutoff.div_euclid(HOUR)],
            )?;
        }
        tx.execute("DELETE FROM user_tool WHERE last_ts < ?1", [cutoff])?;
        tx.execute("DELETE FROM user_params WHERE last_ts < ?1", [cutoff])?;
        tx.commit()?;
        // Hand freed pages back to the file system a little at a time.
        self.conn.execute_batch("PRAGMA incremental_vacuum(2000)")?;
        Ok(RetentionStep { deleted, more })
    }
}

fn delete_oldest(
    tx: &Transaction<'_>,
    before: Option<i64>,
    budget: usize,
) -> Result<u64, StoreError> {
    let n = tx.execute(
        "DELETE FROM events WHERE seq IN (SELECT seq FROM events WHERE ts < ?1 ORDER BY ts LIMIT ?2)",
        params![before.unwrap_or(i64::MAX), budget as i64],
    )?;
    Ok(n as u64)
}

pub(super) fn used_bytes(conn: &Connection) -> Result<u64, StoreError> {
    let pages: i64 = conn.query_row("PRAGMA page_count", [], |r| r.get(0))?;
    let free: i64 = conn.query_row("PRAGMA freelist_count", [], |r| r.get(0))?;
    let size: i64 = conn.query_row("PRAGMA page_size", [], |r| r.get(0))?;
    Ok(((pages - free).max(0) * size) as u64)
}

#[derive(Default)]
struct MinuteAgg {
    count: i64,
    errors: i64,
    timed: i64,
    sum_time: f64,
}

struct ToolAgg {
    count: i64,
    sum_time: f64,
    min_time: f64,
    max_time: f64,
    last_ts: i64,
}

struct UserAgg {
    count: i64,
    first_ts: i64,
    last_ts: i64,
}

/// Rollup deltas of one batch, keyed by borrowed strings of the batch.
#[derive(Default)]
struct Rollups<'a> {
    added: usize,
    minute: HashMap<(i64, &'a str, i64, &'a str, &'a str), MinuteAgg>,
    tool: HashMap<(i64, &'a str, &'a str, &'a str), ToolAgg>,
    hist: HashMap<(i64, &'a str, &'a str, i64), i64>,
    user: HashMap<(&'a str, &'a str, &'a str), UserAgg>,
    params: HashMap<(&'a str, &'a str, &'a str, String), (i64, i64)>,
}

impl<'a> Rollups<'a> {
    fn add(&mut self, e: &'a Event) {
        self.added += 1;
        let ts = e.timestamp.as_micros();
        let tool = e.tool().unwrap_or("");
        let outcome = e
            .metadata
            .get("outcome")
            .and_then(Value::as_str)
            .unwrap_or("");
        let failed = (!outcome.is_empty() && outcome != Outcome::Success.as_str())
            || e.level >= mcpwatch_core::Level::Error;
        let duration = e.duration_secs().filter(|d| d.is_finite() && *d >= 0.0);
        let m = self
            .minute
            .entry((
                ts.div_euclid(MINUTE),
                &e.category,
                e.level.rank(),
                tool,
                outcome,
            ))
            .or_default();
        m.count += 1;
        m.errors += failed as i64;
        if let Some(d) = duration {
            m.timed += 1;
            m.sum_time += d;
        }
        if !e.is_execution_complete() {
            return;
        }
        let server = e.server().unwrap_or("");
        let hour = ts.div_euclid(HOUR);
        let d = duration.unwrap_or(0.0);
        let t = self
            .tool
            .entry((hour, server, tool, outcome))
            .or_insert(ToolAgg {
                count: 0,
                sum_time: 0.0,
                min_time: f64::INFINITY,
                max_time: 0.0,
                last_ts: ts,
            });
        t.count += 1;
        t.sum_time += d;
        t.min_time = t.min_time.min(d);
        t.max_time = t.max_time.max(d);
        t.last_ts = t.last_ts.max(ts);
        *self
            .hist
            .entry((hour, server, tool, hist::bucket_of(d)))
            .or_default() += 1;
        let Some(user) = e.user() else { return };
        let u = self.user.entry((user, server, tool)).or_insert(UserAgg {
            count: 0,
            first_ts: ts,
            last_ts: ts,
        });
        u.count += 1;
        u.first_ts = u.first_ts.min(ts);
        u.last_ts = u.last_ts.max(ts);
        let p = self
            .params
            .entry((user, server, tool, parameter_pattern(e)))
            .or_insert((0, ts));
        p.0 += 1;
        p.1 = p.1.max(ts);
    }

    fn flush(self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        if self.added == 0 {
            return Ok(());
        }
        tx.execute(
            "UPDATE counters SET value = value + ?1 WHERE name = 'events'",
            [self.added as i64],
        )?;
        let mut st = tx.prepare_cached(
            "INSERT INTO rollup_minute(minute, category, level, tool, outcome, count, errors, timed, sum_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO UPDATE SET count = count + excluded.count, errors = errors + excluded.errors,
               timed = timed + excluded.timed, sum_time = sum_time + excluded.sum_time",
        )?;
        for ((minute, cat, level, tool, outcome), a) in &self.minute {
            st.execute(params![
                minute, cat, level, tool, outcome, a.count, a.errors, a.timed, a.sum_time
            ])?;
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO tool_hour(hour, server, tool, outcome, count, sum_time, min_time, max_time, last_ts)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO UPDATE SET count = count + excluded.count, sum_time = sum_time + excluded.sum_time,
               min_time = min(min_time, excluded.min_time), max_time = max(max_time, excluded.max_time),
               last_ts = max(last_ts, excluded.last_ts)",
        )?;
        for ((hour, server, tool, outcome), a) in &self.tool {
            st.execute(params![
                hour, server, tool, outcome, a.count, a.sum_time, a.min_time, a.max_time, a.last_ts
            ])?;
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO tool_hist(hour, server, tool, bucket, count) VALUES (?1, ?2, ?3, ?4, ?5)
             ON CONFLICT DO UPDATE SET count = count + excluded.count",
        )?;
        for ((hour, server, tool, bucket), n) in &self.hist {
            st.execute(params![hour, server, tool, bucket, n])?;
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO user_tool(user, server, tool, count, first_ts, last_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO UPDATE SET count = count + excluded.count, first_ts = min(first_ts, excluded.first_ts),
               last_ts = max(last_ts, excluded.last_ts)",
        )?;
        for ((user, server, tool), a) in &self.user {
            st.execute(params![user, server, tool, a.count, a.first_ts, a.last_ts])?;
        }
        let mut update = tx.prepare_cached(
            "UPDATE user_params SET count = count + ?5, last_ts = max(last_ts, ?6)
             WHERE user = ?1 AND server = ?2 AND tool = ?3 AND keys = ?4",
        )?;
        let mut insert = tx.prepare_cached(
            "INSERT INTO user_params(user, server, tool, keys, count, last_ts)
             SELECT ?1, ?2, ?3, ?4, ?5, ?6
             WHERE (SELECT count(*) FROM user_params WHERE user = ?1 AND server = ?2 AND tool = ?3) < ?7",
        )?;
        for ((user, server, tool, keys), (n, last)) in &self.params {
            if update.execute(params![user, server, tool, keys, n, last])? == 0 {
                insert.execute(params![
                    user,
                    server,
                    tool,
                    keys,
                    n,
                    last,
                    MAX_PATTERNS_PER_USER_TOOL
                ])?;
            }
        }
        Ok(())
    }
}

/// The sorted top-level keys of `metadata.parameters`, e.g. `encoding,path`.
fn parameter_pattern(e: &Event) -> String {
    let Some(Value::Object(params)) = e.metadata.get("parameters") else {
        return String::new();
    };
    let mut keys: Vec<&str> = params.keys().map(String::as_str).collect();
    keys.sort_unstable();
    let mut out = keys.join(",");
    mcpwatch_core::redact::truncate(&mut out, MAX_PATTERN_BYTES);
    out
}
