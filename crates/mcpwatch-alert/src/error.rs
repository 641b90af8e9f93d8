//! The one error type of the alerting crate.

/// What can go wrong in alerting outside configuration (which reports
/// [`mcpwatch_core::config::ConfigError`]s instead).
#[derive(Debug, thiserror::Error)]
pub enum AlertError {
    /// The alert database could not be opened or written.
    #[error("alert store {path}: {source}; check that the data directory is writable and not used by another collector")]
    Open {
        /// The database file.
        path: String,
        /// Why.
        source: rusqlite::Error,
    },
    /// A query or write on the alert database failed.
    #[error("alert store: {0}")]
    Sql(#[from] rusqlite::Error),
    /// No alert, silence or channel with that id or name.
    #[error("{0}")]
    NotFound(String),
    /// The request conflicts with the current state (e.g. acknowledging a resolved alert).
    #[error("{0}")]
    Conflict(String),
    /// The request is malformed (a bad matcher, a silence that ends before it starts).
    #[error("{0}")]
    Invalid(String),
}
