//! The one writing connection: appends batches, keeps the rollups, deletes history in small
//! steps so retention never stalls ingest.
//!
//! Rollups are derived from events, so they need not be written with every batch: deltas are
//! summed in memory and written in the same transaction as a later batch, at the latest a
//! second later, or when the pipeline asks (it does when nothing else is waiting, at most every
//! 250 ms, and 250 ms after the last batch). A watermark row
//! (`rollup_seq`, the last event sequence the rollups include) is written with them; on start
//! the writer folds in any events past it, so a crash never leaves statistics behind the log.
//!
//! Architecture Invariant: rollups equal a fold of the events up to `rollup_seq`, and
//! `rollup_seq` is brought up to the last event before any query can see the difference
//! for long (one second under load, 250 ms when idle).

use std::time::{Duration, Instant};

use mcpwatch_core::{Event, Timestamp};
use rusqlite::{params, Connection, OptionalExtension, Transaction};
use serde_json::Value;

use super::checkpoint::{Checkpointer, WAL_LIMIT};
use crate::hist;
use crate::rollup::{Rollups, Sym, HOUR, MAX_PATTERNS_PER_USER_TOOL, MINUTE};
use crate::{EventWriter, PreparedEvent, RetentionPolicy, RetentionStep, StoreError};

/// Longest time rollup deltas wait in memory.
const MAX_ROLLUP_DELAY: Duration = Duration::from_secs(1);
/// Most distinct rollup keys held in memory before they are written.
const MAX_ROLLUP_KEYS: usize = 50_000;
/// Bytes one deleted event is taken to write to the WAL, to pace checkpoints.
const TYPICAL_EVENT_BYTES: usize = 600;
/// Events read per step when catching up rollups on start.
const RECOVERY_CHUNK: i64 = 10_000;

/// Writes to the SQLite store. Owned by the writer thread.
pub struct SqliteWriter {
    conn: Connection,
    pending: Rollups,
    last_flush: Instant,
    checkpoints: Checkpointer,
}

impl SqliteWriter {
    pub(super) fn new(conn: Connection, path: &std::path::Path) -> Result<Self, StoreError> {
        // Checkpoints run on their own thread (see checkpoint.rs); a WAL that was reset is
        // truncated back to half the limit, so its size tells whether checkpoints keep up.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        conn.pragma_update(None, "journal_size_limit", (WAL_LIMIT / 2) as i64)?;
        let mut w = Self {
            checkpoints: Checkpointer::start(path)?,
            conn,
            pending: Rollups::default(),
            last_flush: Instant::now(),
        };
        w.recover()?;
        Ok(w)
    }

    /// Folds events committed after the rollup watermark (a crash between flushes) into the
    /// rollups.
    fn recover(&mut self) -> Result<(), StoreError> {
        loop {
            let mark: i64 = self.conn.query_row(
                "SELECT value FROM counters WHERE name = 'rollup_seq'",
                [],
                |r| r.get(0),
            )?;
            let mut st = self
                .conn
                .prepare("SELECT seq, body FROM events WHERE seq > ?1 ORDER BY seq LIMIT ?2")?;
            let rows: Vec<(i64, String)> = st
                .query_map(params![mark, RECOVERY_CHUNK], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect::<Result<_, _>>()?;
            drop(st);
            let Some(&(last, _)) = rows.last() else {
                return Ok(());
            };
            for (seq, body) in &rows {
                // A body that does not parse cannot have been written by us; skip it rather than
                // refuse to start.
                if let Ok(e) = serde_json::from_str::<Event>(body) {
                    self.pending.add(&e, *seq);
                }
            }
            self.pending.last_seq = self.pending.last_seq.max(last);
            let tx = self.conn.transaction()?;
            std::mem::take(&mut self.pending).flush(&tx)?;
            tx.commit()?;
        }
    }
}

impl EventWriter for SqliteWriter {
    fn append_marking(
        &mut self,
        batch: &[&PreparedEvent],
        settle: bool,
        fresh: &mut Vec<bool>,
    ) -> Result<usize, StoreError> {
        fresh.clear();
        let result = self.append_inner(batch, settle, fresh);
        if result.is_err() {
            // The batch is not stored. Deltas of earlier batches were merged with its deltas and
            // cannot be told apart: drop them all and re-derive them from the committed events
            // past the watermark, as on start.
            self.pending = Rollups::default();
            if let Err(e) = self.recover() {
                tracing::warn!(error = %e, "could not re-derive statistics after a failed commit; they are rebuilt at the next start");
            }
        }
        result
    }

    fn settle(&mut self) -> Result<(), StoreError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let tx = self.conn.transaction()?;
        std::mem::take(&mut self.pending).flush(&tx)?;
        tx.commit()?;
        self.last_flush = Instant::now();
        Ok(())
    }

    fn retain(
        &mut self,
        policy: &RetentionPolicy,
        now: Timestamp,
        budget: usize,
    ) -> Result<RetentionStep, StoreError> {
        // Settle first, so deleted events are never folded into rollups afterwards.
        self.settle()?;
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
        for table in ["rollup_minute", "security_minute"] {
            tx.execute(
                &format!("DELETE FROM {table} WHERE minute < ?1"),
                [cutoff.div_euclid(MINUTE)],
            )?;
        }
        for table in ["rollup_hour", "tool_hour", "tool_hist"] {
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
        // Deletions are written to the WAL too; count them at a typical event's size.
        self.checkpoints
            .committed(&self.conn, deleted as usize * TYPICAL_EVENT_BYTES);
        Ok(RetentionStep { deleted, more })
    }
}

impl SqliteWriter {
    fn append_inner(
        &mut self,
        batch: &[&PreparedEvent],
        settle: bool,
        fresh: &mut Vec<bool>,
    ) -> Result<usize, StoreError> {
        let tx = self.conn.transaction()?;
        let mut added = 0;
        {
            let mut insert = tx.prepare_cached(
                "INSERT OR IGNORE INTO events(id, ts, level, category, event_type, server, tool, user, session, outcome, body)
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11)",
            )?;
            // Short bursts, so what shares this core with the collector does not wait for a
            // thousand inserts (see `mcpwatch_core::pace`).
            let mut pacer = mcpwatch_core::pace::Pacer::new();
            for p in batch {
                pacer.step();
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
                fresh.push(inserted == 1);
                if inserted == 1 {
                    added += 1;
                    self.pending.add(e, tx.last_insert_rowid());
                }
            }
        }
        if added > 0 {
            tx.execute(
                "UPDATE counters SET value = value + ?1 WHERE name = 'events'",
                [added as i64],
            )?;
        }
        let flush = settle
            || self.last_flush.elapsed() >= MAX_ROLLUP_DELAY
            || self.pending.keys() >= MAX_ROLLUP_KEYS;
        if flush {
            std::mem::take(&mut self.pending).flush(&tx)?;
        }
        tx.commit()?;
        if flush {
            self.last_flush = Instant::now();
        }
        let bytes = batch.iter().map(|p| p.body.len()).sum();
        self.checkpoints.committed(&self.conn, bytes);
        Ok(added)
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

impl Rollups {
    fn flush(self, tx: &Transaction<'_>) -> Result<(), StoreError> {
        let s = &self.strings;
        let mut st = tx.prepare_cached(
            "INSERT INTO rollup_minute(minute, category, level, tool, outcome, count, errors, timed, sum_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)
             ON CONFLICT DO UPDATE SET count = count + excluded.count, errors = errors + excluded.errors,
               timed = timed + excluded.timed, sum_time = sum_time + excluded.sum_time",
        )?;
        for ((minute, cat, level, tool, outcome), a) in &self.minute {
            st.execute(params![
                minute,
                s.name(*cat),
                level,
                s.name(*tool),
                s.name(*outcome),
                a.count,
                a.errors,
                a.timed,
                a.sum_time
            ])?;
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO rollup_hour(hour, category, level, outcome, count, errors, timed, sum_time)
             VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)
             ON CONFLICT DO UPDATE SET count = count + excluded.count, errors = errors + excluded.errors,
               timed = timed + excluded.timed, sum_time = sum_time + excluded.sum_time",
        )?;
        for ((hour, cat, level, outcome), a) in &self.hour {
            st.execute(params![
                hour,
                s.name(*cat),
                level,
                s.name(*outcome),
                a.count,
                a.errors,
                a.timed,
                a.sum_time
            ])?;
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO security_minute(minute, event_type, count, errors) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT DO UPDATE SET count = count + excluded.count, errors = errors + excluded.errors",
        )?;
        for ((minute, kind), (count, errors)) in &self.security {
            st.execute(params![minute, s.name(*kind), count, errors])?;
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
                hour,
                s.name(*server),
                s.name(*tool),
                s.name(*outcome),
                a.count,
                a.sum_time,
                a.min_time,
                a.max_time,
                a.last_ts
            ])?;
        }
        // Histograms are merged in Rust: one row per hour, server and tool.
        let mut by_key: std::collections::BTreeMap<
            (i64, Sym, Sym),
            std::collections::BTreeMap<i64, u64>,
        > = Default::default();
        for (&(hour, server, tool, bucket), &n) in &self.hist {
            *by_key
                .entry((hour, server, tool))
                .or_default()
                .entry(bucket)
                .or_default() += n as u64;
        }
        let mut read = tx.prepare_cached(
            "SELECT buckets FROM tool_hist WHERE hour = ?1 AND server = ?2 AND tool = ?3",
        )?;
        let mut write = tx.prepare_cached(
            "INSERT OR REPLACE INTO tool_hist(hour, server, tool, buckets) VALUES (?1, ?2, ?3, ?4)",
        )?;
        for ((hour, server, tool), mut buckets) in by_key {
            let (server, tool) = (s.name(server), s.name(tool));
            let existing: Option<Vec<u8>> = read
                .query_row(params![hour, server, tool], |r| r.get(0))
                .optional()?;
            if let Some(blob) = existing {
                hist::decode_into(&blob, &mut buckets);
            }
            write.execute(params![hour, server, tool, hist::encode(&buckets)])?;
        }
        let mut st = tx.prepare_cached(
            "INSERT INTO user_tool(user, server, tool, count, first_ts, last_ts) VALUES (?1, ?2, ?3, ?4, ?5, ?6)
             ON CONFLICT DO UPDATE SET count = count + excluded.count, first_ts = min(first_ts, excluded.first_ts),
               last_ts = max(last_ts, excluded.last_ts)",
        )?;
        for ((user, server, tool), a) in &self.user {
            st.execute(params![
                s.name(*user),
                s.name(*server),
                s.name(*tool),
                a.count,
                a.first_ts,
                a.last_ts
            ])?;
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
            let (user, server, tool, keys) =
                (s.name(*user), s.name(*server), s.name(*tool), s.name(*keys));
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
        if self.last_seq > 0 {
            tx.execute(
                "UPDATE counters SET value = max(value, ?1) WHERE name = 'rollup_seq'",
                [self.last_seq],
            )?;
        }
        Ok(())
    }
}
