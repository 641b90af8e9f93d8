//! The pipeline's one entry point.
//!
//! Ingest, capture and detection all hand events to an [`EventSink`]. In `serve` the sink is the
//! in-process pipeline (redact, commit, fan out); in `wrap` and `gateway` it is an HTTP client
//! with a spool. Later backends (a message bus) are more implementations of this trait.

use std::future::Future;
use std::pin::Pin;

use crate::event::Event;

/// Why a sink did not take a batch.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum SinkError {
    /// Queues are full; try again after the given number of seconds.
    #[error("the pipeline is overloaded; retry after {retry_after_secs}s")]
    Overloaded {
        /// Seconds to wait before retrying.
        retry_after_secs: u64,
    },
    /// The store failed to commit the batch; nothing of it was kept.
    #[error("the store could not commit the batch: {0}")]
    Store(String),
    /// The pipeline is shutting down.
    #[error("the pipeline is shut down")]
    Closed,
    /// The batch can never be kept as it is (an event larger than the sink takes); nothing of
    /// it was kept.
    #[error("{0}")]
    TooLarge(String),
}

/// A boxed future, as sinks return.
pub type SinkFuture = Pin<Box<dyn Future<Output = Result<Vec<String>, SinkError>> + Send>>;

/// Takes batches of events; resolves with their ids once they are durably kept.
pub trait EventSink: Send + Sync + 'static {
    /// Submits a batch. All or nothing: on error none of it was kept.
    fn submit(&self, events: Vec<Event>) -> SinkFuture;
}
