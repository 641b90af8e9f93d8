//! The shared alert store: PostgreSQL, for several collectors on one database (SPEC 10). It
//! lives here rather than in `mcpwatch-store` because its rows are alerting's types (the event
//! store must not depend on alerting); it shares the event store's connection handling
//! ([`mcpwatch_store::postgres::Db`]), so both say the same about a wrong URL or a refused login.
//!
//! Several nodes stay right without talking to each other:
//! - a fingerprint is folded by one transaction at a time (a transaction-scoped advisory lock
//!   on it), and a finding is folded into an alert once however many nodes see it (its derived key,
//!   `INSERT … ON CONFLICT DO NOTHING` into `alert_findings`); an alert read to be changed is
//!   locked (`FOR UPDATE`), and quiet-period resolution skips alerts another node holds;
//! - an outbox row is claimed before it is sent: `FOR UPDATE SKIP LOCKED` picks rows nobody
//!   holds, the claim (`claimed_by`, `claim_expires_at` on the database's clock) is committed at
//!   once, and the send happens after, with no lock held. Recording the attempt releases the
//!   claim; a node killed between send and record leaves a claim that expires, and another node
//!   sends again (at least once; receivers dedup on the notification id).
//!
//! Cluster mode's leases and task checkpoints live on the same database ([`cluster`]).

mod schema;

use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Object;
use mcpwatch_core::Timestamp;
use mcpwatch_detect::Severity;
use mcpwatch_store::postgres::{refs, Args, Db};
use mcpwatch_store::DbError;
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::error::AlertError;
use crate::model::{AlertRecord, Delivery, NotificationKind, Silence};
use crate::store::{
    alert_from_row, delivery_from_row, json, page, silence_from_row, status_str, with_deliveries,
    AlertFilter, AlertStore, AlertTx, Attempt, Checkpoint, Columns, Fence, ALERT_COLUMNS,
    DELIVERY_COLUMNS, SILENCE_COLUMNS,
};

macro_rules! args {
    ($($a:expr),* $(,)?) => {
        vec![$(Box::new($a) as Box<dyn tokio_postgres::types::ToSql + Sync + Send>),*]
    };
}

// After `args!`, which it uses.
pub mod cluster;

/// PostgreSQL-backed [`AlertStore`].
#[derive(Clone)]
pub struct PgAlertStore {
    db: Db,
    /// This process, as its claims name it.
    node: String,
    /// How long a claimed outbox row stays this node's.
    claim_for: Duration,
}

impl PgAlertStore {
    /// Connects to `url`, creating or migrating the alert tables. `node` names this process in
    /// its claims (unique per process); a claimed row is this node's for `claim_for`, which must
    /// outlast one send.
    pub fn open(url: &str, node: &str, claim_for: Duration) -> Result<Self, AlertError> {
        let db = Db::connect(url)?;
        let shown = db.shown_url().to_owned();
        let mut conn = db.connection()?;
        db.block(async move { Ok(schema::migrate(&mut conn, &shown).await) })??;
        Ok(Self {
            db,
            node: node.to_owned(),
            claim_for,
        })
    }

    /// The name of this process in its claims.
    pub fn node(&self) -> &str {
        &self.node
    }

    /// The database, for the copy of a SQLite history (`crate::migrate`).
    pub(crate) fn db(&self) -> &Db {
        &self.db
    }
}

/// How long a node's claim on an outbox row lasts with these settings: the longest a send may
/// take (the delivery timeout, which the worker enforces with a second of slack) twice over, and
/// a few seconds to record the attempt.
pub fn claim_for(settings: &crate::Settings) -> Duration {
    settings.delivery.timeout.saturating_mul(2) + Duration::from_secs(5)
}

/// A name for this process in its claims, unique among the nodes on one database: the host,
/// the process id and a random suffix (process ids repeat across containers).
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "mcpwatch".to_owned());
    let host: String = host.chars().take(64).collect();
    format!("{host}:{}:{:08x}", std::process::id(), fastrand::u32(..))
}

impl PgAlertStore {
    /// Starts a transaction on a connection of the pool (`BEGIN`, or another opening such as
    /// a snapshot read's).
    fn begin_pg(&self, begin: &'static str) -> Result<PgTx<'_>, AlertError> {
        let conn = Arc::new(self.db.connection()?);
        let c = conn.clone();
        self.db.block(async move {
            c.batch_execute(begin).await?;
            Ok(())
        })?;
        Ok(PgTx {
            store: self,
            conn: Some(conn),
        })
    }
}

impl AlertStore for PgAlertStore {
    fn begin(&self) -> Result<Box<dyn AlertTx + '_>, AlertError> {
        Ok(Box::new(self.begin_pg("BEGIN")?))
    }

    /// Read committed, the default, takes a snapshot per statement: a list read its alerts
    /// before a delivery committed and their deliveries after, and showed an alert `new` with
    /// its notification delivered.
    fn read(&self) -> Result<Box<dyn AlertTx + '_>, AlertError> {
        Ok(Box::new(self.begin_pg(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
        )?))
    }

    fn location(&self) -> String {
        self.db.shown_url().to_owned()
    }
}

/// A transaction on one pooled connection.
struct PgTx<'a> {
    store: &'a PgAlertStore,
    /// `None` once committed.
    conn: Option<Arc<Object>>,
}

impl Drop for PgTx<'_> {
    fn drop(&mut self) {
        let Some(conn) = self.conn.take() else {
            return;
        };
        let c = conn.clone();
        let rolled_back = self.store.db.block(async move {
            c.batch_execute("ROLLBACK").await?;
            Ok(())
        });
        if let Err(e) = rolled_back {
            tracing::warn!(error = %e, "cannot roll back an alert store transaction; dropping the connection");
            // Never hand a connection in an unknown state back to the pool.
            if let Ok(obj) = Arc::try_unwrap(conn) {
                drop(Object::take(obj));
            }
        }
    }
}

fn db_error(e: tokio_postgres::Error) -> AlertError {
    AlertError::Db(DbError::new(e))
}

impl Columns for Row {
    fn text(&self, i: usize) -> Result<String, AlertError> {
        self.try_get(i).map_err(db_error)
    }
    fn opt_text(&self, i: usize) -> Result<Option<String>, AlertError> {
        self.try_get(i).map_err(db_error)
    }
    fn int(&self, i: usize) -> Result<i64, AlertError> {
        self.try_get(i).map_err(db_error)
    }
    fn opt_int(&self, i: usize) -> Result<Option<i64>, AlertError> {
        self.try_get(i).map_err(db_error)
    }
}

impl PgTx<'_> {
    fn conn(&self) -> Result<Arc<Object>, AlertError> {
        self.conn
            .clone()
            .ok_or_else(|| AlertError::Invalid("the transaction is over".into()))
    }

    fn query(&self, sql: impl Into<String>, args: Args) -> Result<Vec<Row>, AlertError> {
        let (c, sql) = (self.conn()?, sql.into());
        Ok(self.store.db.block(async move {
            let stmt = c.prepare_cached(&sql).await?;
            Ok(c.query(&stmt, &refs(&args)).await?)
        })?)
    }

    fn execute(&self, sql: impl Into<String>, args: Args) -> Result<u64, AlertError> {
        let (c, sql) = (self.conn()?, sql.into());
        Ok(self.store.db.block(async move {
            let stmt = c.prepare_cached(&sql).await?;
            Ok(c.execute(&stmt, &refs(&args)).await?)
        })?)
    }

    fn alerts(&self, sql: impl Into<String>, args: Args) -> Result<Vec<AlertRecord>, AlertError> {
        self.query(sql, args)?
            .iter()
            .map(|r| alert_from_row(r).map(|(a, _)| a))
            .collect()
    }

    fn deliveries(&self, sql: impl Into<String>, args: Args) -> Result<Vec<Delivery>, AlertError> {
        self.query(sql, args)?
            .iter()
            .map(delivery_from_row)
            .collect()
    }

    fn silence_rows(&self, sql: impl Into<String>, args: Args) -> Result<Vec<Silence>, AlertError> {
        self.query(sql, args)?
            .iter()
            .map(silence_from_row)
            .collect()
    }
}

fn micros(t: Option<Timestamp>) -> Option<i64> {
    t.map(Timestamp::as_micros)
}

impl PgTx<'_> {
    /// Makes the transaction durable (what [`AlertTx::commit`] does, without the box).
    fn commit_pg(&mut self) -> Result<(), AlertError> {
        let c = self.conn()?;
        self.store.db.block(async move {
            c.batch_execute("COMMIT").await?;
            Ok(())
        })?;
        self.conn = None;
        Ok(())
    }
}

impl AlertTx for PgTx<'_> {
    fn commit(mut self: Box<Self>) -> Result<(), AlertError> {
        self.commit_pg()
    }

    fn fence(&self, fence: &Fence) -> Result<(), AlertError> {
        cluster::lock_fence(self, fence)
    }

    fn write_checkpoint(&self, fence: &Fence, cp: &Checkpoint) -> Result<(), AlertError> {
        cluster::write_checkpoint(self, fence, cp)
    }

    fn lock_fingerprint(&self, fingerprint: &str) -> Result<(), AlertError> {
        self.query(
            "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))",
            args![fingerprint.to_owned()],
        )?;
        Ok(())
    }

    fn record_finding(&self, alert_id: &str, key: &str, at: Timestamp) -> Result<bool, AlertError> {
        Ok(self.execute(
            "INSERT INTO alert_findings(alert_id, key, at) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
            args![alert_id.to_owned(), key.to_owned(), at.as_micros()],
        )? > 0)
    }

    fn find_open(&self, fingerprint: &str) -> Result<Option<AlertRecord>, AlertError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE fingerprint = $1 AND status <> 'resolved' FOR UPDATE"
        );
        Ok(self
            .alerts(sql, args![fingerprint.to_owned()])?
            .into_iter()
            .next())
    }

    fn get(&self, id: &str, history: bool) -> Result<Option<AlertRecord>, AlertError> {
        let sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE id = $1 FOR UPDATE");
        match self.alerts(sql, args![id.to_owned()])?.into_iter().next() {
            Some(a) => Ok(Some(with_deliveries(self, a, history)?)),
            None => Ok(None),
        }
    }

    fn exists(&self, id: &str) -> Result<bool, AlertError> {
        Ok(!self
            .query("SELECT 1 FROM alerts WHERE id = $1", args![id.to_owned()])?
            .is_empty())
    }

    fn insert(&self, r: &AlertRecord) -> Result<bool, AlertError> {
        let a = &r.alert;
        let n = self.execute(
            "INSERT INTO alerts (id, fingerprint, source, name, severity, status, first_seen, last_seen, count, \
             description, recommended_action, grp, event_ids, tags, updated_at, notified_at, acknowledged_at, resolved_at) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18) ON CONFLICT DO NOTHING",
            args![
                a.id.clone(), a.fingerprint.clone(), a.source.as_str().to_owned(), a.name.clone(),
                a.severity.as_str().to_owned(), status_str(a.status).to_owned(),
                a.first_seen.as_micros(), a.last_seen.as_micros(), a.count as i64, a.description.clone(),
                a.recommended_action.clone(), json(&a.group), json(&a.event_ids), json(&r.tags),
                r.updated_at.as_micros(), micros(r.notified_at), micros(r.acknowledged_at),
                micros(r.resolved_at),
            ],
        )?;
        Ok(n > 0)
    }

    fn update(&self, r: &AlertRecord) -> Result<(), AlertError> {
        let a = &r.alert;
        self.execute(
            "UPDATE alerts SET severity = $2, status = $3, last_seen = $4, count = $5, description = $6, \
             event_ids = $7, tags = $8, updated_at = $9, notified_at = $10, acknowledged_at = $11, resolved_at = $12 \
             WHERE id = $1",
            args![
                a.id.clone(), a.severity.as_str().to_owned(), status_str(a.status).to_owned(),
                a.last_seen.as_micros(), a.count as i64, a.description.clone(), json(&a.event_ids),
                json(&r.tags), r.updated_at.as_micros(), micros(r.notified_at),
                micros(r.acknowledged_at), micros(r.resolved_at),
            ],
        )?;
        Ok(())
    }

    fn mark_sent(&self, id: &str) -> Result<(), AlertError> {
        self.execute(
            "UPDATE alerts SET status = 'sent' WHERE id = $1 AND status = 'new'",
            args![id.to_owned()],
        )?;
        Ok(())
    }

    fn notified_severity(&self, id: &str) -> Result<Option<Severity>, AlertError> {
        let rows = self.query(
            "SELECT notified_severity FROM alerts WHERE id = $1",
            args![id.to_owned()],
        )?;
        Ok(match rows.first() {
            Some(r) => r.opt_text(0)?.and_then(|s| Severity::parse(&s)),
            None => None,
        })
    }

    fn set_notified(&self, id: &str, at: Timestamp, severity: Severity) -> Result<(), AlertError> {
        self.execute(
            "UPDATE alerts SET notified_at = $2, notified_severity = $3 WHERE id = $1",
            args![id.to_owned(), at.as_micros(), severity.as_str().to_owned()],
        )?;
        Ok(())
    }

    fn list(&self, f: &AlertFilter) -> Result<(Vec<AlertRecord>, Option<i64>), AlertError> {
        let mut sql = format!("SELECT {ALERT_COLUMNS} FROM alerts WHERE true");
        let mut args: Args = Vec::new();
        let mut add = |clause: &str, v: Box<dyn ToSql + Sync + Send>| {
            args.push(v);
            sql.push_str(&format!(" AND {clause} ${}", args.len()));
        };
        if let Some(s) = f.status {
            add("status =", Box::new(status_str(s).to_owned()));
        }
        if let Some(s) = f.severity {
            add("severity =", Box::new(s.as_str().to_owned()));
        }
        if let Some(n) = &f.name {
            add("name =", Box::new(n.clone()));
        }
        if let Some(s) = f.source {
            add("source =", Box::new(s.as_str().to_owned()));
        }
        if let Some(c) = f.before_seq {
            add("seq <", Box::new(c));
        }
        sql.push_str(&format!(" ORDER BY seq DESC LIMIT {}", f.limit + 1));
        let out = self
            .query(sql, args)?
            .iter()
            .map(alert_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        // One query for the deliveries of the whole page.
        page(out, f.limit, |ids| {
            let sql = format!(
                "SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE alert_id = ANY($1) ORDER BY id"
            );
            self.deliveries(sql, args![ids.to_vec()])
        })
    }

    fn quiet(&self, before: Timestamp, limit: usize) -> Result<Vec<AlertRecord>, AlertError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE status <> 'resolved' AND updated_at < $1 \
             ORDER BY updated_at LIMIT $2 FOR UPDATE SKIP LOCKED"
        );
        self.alerts(sql, args![before.as_micros(), limit as i64])
    }

    fn open_unacknowledged(&self, limit: usize) -> Result<Vec<AlertRecord>, AlertError> {
        let sql = format!(
            "SELECT {ALERT_COLUMNS} FROM alerts WHERE status IN ('new', 'sent', 'suppressed') \
             ORDER BY seq DESC LIMIT $1 FOR UPDATE"
        );
        self.alerts(sql, args![limit as i64])
    }

    fn prune(&self, before: Timestamp) -> Result<usize, AlertError> {
        let before = before.as_micros();
        self.execute(
            "DELETE FROM deliveries WHERE alert_id IN (SELECT id FROM alerts WHERE status = 'resolved' AND resolved_at < $1)",
            args![before],
        )?;
        self.execute("DELETE FROM alert_findings WHERE at < $1", args![before])?;
        Ok(self.execute(
            "DELETE FROM alerts WHERE status = 'resolved' AND resolved_at < $1",
            args![before],
        )? as usize)
    }

    fn enqueue(
        &self,
        alert_id: &str,
        channel: &str,
        kind: NotificationKind,
        now: Timestamp,
    ) -> Result<bool, AlertError> {
        let n = self.execute(
            "INSERT INTO deliveries (alert_id, channel, kind, status, created_at, next_attempt_at) \
             VALUES ($1, $2, $3, 'pending', $4, $4) \
             ON CONFLICT (alert_id, channel, kind) WHERE status = 'pending' DO NOTHING",
            args![
                alert_id.to_owned(),
                channel.to_owned(),
                kind.as_str().to_owned(),
                now.as_micros()
            ],
        )?;
        Ok(n > 0)
    }

    fn pending_count(&self) -> Result<usize, AlertError> {
        let rows = self.query(
            "SELECT count(*) FROM deliveries WHERE status = 'pending'",
            args![],
        )?;
        Ok(rows.first().map_or(Ok(0), |r| r.int(0))?.max(0) as usize)
    }

    fn channels_notified(&self, alert_id: &str) -> Result<Vec<String>, AlertError> {
        self.query(
            "SELECT DISTINCT channel FROM deliveries WHERE alert_id = $1 AND kind = 'firing' AND status <> 'failed' ORDER BY channel",
            args![alert_id.to_owned()],
        )?
        .iter()
        .map(|r| r.text(0))
        .collect()
    }

    fn due(&self, now: Timestamp, limit: usize) -> Result<Vec<Delivery>, AlertError> {
        let sql = format!(
            "UPDATE deliveries SET claimed_by = $3, claim_expires_at = clock_timestamp() + make_interval(secs => $4) \
             WHERE id IN ( \
                 SELECT d.id FROM deliveries d WHERE d.status = 'pending' AND d.next_attempt_at <= $1 \
                 AND (d.claim_expires_at IS NULL OR d.claim_expires_at <= clock_timestamp()) \
                 AND NOT EXISTS (SELECT 1 FROM deliveries e WHERE e.alert_id = d.alert_id AND e.channel = d.channel \
                                 AND e.status = 'pending' AND e.id < d.id) \
                 ORDER BY d.next_attempt_at, d.id LIMIT $2 FOR UPDATE OF d SKIP LOCKED) \
             RETURNING {DELIVERY_COLUMNS}"
        );
        let mut rows = self.deliveries(
            sql,
            args![
                now.as_micros(),
                limit as i64,
                self.store.node.clone(),
                self.store.claim_for.as_secs_f64()
            ],
        )?;
        rows.sort_by_key(|d| (d.next_attempt_at, d.id));
        Ok(rows)
    }

    fn next_due(&self) -> Result<Option<Timestamp>, AlertError> {
        // A row another node claimed is due again when its claim expires.
        let rows = self.query(
            "SELECT min(GREATEST(next_attempt_at, \
                 COALESCE((extract(epoch FROM claim_expires_at) * 1000000)::bigint, next_attempt_at))) \
             FROM deliveries WHERE status = 'pending'",
            args![],
        )?;
        Ok(match rows.first() {
            Some(r) => r.opt_int(0)?.map(Timestamp::from_micros),
            None => None,
        })
    }

    fn record_attempt(
        &self,
        id: i64,
        now: Timestamp,
        outcome: Attempt<'_>,
    ) -> Result<(), AlertError> {
        // Only the holder of the claim records: a node whose claim expired and was taken over
        // leaves the row to the node that holds it now.
        let mine = "(claimed_by IS NULL OR claimed_by = $2)";
        let now = now.as_micros();
        let node = self.store.node.clone();
        match outcome {
            Attempt::Delivered(response) => self.execute(
                format!("UPDATE deliveries SET status = 'delivered', attempts = attempts + 1, last_attempt_at = $3, \
                 delivered_at = $3, response = $4, claimed_by = NULL, claim_expires_at = NULL WHERE id = $1 AND {mine}"),
                args![id, node, now, response.to_owned()],
            )?,
            Attempt::Retry(error, next) => self.execute(
                format!("UPDATE deliveries SET attempts = attempts + 1, last_attempt_at = $3, last_error = $4, next_attempt_at = $5, \
                 claimed_by = NULL, claim_expires_at = NULL WHERE id = $1 AND {mine}"),
                args![id, node, now, error.to_owned(), next.as_micros()],
            )?,
            Attempt::Failed(error) => self.execute(
                format!("UPDATE deliveries SET status = 'failed', attempts = attempts + 1, last_attempt_at = $3, last_error = $4, \
                 claimed_by = NULL, claim_expires_at = NULL WHERE id = $1 AND {mine}"),
                args![id, node, now, error.to_owned()],
            )?,
        };
        Ok(())
    }

    fn deliveries_for(&self, alert_id: &str) -> Result<Vec<Delivery>, AlertError> {
        let sql =
            format!("SELECT {DELIVERY_COLUMNS} FROM deliveries WHERE alert_id = $1 ORDER BY id");
        self.deliveries(sql, args![alert_id.to_owned()])
    }

    fn insert_silence(&self, s: &Silence) -> Result<(), AlertError> {
        self.execute(
            "INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_by, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
            args![
                s.id.clone(), json(&s.matchers), s.starts_at.as_micros(), s.ends_at.as_micros(),
                s.comment.clone(), s.created_by.clone(), s.created_at.as_micros()
            ],
        )?;
        Ok(())
    }

    fn silences(
        &self,
        active_at: Option<Timestamp>,
        limit: usize,
    ) -> Result<Vec<Silence>, AlertError> {
        let sql = format!(
            "SELECT {SILENCE_COLUMNS} FROM silences WHERE ends_at > $1 ORDER BY seq DESC LIMIT $2"
        );
        let after = active_at.map_or(i64::MIN, Timestamp::as_micros);
        self.silence_rows(sql, args![after, limit as i64])
    }

    fn get_silence(&self, id: &str) -> Result<Option<Silence>, AlertError> {
        let sql = format!("SELECT {SILENCE_COLUMNS} FROM silences WHERE id = $1");
        Ok(self
            .silence_rows(sql, args![id.to_owned()])?
            .into_iter()
            .next())
    }

    fn silence_boundary_between(&self, after: i64, upto: i64) -> Result<bool, AlertError> {
        Ok(!self
            .query(
                "SELECT 1 FROM silences WHERE (starts_at > $1 AND starts_at <= $2) OR (ends_at > $1 AND ends_at <= $2) LIMIT 1",
                args![after, upto],
            )?
            .is_empty())
    }

    fn expire_silence(&self, id: &str, now: Timestamp) -> Result<bool, AlertError> {
        Ok(self.execute(
            "UPDATE silences SET ends_at = LEAST(ends_at, $2) WHERE id = $1",
            args![id.to_owned(), now.as_micros()],
        )? > 0)
    }
}
