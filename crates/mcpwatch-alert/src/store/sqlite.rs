//! The default alert store: `alerts.db` in the data directory (SQLite, WAL), apart from the
//! event store. One connection behind a mutex: a transaction holds it, so transactions of one
//! process never run side by side and nothing else shares the file.

use std::path::Path;
use std::sync::{Mutex, MutexGuard};

use mcpwatch_core::Timestamp;
use mcpwatch_detect::Severity;
use mcpwatch_store::DbError;
use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    alert_from_row, delivery_from_row, json, page, silence_from_row, status_str, with_deliveries,
    AlertFilter, AlertStore, AlertTx, Attempt, Checkpoint, Columns, Fence, ALERT_COLUMNS,
    DELIVERY_COLUMNS, SILENCE_COLUMNS,
};
use crate::error::AlertError;
use crate::model::{AlertRecord, Delivery, NotificationKind, Silence};

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
CREATE TABLE IF NOT EXISTS alert_findings (
    alert_id TEXT NOT NULL,
    key TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (alert_id, key)
);
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

/// `alerts.db`.
pub struct SqliteAlertStore {
    conn: Mutex<Connection>,
    path: String,
}

impl SqliteAlertStore {
    /// Opens (creating if needed) `alerts.db` in `data_dir`.
    pub fn open(data_dir: &Path) -> Result<Self, AlertError> {
        let path = data_dir.join("alerts.db");
        let shown = path.display().to_string();
        let err = |e: rusqlite::Error| AlertError::Open {
            path: shown.clone(),
            source: DbError::new(e),
        };
        std::fs::create_dir_all(data_dir).map_err(|e| AlertError::Open {
            path: shown.clone(),
            source: DbError::new(e),
        })?;
        let conn = Connection::open(&path).map_err(err)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(err)?;
        conn.pragma_update(None, "synchronous", "FULL")
            .map_err(err)?;
        conn.busy_timeout(std::time::Duration::from_secs(5))
            .map_err(err)?;
        conn.execute_batch(SCHEMA).map_err(err)?;
        Ok(Self {
            conn: Mutex::new(conn),
            path: shown,
        })
    }
}

impl AlertStore for SqliteAlertStore {
    fn begin(&self) -> Result<Box<dyn AlertTx + '_>, AlertError> {
        let conn = self.conn.lock().unwrap_or_else(|p| p.into_inner());
        conn.execute_batch("BEGIN")?;
        Ok(Box::new(SqliteTx { conn, open: true }))
    }

    fn location(&self) -> String {
        self.path.clone()
    }
}

/// A transaction on `alerts.db`, holding its connection.
struct SqliteTx<'a> {
    conn: MutexGuard<'a, Connection>,
    /// Not committed yet: roll back on drop.
    open: bool,
}

impl Drop for SqliteTx<'_> {
    fn drop(&mut self) {
        if self.open {
            if let Err(e) = self.conn.execute_batch("ROLLBACK") {
                tracing::warn!(error = %e, "cannot roll back an alert store transaction");
            }
        }
    }
}

impl Columns for Row<'_> {
    fn text(&self, i: usize) -> Result<String, AlertError> {
        Ok(self.get(i)?)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, AlertError> {
        Ok(self.get(i)?)
    }
    fn int(&self, i: usize) -> Result<i64, AlertError> {
        Ok(self.get(i)?)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, AlertError> {
        Ok(self.get(i)?)
    }
}

impl SqliteTx<'_> {
    /// Every row of `sql`, read by `f`.
    fn rows<T>(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
        f: impl Fn(&Row<'_>) -> Result<T, AlertError>,
    ) -> Result<Vec<T>, AlertError> {
        let mut stmt = self.conn.prepare_cached(sql)?;
        let mut rows = stmt.query(args)?;
        let mut out = Vec::new();
        while let Some(r) = rows.next()? {
            out.push(f(r)?);
        }
        Ok(out)
    }

    fn alerts(
        &self,
        sql: &str,
        args: impl rusqlite::Params,
    ) -> Result<Vec<AlertRecord>, AlertError> {
        Ok(self
            .rows(sql, args, |r| alert_from_row(r))?
            .into_iter()
            .map(|(a, _)| a)
            .collect())
    }
}

/// Leases need a database every node shares.
fn needs_postgres() -> AlertError {
    AlertError::Invalid(
        "cluster mode needs the PostgreSQL store (serve --store postgres://…); alerts.db belongs to one collector".into(),
    )
}

impl AlertTx for SqliteTx<'_> {
    fn commit(mut self: Box<Self>) -> Result<(), AlertError> {
        self.conn.execute_batch("COMMIT")?;
        self.open = false;
        Ok(())
    }

    fn fence(&self, _fence: &Fence) -> Result<(), AlertError> {
        Err(needs_postgres())
    }

    fn write_checkpoint(&self, _fence: &Fence, _cp: &Checkpoint) -> Result<(), AlertError> {
        Err(needs_postgres())
    }

    fn lock_fingerprint(&self, _fingerprint: &str) -> Result<(), AlertError> {
        // The transaction holds the only connection.
        Ok(())
    }

    fn record_finding(&self, alert_id: &str, key: &str, at: Timestamp) -> Result<bool, AlertError> {
        Ok(self.conn.execute(
            "INSERT OR IGNORE INTO alert_findings (alert_id, key, at) VALUES (?1, ?2, ?3)",
            params![alert_id, key, at.as_micros()],
        )? > 0)
    }

    fn find_open(&self, fingerprint: &str) -> Result<Option<AlertRecord>, AlertError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE fingerprint = ?1 AND status != 'resolved'"
        );
        Ok(self.alerts(&sql, [fingerprint])?.into_iter().next())
    }

    fn get(&self, id: &str, history: bool) -> Result<Option<AlertRecord>, AlertError> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = ?1");
        match self.alerts(&sql, [id])?.into_iter().next() {
            Some(a) => Ok(Some(with_deliveries(self, a, history)?)),
            None => Ok(None),
        }
    }

    fn exists(&self, id: &str) -> Result<bool, AlertError> {
        Ok(self
            .conn
            .query_row("SELECT 1 FROM alerts WHERE id = ?1", [id], |_| Ok(()))
            .optional()?
            .is_some())
    }

    fn insert(&self, r: &AlertRecord) -> Result<bool, AlertError> {
        let a = &r.alert;
        let n = self.conn.execute(
            "INSERT OR IGNORE INTO alerts (id, fingerprint, source, name, severity, status, first_seen, last_seen, count, \
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
        Ok(n > 0)
    }

    fn update(&self, r: &AlertRecord) -> Result<(), AlertError> {
        let a = &r.alert;
        self.conn.execute(
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

    fn mark_sent(&self, id: &str) -> Result<(), AlertError> {
        self.conn.execute(
            "UPDATE alerts SET status = 'sent' WHERE id = ?1 AND status = 'new'",
            [id],
        )?;
        Ok(())
    }

    fn notified_severity(&self, id: &str) -> Result<Option<Severity>, AlertError> {
        let s: Option<Option<String>> = self
            .conn
            .query_row(
                "SELECT notified_severity FROM alerts WHERE id = ?1",
                [id],
                |r| r.get(0),
            )
            .optional()?;
        Ok(s.flatten().and_then(|s| Severity::parse(&s)))
    }

    fn set_notified(&self, id: &str, at: Timestamp, severity: Severity) -> Result<(), AlertError> {
        self.conn.execute(
            "UPDATE alerts SET notified_at = ?2, notified_severity = ?3 WHERE id = ?1",
            params![id, at.as_micros(), severity.as_str()],
        )?;
        Ok(())
    }

    fn list(&self, f: &AlertFilter) -> Result<(Vec<AlertRecord>, Option<i64>), AlertError> {
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
        let out = self.rows(&sql, rusqlite::params_from_iter(args), |r| {
            alert_from_row(r)
        })?;
        page(out, f.limit, |ids| {
            let mut all = Vec::new();
            for id in ids {
                all.extend(self.deliveries_for(id)?);
            }
            Ok(all)
        })
    }

    fn quiet(&self, before: Timestamp, limit: usize) -> Result<Vec<AlertRecord>, AlertError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE status != 'resolved' AND updated_at < ?1 ORDER BY updated_at LIMIT ?2"
        );
        self.alerts(&sql, params![before.as_micros(), limit as i64])
    }

    fn open_unacknowledged(&self, limit: usize) -> Result<Vec<AlertRecord>, AlertError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE status IN ('new', 'sent', 'suppressed') ORDER BY seq DESC LIMIT ?1"
        );
        self.alerts(&sql, [limit as i64])
    }

    fn prune(&self, before: Timestamp) -> Result<usize, AlertError> {
        let before = before.as_micros();
        self.conn.execute(
            "DELETE FROM deliveries WHERE alert_id IN (SELECT id FROM alerts WHERE status = 'resolved' AND resolved_at < ?1)",
            [before],
        )?;
        self.conn
            .execute("DELETE FROM alert_findings WHERE at < ?1", [before])?;
        Ok(self.conn.execute(
            "DELETE FROM alerts WHERE status = 'resolved' AND resolved_at < ?1",
            [before],
        )?)
    }

    fn enqueue(
        &self,
        alert_id: &str,
        channel: &str,
        kind: NotificationKind,
        now: Timestamp,
    ) -> Result<bool, AlertError> {
        let n = self.conn.execute(
            "INSERT INTO deliveries (alert_id, channel, kind, status, created_at, next_attempt_at) \
             SELECT ?1, ?2, ?3, 'pending', ?4, ?4 WHERE NOT EXISTS (SELECT 1 FROM deliveries \
             WHERE alert_id = ?1 AND channel = ?2 AND kind = ?3 AND status = 'pending')",
            params![alert_id, channel, kind.as_str(), now.as_micros()],
        )?;
        Ok(n > 0)
    }

    fn pending_count(&self) -> Result<usize, AlertError> {
        let n: i64 = self.conn.query_row(
            "SELECT count(*) FROM deliveries WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(n.max(0) as usize)
    }

    fn channels_notified(&self, alert_id: &str) -> Result<Vec<String>, AlertError> {
        self.rows(
            "SELECT DISTINCT channel FROM deliveries WHERE alert_id = ?1 AND kind = 'firing' AND status != 'failed' ORDER BY channel",
            [alert_id],
            |r| r.text(0),
        )
    }

    fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Delivery>, AlertError> {
        // One process: the delivery worker takes these and asks again only when they are done.
        let sql = format!(
            "SELECT {DELIVERY_COLUMNS} FROM deliveries d WHERE status = 'pending' AND next_attempt_at <= ?1 \
             AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.alert_id = d.alert_id AND e.channel = d.channel \
                             AND e.status = 'pending' AND e.id < d.id) \
             ORDER BY next_attempt_at, id LIMIT ?2"
        );
        self.rows(&sql, params![now.as_micros(), limit as i64], |r| {
            delivery_from_row(r)
        })
    }

    fn next_due(&self) -> Result<Option<Timestamp>, AlertError> {
        let v: Option<i64> = self.conn.query_row(
            "SELECT min(next_attempt_at) FROM deliveries WHERE status = 'pending'",
            [],
            |r| r.get(0),
        )?;
        Ok(v.map(Timestamp::from_micros))
    }

    fn record_attempt(
        &self,
        id: i64,
        now: Timestamp,
        outcome: Attempt<'_>,
    ) -> Result<(), AlertError> {
        let now = now.as_micros();
        match outcome {
            Attempt::Delivered(response) => self.conn.execute(
                "UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, last_attempt_at = ?2, \
                 delivered_at = ?2, response = ?3 WHERE id = ?1",
                params![id, now, response],
            )?,
            Attempt::Retry(error, next) => self.conn.execute(
                "UPDATE deliveries SET attempts = attempts + 1, last_attempt_at = ?2, last_error = ?3, next_attempt_at = ?4 WHERE id = ?1",
                params![id, now, error, next.as_micros()],
            )?,
            Attempt::Failed(error) => self.conn.execute(
                "UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_attempt_at = ?2, last_error = ?3 WHERE id = ?1",
                params![id, now, error],
            )?,
        };
        Ok(())
    }

    fn deliveries_for(&self, alert_id: &str) -> Result<Vec<Delivery>, AlertError> {
        let sql =
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE alert_id = ?1 ORDER BY id");
        self.rows(&sql, [alert_id], |r| delivery_from_row(r))
    }

    fn insert_silence(&self, s: &Silence) -> Result<(), AlertError> {
        self.conn.execute(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_by, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            params![s.id, json(&s.matchers), s.starts_at.as_micros(), s.ends_at.as_micros(), s.comment, s.created_by, s.created_at.as_micros()],
        )?;
        Ok(())
    }

    fn silences(
        &self,
        active_at: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<Silence>, AlertError> {
        let sql = format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE ends_at > ?1 ORDER BY seq DESC LIMIT ?2"
        );
        let after = active_at.map_or(i64::MIN, Timestamp::as_micros);
        self.rows(&sql, params![after, limit as i64], |r| silence_from_row(r))
    }

    fn get_silence(&self, id: &str) -> Result<Option<Silence>, AlertError> {
        let sql = format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = ?1");
        Ok(self
            .rows(&sql, [id], |r| silence_from_row(r))?
            .into_iter()
            .next())
    }

    fn silence_boundary_between(&self, after: i64, upto: i64) -> Result<bool, AlertError> {
        Ok(self
            .conn
            .query_row(
                "SELECT 1 FROM silences WHERE (starts_at > ?1 AND starts_at <= ?2) OR (ends_at > ?1 AND ends_at <= ?2) LIMIT 1",
                params![after, upto],
                |_| Ok(()),
            )
            .optional()?
            .is_some())
    }

    fn expire_silence(&self, id: &str, now: Timestamp) -> Result<bool, AlertError> {
        let n = self.conn.execute(
            "UPDATE silences SET ends_at = min(ends_at, ?2) WHERE id = ?1",
            params![id, now.as_micros()],
        )?;
        Ok(n > 0)
    }
}
