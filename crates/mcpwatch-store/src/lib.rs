//! mcpwatch-store: where events are kept and how they are read back (SPEC section 5).
//!
//! Two traits split the store along its one hard rule, a single writer: an [`EventWriter`]
//! is owned by the pipeline's writer thread and commits batches; an [`EventReader`] is shared by
//! every query and never blocks the writer. [`sqlite::SqliteStore`] implements both on one
//! WAL-mode file; a server database is another implementation of the same traits.
//!
//! Architecture Invariant: an event is acknowledged only after the transaction holding it has
//! committed; a batch is stored whole or not at all.

#[cfg(test)]
mod compliance;
mod fold;
pub mod hist;
pub mod migrate;
pub mod postgres;
pub mod query;
mod rollup;
pub mod sqlite;
#[cfg(feature = "testing")]
pub mod testing;

use std::sync::Arc;

use mcpwatch_core::{Event, Timestamp};

pub use query::{
    EventPage, EventQuery, SecurityQuery, SeriesQuery, StatsQuery, StoreStats, Summary, ToolStats,
    UserUsage,
};

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database refused an operation. The cause is the backend's own error, behind a
    /// backend-neutral type, so callers never depend on which database is underneath.
    #[error("database error: {0}")]
    Database(#[source] DbError),
    /// The database could not be reached or refused the connection: a wrong URL, a missing
    /// database, a refused login. The message says what to do.
    #[error("{0}")]
    Unavailable(String),
    /// The data directory could not be used.
    #[error("cannot use data directory {path}: {source}; check that it exists and is writable, or pass --data-dir")]
    DataDir {
        /// The directory.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// A query parameter is invalid (a bad cursor, say).
    #[error("{0}")]
    BadQuery(String),
    /// The database file was written by a newer mcpwatch.
    #[error("the store at {path} has schema version {found}, newer than this mcpwatch understands ({supported}); upgrade mcpwatch")]
    TooNew {
        /// The file.
        path: String,
        /// Version in the file.
        found: i64,
        /// Version this build writes.
        supported: i64,
    },
}

/// The error of a database backend, whatever the backend.
#[derive(Debug)]
pub struct DbError(Box<dyn std::error::Error + Send + Sync>);

impl DbError {
    /// Wraps a backend's error.
    pub fn new(e: impl std::error::Error + Send + Sync + 'static) -> Self {
        Self(Box::new(e))
    }
}

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for DbError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.0.source()
    }
}

/// An event ready to be stored: validated, redacted, and serialised once, off the writer thread.
#[derive(Debug, Clone)]
pub struct PreparedEvent {
    /// The event.
    pub event: Event,
    /// Its JSON, exactly as the API will return it.
    pub body: String,
}

/// What a body's buffer starts at.
const BODY_CAPACITY: usize = 768;

impl PreparedEvent {
    /// Serialises `event`.
    pub fn new(event: Event) -> Self {
        // Sized for a typical event (about 500 bytes): growing from serde_json's 128 bytes
        // reallocated and copied the body three times.
        let mut buf = Vec::with_capacity(BODY_CAPACITY);
        event.write_json(&mut buf);
        // A small event must not hold the whole start size while it waits in the pipeline:
        // a flood of tiny events would triple what `max_pending_events` of them take.
        if buf.capacity() > 2 * buf.len() {
            buf.shrink_to_fit();
        }
        let body = String::from_utf8(buf).unwrap_or_else(|_| unreachable!("JSON is UTF-8"));
        Self { event, body }
    }
}

/// How much history to keep.
#[derive(Debug, Clone, Copy)]
pub struct RetentionPolicy {
    /// Events older than this go.
    pub max_age: std::time::Duration,
    /// When the events use more than this many bytes, the oldest go.
    pub max_size: Option<u64>,
}

/// What one retention step did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RetentionStep {
    /// Events deleted in this step.
    pub deleted: u64,
    /// Whether more is due: call again (after serving pending writes).
    pub more: bool,
}

/// The writing half of a store: one per process, owned by the writer thread.
pub trait EventWriter: Send {
    /// Commits a batch in one transaction. Events whose id is already stored are skipped, which
    /// makes client retries idempotent. Returns how many were new.
    ///
    /// Derived statistics may trail the events by up to a second under load; with `settle` (the
    /// caller has nothing else waiting) they are brought up to date before this returns (in the
    /// same transaction on SQLite, in the next one on PostgreSQL).
    fn append(&mut self, batch: &[&PreparedEvent], settle: bool) -> Result<usize, StoreError> {
        self.append_marking(batch, settle, &mut Vec::new())
    }

    /// [`EventWriter::append`], also saying which events were new: `fresh[i]` is false when
    /// `batch[i]` was already stored (or came earlier in the same batch), so that a resent
    /// event is acknowledged without being processed again.
    fn append_marking(
        &mut self,
        batch: &[&PreparedEvent],
        settle: bool,
        fresh: &mut Vec<bool>,
    ) -> Result<usize, StoreError>;

    /// Brings derived statistics up to date with every committed event.
    fn settle(&mut self) -> Result<(), StoreError>;

    /// The least time the caller should leave between two settlements while batches keep
    /// coming, when settling costs this backend more than the caller's own pace allows
    /// (PostgreSQL: each settlement upserts every rollup row touched since the last one, so
    /// settling four times a second writes nearly as many rows as events). `None`: the
    /// caller's pace. It may change as the writer learns what settling costs: the caller asks
    /// again after each settlement.
    fn settle_interval(&self) -> Option<std::time::Duration> {
        None
    }

    /// Deletes at most `budget` events that the policy says must go.
    fn retain(
        &mut self,
        policy: &RetentionPolicy,
        now: Timestamp,
        budget: usize,
    ) -> Result<RetentionStep, StoreError>;
}

/// The reading half of a store: shared by all queries; never blocks the writer.
pub trait EventReader: Send + Sync {
    /// A page of events, newest first.
    fn events(&self, q: &EventQuery) -> Result<EventPage, StoreError>;
    /// One event by id.
    fn event(&self, id: &str) -> Result<Option<Box<serde_json::value::RawValue>>, StoreError>;
    /// Per-tool statistics.
    fn tool_stats(&self, q: &StatsQuery) -> Result<Vec<ToolStats>, StoreError>;
    /// Per-user usage patterns.
    fn users(&self, q: &StatsQuery) -> Result<Vec<UserUsage>, StoreError>;
    /// A time-bucketed series for charts.
    fn series(&self, q: &SeriesQuery) -> Result<query::Series, StoreError>;
    /// The overview at `now`.
    fn summary(&self, now: Timestamp) -> Result<Summary, StoreError>;
    /// Security events over time, by type (authentication failures, authorization denials).
    fn security_series(&self, q: &SecurityQuery) -> Result<query::SecuritySeries, StoreError>;
    /// Size and counts.
    fn stats(&self) -> Result<StoreStats, StoreError>;
}

/// A store: hands out its one writer and a shared reader.
pub trait Store: Send + Sync {
    /// The writer. Call once.
    fn writer(&self) -> Result<Box<dyn EventWriter>, StoreError>;
    /// The reader.
    fn reader(&self) -> Arc<dyn EventReader>;
}
