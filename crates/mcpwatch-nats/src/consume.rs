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

use crate::relay::{RelayKey, RELAY_HEADER};
use crate::stream::StreamSettings;
use crate::subject::subject_for;
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
    /// What to make of messages a cluster node relayed from its ingest API.
    pub relay: RelayCheck,
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
            relay: RelayCheck::Refuse,
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
    let decoder =
        Decoder::new(clock, settings.max_clock_skew).with_relay_check(settings.relay.clone());
    let reader = Reader {
        settings,
        sink,
        health,
        decoder,
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
    health: Arc<ConsumerHealth>,
    decoder: Decoder,
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
                Err(SinkError::Store(e) | SinkError::TooLarge(e)) => {
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
        self.decoder.decode(&Received::from_message(msg))
    }
}

/// A message as read from the stream: what [`Decoder::decode`] needs of it, whether it came
/// from a consumer or from an export of the stream.
#[derive(Debug, Clone, Copy)]
pub struct Received<'a> {
    /// The message's body.
    pub payload: &'a [u8],
    /// Its `Nats-Msg-Id` header.
    pub msg_id: Option<&'a str>,
    /// The subject it was published on.
    pub subject: &'a str,
    /// When JetStream stored it.
    pub published: Option<Timestamp>,
    /// Its `Mcpwatch-Relay-Mac` header ([`crate::relay`]).
    pub relay_mac: Option<&'a str>,
}

impl<'a> Received<'a> {
    /// What a JetStream message says.
    pub fn from_message(msg: &'a Message) -> Self {
        Self {
            payload: &msg.payload,
            msg_id: msg
                .headers
                .as_ref()
                .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
                .map(async_nats::HeaderValue::as_str),
            subject: msg.subject.as_str(),
            published: msg.info().ok().map(|i| published_at(i.published)),
            relay_mac: msg
                .headers
                .as_ref()
                .and_then(|h| h.get(RELAY_HEADER))
                .map(async_nats::HeaderValue::as_str),
        }
    }
}

/// The first message of `filter` at or after sequence `from` on `stream`: its sequence and
/// publish time, `None` when there is none (a direct look-up, no consumer). How `cluster status`
/// measures a task's lag and how a task finds out that its consumer went quiet.
pub async fn next_message<I>(
    stream: &async_nats::jetstream::stream::Stream<I>,
    filter: &str,
    from: u64,
) -> Result<Option<(u64, Timestamp)>, async_nats::jetstream::stream::RawMessageError> {
    use async_nats::jetstream::stream::RawMessageErrorKind;
    match stream
        .raw_message_builder()
        .sequence(from.max(1))
        .next_by_subject(filter)
        .send()
        .await
    {
        Ok(m) => Ok(Some((m.sequence, published_at(m.time)))),
        Err(e) if e.kind() == RawMessageErrorKind::NoMessageFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// A JetStream publish time as a [`Timestamp`].
pub fn published_at(t: time::OffsetDateTime) -> Timestamp {
    Timestamp::from_micros(i64::try_from(t.unix_timestamp_nanos() / 1_000).unwrap_or(i64::MAX))
}

/// Turns messages into events exactly as the collector stores them: the storing consumer, the
/// cluster's detection tasks and `replay` over an export all decode through this, so they agree
/// on which messages hold an event and on what it says.
pub struct Decoder {
    ids: IdGenerator,
    clock: SharedClock,
    max_clock_skew: Duration,
    relay: RelayCheck,
}

/// What a [`Decoder`] makes of a relayed message's MAC.
#[derive(Debug, Clone)]
pub enum RelayCheck {
    /// Not a cluster node: a relayed message is refused (an `api:` source is, anyway).
    Refuse,
    /// A cluster node: a valid MAC lets an `api:` source through; a wrong one refuses it.
    Verify(RelayKey),
    /// Offline (`replay --stream` without the key): a MAC is taken as valid.
    Trust,
}

impl Decoder {
    /// Events without a timestamp get the message's publish time (else `clock`'s); none may be
    /// dated more than `max_clock_skew` past it.
    pub fn new(clock: SharedClock, max_clock_skew: Duration) -> Self {
        Self {
            ids: IdGenerator::new(),
            clock,
            max_clock_skew,
            relay: RelayCheck::Refuse,
        }
    }

    /// Decides on relayed messages as `check` says.
    pub fn with_relay_check(mut self, check: RelayCheck) -> Self {
        self.relay = check;
        self
    }

    /// The one event `msg` holds, or why it can never be stored.
    pub fn decode(&self, msg: &Received<'_>) -> Result<Event, String> {
        let msg_id = msg
            .msg_id
            .ok_or("the message has no Nats-Msg-Id header (publish with the event id as it)")?;
        // An event without a timestamp gets the time JetStream stored the message, the same on
        // every redelivery (the collector's clock would give each delivery another, and a store
        // keyed by (id, ts) another row); the skew bound is against that time too.
        let stored_at;
        let clock: &dyn Clock = match msg.published {
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
            max_future_skew: self.max_clock_skew,
        };
        let mut events =
            parse_batch(msg.payload, BodyFormat::Json, &defaults).map_err(|e| e.to_string())?;
        let Some(event) = events.pop().filter(|_| events.is_empty()) else {
            return Err("a message must hold exactly one event".into());
        };
        if event.id != msg_id {
            return Err(format!(
                "the event id {:?} is not the message's Nats-Msg-Id {msg_id:?}",
                event.id
            ));
        }
        // Detection tasks read by subject: an event published where its keys do not put it
        // would reach the wrong tasks (a user's failures split over partitions, each under a
        // threshold), so it is refused here, where storing and detecting both decide.
        let belongs = subject_for(&event);
        if belongs != msg.subject {
            return Err(format!(
                "published on {} but its user, server and IP put it on {belongs} \
                 (edges compute the subject; see mcpwatch-nats' subject module)",
                msg.subject
            ));
        }
        let relayed = match (msg.relay_mac, &self.relay) {
            (None, _) => false,
            (Some(_), RelayCheck::Trust) => true,
            (Some(mac), RelayCheck::Verify(key)) if key.verify(msg_id, msg.payload, mac) => true,
            (Some(_), RelayCheck::Verify(_)) => {
                return Err(format!(
                    "its {RELAY_HEADER} is not this cluster's: not relayed by one of its nodes"
                ))
            }
            (Some(_), RelayCheck::Refuse) => {
                return Err(format!(
                    "it carries {RELAY_HEADER}, but this collector is not a cluster node (serve --cluster) and cannot check it"
                ))
            }
        };
        if !relayed {
            let foreign = foreign_token_sources(std::slice::from_ref(&event), NATS_SOURCE);
            if let Some(f) = foreign.first() {
                return Err(format!("{}: {}", f.field, f.message));
            }
        }
        Ok(event)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::relay::RelayKey;

    /// An event as an edge publishes it: serialised by serde, with its subject and id.
    fn published(source: &str, user: &str) -> (Vec<u8>, String, String) {
        let e: Event = serde_json::from_value(serde_json::json!({
            "id": "0190b7c2-0000-7000-8000-000000000001",
            "timestamp": 1_700_000_000.0,
            "level": "warning",
            "category": "security",
            "source": source,
            "event_type": "authentication",
            "message": "sign-in failed",
            "metadata": {"user_id": user, "result": "failure", "ip_address": "10.0.0.1"},
            "tags": []
        }))
        .expect("an event");
        (
            serde_json::to_vec(&e).expect("json"),
            subject_for(&e),
            e.id.clone(),
        )
    }

    fn decoder(check: RelayCheck) -> Decoder {
        let clock: SharedClock = Arc::new(ManualClock::new(Timestamp::from_micros(
            1_700_000_000_000_000,
        )));
        Decoder::new(clock, Duration::from_secs(300)).with_relay_check(check)
    }

    fn msg<'a>(
        body: &'a [u8],
        subject: &'a str,
        id: &'a str,
        mac: Option<&'a str>,
    ) -> Received<'a> {
        Received {
            payload: body,
            msg_id: Some(id),
            subject,
            published: Some(Timestamp::from_micros(1_700_000_000_000_000)),
            relay_mac: mac,
        }
    }

    #[test]
    fn an_event_on_another_partition_s_subject_is_refused() {
        let (body, subject, id) = published("app:login", "alice");
        let d = decoder(RelayCheck::Refuse);
        assert!(d.decode(&msg(&body, &subject, &id, None)).is_ok());
        // Filed under another user's partition, it would reach that partition's task only.
        let p = crate::subject::partition("alice");
        let other = subject.replacen(
            &format!("{}.{p}.", crate::subject::PREFIX),
            &format!("{}.{}.", crate::subject::PREFIX, (p + 1) % 16),
            1,
        );
        assert_ne!(other, subject);
        let err = d.decode(&msg(&body, &other, &id, None)).unwrap_err();
        assert!(err.contains(&other) && err.contains(&subject), "{err}");
    }

    #[test]
    fn an_api_source_passes_only_with_the_cluster_s_relay_mac() {
        let (body, subject, id) = published("api:ci", "alice");
        let key = RelayKey::new([3; 32]);
        let good = key.sign(&id, &body);
        let bad = RelayKey::new([4; 32]).sign(&id, &body);
        let verify = decoder(RelayCheck::Verify(key));
        assert!(verify.decode(&msg(&body, &subject, &id, None)).is_err());
        assert!(verify
            .decode(&msg(&body, &subject, &id, Some(&good)))
            .is_ok());
        let err = verify
            .decode(&msg(&body, &subject, &id, Some(&bad)))
            .unwrap_err();
        assert!(err.contains("not this cluster's"), "{err}");
        // The MAC covers the body: a relayed message edited on the way is refused.
        let edited = String::from_utf8(body.clone())
            .unwrap()
            .replace("failure", "success")
            .into_bytes();
        let err = verify
            .decode(&msg(&edited, &subject, &id, Some(&good)))
            .unwrap_err();
        assert!(err.contains("not this cluster's"), "{err}");
        let refuse = decoder(RelayCheck::Refuse);
        assert!(refuse
            .decode(&msg(&body, &subject, &id, Some(&good)))
            .unwrap_err()
            .contains("not a cluster node"));
        assert!(decoder(RelayCheck::Trust)
            .decode(&msg(&body, &subject, &id, Some(&bad)))
            .is_ok());
    }
}
