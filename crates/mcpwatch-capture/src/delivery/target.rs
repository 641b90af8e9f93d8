//! Where the delivery worker sends a batch: the collector's HTTP ingest API, a NATS JetStream
//! stream, or both.
//!
//! The worker treats every target alike: [`Target::deliver`] answers with a [`PostError`], and
//! the worker retries, splits, drops or spools on that answer whatever the target is. So the
//! spool keeps what JetStream did not acknowledge exactly as it keeps what the collector did
//! not accept. With both targets, a batch counts as delivered once both took it; one that only
//! one took is sent to both again later, which costs nothing (JetStream drops a re-published
//! id within its duplicate window, the store keeps each id once).

use mcpwatch_core::Event;

use super::http::{HttpSink, PostError};
use super::nats::NatsSink;

/// The targets of one delivery worker.
pub enum Target {
    /// The collector's ingest API.
    Http(HttpSink),
    /// A JetStream stream.
    Nats(NatsSink),
    /// JetStream first, then the collector.
    Both(NatsSink, HttpSink),
}

impl Target {
    /// Delivers one batch; `Ok` once every target has it.
    pub async fn deliver(&mut self, events: &[Event]) -> Result<(), PostError> {
        match self {
            Target::Http(http) => http.deliver(events).await,
            Target::Nats(nats) => nats.deliver(events).await,
            Target::Both(nats, http) => {
                nats.deliver(events).await?;
                http.deliver(events).await
            }
        }
    }
}
