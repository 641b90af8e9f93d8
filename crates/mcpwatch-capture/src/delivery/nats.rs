//! JetStream as a delivery target: the edge's publisher ([`mcpwatch_nats::Publisher`]) behind
//! the answers the delivery worker acts on.
//!
//! The client is made on the first batch, inside the worker's runtime, and from then on
//! reconnects by itself; while it is not connected every batch is unreachable at once and goes
//! to the spool. The first time NATS cannot be reached, or has no stream for the events, that
//! is said on stderr with what to do; after that only when it changes, so an edge left running
//! while NATS is down does not flood the MCP client's log.

use mcpwatch_core::Event;
use mcpwatch_nats::{PublishError, Publisher};

use super::http::PostError;

/// Publishes batches to JetStream for the delivery worker.
pub struct NatsSink {
    urls: String,
    shown: String,
    name: String,
    max_in_flight: usize,
    publisher: Option<Publisher>,
    /// What was last said about a failure, so it is said once.
    said: Option<String>,
}

impl NatsSink {
    /// A sink for the servers in `urls` (checked now: a bad URL fails here, at start), as
    /// client `name`, with at most `max_in_flight` unacknowledged publishes.
    pub fn new(urls: &str, name: &str, max_in_flight: usize) -> Result<Self, crate::CaptureError> {
        let addrs = mcpwatch_nats::parse_urls(urls)
            .map_err(|e| crate::CaptureError::Config(format!("--nats: {e}")))?;
        let shown = mcpwatch_nats::connect::shown(&addrs);
        Ok(Self {
            urls: urls.to_owned(),
            shown,
            name: name.to_owned(),
            max_in_flight,
            publisher: None,
            said: None,
        })
    }

    /// The servers, for messages.
    pub fn shown(&self) -> &str {
        &self.shown
    }

    /// Publishes a batch; `Ok` once JetStream acknowledged every event of it.
    pub async fn deliver(&mut self, events: &[Event]) -> Result<(), PostError> {
        if events.is_empty() {
            return Ok(());
        }
        if self.publisher.is_none() {
            let client = mcpwatch_nats::connect(&self.urls, &self.name, false)
                .await
                .map_err(|e| self.unreachable(e.to_string()))?;
            self.publisher = Some(Publisher::new(client, self.max_in_flight));
        }
        let Some(publisher) = self.publisher.as_mut() else {
            return Err(PostError::Unreachable("no NATS client".into()));
        };
        match publisher.publish(events).await {
            Ok(()) => {
                if self.said.take().is_some() {
                    tracing::warn!("mcpwatch: NATS at {} takes events again", self.shown);
                }
                Ok(())
            }
            Err(PublishError::TooLarge { bad, max }) => Err(PostError::Rejected {
                message: format!(
                    "{} event(s) are larger than the NATS server's max_payload of {max} bytes",
                    bad.len()
                ),
                bad,
            }),
            Err(e @ PublishError::NoStream { .. }) => Err(self.unreachable(e.to_string())),
            Err(PublishError::Unreachable(why)) => Err(self.unreachable(why)),
        }
    }

    /// Says once (per kind of failure) that NATS did not take the events.
    fn unreachable(&mut self, why: String) -> PostError {
        let kind = why.split(':').next().unwrap_or_default().to_owned();
        if self.said.as_deref() != Some(kind.as_str()) {
            tracing::warn!(
                "mcpwatch: NATS at {} did not take the events, they are kept in the spool and \
                 published when it does: {why}",
                self.shown
            );
            self.said = Some(kind);
        }
        PostError::Unreachable(why)
    }
}
