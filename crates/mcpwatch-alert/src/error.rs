//! The one error type of the alerting crate.

use mcpwatch_store::{DbError, StoreError};

/// What can go wrong in alerting outside configuration (which reports
/// [`mcpwatch_core::config::ConfigError`]s instead). Database errors are backend-neutral.
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The alert database could not be opened or written.
    #[error("alert store {path}: {source}; check that the data directory is writable and not used by another collector")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        source: DbError,
    },
    /// The alert database could not be reached (a wrong URL, a missing database, a refused
    /// login); the message says what to do.
    #[error("alert store: {0}")]
    Unavailable(String),
    /// A query or write on the alert database failed.
    #[error("alert store: {0}")]
    Db(#[from] DbError),
    /// No alert, silence or channel with that id or name.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. acknowledging a resolved alert).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed (a bad matcher, a silence that ends before it starts).
    #[error("{0}")]
    Invalid(String),
    /// A cluster task's write was refused because its lease is no longer this node's (another
    /// node took it over, or it expired): nothing was written, and the node stands down for it.
    #[error("{message}")]
    Fenced {
        /// The task, e.g. `user/3`.
        task: String,
        /// What happened, for the log.
        message: String,
    },
}

impl From<rusqlite::Error> for AlertError {
    fn from(e: rusqlite::Error) -> Self {
        AlertError::Db(DbError::new(e))
    }
}

impl From<StoreError> for AlertError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(e) => AlertError::Db(e),
            other => AlertError::Unavailable(other.to_string()),
        }
    }
}
