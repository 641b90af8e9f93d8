//! The records alerting keeps and hands around: a stored alert with its delivery state, one
//! outbox row, a silence, and the notification a channel renders.

use std::collections::BTreeMap;

use mcpwatch_core::Timestamp;
use mcpwatch_detect::Alert;
use serde::Serialize;

/// An alert as the store keeps it: the SPEC 7 fields plus lifecycle times and deliveries.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AlertRecord {
    /// The SPEC 7 fields, shared with `replay`.
    #[serde(flatten)]
    pub alert: Alert,
    /// Tags of the latest firing (rule tags); routes and silences match on them.
    pub tags: Vec<String>,
    /// Collector time of the latest firing; the quiet period counts from here.
    pub updated_at: Timestamp,
    /// Collector time of the latest notification queued, if any.
    pub notified_at: Option<Timestamp>,
    /// When someone acknowledged it.
    pub acknowledged_at: Option<Timestamp>,
    /// When it resolved.
    pub resolved_at: Option<Timestamp>,
    /// The latest delivery per channel (the full history is in [`AlertRecord::deliveries`]).
    pub channels: BTreeMap<String, DeliveryState>,
    /// Every outbox row for this alert, oldest first (only filled for single-alert reads).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub deliveries: Option<Vec<Delivery>>,
}

/// The latest delivery state of one channel for one alert.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DeliveryState {
    /// `firing`, `acknowledged` or `resolved`.
    pub kind: NotificationKind,
    /// `pending`, `delivered` or `failed`.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
}

/// What a notification says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NotificationKind {
    /// The alert fires (first time or a repeat).
    Firing,
    /// The alert is over.
    Resolved,
    /// Someone acknowledged it (PagerDuty's `acknowledge`; other channels are not told).
    Acknowledged,
    /// `mcpwatch alerts test`: not a real alert.
    Test,
}

impl NotificationKind {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            NotificationKind::Firing => "firing",
            NotificationKind::Resolved => "resolved",
            NotificationKind::Acknowledged => "acknowledged",
            NotificationKind::Test => "test",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Firing, Self::Resolved, Self::Acknowledged, Self::Test]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// Where an outbox row is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryStatus {
    /// Waiting for its next attempt.
    Pending,
    /// The receiver accepted it.
    Delivered,
    /// Gave up: attempts exhausted or the receiver refused it for good.
    Failed,
}

impl DeliveryStatus {
    /// The name stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
        }
    }

    /// Parses a stored name.
    pub fn parse(s: &str) -> Option<Self> {
        [Self::Pending, Self::Delivered, Self::Failed]
            .into_iter()
            .find(|k| k.as_str() == s)
    }
}

/// One outbox row: one notification of one alert to one channel.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Delivery {
    /// Row id, in enqueue order.
    pub id: i64,
    /// The alert.
    pub alert_id: String,
    /// The channel's name in the config.
    pub channel: String,
    /// Firing or resolved.
    pub kind: NotificationKind,
    /// Pending, delivered or failed.
    pub status: DeliveryStatus,
    /// Attempts made.
    pub attempts: u32,
    /// When it was queued.
    pub created_at: Timestamp,
    /// When the next attempt is due (pending rows).
    pub next_attempt_at: Timestamp,
    /// When the last attempt ran.
    pub last_attempt_at: Option<Timestamp>,
    /// When the receiver accepted it.
    pub delivered_at: Option<Timestamp>,
    /// Why the last attempt failed.
    pub last_error: Option<String>,
    /// What the receiver answered last (status and the start of the body).
    pub response: Option<String>,
}

/// A silence: alerts matching all its matchers between `starts_at` and `ends_at` are stored as
/// `suppressed` and not sent.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Silence {
    /// Its id.
    pub id: String,
    /// `label=value`, `label!=value` or `label=~regex`; all must match.
    pub matchers: Vec<String>,
    /// From when.
    pub starts_at: Timestamp,
    /// Until when.
    pub ends_at: Timestamp,
    /// Why.
    pub comment: String,
    /// Who created it (the token name, or `anonymous`).
    pub created_by: String,
    /// When it was created.
    pub created_at: Timestamp,
}

impl Silence {
    /// Whether it is in force at `now`.
    pub fn active_at(&self, now: Timestamp) -> bool {
        self.starts_at <= now && now < self.ends_at
    }
}

/// What a channel sends: one alert in one state.
#[derive(Debug, Clone)]
pub struct Notification<'a> {
    /// Firing, resolved or test.
    pub kind: NotificationKind,
    /// The alert as it is now.
    pub alert: &'a AlertRecord,
    /// The channel's name (Alertmanager's `receiver`).
    pub channel: &'a str,
    /// A link to the alert in the collector's API.
    pub link: String,
    /// The collector's base URL.
    pub external_url: &'a str,
    /// Collector time of this attempt (signature timestamps).
    pub now: Timestamp,
    /// The id of this notification, the same on every attempt and from every collector that
    /// sends it (the outbox row's), so that a receiver can drop a re-send: webhooks carry it
    /// in `X-Mcpwatch-Notification-Id`.
    pub id: String,
}
