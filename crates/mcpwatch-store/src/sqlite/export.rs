//! Reading a SQLite history out in insertion order, for `mcpwatch store migrate`.
//!
//! Rows are read by their sequence number (`seq`), the order they were stored in: an event
//! that arrives while a copy runs gets a higher number whatever its timestamp, so the next run
//! picks it up, which a position by timestamp would miss.

use std::path::{Path, PathBuf};

use rusqlite::{params, Connection, OpenFlags};

use super::DB_FILE;
use crate::StoreError;

/// A SQLite event store opened for reading only.
pub struct SqliteExport {
    conn: Connection,
    path: PathBuf,
}

/// One stored event as the store holds it.
#[derive(Debug, Clone)]
pub struct StoredRow {
    /// Its position in the store.
    pub seq: i64,
    /// Its id.
    pub id: String,
    /// Its timestamp, microseconds.
    pub ts: i64,
    /// Its JSON.
    pub body: String,
}

impl SqliteExport {
    /// Opens the store of the data directory `dir` for reading. A directory without one is an
    /// error that says so: the copy must never start from an empty file it made itself.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        let path = dir.join(DB_FILE);
        let no_store = |why: &str| {
            StoreError::BadQuery(format!(
                "{} is not a data directory with an mcpwatch store ({why}); pass --from sqlite:DIR with the --data-dir of `mcpwatch serve`",
                dir.display()
            ))
        };
        if !dir.is_dir() {
            return Err(no_store("no such directory"));
        }
        if !path.is_file() {
            return Err(no_store(&format!("no {DB_FILE} in it")));
        }
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )?;
        conn.busy_timeout(std::time::Duration::from_secs(10))?;
        let version: i64 = conn
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .map_err(|e| no_store(&format!("{DB_FILE} cannot be read: {e}")))?;
        if version == 0 {
            return Err(no_store(&format!("{DB_FILE} holds no events table")));
        }
        if version > super::schema::VERSION {
            return Err(StoreError::TooNew {
                path: path.display().to_string(),
                found: version,
                supported: super::schema::VERSION,
            });
        }
        Ok(Self { conn, path })
    }

    /// The database file, canonical where possible: it names the source in the destination's
    /// bookkeeping.
    pub fn identity(&self) -> String {
        std::fs::canonicalize(&self.path)
            .unwrap_or_else(|_| self.path.clone())
            .display()
            .to_string()
    }

    /// The highest position stored (0 when empty).
    pub fn last_seq(&self) -> Result<i64, StoreError> {
        Ok(self
            .conn
            .query_row("SELECT coalesce(max(seq), 0) FROM events", [], |r| r.get(0))?)
    }

    /// How many events lie in `(after, upto]`.
    pub fn count(&self, after: i64, upto: i64) -> Result<u64, StoreError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM events WHERE seq > ?1 AND seq <= ?2",
            params![after, upto],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as u64)
    }

    /// At most `limit` events after position `after` and up to `upto`, in order; without
    /// bodies unless `bodies`.
    pub fn rows(
        &self,
        after: i64,
        upto: i64,
        limit: usize,
        bodies: bool,
    ) -> Result<Vec<StoredRow>, StoreError> {
        let sql = if bodies {
            "SELECT seq, id, ts, body FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3"
        } else {
            "SELECT seq, id, ts, '' FROM events WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3"
        };
        let mut st = self.conn.prepare_cached(sql)?;
        let rows = st
            .query_map(params![after, upto, limit as i64], |r| {
                Ok(StoredRow {
                    seq: r.get(0)?,
                    id: r.get(1)?,
                    ts: r.get(2)?,
                    body: r.get(3)?,
                })
            })?
            .collect::<Result<_, _>>()?;
        Ok(rows)
    }
}
