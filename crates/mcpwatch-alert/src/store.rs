//! The alert database: `alerts.db` in the data directory (SQLite, WAL), apart from the event
//! store. Three tables: `alerts` (one row per alert, at most one open per fingerprint),
//! `silences`, and `deliveries`, the outbox: one row per notification per channel, with its
//! status, attempts, next attempt time and last error.
//!
//! Functions take a `&Connection` so callers group them into one transaction.

use std::collections::BTreeMap;
use std::path::Path;

use mcpwatch_core::Timestamp;
use mcpwatch_detect::{Alert, AlertStatus, FindingSource, Severity};
use rusqlite::{params, Connection, OptionalExtension, Row};

use crate::error::AlertError;
use crate::model::{
    AlertRecord, Delivery, DeliveryState, DeliveryStatus, NotificationKind, Silence,
};

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS alerts (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    fingerprint TEXT NOT NULL,
    source TEXT NOT NULL,
    name TEXT NOT NULL,
    severity TEXT NOT NULL,
    status TEXT NOT NULL,
    first_seen INTEGER NOT NULL,
    last_seen INTEGER NOT NULL,
    count INTEGER NOT NULL,
    description TEXT NOT NULL,
    recommended_action TEXT NOT NULL,
    grp TEXT NOT NULL,
    event_ids TEXT NOT NULL,
    tags TEXT NOT NULL,
    updated_at INTEGER NOT NULL,
    notified_at INTEGER,
    notified_severity TEXT,
    acknowledged_at INTEGER,
    resolved_at INTEGER
);
CREATE UNIQUE INDEX IF NOT EXISTS alerts_open ON alerts(fingerprint) WHERE status != 'resolved';
CREATE INDEX IF NOT EXISTS alerts_status ON alerts(status, updated_at);
CREATE TABLE IF NOT EXISTS silences (
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    matchers TEXT NOT NULL,
    starts_at INTEGER NOT NULL,
    ends_at INTEGER NOT NULL,
    comment TEXT NOT NULL,
    created_by TEXT NOT NULL,
    created_at INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    id INTEGER PRIMARY KEY,
    alert_id TEXT NOT NULL,
    channel TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    created_at INTEGER NOT NULL,
    next_attempt_at INTEGER NOT NULL,
    last_attempt_at INTEGER,
    delivered_at INTEGER,
    last_error TEXT,
    response TEXT
);
CREATE INDEX IF NOT EXISTS deliveries_pending ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX IF NOT EXISTS deliveries_alert ON deliveries(alert_id, channel, id);
";

/// Opens (creating if needed) `alerts.db` in `data_dir`.
pub fn open(data_dir: &Path) -> Result<Connection, AlertError> {
    let path = data_dir.join("alerts.db");
    let err = |source| AlertError::Open {
        path: path.display().to_string(),
        source,
    };
    std::fs::create_dir_all(data_dir).map_err(|e| AlertError::Open {
        path: path.display().to_string(),
        source: rusqlite::Error::ToSqlConversionFailure(Box::new(e)),
    })?;
    let conn = Connection::open(&path).map_err(err)?;
    conn.pragma_update(None, "journal_mode", "WAL")
        .map_err(err)?;
    conn.pragma_update(None, "synchronous", "FULL")
        .map_err(err)?;
    conn.busy_timeout(std::time::Duration::from_secs(5))
        .map_err(err)?;
    conn.execute_batch(SCHEMA).map_err(err)?;
    Ok(conn)
}

const ALERT_COLUMNS: &str = "id, fingerprint, source, name, severity, status, first_seen, last_seen, count, \
     description, recommended_action, grp, event_ids, tags, updated_at, notified_at, acknowledged_at, resolved_at, seq";

fn ts(v: i64) -> Timestamp {
    Timestamp::from_micros(v)
}

fn parse_status(s: &str) -> AlertStatus {
    match s {
        "sent" => AlertStatus::Sent,
        "acknowledged" => AlertStatus::Acknowledged,
        "resolved" => AlertStatus::Resolved,
        "suppressed" => AlertStatus::Suppressed,
        _ => AlertStatus::New,
    }
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

fn alert_from_row(row: &Row<'_>) -> rusqlite::Result<(AlertRecord, i64)> {
    let grp: String = row.get(11)?;
    let event_ids: String = row.get(12)?;
    let tags: String = row.get(13)?;
    let severity: String = row.get(4)?;
    let alert = Alert {
        id: row.get(0)?,
        fingerprint: row.get(1)?,
        source: parse_source(&row.get::<_, String>(2)?),
        name: row.get(3)?,
        severity: Severity::parse(&severity).unwrap_or(Severity::Low),
        status: parse_status(&row.get::<_, String>(5)?),
        first_seen: ts(row.get(6)?),
        last_seen: ts(row.get(7)?),
        count: row.get::<_, i64>(8)?.max(0) as u64,
        description: row.get(9)?,
        recommended_action: row.get(10)?,
        group: json_or_default::<BTreeMap<String, String>>(&grp),
        event_ids: json_or_default(&event_ids),
    };
    let record = AlertRecord {
        alert,
        tags: json_or_default(&tags),
        updated_at: ts(row.get(14)?),
        notified_at: row.get::<_, Option<i64>>(15)?.map(ts),
        acknowledged_at: row.get::<_, Option<i64>>(16)?.map(ts),
        resolved_at: row.get::<_, Option<i64>>(17)?.map(ts),
        channels: BTreeMap::new(),
        deliveries: None,
    };
    Ok((record, row.get(18)?))
}

/// The open alert with this fingerprint, if any.
pub fn find_open(conn: &Connection, fingerprint: &str) -> Result<Option<AlertRecord>, AlertError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE fingerprint = ?1 AND status != 'resolved'"
    );
    Ok(conn
        .query_row(&sql, [fingerprint], alert_from_row)
        .optional()?
        .map(|(a, _)| a))
}

/// One alert with its latest state per channel; with `history`, every delivery too.
pub fn get(conn: &Connection, id: &str, history: bool) -> Result<Option<AlertRecord>, AlertError> {
    let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1");
    let Some((mut a, _)) = conn.query_row(&sql, [id], alert_from_row).optional()? else {
        return Ok(None);
    };
    let all = deliveries_for(conn, id)?;
    a.channels = latest_per_channel(&all);
    if history {
        a.deliveries = Some(all);
    }
    Ok(Some(a))
}

fn latest_per_channel(all: &[Delivery]) -> BTreeMap<String, DeliveryState> {
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

/// Whether an alert with this id exists (open or not).
pub fn exists(conn: &Connection, id: &str) -> Result<bool, AlertError> {
    Ok(conn
        .query_row("SELECT 1 FROM alerts WHERE id = ?1", [id], |_| Ok(()))
        .optional()?
        .is_some())
}

fn json(v: &impl serde::Serialize) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

/// Inserts a new alert.
pub fn insert(conn: &Connection, r: &AlertRecord) -> Result<(), AlertError> {
    let a = &r.alert;
    conn.execute(
        "INSERT INTO alerts (id, fingerprint, source, name, severity, status, first_seen, last_seen, count, \
         description, recommended_action, grp, event_ids, tags, updated_at, notified_at, acknowledged_at, resolved_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)",
        params![
            a.id, a.fingerprint, a.source.as_str(), a.name, a.severity.as_str(), status_str(a.status),
            a.first_seen.as_micros(), a.last_seen.as_micros(), a.count as i64, a.description,
            a.recommended_action, json(&a.group), json(&a.event_ids), json(&r.tags),
            r.updated_at.as_micros(), r.notified_at.map(Timestamp::as_micros),
            r.acknowledged_at.map(Timestamp::as_micros), r.resolved_at.map(Timestamp::as_micros),
        ],
    )?;
    Ok(())
}

/// Writes back every mutable field of an alert.
pub fn update(conn: &Connection, r: &AlertRecord) -> Result<(), AlertError> {
    let a = &r.alert;
    conn.execute(
        "UPDATE alerts SET severity = ?2, status = ?3, last_seen = ?4, count = ?5, description = ?6, \
         event_ids = ?7, tags = ?8, updated_at = ?9, notified_at = ?10, acknowledged_at = ?11, resolved_at = ?12 \
         WHERE id = ?1",
        params![
            a.id, a.severity.as_str(), status_str(a.status), a.last_seen.as_micros(), a.count as i64,
            a.description, json(&a.event_ids), json(&r.tags), r.updated_at.as_micros(),
            r.notified_at.map(Timestamp::as_micros), r.acknowledged_at.map(Timestamp::as_micros),
            r.resolved_at.map(Timestamp::as_micros),
        ],
    )?;
    Ok(())
}

/// The severity of the latest notification queued for an alert.
pub fn notified_severity(conn: &Connection, id: &str) -> Result<Option<Severity>, AlertError> {
    let s: Option<Option<String>> = conn
        .query_row(
            "SELECT notified_severity FROM alerts WHERE id = ?1",
            [id],
            |r| r.get(0),
        )
        .optional()?;
    Ok(s.flatten().and_then(|s| Severity::parse(&s)))
}

/// Records that a notification at `severity` was queued at `at`.
pub fn set_notified(
    conn: &Connection,
    id: &str,
    at: Timestamp,
    severity: Severity,
) -> Result<(), AlertError> {
    conn.execute(
        "UPDATE alerts SET notified_at = ?2, notified_severity = ?3 WHERE id = ?1",
        params![id, at.as_micros(), severity.as_str()],
    )?;
    Ok(())
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

/// Alerts newest first, and the cursor of the next page.
pub fn list(
    conn: &Connection,
    f: &AlertFilter,
) -> Result<(Vec<AlertRecord>, Option<i64>), AlertError> {
    let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE 1 = 1");
    let mut args: Vec<rusqlite::types::Value> = Vec::new();
    let mut add = |clause: &str, v: rusqlite::types::Value| {
        args.push(v);
        sql.push_str(&format!(" AND {clause} ?{}", args.len()));
    };
    if let Some(s) = f.status {
        add("status =", status_str(s).to_owned().into());
    }
    if let Some(s) = f.severity {
        add("severity =", s.as_str().to_owned().into());
    }
    if let Some(n) = &f.name {
        add("name =", n.clone().into());
    }
    if let Some(s) = f.source {
        add("source =", s.as_str().to_owned().into());
    }
    if let Some(c) = f.before_seq {
        add("seq <", c.into());
    }
    sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", f.limit + 1));
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(rusqlite::params_from_iter(args), alert_from_row)?;
    let mut out = Vec::new();
    for r in rows {
        out.push(r?);
    }
    let next = if out.len() > f.limit {
        out.truncate(f.limit);
        out.last().map(|(_, seq)| *seq)
    } else {
        None
    };
    let mut alerts = Vec::with_capacity(out.len());
    for (mut a, _) in out {
        a.channels = latest_per_channel(&deliveries_for(conn, &a.alert.id)?);
        alerts.push(a);
    }
    Ok((alerts, next))
}

/// Open alerts not updated since `before`, at most `limit`.
pub fn quiet(
    conn: &Connection,
    before: Timestamp,
    limit: usize,
) -> Result<Vec<AlertRecord>, AlertError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE status != 'resolved' AND updated_at < ?1 ORDER BY updated_at LIMIT ?2"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map(params![before.as_micros(), limit as i64], alert_from_row)?;
    rows.map(|r| r.map(|(a, _)| a).map_err(AlertError::from))
        .collect()
}

/// Alerts that silences apply to (`new`, `sent`, `suppressed`), newest first, at most `limit`.
pub fn open_unacknowledged(
    conn: &Connection,
    limit: usize,
) -> Result<Vec<AlertRecord>, AlertError> {
    let sql = format!(
        "SELECT {ALERT_COLUMNS} FROM alerts WHERE status IN ('new', 'sent', 'suppressed') ORDER BY seq DESC LIMIT ?1"
    );
    let mut stmt = conn.prepare(&sql)?;
    let rows = stmt.query_map([limit as i64], alert_from_row)?;
    rows.map(|r| r.map(|(a, _)| a).map_err(AlertError::from))
        .collect()
}

/// Deletes resolved alerts (and their deliveries) resolved before `before`; returns how many.
pub fn prune(conn: &Connection, before: Timestamp) -> Result<usize, AlertError> {
    conn.execute(
        "DELETE FROM deliveries WHERE alert_id IN (SELECT id FROM alerts WHERE status = 'resolved' AND resolved_at < ?1)",
        [before.as_micros()],
    )?;
    Ok(conn.execute(
        "DELETE FROM alerts WHERE status = 'resolved' AND resolved_at < ?1",
        [before.as_micros()],
    )?)
}

// ---- the outbox ----

const DELIVERY_COLUMNS: &str =
    "id, alert_id, channel, kind, status, attempts, created_at, next_attempt_at, \
     last_attempt_at, delivered_at, last_error, response";

fn delivery_from_row(row: &Row<'_>) -> rusqlite::Result<Delivery> {
    Ok(Delivery {
        id: row.get(0)?,
        alert_id: row.get(1)?,
        channel: row.get(2)?,
        kind: NotificationKind::parse(&row.get::<_, String>(3)?)
            .unwrap_or(NotificationKind::Firing),
        status: DeliveryStatus::parse(&row.get::<_, String>(4)?).unwrap_or(DeliveryStatus::Failed),
        attempts: row.get::<_, i64>(5)?.clamp(0, u32::MAX as i64) as u32,
        created_at: ts(row.get(6)?),
        next_attempt_at: ts(row.get(7)?),
        last_attempt_at: row.get::<_, Option<i64>>(8)?.map(ts),
        delivered_at: row.get::<_, Option<i64>>(9)?.map(ts),
        last_error: row.get(10)?,
        response: row.get(11)?,
    })
}

/// Every delivery of an alert, oldest first.
pub fn deliveries_for(conn: &Connection, alert_id: &str) -> Result<Vec<Delivery>, AlertError> {
    let sql = format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE alert_id = ?1 ORDER BY id");
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map([alert_id], delivery_from_row)?;
    rows.map(|r| r.map_err(AlertError::from)).collect()
}

/// Rows waiting for delivery.
pub fn pending_count(conn: &Connection) -> Result<usize, AlertError> {
    let n: i64 = conn.query_row(
        "SELECT count(*) FROM deliveries WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )?;
    Ok(n.max(0) as usize)
}

/// Queues a notification unless one of the same kind is already pending for that alert and
/// channel; returns whether a row was added.
pub fn enqueue(
    conn: &Connection,
    alert_id: &str,
    channel: &str,
    kind: NotificationKind,
    now: Timestamp,
) -> Result<bool, AlertError> {
    let pending: Option<i64> = conn
        .query_row(
            "SELECT id FROM deliveries WHERE alert_id = ?1 AND channel = ?2 AND kind = ?3 AND status = 'pending'",
            params![alert_id, channel, kind.as_str()],
            |r| r.get(0),
        )
        .optional()?;
    if pending.is_some() {
        return Ok(false);
    }
    conn.execute(
        "INSERT INTO deliveries (alert_id, channel, kind, status, created_at, next_attempt_at) VALUES (?1, ?2, ?3, 'pending', ?4, ?4)",
        params![alert_id, channel, kind.as_str(), now.as_micros()],
    )?;
    Ok(true)
}

/// Channels that were sent (or are being sent) a firing notification for this alert.
pub fn channels_notified(conn: &Connection, alert_id: &str) -> Result<Vec<String>, AlertError> {
    let mut stmt = conn.prepare_cached(
        "SELECT DISTINCT channel FROM deliveries WHERE alert_id = ?1 AND kind = 'firing' AND status != 'failed' ORDER BY channel",
    )?;
    let rows = stmt.query_map([alert_id], |r| r.get(0))?;
    rows.map(|r| r.map_err(AlertError::from)).collect()
}

/// Pending rows due at `now`, oldest first, at most `limit`; a row waits while an older row for
/// the same alert and channel is pending, so a resolve never overtakes its trigger.
pub fn due(conn: &Connection, now: Timestamp, limit: usize) -> Result<Vec<Delivery>, AlertError> {
    let sql = format!(
        "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE status = 'pending' AND next_attempt_at <= ?1 \
         AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.alert_id = d.alert_id AND e.channel = d.channel \
                         AND e.status = 'pending' AND e.id < d.id) \
         ORDER BY next_attempt_at, id LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let rows = stmt.query_map(params![now.as_micros(), limit as i64], delivery_from_row)?;
    rows.map(|r| r.map_err(AlertError::from)).collect()
}

/// When the next pending row is due.
pub fn next_due(conn: &Connection) -> Result<Option<Timestamp>, AlertError> {
    let v: Option<i64> = conn.query_row(
        "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )?;
    Ok(v.map(ts))
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

/// Records one attempt on an outbox row.
pub fn record_attempt(
    conn: &Connection,
    id: i64,
    now: Timestamp,
    outcome: Attempt<'_>,
) -> Result<(), AlertError> {
    let now = now.as_micros();
    match outcome {
        Attempt::Delivered(response) => conn.execute(
            "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, last_attempt_at = ?2, \
             delivered_at = ?2, response = ?3 WHERE id = ?1",
            params![id, now, response],
        )?,
        Attempt::Retry(error, next) => conn.execute(
            "UPDATE deliveries SET attempts = attempts + 1, last_attempt_at = ?2, last_error = ?3, next_attempt_at = ?4 WHERE id = ?1",
            params![id, now, error, next.as_micros()],
        )?,
        Attempt::Failed(error) => conn.execute(
            "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
            params![id, now, error],
        )?,
    };
    Ok(())
}

// ---- silences ----

fn silence_from_row(row: &Row<'_>) -> rusqlite::Result<Silence> {
    let matchers: String = row.get(1)?;
    Ok(Silence {
        id: row.get(0)?,
        matchers: json_or_default(&matchers),
        starts_at: ts(row.get(2)?),
        ends_at: ts(row.get(3)?),
        comment: row.get(4)?,
        created_by: row.get(5)?,
        created_at: ts(row.get(6)?),
    })
}

const SILENCE_COLUMNS: &str = "id, matchers, starts_at, ends_at, comment, created_by, created_at";

/// Stores a silence.
pub fn insert_silence(conn: &Connection, s: &Silence) -> Result<(), AlertError> {
    conn.execute(
        "INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
        params![s.id, json(&s.matchers), s.starts_at.as_micros(), s.ends_at.as_micros(), s.comment, s.created_by, s.created_at.as_micros()],
    )?;
    Ok(())
}

/// Silences newest first; with `active_at`, only those in force then (or starting later).
pub fn silences(
    conn: &Connection,
    active_at: Option<Timestamp>,
    limit: usize,
) -> Result<Vec<Silence>, AlertError> {
    let sql = format!(
        "SELECT {SILENCE_COLUMNS} FROM silences WHERE ends_at > ?1 ORDER BY seq DESC LIMIT ?2"
    );
    let mut stmt = conn.prepare_cached(&sql)?;
    let after = active_at.map_or(i64::MIN, Timestamp::as_micros);
    let rows = stmt.query_map(params![after, limit as i64], silence_from_row)?;
    rows.map(|r| r.map_err(AlertError::from)).collect()
}

/// One silence.
pub fn get_silence(conn: &Connection, id: &str) -> Result<Option<Silence>, AlertError> {
    let sql = format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1");
    Ok(conn.query_row(&sql, [id], silence_from_row).optional()?)
}

/// Whether a silence started or ended after `after` and at or before `upto` (micros).
pub fn silence_boundary_between(
    conn: &Connection,
    after: i64,
    upto: i64,
) -> Result<bool, AlertError> {
    Ok(conn
        .query_row(
            "SELECT 1 FROM silences WHERE (starts_at > ?1 AND starts_at <= ?2) OR (ends_at > ?1 AND ends_at <= ?2) LIMIT 1",
            params![after, upto],
            |_| Ok(()),
        )
        .optional()?
        .is_some())
}

/// Ends a silence at `now` (kept for the record).
pub fn expire_silence(conn: &Connection, id: &str, now: Timestamp) -> Result<bool, AlertError> {
    let n = conn.execute(
        "UPDATE silences SET ends_at = min(ends_at, ?2) WHERE id = ?1",
        params![id, now.as_micros()],
    )?;
    Ok(n > 0)
}
