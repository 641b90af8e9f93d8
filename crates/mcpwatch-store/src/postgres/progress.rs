//! Bookkeeping of `mcpwatch store migrate` on the destination: how far each source has been
//! copied, so that a run after an interruption continues where the last one stopped, and the
//! check that the copied events are there.
//!
//! The position is written after each batch has committed; a run killed in between sends that
//! batch again, and `ON CONFLICT DO NOTHING` skips what is already stored.

use super::PgStore;
use crate::StoreError;

/// Made on first use by the migration (not by `serve`, which never reads it).
const TABLE: &str = "CREATE TABLE IF NOT EXISTS store_migrate(
    source text PRIMARY KEY, seq bigint NOT NULL, ts bigint NOT NULL, id text NOT NULL,
    copied bigint NOT NULL, updated timestamptz NOT NULL DEFAULT now())";

/// How far a source has been copied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Copied {
    /// The source's position (its row number) of the last event copied.
    pub(crate) seq: i64,
    /// Events copied from it so far, over all runs.
    pub(crate) copied: u64,
}

impl PgStore {
    /// Where copying `source` stopped, if it was ever started.
    pub(crate) fn migrate_position(&self, source: &str) -> Result<Option<Copied>, StoreError> {
        let source = source.to_owned();
        self.db.run(move |c| async move {
            c.batch_execute(TABLE).await?;
            let row = c
                .query_opt(
                    "SELECT seq, copied FROM store_migrate WHERE source = $1",
                    &[&source],
                )
                .await?;
            Ok(row.map(|r| Copied {
                seq: r.get(0),
                copied: r.get::<_, i64>(1).max(0) as u64,
            }))
        })
    }

    /// Records that `source` has been copied up to `seq`, the event `(ts, id)`.
    pub(crate) fn save_migrate_position(
        &self,
        source: &str,
        at: Copied,
        ts: i64,
        id: &str,
    ) -> Result<(), StoreError> {
        let (source, id) = (source.to_owned(), id.replace('\0', "\u{fffd}"));
        self.db.run(move |c| async move {
            c.execute(
                "INSERT INTO store_migrate(source, seq, ts, id, copied) VALUES ($1, $2, $3, $4, $5)
                 ON CONFLICT (source) DO UPDATE SET seq = excluded.seq, ts = excluded.ts,
                     id = excluded.id, copied = excluded.copied, updated = now()",
                &[&source, &at.seq, &ts, &id, &(at.copied as i64)],
            )
            .await?;
            Ok(())
        })
    }

    /// Forgets where copying `source` stopped: the next run reads it all again.
    pub(crate) fn forget_migrate_position(&self, source: &str) -> Result<(), StoreError> {
        let source = source.to_owned();
        self.db.run(move |c| async move {
            c.execute("DELETE FROM store_migrate WHERE source = $1", &[&source])
                .await?;
            Ok(())
        })
    }

    /// How many of the events `(id, ts)` are stored.
    pub(crate) fn count_present(&self, keys: Vec<(String, i64)>) -> Result<u64, StoreError> {
        let Some(lo) = keys.iter().map(|k| k.1).min() else {
            return Ok(0);
        };
        let hi = keys.iter().map(|k| k.1).max().unwrap_or(lo);
        let (ids, ts): (Vec<String>, Vec<i64>) = keys
            .into_iter()
            .map(|(id, ts)| (id.replace('\0', "\u{fffd}"), ts))
            .unzip();
        self.db.run(move |c| async move {
            // The bounds on ts let PostgreSQL look only at the partitions of the range.
            let row = c
                .query_one(
                    "SELECT count(*) FROM events e
                     JOIN UNNEST($1::text[], $2::bigint[]) AS k(id, ts) ON e.id = k.id AND e.ts = k.ts
                     WHERE e.ts >= $3 AND e.ts <= $4",
                    &[&ids, &ts, &lo, &hi],
                )
                .await?;
            Ok(row.get::<_, i64>(0).max(0) as u64)
        })
    }
}
