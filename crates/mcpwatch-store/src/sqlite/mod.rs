//! The embedded store: one SQLite file in WAL mode under the data directory.
//!
//! The writer thread holds the only writing connection; readers come from a small pool and see
//! committed data without blocking it (WAL). Rollup tables are maintained inside the same
//! transaction as the events, so statistics are always consistent with the event log.
//!
//! Indexes are chosen for their cost (SPEC 11): the event table carries two, `ts` (time ranges,
//! newest-first pages, retention) and a unique `id` (idempotent retries, lookup by id). Filters on
//! tool, user or session scan the time index; statistics never touch the event table.

mod checkpoint;
mod export;
mod reader;
mod schema;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use mcpwatch_core::config::Durability;
use rusqlite::{Connection, OpenFlags};

use crate::{EventReader, EventWriter, Store, StoreError};

pub use export::{SqliteExport, StoredRow};
pub use reader::SqliteReader;
pub use writer::SqliteWriter;

/// The file name of the event database inside the data directory.
pub const DB_FILE: &str = "events.db";

/// SQLite-backed [`Store`].
pub struct SqliteStore {
    path: PathBuf,
    durability: Durability,
    reader: Arc<SqliteReader>,
}

impl SqliteStore {
    /// Opens (creating if needed) the store in `data_dir`.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self, StoreError> {
        std::fs::create_dir_all(data_dir).map_err(|source| StoreError::DataDir {
            path: data_dir.display().to_string(),
            source,
        })?;
        let path = data_dir.join(DB_FILE);
        let conn = open_connection(&path, durability)?;
        schema::migrate(&conn, &path)?;
        drop(conn);
        let reader = Arc::new(SqliteReader::new(path.clone()));
        Ok(Self {
            path,
            durability,
            reader,
        })
    }

    /// Path of the database file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Store for SqliteStore {
    fn writer(&self) -> Result<Box<dyn EventWriter>, StoreError> {
        let conn = open_connection(&self.path, self.durability)?;
        Ok(Box::new(SqliteWriter::new(conn, &self.path)?))
    }

    fn reader(&self) -> Arc<dyn EventReader> {
        self.reader.clone()
    }
}

fn open_connection(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(std::time::Duration::from_secs(10))?;
    // auto_vacuum only takes effect before the first table exists; it lets retention give
    // space back to the file system a little at a time instead of a blocking VACUUM.
    conn.pragma_update(None, "auto_vacuum", "INCREMENTAL")?;
    conn.pragma_update(None, "journal_mode", "WAL")?;
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.pragma_update(None, "synchronous", sync)?;
    conn.pragma_update(None, "temp_store", "MEMORY")?;
    conn.pragma_update(None, "cache_size", -32_000)?;
    Ok(conn)
}

impl From<rusqlite::Error> for StoreError {
    fn from(e: rusqlite::Error) -> Self {
        StoreError::Database(crate::DbError::new(e))
    }
}

/// A pool of reading connections, opened on demand.
struct Pool {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Pool {
    const MAX_IDLE: usize = 4;

    fn with<T>(
        &self,
        f: impl FnOnce(&Connection) -> Result<T, StoreError>,
    ) -> Result<T, StoreError> {
        let conn = self.idle.lock().unwrap_or_else(|p| p.into_inner()).pop();
        let conn = match conn {
            Some(c) => c,
            None => {
                let c = Connection::open_with_flags(
                    &self.path,
                    OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
                )?;
                c.busy_timeout(std::time::Duration::from_secs(10))?;
                c.pragma_update(None, "query_only", true)?;
                c
            }
        };
        let out = f(&conn);
        let mut idle = self.idle.lock().unwrap_or_else(|p| p.into_inner());
        if idle.len() < Self::MAX_IDLE {
            idle.push(conn);
        }
        out
    }
}

#[cfg(test)]
mod tests;
