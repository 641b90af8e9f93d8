//! The collector's consumer: the stream into the same ingest pipeline HTTP ingest feeds.
//!
//! One durable pull consumer (explicit acks) reads every subject of the stream. Messages are
//! taken in groups (whatever arrived, up to [`ConsumerSettings::batch`]), each validated like
//! one event posted to `POST /api/v1/events` (`parse_batch`, the reserved-source and token-
//! identity checks, the clock-skew bound, against the time JetStream stored the message), and
//! the valid ones submitted to the pipeline as one batch. Each message is acknowledged only
//! after the pipeline says its batch committed; one that can never be stored (invalid, or whose
//! event id is not its `Nats-Msg-Id`) is terminated, said once in the log and counted. While the pipeline is overloaded the
//! batch waits and is submitted again; a message not acknowledged within the ack wait (a
//! crash, say) is redelivered by JetStream, and the store keeps each id once, so an event is
//! stored exactly once however often it arrives.
//!
//! Architecture Invariant: a message is acknowledged only after the transaction holding its
//! event committed.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::consumer::pull::Config as PullConfig;
use async_nats::jetstream::consumer::{AckPolicy, DeliverPolicy};
use async_nats::jetstream::{AckKind, Context, Message};
use futures_util::StreamExt;
use mcpwatch_core::clock::{Clock, ManualClock, SharedClock};
use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::validate::identity::foreign_token_sources;
use mcpwatch_core::validate::{parse_batch, BodyFormat, Defaults};
use mcpwatch_core::{Event, EventSink, SinkError, Timestamp};

use crate::stream::StreamSettings;
use crate::NatsError;

/// `source` of events that arrive without one.
pub const NATS_SOURCE: &str = "nats";

/// How the consumer reads.
#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    /// The durable consumer's name; nodes sharing it share the work.
    pub durable: String,
    /// Most messages submitted as one batch.
    pub batch: usize,
    /// How long to wait for more messages before submitting a partial batch.
    pub linger: Duration,
    /// Most messages delivered and not yet acknowledged.
    pub max_ack_pending: i64,
    /// How long JetStream waits for an acknowledgement before redelivering.
    pub ack_wait: Duration,
    /// How far past the time JetStream stored its message an event's timestamp may be.
    pub max_clock_skew: Duration,
}

impl Default for ConsumerSettings {
    fn default() -> Self {
        Self {
            durable: "mcpwatch-serve".to_owned(),
            batch: 1_000,
            linger: Duration::from_millis(5),
            max_ack_pending: 20_000,
            ack_wait: Duration::from_secs(30),
            max_clock_skew: Duration::from_secs(300),
        }
    }
}

/// What the consumer did, for logs and tests.
#[derive(Debug, Default)]
pub struct ConsumerHealth {
    /// Events the pipeline committed (including ones it already had).
    pub stored: AtomicU64,
    /// Messages terminated because they can never be stored.
    pub invalid: AtomicU64,
    /// Times a batch waited because the pipeline was overloaded.
    pub overloaded: AtomicU64,
}

/// Reads the stream into `sink` until `stop` resolves; the messages in hand then are left
/// unacknowledged, for JetStream to deliver again.
pub async fn run(
    js: Context,
    stream: &StreamSettings,
    settings: ConsumerSettings,
    sink: Arc<dyn EventSink>,
    clock: SharedClock,
    health: Arc<ConsumerHealth>,
    stop: impl std::future::Future<Output = ()>,
) -> Result<(), NatsError> {
    let stream_name = stream.name.clone();
    let consumer = js
        .get_stream(&stream_name)
        .await
        .map_err(|e| NatsError::Stream(format!("cannot open stream {stream_name}: {e}")))?
        .get_or_create_consumer(
            &settings.durable,
            PullConfig {
                durable_name: Some(settings.durable.clone()),
                deliver_policy: DeliverPolicy::All,
                ack_policy: AckPolicy::Explicit,
                ack_wait: settings.ack_wait,
                max_ack_pending: settings.max_ack_pending,
                filter_subject: StreamSettings::subjects().remove(0),
                ..Default::default()
            },
        )
        .await
        .map_err(|e| {
            NatsError::Stream(format!(
                "cannot create consumer {} on stream {stream_name}: {e}",
                settings.durable
            ))
        })?;
    let reader = Reader {
        settings,
        sink,
        clock,
        health,
        ids: IdGenerator::new(),
        said_invalid: false,
    };
    tokio::pin!(stop);
    let mut reader = reader;
    loop {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(reader.settings.batch.min(1_000))
            .heartbeat(Duration::from_secs(5))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(
                    "NATS consumer {}: cannot pull: {e}; retrying",
                    reader.settings.durable
                );
                tokio::select! {
                    () = &mut stop => return Ok(()),
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                }
            }
        };
        loop {
            let first = tokio::select! {
                () = &mut stop => return Ok(()),
                m = messages.next() => m,
            };
            let first = match first {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!("NATS consumer {}: {e}", reader.settings.durable);
                    continue;
                }
                None => break,
            };
            let mut group = vec![first];
            while group.len() < reader.settings.batch {
                match tokio::time::timeout(reader.settings.linger, messages.next()).await {
                    Ok(Some(Ok(m))) => group.push(m),
                    Ok(Some(Err(e))) => {
                        tracing::debug!("NATS consumer {}: {e}", reader.settings.durable);
                        break;
                    }
                    Ok(None) | Err(_) => break,
                }
            }
            if !reader.ingest(group, &mut stop).await {
                return Ok(());
            }
        }
    }
}

struct Reader {
    settings: ConsumerSettings,
    sink: Arc<dyn EventSink>,
    clock: SharedClock,
    health: Arc<ConsumerHealth>,
    ids: IdGenerator,
    said_invalid: bool,
}

impl Reader {
    /// Validates, submits and acknowledges one group. `false` when the collector is stopping.
    async fn ingest(
        &mut self,
        group: Vec<Message>,
        stop: &mut std::pin::Pin<&mut impl std::future::Future<Output = ()>>,
    ) -> bool {
        let mut events = Vec::with_capacity(group.len());
        let mut kept = Vec::with_capacity(group.len());
        for msg in group {
            match self.validate(&msg) {
                Ok(e) => {
                    events.push(e);
                    kept.push(msg);
                }
                Err(why) => {
                    self.health.invalid.fetch_add(1, Ordering::Relaxed);
                    if !self.said_invalid {
                        self.said_invalid = true;
                        tracing::warn!(
                            "NATS consumer {}: dropping a message on {} that can never be stored \
                             (further ones are only counted): {why}",
                            self.settings.durable,
                            msg.subject
                        );
                    }
                    if let Err(e) = msg.ack_with(AckKind::Term).await {
                        tracing::debug!("NATS: cannot terminate a message: {e}");
                    }
                }
            }
        }
        if events.is_empty() {
            return true;
        }
        let n = events.len();
        let mut wait = Duration::from_millis(100);
        let mut batch = events;
        loop {
            match self.sink.submit(batch).await {
                Ok(_) => break,
                Err(SinkError::Overloaded { retry_after_secs }) => {
                    self.health.overloaded.fetch_add(1, Ordering::Relaxed);
                    let after = wait.min(Duration::from_secs(retry_after_secs.max(1)));
                    wait = (wait * 2).min(Duration::from_secs(5));
                    tokio::select! {
                        () = stop.as_mut() => return false,
                        () = tokio::time::sleep(after) => {}
                    }
                    // The refused batch was consumed; the messages are still here, and valid.
                    batch = kept.iter().filter_map(|m| self.validate(m).ok()).collect();
                }
                Err(SinkError::Closed) => return false,
                Err(SinkError::Store(e)) => {
                    tracing::error!(
                        "NATS consumer {}: the store did not take {n} event(s), they will be \
                         delivered again: {e}",
                        self.settings.durable
                    );
                    for msg in &kept {
                        let _ = msg
                            .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                            .await;
                    }
                    return true;
                }
            }
        }
        self.health.stored.fetch_add(n as u64, Ordering::Relaxed);
        for msg in &kept {
            if let Err(e) = msg.ack().await {
                // Redelivered after the ack wait; the store keeps the id once.
                tracing::debug!("NATS: an acknowledgement was not sent: {e}");
            }
        }
        true
    }

    /// One message as the one event it must hold, checked as HTTP ingest checks a post.
    fn validate(&self, msg: &Message) -> Result<Event, String> {
        let msg_id = msg
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .ok_or("the message has no Nats-Msg-Id header (publish with the event id as it)")?;
        // An event without a timestamp gets the time JetStream stored the message, the same on
        // every redelivery (the collector's clock would give each delivery another, and a store
        // keyed by (id, ts) another row); the skew bound is against that time too.
        let published = msg.info().ok().map(|i| {
            Timestamp::from_micros(
                i64::try_from(i.published.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX),
            )
        });
        let stored_at;
        let clock: &dyn Clock = match published {
            Some(at) => {
                stored_at = ManualClock::new(at);
                &stored_at
            }
            None => self.clock.as_ref(),
        };
        let defaults = Defaults {
            ids: &self.ids,
            clock,
            source: NATS_SOURCE,
            max_events: 1,
            max_future_skew: self.settings.max_clock_skew,
        };
        let mut events =
            parse_batch(&msg.payload, BodyFormat::Json, &defaults).map_err(|e| e.to_string())?;
        let Some(event) = events.pop().filter(|_| events.is_empty()) else {
            return Err("a message must hold exactly one event".into());
        };
        if event.id != msg_id {
            return Err(format!(
                "the event id {:?} is not the message's Nats-Msg-Id {msg_id:?}",
                event.id
            ));
        }
        let foreign = foreign_token_sources(std::slice::from_ref(&event), NATS_SOURCE);
        if let Some(f) = foreign.first() {
            return Err(format!("{}: {}", f.field, f.message));
        }
        Ok(event)
    }
}
