//! The edges' publisher: events to the stream, each acknowledged by JetStream.
//!
//! One message per event, on the subject of its partitions ([`crate::subject::subject_for`]),
//! with `Nats-Msg-Id` = the event id, so that a batch re-published after a lost acknowledgement
//! (the delivery worker re-sends what it could not confirm) is stored once within the
//! stream's duplicate window, and once by the collector's store (by id) after it.
//!
//! A batch is delivered when every one of its events is acknowledged; publishes are pipelined,
//! at most [`Publisher::max_in_flight`] unacknowledged at a time, so a slow stream bounds the
//! memory an edge spends on it. While the client is not connected nothing is published and the
//! batch is reported unreachable at once, for the delivery worker to spool.

use std::collections::VecDeque;
use std::time::Duration;

use async_nats::jetstream::context::PublishErrorKind;
use async_nats::jetstream::message::PublishMessage;
use async_nats::jetstream::{self, Context};
use bytes::Bytes;
use mcpwatch_core::pace::Pacer;
use mcpwatch_core::Event;

use crate::relay::{RelayKey, RELAY_HEADER};
use crate::subject::subject_for;

/// Unacknowledged publishes one publisher allows unless told otherwise.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 256;

/// How long JetStream may take to acknowledge a publish. A stream whose leader just died
/// elects another within a few seconds; past this the batch is spooled and re-sent.
const ACK_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a publisher whose client has not connected yet waits for it before a batch is
/// reported unreachable.
const FIRST_CONNECT_WAIT: Duration = Duration::from_secs(2);

/// Why a batch was not (wholly) acknowledged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PublishError {
    /// Not connected, no acknowledgement in time, or the stream could not store it now:
    /// publish again later.
    #[error("NATS unreachable: {0}")]
    Unreachable(String),
    /// No stream captures the subjects (nothing answered): `serve --nats` creates it.
    #[error("no JetStream stream answered on {subject} (none captures it, or its leader is being elected); `mcpwatch serve --nats …` creates the stream")]
    NoStream {
        /// The subject that found no stream.
        subject: String,
    },
    /// These events (by index) are larger than the server takes in one message and were not
    /// published; the others of the batch were, and were acknowledged.
    #[error("{} event(s) are larger than the server's max_payload of {max} bytes", .bad.len())]
    TooLarge {
        /// Indices of the oversized events.
        bad: Vec<usize>,
        /// The server's limit.
        max: usize,
    },
}

/// Publishes event batches to the stream.
#[derive(Clone)]
pub struct Publisher {
    client: async_nats::Client,
    js: Context,
    max_in_flight: usize,
    connected_once: bool,
    relay: Option<RelayKey>,
}

impl Publisher {
    /// A publisher on `client` allowing `max_in_flight` unacknowledged publishes.
    pub fn new(client: async_nats::Client, max_in_flight: usize) -> Self {
        let max_in_flight = max_in_flight.max(1);
        let js = jetstream::ContextBuilder::new()
            .timeout(ACK_TIMEOUT)
            .max_ack_inflight(max_in_flight)
            .backpressure_on_inflight(true)
            .build(client.clone());
        Self {
            client,
            js,
            max_in_flight,
            connected_once: false,
            relay: None,
        }
    }

    /// A publisher for a cluster node's ingest API: every message carries the relay MAC
    /// ([`crate::relay`]), so `api:` sources pass the consumer's checks.
    pub fn relaying(mut self, key: RelayKey) -> Self {
        self.relay = Some(key);
        self
    }

    /// The largest message the server takes (0 while not known).
    pub fn max_payload(&self) -> usize {
        self.client.server_info().max_payload
    }

    /// The bound on unacknowledged publishes.
    pub fn max_in_flight(&self) -> usize {
        self.max_in_flight
    }

    /// Publishes every event and waits for each acknowledgement. `Ok` means JetStream has
    /// stored all of them (or had them already, within its duplicate window).
    pub async fn publish(&mut self, events: &[Event]) -> Result<(), PublishError> {
        if events.is_empty() {
            return Ok(());
        }
        self.wait_connected().await?;
        let max = self.client.server_info().max_payload;
        let mut pacer = Pacer::new();
        let mut too_large = Vec::new();
        let mut acks = VecDeque::with_capacity(self.max_in_flight.min(events.len()));
        // Serialised as they are published, so the first publish leaves at once and the
        // acknowledgements of the first events come back while the rest are written.
        for (i, e) in events.iter().enumerate() {
            let mut body = Vec::with_capacity(512);
            e.write_json(&mut body);
            pacer.step();
            // The headers (the id) ride along; leave them room.
            if max > 0 && body.len() + e.id.len() + 64 > max {
                too_large.push(i);
                continue;
            }
            if acks.len() >= self.max_in_flight {
                if let Some(ack) = acks.pop_front() {
                    settle(ack).await?;
                }
            }
            let subject = subject_for(e);
            let mut msg = PublishMessage::build().message_id(e.id.as_str());
            if let Some(key) = &self.relay {
                msg = msg.header(RELAY_HEADER, key.sign(&e.id, &body).as_str());
            }
            let msg = msg.payload(Bytes::from(body));
            let ack = self
                .js
                .send_publish(subject.clone(), msg)
                .await
                .map_err(|err| map_error(err.kind(), &err.to_string(), &subject))?;
            acks.push_back((ack, subject));
        }
        while let Some(ack) = acks.pop_front() {
            settle(ack).await?;
        }
        if too_large.is_empty() {
            Ok(())
        } else {
            Err(PublishError::TooLarge {
                bad: too_large,
                max,
            })
        }
    }

    /// Returns at once when connected; a client that never connected yet gets a short while.
    async fn wait_connected(&mut self) -> Result<(), PublishError> {
        use async_nats::connection::State;
        let deadline = tokio::time::Instant::now() + FIRST_CONNECT_WAIT;
        loop {
            match self.client.connection_state() {
                State::Connected => {
                    self.connected_once = true;
                    return Ok(());
                }
                State::Pending
                    if !self.connected_once && tokio::time::Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                state => {
                    return Err(PublishError::Unreachable(format!(
                        "not connected to NATS ({state:?})"
                    )))
                }
            }
        }
    }
}

async fn settle(
    (ack, subject): (jetstream::context::PublishAckFuture, String),
) -> Result<(), PublishError> {
    ack.await
        .map(drop)
        .map_err(|err| map_error(err.kind(), &err.to_string(), &subject))
}

fn map_error(kind: PublishErrorKind, message: &str, subject: &str) -> PublishError {
    match kind {
        PublishErrorKind::StreamNotFound => PublishError::NoStream {
            subject: subject.to_owned(),
        },
        _ if message.contains("no responders") => PublishError::NoStream {
            subject: subject.to_owned(),
        },
        _ => PublishError::Unreachable(message.to_owned()),
    }
}
