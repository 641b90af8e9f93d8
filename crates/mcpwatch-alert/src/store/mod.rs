//! The alert store behind one trait, [`AlertStore`], whatever the database: alerts (one row per
//! alert, at most one open per fingerprint), the findings already folded, silences, and the
//! outbox (`deliveries`: one row per notification per channel, with its status, attempts, next
//! attempt time and last error).
//!
//! Everything goes through a transaction ([`AlertStore::begin`]) so that the lifecycle in
//! [`crate::service`] groups its steps atomically; a transaction dropped without
//! [`AlertTx::commit`] rolls back. Backends: [`sqlite::SqliteAlertStore`] (`alerts.db` in the
//! data directory, the default) and [`crate::postgres::PgAlertStore`] (a shared database several
//! collectors use at once). Errors are [`AlertError`]s, whatever the backend.
//!
//! Architecture Invariant: on a backend shared by several processes, a fingerprint is folded by
//! one transaction at a time ([`AlertTx::lock_fingerprint`]), a finding is folded into an alert
//! once however many processes see it ([`AlertTx::record_finding`]), and an outbox row handed out by
//! [`AlertTx::due`] is claimed by that process until a deadline, so it is sent by one process
//! at a time and by another only after the claim expired (at least once, never a lock held
//! across the send).

pub mod sqlite;

use std::collections::BTreeMap;

use mcpwatch_core::Timestamp;
use mcpwatch_detect::{Alert, AlertStatus, FindingSource, Severity};

use crate::error::AlertError;
use crate::model::{
    AlertRecord, Delivery, DeliveryState, DeliveryStatus, NotificationKind, Silence,
};
pub use crate::postgres::cluster::{Checkpoint, Fence};

pub use sqlite::SqliteAlertStore;

/// A database that keeps alerts, silences and the outbox.
pub trait AlertStore: Send + Sync + 'static {
    /// Starts a transaction.
    fn begin(&self) -> Result<Box<dyn AlertTx + '_>, AlertError>;
    /// Starts a transaction that only reads, and sees one snapshot however many statements it
    /// runs (a page of alerts and their deliveries, read apart, must not show an alert as it
    /// was before a delivery next to that delivery). Locking reads are not allowed in it.
    fn read(&self) -> Result<Box<dyn AlertTx + '_>, AlertError> {
        self.begin()
    }
    /// Where the alerts are, for the start-up line (a path, or a URL without its password).
    fn location(&self) -> String;
}

/// One transaction on an [`AlertStore`]: dropped without [`AlertTx::commit`], it rolls back.
pub trait AlertTx {
    /// Makes everything done in this transaction durable.
    fn commit(self: Box<Self>) -> Result<(), AlertError>;

    /// Waits until no other transaction holds this fingerprint, and holds it until the end of
    /// this one (a no-op where transactions never run side by side).
    fn lock_fingerprint(&self, fingerprint: &str) -> Result<(), AlertError>;
    /// Records that the finding with this key was folded into alert `alert_id`; false if it
    /// was already.
    fn record_finding(&self, alert_id: &str, key: &str, at: Timestamp) -> Result<bool, AlertError>;

    /// The open alert with this fingerprint, if any (held until the end of the transaction).
    fn find_open(&self, fingerprint: &str) -> Result<Option<AlertRecord>, AlertError>;
    /// One alert with its latest state per channel; with `history`, every delivery too (held
    /// until the end of the transaction).
    fn get(&self, id: &str, history: bool) -> Result<Option<AlertRecord>, AlertError>;
    /// Whether an alert with this id exists (open or not).
    fn exists(&self, id: &str) -> Result<bool, AlertError>;
    /// Inserts a new alert unless one with its id, or an open one with its fingerprint, exists;
    /// whether it did.
    fn insert(&self, r: &AlertRecord) -> Result<bool, AlertError>;
    /// Writes back every mutable field of an alert.
    fn update(&self, r: &AlertRecord) -> Result<(), AlertError>;
    /// A `new` alert becomes `sent` (a channel accepted its firing notification).
    fn mark_sent(&self, id: &str) -> Result<(), AlertError>;
    /// The severity of the latest notification queued for an alert.
    fn notified_severity(&self, id: &str) -> Result<Option<Severity>, AlertError>;
    /// Records that a notification at `severity` was queued at `at`.
    fn set_notified(&self, id: &str, at: Timestamp, severity: Severity) -> Result<(), AlertError>;
    /// Alerts newest first, and the cursor of the next page.
    fn list(&self, f: &AlertFilter) -> Result<(Vec<AlertRecord>, Option<i64>), AlertError>;
    /// Open alerts not updated since `before`, oldest first, at most `limit`; alerts another
    /// transaction holds are left out.
    fn quiet(&self, before: Timestamp, limit: usize) -> Result<Vec<AlertRecord>, AlertError>;
    /// Alerts that silences apply to (`new`, `sent`, `suppressed`), newest first, at most
    /// `limit` (held until the end of the transaction).
    fn open_unacknowledged(&self, limit: usize) -> Result<Vec<AlertRecord>, AlertError>;
    /// Deletes resolved alerts (and their deliveries) resolved before `before`, and the record
    /// of findings folded before it; returns how many alerts.
    fn prune(&self, before: Timestamp) -> Result<usize, AlertError>;

    /// Queues a notification unless one of the same kind is already pending for that alert and
    /// channel; whether a row was added.
    fn enqueue(
        &self,
        alert_id: &str,
        channel: &str,
        kind: NotificationKind,
        now: Timestamp,
    ) -> Result<bool, AlertError>;
    /// Rows waiting for delivery.
    fn pending_count(&self) -> Result<usize, AlertError>;
    /// Channels that were sent (or are being sent) a firing notification for this alert.
    fn channels_notified(&self, alert_id: &str) -> Result<Vec<String>, AlertError>;
    /// Pending rows due at `now`, oldest first, at most `limit`; a row waits while an older row
    /// for the same alert and channel is pending, so a resolve never overtakes its trigger. On a
    /// shared backend the rows are claimed for this process until a deadline (commit to make the
    /// claim stick) and rows another process claimed are left out until their claim expires.
    fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Delivery>, AlertError>;
    /// When the next pending row is due.
    fn next_due(&self) -> Result<Option<Timestamp>, AlertError>;
    /// Records one attempt on an outbox row and releases its claim.
    fn record_attempt(
        &self,
        id: i64,
        now: Timestamp,
        outcome: Attempt<'_>,
    ) -> Result<(), AlertError>;
    /// Every delivery of an alert, oldest first.
    fn deliveries_for(&self, alert_id: &str) -> Result<Vec<Delivery>, AlertError>;

    /// Stores a silence.
    fn insert_silence(&self, s: &Silence) -> Result<(), AlertError>;
    /// Silences newest first; with `active_at`, only those in force then (or starting later).
    fn silences(
        &self,
        active_at: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<Silence>, AlertError>;
    /// One silence.
    fn get_silence(&self, id: &str) -> Result<Option<Silence>, AlertError>;
    /// Whether a silence started or ended after `after` and at or before `upto` (micros).
    fn silence_boundary_between(&self, after: i64, upto: i64) -> Result<bool, AlertError>;
    /// Ends a silence at `now` (kept for the record); whether it exists.
    fn expire_silence(&self, id: &str, now: Timestamp) -> Result<bool, AlertError>;

    /// Cluster mode: locks the task's lease row until the end of this transaction and checks
    /// that it is still `fence`'s (same owner and epoch, not expired on the database's clock);
    /// [`AlertError::Fenced`] if not. A takeover waits for this transaction to end.
    fn fence(&self, fence: &Fence) -> Result<(), AlertError>;
    /// Cluster mode: writes the task's checkpoint (position, pending count, and the engine
    /// snapshot at that position when given) on its lease row, if `fence` still holds it.
    fn write_checkpoint(&self, fence: &Fence, cp: &Checkpoint) -> Result<(), AlertError>;
}

/// Filters of `GET /alerts`.
#[derive(Debug, Clone, Default)]
pub struct AlertFilter {
    /// Only this status.
    pub status: Option<AlertStatus>,
    /// Only this severity.
    pub severity: Option<Severity>,
    /// Only this name.
    pub name: Option<String>,
    /// Only this source.
    pub source: Option<FindingSource>,
    /// At most this many.
    pub limit: usize,
    /// Only alerts older (by creation) than this cursor.
    pub before_seq: Option<i64>,
}

/// What one attempt came to.
pub enum Attempt<'a> {
    /// Accepted, with the receiver's answer.
    Delivered(&'a str),
    /// Failed; retry at the given time.
    Retry(&'a str, Timestamp),
    /// Failed for good.
    Failed(&'a str),
}

/// The stored name of a status.
pub fn status_str(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::New => "new",
        AlertStatus::Sent => "sent",
        AlertStatus::Acknowledged => "acknowledged",
        AlertStatus::Resolved => "resolved",
        AlertStatus::Suppressed => "suppressed",
    }
}

/// Parses a status name as the API takes it.
pub fn parse_status_name(s: &str) -> Option<AlertStatus> {
    [
        AlertStatus::New,
        AlertStatus::Sent,
        AlertStatus::Acknowledged,
        AlertStatus::Resolved,
        AlertStatus::Suppressed,
    ]
    .into_iter()
    .find(|st| status_str(*st) == s)
}

fn parse_status(s: &str) -> AlertStatus {
    parse_status_name(s).unwrap_or(AlertStatus::New)
}

fn parse_source(s: &str) -> FindingSource {
    match s {
        "anomaly" => FindingSource::Anomaly,
        "threat" => FindingSource::Threat,
        "threshold" => FindingSource::Threshold,
        _ => FindingSource::Rule,
    }
}

fn json_or_default<T: serde::de::DeserializeOwned + Default>(s: &str) -> T {
    serde_json::from_str(s).unwrap_or_default()
}

/// A value as JSON text, as the stores keep lists and maps.
pub(crate) fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn ts(v: i64) -> Timestamp {
    Timestamp::from_micros(v)
}

/// The columns of an alert, in the order [`alert_from_row`] reads them.
pub(crate) const ALERT_COLUMNS: &str = "id, fingerprint, source, name, severity, status, first_seen, last_seen, count, \
     description, recommended_action, grp, event_ids, tags, updated_at, notified_at, acknowledged_at, resolved_at, seq";

/// The columns of a delivery, in the order [`delivery_from_row`] reads them.
pub(crate) const DELIVERY_COLUMNS: &str =
    "id, alert_id, channel, kind, status, attempts, created_at, next_attempt_at, \
     last_attempt_at, delivered_at, last_error, response";

/// The columns of a silence, in the order [`silence_from_row`] reads them.
pub(crate) const SILENCE_COLUMNS: &str =
    "id, matchers, starts_at, ends_at, comment, created_by, created_at";

/// A result row of either backend, read by column index.
pub(crate) trait Columns {
    /// A text column.
    fn text(&self, i: usize) -> Result<String, AlertError>;
    /// A nullable text column.
    fn opt_text(&self, i: usize) -> Result<Option<String>, AlertError>;
    /// An integer column.
    fn int(&self, i: usize) -> Result<i64, AlertError>;
    /// A nullable integer column.
    fn opt_int(&self, i: usize) -> Result<Option<i64>, AlertError>;
}

/// An alert from a row of [`ALERT_COLUMNS`], with its creation sequence number.
pub(crate) fn alert_from_row(row: &impl Columns) -> Result<(AlertRecord, i64), AlertError> {
    let alert = Alert {
        id: row.text(0)?,
        fingerprint: row.text(1)?,
        source: parse_source(&row.text(2)?),
        name: row.text(3)?,
        severity: Severity::parse(&row.text(4)?).unwrap_or(Severity::Low),
        status: parse_status(&row.text(5)?),
        first_seen: ts(row.int(6)?),
        last_seen: ts(row.int(7)?),
        count: row.int(8)?.max(0) as u64,
        description: row.text(9)?,
        recommended_action: row.text(10)?,
        group: json_or_default::<BTreeMap<String, String>>(&row.text(11)?),
        event_ids: json_or_default(&row.text(12)?),
    };
    let record = AlertRecord {
        alert,
        tags: json_or_default(&row.text(13)?),
        updated_at: ts(row.int(14)?),
        notified_at: row.opt_int(15)?.map(ts),
        acknowledged_at: row.opt_int(16)?.map(ts),
        resolved_at: row.opt_int(17)?.map(ts),
        channels: BTreeMap::new(),
        deliveries: None,
    };
    Ok((record, row.int(18)?))
}

/// A delivery from a row of [`DELIVERY_COLUMNS`].
pub(crate) fn delivery_from_row(row: &impl Columns) -> Result<Delivery, AlertError> {
    Ok(Delivery {
        id: row.int(0)?,
        alert_id: row.text(1)?,
        channel: row.text(2)?,
        kind: NotificationKind::parse(&row.text(3)?).unwrap_or(NotificationKind::Firing),
        status: DeliveryStatus::parse(&row.text(4)?).unwrap_or(DeliveryStatus::Failed),
        attempts: row.int(5)?.clamp(0, u32::MAX as i64) as u32,
        created_at: ts(row.int(6)?),
        next_attempt_at: ts(row.int(7)?),
        last_attempt_at: row.opt_int(8)?.map(ts),
        delivered_at: row.opt_int(9)?.map(ts),
        last_error: row.opt_text(10)?,
        response: row.opt_text(11)?,
    })
}

/// A silence from a row of [`SILENCE_COLUMNS`].
pub(crate) fn silence_from_row(row: &impl Columns) -> Result<Silence, AlertError> {
    Ok(Silence {
        id: row.text(0)?,
        matchers: json_or_default(&row.text(1)?),
        starts_at: ts(row.int(2)?),
        ends_at: ts(row.int(3)?),
        comment: row.text(4)?,
        created_by: row.text(5)?,
        created_at: ts(row.int(6)?),
    })
}

/// The latest state per channel of these deliveries (oldest first).
pub(crate) fn latest_per_channel(all: &[Delivery]) -> BTreeMap<String, DeliveryState> {
    let mut out = BTreeMap::new();
    for d in all {
        out.insert(
            d.channel.clone(),
            DeliveryState {
                kind: d.kind,
                status: d.status,
                attempts: d.attempts,
                last_error: d.last_error.clone(),
            },
        );
    }
    out
}

/// Fills in the latest state per channel (and with `history` every delivery) of an alert.
pub(crate) fn with_deliveries(
    tx: &(impl AlertTx + ?Sized),
    mut a: AlertRecord,
    history: bool,
) -> Result<AlertRecord, AlertError> {
    let all = tx.deliveries_for(&a.alert.id)?;
    a.channels = latest_per_channel(&all);
    if history {
        a.deliveries = Some(all);
    }
    Ok(a)
}

/// The page of a list query that fetched `limit + 1` rows: the rows, each with its latest state
/// per channel from `deliveries` (every delivery of the given alerts, oldest first), and the
/// next cursor.
pub(crate) fn page(
    mut out: Vec<(AlertRecord, i64)>,
    limit: usize,
    deliveries: impl FnOnce(&[String]) -> Result<Vec<Delivery>, AlertError>,
) -> Result<(Vec<AlertRecord>, Option<i64>), AlertError> {
    let next = if out.len() > limit {
        out.truncate(limit);
        out.last().map(|(_, seq)| *seq)
    } else {
        None
    };
    let ids: Vec<String> = out.iter().map(|(a, _)| a.alert.id.clone()).collect();
    let mut by_alert: std::collections::HashMap<String, Vec<Delivery>> = Default::default();
    for d in deliveries(&ids)? {
        by_alert.entry(d.alert_id.clone()).or_default().push(d);
    }
    let alerts = out
        .into_iter()
        .map(|(mut a, _)| {
            a.channels = latest_per_channel(by_alert.get(&a.alert.id).map_or(&[], Vec::as_slice));
            a
        })
        .collect();
    Ok((alerts, next))
}
