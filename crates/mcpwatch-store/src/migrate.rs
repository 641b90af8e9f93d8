//! Copying a SQLite history into PostgreSQL (`mcpwatch store migrate`, SPEC 10).
//!
//! Events are read from the source in the order they were stored and written through the
//! PostgreSQL writer's ordinary append path, so the destination's rollups are what ingesting
//! them would have made, and an event already there is skipped (`ON CONFLICT DO NOTHING` on
//! `(id, ts)`) without being counted twice. After each batch has committed, the source's
//! position is recorded on the destination; a later run starts from it. At the end every
//! source event up to where the run started is looked up on the destination, and the counts
//! must agree; when they do not, the position is forgotten, so that the next run reads the
//! whole source again and stores what is missing.

use mcpwatch_core::Event;

use crate::postgres::progress::Copied;
use crate::postgres::PgStore;
use crate::sqlite::SqliteExport;
use crate::{PreparedEvent, Store, StoreError};

/// Keys looked up per query when verifying.
const VERIFY_CHUNK: usize = 5_000;

/// How to copy.
#[derive(Debug, Clone, Copy)]
pub struct MigrateOptions {
    /// Events per transaction.
    pub batch: usize,
    /// Stop after this many events in this run (to copy in several sittings).
    pub limit: Option<u64>,
}

/// Where a run stands, reported after each batch.
#[derive(Debug, Clone, Copy)]
pub struct MigrateProgress {
    /// Source events handled by this and earlier runs.
    pub done: u64,
    /// Source events to handle in all.
    pub total: u64,
    /// Events this run stored that the destination did not have.
    pub inserted: u64,
}

/// What a run did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrateReport {
    /// Source events up to where this run started.
    pub source: u64,
    /// Events of the source handled before this run (from the recorded position).
    pub resumed_at: u64,
    /// Events this run read from the source.
    pub read: u64,
    /// Of those, events the destination did not have.
    pub inserted: u64,
    /// Whether the whole source was copied (false when `limit` stopped the run).
    pub complete: bool,
    /// Source events found on the destination (checked only when complete).
    pub verified: Option<u64>,
}

/// Copies the events of `from` into `to`.
pub fn migrate(
    from: &SqliteExport,
    to: &PgStore,
    opts: MigrateOptions,
    progress: &mut dyn FnMut(MigrateProgress),
) -> Result<MigrateReport, StoreError> {
    let batch = opts.batch.max(1);
    let source = from.identity();
    let upto = from.last_seq()?;
    let mut at = to
        .migrate_position(&source)?
        .unwrap_or(Copied { seq: 0, copied: 0 });
    if at.seq > upto {
        // The source was emptied and refilled since: its positions mean something else now.
        at = Copied { seq: 0, copied: 0 };
    }
    let resumed_at = from.count(0, at.seq)?;
    let total = from.count(0, upto)?;
    let mut writer = to.writer()?;
    let (mut read, mut inserted) = (0u64, 0u64);
    let mut complete = true;
    loop {
        let want = match opts.limit {
            Some(limit) if read >= limit => {
                complete = from.count(at.seq, upto)? == 0;
                break;
            }
            Some(limit) => batch.min((limit - read) as usize),
            None => batch,
        };
        let rows = from.rows(at.seq, upto, want, true)?;
        let Some(last) = rows.last().cloned() else {
            break;
        };
        let prepared = rows
            .into_iter()
            .map(|r| match serde_json::from_str::<Event>(&r.body) {
                Ok(event) => Ok(PreparedEvent {
                    event,
                    body: r.body,
                }),
                Err(e) => Err(StoreError::BadQuery(format!(
                    "event {} (row {}) in the source does not parse as an mcpwatch event: {e}; nothing after it was copied",
                    r.id, r.seq
                ))),
            })
            .collect::<Result<Vec<_>, _>>()?;
        let refs: Vec<&PreparedEvent> = prepared.iter().collect();
        // Settled: the batch and its rollups commit together, so an interruption leaves
        // nothing half-counted.
        inserted += writer.append(&refs, true)? as u64;
        read += refs.len() as u64;
        at = Copied {
            seq: last.seq,
            copied: at.copied + refs.len() as u64,
        };
        to.save_migrate_position(&source, at, last.ts, &last.id)?;
        progress(MigrateProgress {
            done: resumed_at + read,
            total,
            inserted,
        });
    }
    writer.settle()?;
    let verified = if complete {
        let found = verify(from, to, upto)?;
        if found != total {
            // Events are missing behind the recorded position (deleted on the destination, say):
            // the next run reads the whole source again and stores only what is missing.
            to.forget_migrate_position(&source)?;
        }
        Some(found)
    } else {
        None
    };
    Ok(MigrateReport {
        source: total,
        resumed_at,
        read,
        inserted,
        complete,
        verified,
    })
}

/// How many source events up to `upto` are on the destination.
fn verify(from: &SqliteExport, to: &PgStore, upto: i64) -> Result<u64, StoreError> {
    let (mut after, mut found) = (0, 0);
    loop {
        let rows = from.rows(after, upto, VERIFY_CHUNK, false)?;
        let Some(last) = rows.last() else {
            return Ok(found);
        };
        after = last.seq;
        found += to.count_present(rows.into_iter().map(|r| (r.id, r.ts)).collect())?;
    }
}
