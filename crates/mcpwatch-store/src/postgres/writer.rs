//! The writer of one process. A batch is one statement, so one implicit transaction: the
//! events, the number stored, and a `rollup_pending` row naming the events that were new (their
//! `(id, ts)`). Rollup deltas are summed in memory and written later, with the removal of the
//! pending rows they include, in one transaction: when the pipeline asks (it does when nothing
//! else waits, at most every 250 ms), at the latest a second after the last write, or when the
//! deltas hold many keys. Writing them with every batch upserted more rollup rows than there
//! were events (a batch of a thousand tool calls touches hundreds of user, pattern and
//! histogram rows) and cost more than the events themselves; folded over a second, each row is
//! written once.
//!
//! Each writer holds a session advisory lock on its `owner` (a random number, the key of its
//! pending rows) on a connection of its own. A writer that died lost its lock with its
//! connection: any writer (on start, and before each retention pass) folds the events of the
//! pending rows whose owner lock it can take, from the log, and deletes those rows in the same
//! transaction, so nothing is folded twice. A writer whose flush finds fewer of its rows than it
//! wrote (another writer took them while its lock connection was down) rolls back and folds
//! what is left from the log instead.
//!
//! Architecture Invariant: rollups plus the events named by `rollup_pending` equal a fold of
//! the log, and each rollup row carries this writer's name: writers on other nodes add to rows
//! of their own.

use std::borrow::Cow;
use std::collections::{BTreeSet, HashSet};
use std::hash::BuildHasher;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_core::clock::{Clock, SystemClock};
use mcpwatch_core::{Event, Timestamp};
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::schema::{self, DAY};
use super::Db;
use crate::rollup::{Rollups, HOUR, MAX_PATTERNS_PER_USER_TOOL, MINUTE};
use crate::{EventWriter, PreparedEvent, RetentionPolicy, RetentionStep, StoreError};

/// Partitions made ahead of the current day.
const DAYS_AHEAD: i64 = 2;
/// Least time between two writes of the rollup deltas.
const MAX_ROLLUP_DELAY: Duration = Duration::from_secs(1);
/// Longest time rollup deltas wait in memory while batches keep coming.
const MAX_STATS_LAG: Duration = Duration::from_secs(5);
/// The deltas are written again no sooner than this many times as long as their last write
/// took, so that writing them takes at most about a tenth of the writer's time. Under load the
/// rows touched per write stop growing with the rate (every user, tool and latency bucket is
/// touched within a second), and writing them every second took 15 to 40 % of the writer's
/// time (16,000 upserts in 150 to 400 ms, benches/ingest.rs BENCH_STORE=postgres).
const FLUSH_SPACING: u32 = 9;
/// Most distinct rollup keys held in memory before they are written.
const MAX_ROLLUP_KEYS: usize = 50_000;
/// Pending rows folded from the log per transaction when recovering.
const RECOVERY_ROWS: i64 = 20;

/// A batch: its events, its pending row and the count, in one statement (so one transaction
/// and one round trip); answers how many events were new and, unless all of them were, which
/// (NULL when none was: `array_agg` of no rows is NULL, so the count, not the NULL, says
/// whether all were).
const INSERT_BATCH: &str = r#"WITH ins AS (
  INSERT INTO events(id, ts, level, category, event_type, server, tool, "user", session, outcome, body)
  SELECT * FROM UNNEST($1::text[], $2::bigint[], $3::bigint[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], $10::text[], $11::text[])
  ON CONFLICT DO NOTHING RETURNING id, ts
), pending AS (
  INSERT INTO rollup_pending(owner, seq, ids, ts)
  SELECT $12, $13, array_agg(id), array_agg(ts) FROM ins HAVING count(*) > 0
), counted AS (
  INSERT INTO event_count(writer, value) SELECT $14, count(*) FROM ins HAVING count(*) > 0
  ON CONFLICT (writer) DO UPDATE SET value = event_count.value + excluded.value
)
SELECT count(*), CASE WHEN count(*) < $15 THEN array_agg(id) END, CASE WHEN count(*) < $15 THEN array_agg(ts) END
FROM ins"#;

/// The least time between two writes of the deltas when the last one took `took`: a second,
/// or nine times as long as that write, at most [`MAX_STATS_LAG`].
fn flush_gap(took: Duration) -> Duration {
    (took * FLUSH_SPACING).clamp(MAX_ROLLUP_DELAY, MAX_STATS_LAG)
}

/// Writes to the PostgreSQL store. Owned by the writer thread.
pub struct PgWriter {
    db: Db,
    name: String,
    /// The key of this writer's pending rows and of the advisory lock that says it lives.
    owner: i64,
    /// The connection holding that lock, out of the pool (closing it releases the lock).
    lock: Option<Arc<deadpool_postgres::ClientWrapper>>,
    /// Days known to have a partition.
    days: HashSet<i64>,
    /// The connection batches are written on; replaced after an error.
    conn: Option<Arc<deadpool_postgres::Object>>,
    /// Rollup deltas not yet written, of the pending rows `1..=seq` not yet flushed.
    deltas: Rollups,
    /// Pending rows written since the last flush.
    rows: i64,
    /// The sequence number of this writer's last pending row.
    seq: i64,
    last_flush: Instant,
    /// How long the last write of the deltas took.
    flush_took: Duration,
    /// Deltas were dropped (a flush failed): the pending rows are folded from the log at the
    /// next flush, and batches are not folded in memory until then.
    lost: bool,
    known: Known,
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

/// A key no other writer has: random, from the standard library's per-process hash seed, the
/// process id and the time.
fn new_owner() -> i64 {
    use std::hash::Hasher;
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.write_i64(SystemClock.now().as_micros());
    h.finish() as i64
}

impl PgWriter {
    pub(super) fn new(db: Db, name: &str) -> Result<Self, StoreError> {
        let mut w = Self {
            db,
            name: text(name).into_owned(),
            owner: new_owner(),
            lock: None,
            days: HashSet::new(),
            conn: None,
            deltas: Rollups::default(),
            rows: 0,
            seq: 0,
            last_flush: Instant::now(),
            flush_took: Duration::ZERO,
            lost: false,
            known: Known::default(),
        };
        w.lock()?;
        w.ensure_ahead(SystemClock.now())?;
        w.recover_orphans()?;
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

    /// The connection holding this writer's lock; a new one (locked again) if it was lost.
    fn lock(&mut self) -> Result<Arc<deadpool_postgres::ClientWrapper>, StoreError> {
        if let Some(c) = &self.lock {
            if !c.is_closed() {
                return Ok(c.clone());
            }
        }
        let c = Arc::new(deadpool_postgres::Object::take(self.db.connection()?));
        let (l, owner) = (c.clone(), self.owner);
        // Not taken only while another writer folds this one's rows (it found the lock free
        // while the connection was down); the flush then notices that they are gone.
        self.db.block(async move {
            l.query_one("SELECT pg_try_advisory_lock($1)", &[&owner])
                .await?;
            Ok(())
        })?;
        self.lock = Some(c.clone());
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
        let c = self.conn()?;
        let (owner, seq, name) = (self.owner, self.seq + 1, self.name.clone());
        let (added, some) = self.db.block(async move {
            let st = c.prepare_cached(INSERT_BATCH).await?;
            let row = c
                .query_one(
                    &st,
                    &[
                        &ids,
                        &ts,
                        &level,
                        &category,
                        &kind,
                        &server,
                        &tool,
                        &user,
                        &session,
                        &outcome,
                        &body,
                        &owner,
                        &seq,
                        &name,
                        &(n as i64),
                    ],
                )
                .await?;
            let added: i64 = row.get(0);
            let some: Option<(Vec<String>, Vec<i64>)> =
                row.get::<_, Option<Vec<String>>>(1).zip(row.get(2));
            Ok((added as usize, some))
        })?;
        // Committed: from here on, nothing may fail the batch.
        if added > 0 {
            self.seq = seq;
            self.rows += 1;
        }
        if added == n {
            // Every event was new (the usual case): nothing to look up.
            fresh.resize(n, true);
            if !self.lost {
                for p in batch {
                    self.deltas.add(&p.event, 0);
                }
            }
        } else {
            let (ids, ts) = some.unwrap_or_default();
            let inserted: HashSet<(String, i64)> = ids.into_iter().zip(ts).collect();
            let mut seen = HashSet::with_capacity(inserted.len());
            for p in batch {
                let e = &p.event;
                let key = (text(&e.id).into_owned(), e.timestamp.as_micros());
                let new = inserted.contains(&key) && seen.insert(key);
                fresh.push(new);
                if new && !self.lost {
                    self.deltas.add(e, 0);
                }
            }
        }
        Ok(added)
    }

    fn gap(&self) -> Duration {
        flush_gap(self.flush_took)
    }

    /// Writes the deltas if it is time; a failure is logged, the batch stays committed.
    fn maybe_flush(&mut self, settle: bool) {
        let due = settle
            || self.lost
            || self.last_flush.elapsed() >= self.gap()
            || self.deltas.keys() >= MAX_ROLLUP_KEYS;
        if due {
            if let Err(e) = self.flush() {
                tracing::warn!(error = %e, "could not write the statistics; they are folded from the log at the next attempt");
            }
        }
    }

    /// Writes the deltas and removes the pending rows they include, in one transaction. When
    /// the rows are not all there, or anything fails, the deltas are dropped and the rows that
    /// are left are folded from the log instead.
    fn flush(&mut self) -> Result<(), StoreError> {
        if self.lost {
            return self.recover_own();
        }
        if self.rows == 0 {
            self.last_flush = Instant::now();
            return Ok(());
        }
        let started = Instant::now();
        let deltas = std::mem::take(&mut self.deltas);
        let flush = Flush::new(&deltas, &self.name, &self.known);
        let (owner, upto, want) = (self.owner, self.seq, self.rows);
        let result = self.conn().and_then(|c| {
            self.db.block(async move {
                c.batch_execute("BEGIN").await?;
                let stored = flush.write(&c).await?;
                let st = c
                    .prepare_cached("DELETE FROM rollup_pending WHERE owner = $1 AND seq <= $2")
                    .await?;
                let got = c.execute(&st, &[&owner, &upto]).await?;
                if got as i64 != want {
                    c.batch_execute("ROLLBACK").await?;
                    return Ok(None);
                }
                c.batch_execute("COMMIT").await?;
                Ok(Some(stored))
            })
        });
        match result {
            Ok(Some(stored)) => {
                if self.known.len() + stored.len() > MAX_KNOWN {
                    self.known.clear();
                }
                self.known.extend(stored);
                self.rows = 0;
                self.last_flush = Instant::now();
                self.flush_took = started.elapsed();
                Ok(())
            }
            Ok(None) => {
                tracing::warn!("another writer folded some of this writer's pending statistics (its lock connection was lost); folding the rest from the log");
                self.recover_own()
            }
            Err(e) => {
                self.abort();
                // Whether the commit happened is not known: the log says.
                self.lost = true;
                self.rows = 0;
                Err(e)
            }
        }
    }

    /// Folds this writer's pending rows from the log (after its deltas were dropped).
    fn recover_own(&mut self) -> Result<(), StoreError> {
        self.lost = true;
        self.deltas = Rollups::default();
        self.rows = 0;
        let c = self.lock()?;
        let (name, owner) = (self.name.clone(), self.owner);
        self.db
            .block(async move { recover(&c, &name, owner).await.map(drop) })?;
        self.lost = false;
        self.last_flush = Instant::now();
        Ok(())
    }

    /// Folds the pending rows of writers that died (whose lock is free) from the log.
    fn recover_orphans(&mut self) -> Result<(), StoreError> {
        let c = self.lock()?;
        let (name, me) = (self.name.clone(), self.owner);
        let folded = self.db.block(async move {
            let owners: Vec<i64> = c
                .query(
                    "SELECT DISTINCT owner FROM rollup_pending WHERE owner <> $1",
                    &[&me],
                )
                .await?
                .iter()
                .map(|r| r.get(0))
                .collect();
            let mut folded = 0;
            for owner in owners {
                let free: bool = c
                    .query_one("SELECT pg_try_advisory_lock($1)", &[&owner])
                    .await?
                    .get(0);
                if free {
                    let result = recover(&c, &name, owner).await;
                    c.execute("SELECT pg_advisory_unlock($1)", &[&owner])
                        .await?;
                    folded += result?;
                }
            }
            Ok(folded)
        })?;
        if folded > 0 {
            tracing::info!(
                events = folded,
                "folded the statistics of events a stopped writer had not written yet"
            );
        }
        Ok(())
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

/// Folds the events of `owner`'s pending rows from the log into rollup rows of `name`,
/// deleting the rows in the same transactions; answers how many events were folded.
async fn recover(
    c: &deadpool_postgres::ClientWrapper,
    name: &str,
    owner: i64,
) -> Result<u64, StoreError> {
    let mut folded = 0;
    loop {
        c.batch_execute("BEGIN").await?;
        let result = async {
            let rows = c
                .query(
                    "DELETE FROM rollup_pending WHERE (owner, seq) IN
                       (SELECT owner, seq FROM rollup_pending WHERE owner = $1 ORDER BY seq LIMIT $2)
                     RETURNING ids, ts",
                    &[&owner, &RECOVERY_ROWS],
                )
                .await?;
            let (mut ids, mut ts) = (Vec::<String>::new(), Vec::<i64>::new());
            for r in &rows {
                ids.extend(r.get::<_, Vec<String>>(0));
                ts.extend(r.get::<_, Vec<i64>>(1));
            }
            let bodies = c
                .query(
                    "SELECT e.body FROM events e JOIN UNNEST($1::text[], $2::bigint[]) AS u(id, ts)
                       ON e.id = u.id AND e.ts = u.ts",
                    &[&ids, &ts],
                )
                .await?;
            let mut deltas = Rollups::default();
            for b in &bodies {
                // A body that does not parse cannot have been written by us; skip it.
                if let Ok(e) = serde_json::from_str::<Event>(b.get(0)) {
                    deltas.add(&e, 0);
                }
            }
            Flush::new(&deltas, name, &Known::default()).write(c).await?;
            Ok::<_, StoreError>((rows.is_empty(), bodies.len() as u64))
        }
        .await;
        match result {
            Ok((done, n)) => {
                c.batch_execute("COMMIT").await?;
                folded += n;
                if done {
                    return Ok(folded);
                }
            }
            Err(e) => {
                let _ = c.batch_execute("ROLLBACK").await;
                return Err(e);
            }
        }
    }
}

impl Drop for PgWriter {
    fn drop(&mut self) {
        // Best effort: whatever is not written now is folded by the next writer to start.
        if self.rows > 0 || self.lost {
            let _ = self.flush();
        }
    }
}

impl EventWriter for PgWriter {
    fn append_marking(
        &mut self,
        batch: &[&PreparedEvent],
        settle: bool,
        fresh: &mut Vec<bool>,
    ) -> Result<usize, StoreError> {
        fresh.clear();
        let result = self.append_inner(batch, fresh);
        if result.is_err() {
            fresh.clear();
            self.abort();
            return result;
        }
        self.maybe_flush(settle);
        result
    }

    fn settle(&mut self) -> Result<(), StoreError> {
        self.flush()
    }

    fn settle_interval(&self) -> Option<Duration> {
        Some(self.gap())
    }

    fn retain(
        &mut self,
        policy: &RetentionPolicy,
        now: Timestamp,
        budget: usize,
    ) -> Result<RetentionStep, StoreError> {
        // Settle first, so deleted events are never folded into rollups afterwards; and fold
        // what writers that stopped left pending.
        self.settle()?;
        self.recover_orphans()?;
        // Retention may delete pattern rows: they must pass the cap check again.
        self.known.clear();
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
            c.execute(
                "DELETE FROM tool_hist_day WHERE day < $1",
                &[&hour.div_euclid(24)],
            )
            .await?;
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
                    + pg_total_relation_size('tool_hist') + pg_total_relation_size('tool_hist_day') + pg_total_relation_size('user_tool')
                    + pg_total_relation_size('user_params') + pg_total_relation_size('rollup_pending'))::bigint",
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
    hist_day: (Ints, Texts, Texts, Ints, Ints),
    user: (Texts, Texts, Texts, Ints, Ints, Ints),
    /// Patterns not known to be stored: added only under the cap.
    params: (Texts, Texts, Texts, Texts, Ints, Ints),
    /// Patterns this writer stored before: no cap to check.
    known_params: (Texts, Texts, Texts, Texts, Ints, Ints),
    /// Hashes the patterns with the writer's known set's hasher.
    hasher: foldhash::fast::RandomState,
}

/// Hashes of the `(user, server, tool, keys)` patterns this writer has stored, so that their
/// rows skip the cap check (two subqueries per row, half the cost of a flush). Bounded: cleared
/// when full, and by retention, which may delete rows.
pub(super) type Known = std::collections::HashSet<u64, foldhash::fast::RandomState>;
/// Most patterns remembered.
const MAX_KNOWN: usize = 200_000;

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
    fn new(r: &Rollups, writer: &str, known: &Known) -> Self {
        let s = |i: u32| text(r.strings.name(i)).into_owned();
        let mut f = Flush {
            writer: writer.to_owned(),
            minute: Default::default(),
            hour: Default::default(),
            security: Default::default(),
            tool: Default::default(),
            hist: Default::default(),
            hist_day: Default::default(),
            user: Default::default(),
            params: Default::default(),
            known_params: Default::default(),
            hasher: known.hasher().clone(),
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
        // The same histogram rows by hour, and summed by day.
        let mut days: crate::rollup::HashMap<(i64, u32, u32, i64), i64> = Default::default();
        for (&(hour, server, tool, bucket), &n) in &r.hist {
            *days
                .entry((hour.div_euclid(24), server, tool, bucket))
                .or_default() += n;
        }
        for (rows, hist) in [(&mut f.hist, &r.hist), (&mut f.hist_day, &days)] {
            for (&(at, server, tool, bucket), &n) in hist {
                rows.0.push(at);
                rows.1.push(s(server));
                rows.2.push(s(tool));
                rows.3.push(bucket);
                rows.4.push(n);
            }
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
            let row = (s(user), s(server), s(tool), s(keys));
            let p = if known.contains(&f.hasher.hash_one(&row)) {
                &mut f.known_params
            } else {
                let c = per.entry((user, server, tool)).or_default();
                *c += 1;
                if *c > MAX_PATTERNS_PER_USER_TOOL {
                    continue;
                }
                &mut f.params
            };
            p.0.push(row.0);
            p.1.push(row.1);
            p.2.push(row.2);
            p.3.push(row.3);
            p.4.push(n);
            p.5.push(last);
        }
        f
    }

    /// Writes the rows; answers the hashes of the patterns now known to be stored.
    async fn write(&self, c: &deadpool_postgres::ClientWrapper) -> Result<Vec<u64>, StoreError> {
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
        // Latency histograms by hour and by day: the same rows, the same statement.
        for (table, col, h) in [
            ("tool_hist", "hour", &self.hist),
            ("tool_hist_day", "day", &self.hist_day),
        ] {
            if !h.0.is_empty() {
                exec(
                    c,
                    &format!(
                        "INSERT INTO {table}(writer, {col}, server, tool, bucket, count)
                         SELECT $1, * FROM UNNEST($2::bigint[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
                         ON CONFLICT ({col}, server, tool, bucket, writer) DO UPDATE SET count = {table}.count + excluded.count"
                    ),
                    &[w, &h.0, &h.1, &h.2, &h.3, &h.4],
                )
                .await?;
            }
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
        let p = &self.known_params;
        if !p.0.is_empty() {
            exec(
                c,
                r#"INSERT INTO user_params(writer, "user", server, tool, keys, count, last_ts)
                 SELECT $1, * FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
                 ON CONFLICT ("user", server, tool, keys, writer) DO UPDATE SET
                   count = user_params.count + excluded.count,
                   last_ts = greatest(user_params.last_ts, excluded.last_ts)"#,
                &[w, &p.0, &p.1, &p.2, &p.3, &p.4, &p.5],
            )
            .await?;
        }
        let p = &self.params;
        let mut stored = Vec::new();
        if !p.0.is_empty() {
            let st = c
                .prepare_cached(
                    r#"INSERT INTO user_params(writer, "user", server, tool, keys, count, last_ts)
                 SELECT $1, n.* FROM UNNEST($2::text[], $3::text[], $4::text[], $5::text[], $6::bigint[], $7::bigint[])
                   AS n("user", server, tool, keys, count, last_ts)
                 WHERE EXISTS (SELECT 1 FROM user_params o WHERE o."user" = n."user" AND o.server = n.server
                                 AND o.tool = n.tool AND o.keys = n.keys)
                    OR (SELECT count(DISTINCT keys) FROM user_params o WHERE o."user" = n."user"
                          AND o.server = n.server AND o.tool = n.tool) < $8
                 ON CONFLICT ("user", server, tool, keys, writer) DO UPDATE SET
                   count = user_params.count + excluded.count,
                   last_ts = greatest(user_params.last_ts, excluded.last_ts)
                 RETURNING "user", server, tool, keys"#,
                )
                .await?;
            let rows = c
                .query(
                    &st,
                    &[
                        w,
                        &p.0,
                        &p.1,
                        &p.2,
                        &p.3,
                        &p.4,
                        &p.5,
                        &MAX_PATTERNS_PER_USER_TOOL,
                    ],
                )
                .await?;
            stored = rows
                .iter()
                .map(|r| {
                    let row: (String, String, String, String) =
                        (r.get(0), r.get(1), r.get(2), r.get(3));
                    self.hasher.hash_one(&row)
                })
                .collect();
        }
        Ok(stored)
    }
}

#[cfg(test)]
mod gap_tests {
    use super::*;

    #[test]
    fn the_deltas_wait_longer_the_longer_their_last_write_took_but_never_past_the_lag() {
        let ms = Duration::from_millis;
        assert_eq!(flush_gap(Duration::ZERO), MAX_ROLLUP_DELAY);
        assert_eq!(
            flush_gap(ms(20)),
            MAX_ROLLUP_DELAY,
            "a cheap write: every second"
        );
        assert_eq!(
            flush_gap(ms(300)),
            ms(2700),
            "at most a tenth of the time writing"
        );
        assert_eq!(flush_gap(Duration::from_secs(30)), MAX_STATS_LAG);
    }
}
