//! A cluster node's ingest API publishes to the stream instead of storing: what an application
//! posts must reach the cluster's tasks like what edges publish, or detection would never see
//! it. The events are redacted first (the stream must not hold the secrets the store would
//! not), carry the relay MAC (`mcpwatch_nats::relay`) so their `api:` sources pass the
//! consumers, and are acknowledged (202) once JetStream stored every one; the node's durable
//! consumer, or another node's, stores them.

use std::sync::Arc;

use mcpwatch_core::sink::SinkFuture;
use mcpwatch_core::{Event, EventSink, Redactor, SinkError};
use mcpwatch_nats::publish::PublishError;
use mcpwatch_nats::Publisher;

/// The ingest API's sink on a cluster node.
pub struct IngestRelay {
    publisher: Publisher,
    redactor: Arc<Redactor>,
}

impl IngestRelay {
    /// Publishes with `publisher` (which carries the relay key) after `redactor`.
    pub fn new(publisher: Publisher, redactor: Redactor) -> Self {
        Self {
            publisher,
            redactor: Arc::new(redactor),
        }
    }
}

impl EventSink for IngestRelay {
    fn submit(&self, mut events: Vec<Event>) -> SinkFuture {
        let (mut publisher, redactor) = (self.publisher.clone(), self.redactor.clone());
        Box::pin(async move {
            for e in &mut events {
                redactor.redact_event(e);
            }
            // All or nothing: an event the server cannot take refuses the batch before any of
            // it is published (a client re-sending it would otherwise store the rest twice
            // under the new ids ingest gives events without one).
            let max = publisher.max_payload();
            if max > 0 {
                for (i, e) in events.iter().enumerate() {
                    let size = serde_json::to_vec(e).map_or(usize::MAX, |b| b.len());
                    if size + e.id.len() + 128 > max {
                        return Err(SinkError::TooLarge(format!(
                            "event {i} is {size} bytes, more than the stream's messages take ({max} bytes); nothing was stored, send it smaller"
                        )));
                    }
                }
            }
            publisher.publish(&events).await.map_err(|e| match e {
                PublishError::TooLarge { .. } => SinkError::TooLarge(e.to_string()),
                PublishError::Unreachable(m) => {
                    SinkError::Store(format!("the stream did not acknowledge the batch: {m}"))
                }
                e @ PublishError::NoStream { .. } => SinkError::Store(e.to_string()),
            })?;
            Ok(events.into_iter().map(|e| e.id).collect())
        })
    }
}
