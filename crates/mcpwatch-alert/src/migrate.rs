//! Copying the alert side of a SQLite data directory (`alerts.db`) into the PostgreSQL alert
//! tables, for `mcpwatch store migrate` (SPEC 10): silences, alerts (status, acknowledgement,
//! counts, notified severity), the findings folded into them and the outbox with its delivery
//! history.
//!
//! A dedicated copy path rather than [`crate::store::AlertStore`]: the trait's writes are the
//! lifecycle's (an insert gets a new sequence number, `enqueue` makes a fresh pending row with
//! no attempts), and a copy must carry rows as they are, attempts, errors and all. Rows are read
//! from the source in the order they were stored and written in transactions of `batch` rows,
//! each keyed so that writing it again changes nothing: alerts and silences by their ids,
//! findings by `(alert_id, key)`, outbox rows by the source row they came from (`source_ref`).
//! So a run killed part way, or run again, copies nothing twice; there is no position to keep
//! because every run reconciles the whole alert side, which retention keeps small.
//!
//! A row already on the destination is brought up to the source's state only when the source
//! is further along: an alert updated later (or as late, with a status at least as far in the
//! lifecycle), a silence that ends earlier, an outbox row that is still pending and unclaimed on
//! the destination but was attempted again or settled on the source. So running the copy again
//! after a node on PostgreSQL acted on an alert never undoes what it did.
//!
//! Pending outbox rows arrive pending, once: a node started on PostgreSQL afterwards sends each
//! of them once. Their ids are kept when the destination's outbox holds nothing but rows from
//! this source, so a notification the SQLite collector tried before it stopped keeps its
//! notification id (receivers dedup on it). The collector on the SQLite directory must be
//! stopped before a node starts on PostgreSQL, or both would send the same pending rows.

use std::path::{Path, PathBuf};

use rusqlite::types::Value as Sql;
use rusqlite::{Connection, OpenFlags};
use tokio_postgres::types::ToSql;

use crate::error::AlertError;
use crate::postgres::PgAlertStore;
use mcpwatch_store::postgres::{refs, Args};
use mcpwatch_store::StoreError;

/// The SQLite alert database of a data directory, opened for reading only.
pub struct AlertSource {
    conn: Connection,
    identity: String,
}

impl AlertSource {
    /// Opens `alerts.db` of the data directory `dir`; `None` when there is none (a collector
    /// that never ran with alerting keeps no alerts).
    pub fn open(dir: &Path) -> Result<Option<Self>, AlertError> {
        let path = dir.join("alerts.db");
        if !path.is_file() {
            return Ok(None);
        }
        let shown = path.display().to_string();
        let open_err = |e: rusqlite::Error| AlertError::Open {
            path: shown.clone(),
            source: mcpwatch_store::DbError::new(e),
        };
        let conn = Connection::open_with_flags(
            &path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(open_err)?;
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(open_err)?;
        let has: i64 = conn
            .query_row(
                "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name IN ('alerts', 'alert_findings', 'silences', 'deliveries')",
                [],
                |r| r.get(0),
            )
            .map_err(open_err)?;
        if has != 4 {
            return Err(AlertError::Invalid(format!(
                "{shown} is not an mcpwatch alert store (it lacks the alert tables); pass --from sqlite:DIR with the --data-dir of `mcpwatch serve`"
            )));
        }
        let identity = std::fs::canonicalize(&path)
            .unwrap_or_else(|_| PathBuf::from(&path))
            .display()
            .to_string();
        Ok(Some(Self { conn, identity }))
    }

    /// The database file, canonical where possible: copied outbox rows name it.
    pub fn identity(&self) -> &str {
        &self.identity
    }
}

/// The tables copied, in the order they are copied (alerts before what refers to them).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Table {
    /// `silences`.
    Silences,
    /// `alerts`.
    Alerts,
    /// `alert_findings`.
    Findings,
    /// `deliveries`, the outbox.
    Deliveries,
}

impl Table {
    /// Every table, in copy order.
    pub const ALL: [Table; 4] = [
        Table::Silences,
        Table::Alerts,
        Table::Findings,
        Table::Deliveries,
    ];

    /// What progress lines call its rows.
    pub fn name(self) -> &'static str {
        match self {
            Table::Silences => "silences",
            Table::Alerts => "alerts",
            Table::Findings => "findings",
            Table::Deliveries => "deliveries",
        }
    }

    /// The source query after `?1`, up to `?2`, at most `?3` rows; the first column is the
    /// position, the others in [`Table::types`] order.
    fn select(self) -> &'static str {
        match self {
            Table::Silences => "SELECT seq, id, matchers, starts_at, ends_at, comment, created_by, created_at \
                 FROM silences WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
            Table::Alerts => "SELECT seq, id, fingerprint, source, name, severity, status, first_seen, last_seen, count, \
                 description, recommended_action, grp, event_ids, tags, updated_at, notified_at, notified_severity, \
                 acknowledged_at, resolved_at FROM alerts WHERE seq > ?1 AND seq <= ?2 ORDER BY seq LIMIT ?3",
            Table::Findings => "SELECT rowid, alert_id, key, at FROM alert_findings \
                 WHERE rowid > ?1 AND rowid <= ?2 ORDER BY rowid LIMIT ?3",
            Table::Deliveries => "SELECT id, id, alert_id, channel, kind, status, attempts, created_at, next_attempt_at, \
                 last_attempt_at, delivered_at, last_error, response FROM deliveries \
                 WHERE id > ?1 AND id <= ?2 ORDER BY id LIMIT ?3",
        }
    }

    /// The position column of the source table.
    fn key(self) -> &'static str {
        match self {
            Table::Silences | Table::Alerts => "seq",
            Table::Findings => "rowid",
            Table::Deliveries => "id",
        }
    }

    /// The PostgreSQL type of each copied column: `i` bigint, `t` text.
    fn types(self) -> &'static [u8] {
        match self {
            Table::Silences => b"ttiitti",
            Table::Alerts => b"ttttttiiitttttiitii",
            Table::Findings => b"tti",
            Table::Deliveries => b"ittttiiiiitt",
        }
    }

    /// The destination write of one row; returns a row (`inserted`: whether it was new) when it
    /// changed something.
    fn upsert(self) -> &'static str {
        match self {
            Table::Silences => "INSERT INTO silences (id, matchers, starts_at, ends_at, comment, created_by, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7) \
                 ON CONFLICT (id) DO UPDATE SET ends_at = EXCLUDED.ends_at WHERE EXCLUDED.ends_at < silences.ends_at \
                 RETURNING (xmax = 0)",
            Table::Alerts => ALERT_UPSERT,
            Table::Findings => "INSERT INTO alert_findings (alert_id, key, at) VALUES ($1, $2, $3) \
                 ON CONFLICT DO NOTHING RETURNING true",
            Table::Deliveries => "INSERT INTO deliveries (id, alert_id, channel, kind, status, attempts, created_at, \
                 next_attempt_at, last_attempt_at, delivered_at, last_error, response, source_ref) OVERRIDING SYSTEM VALUE \
                 VALUES (COALESCE($1, nextval(pg_get_serial_sequence('deliveries', 'id'))), $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
                 ON CONFLICT DO NOTHING RETURNING true",
        }
    }
}

/// How far along the lifecycle a status is, in SQL.
macro_rules! rank {
    ($t:literal) => {
        concat!(
            "CASE ",
            $t,
            ".status WHEN 'resolved' THEN 3 WHEN 'acknowledged' THEN 2 WHEN 'sent' THEN 1 ELSE 0 END"
        )
    };
}

const ALERT_UPSERT: &str = concat!(
    "INSERT INTO alerts (id, fingerprint, source, name, severity, status, first_seen, last_seen, count, \
     description, recommended_action, grp, event_ids, tags, updated_at, notified_at, notified_severity, \
     acknowledged_at, resolved_at) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19) \
     ON CONFLICT (id) DO UPDATE SET severity = EXCLUDED.severity, status = EXCLUDED.status, \
     last_seen = EXCLUDED.last_seen, count = EXCLUDED.count, description = EXCLUDED.description, \
     event_ids = EXCLUDED.event_ids, tags = EXCLUDED.tags, updated_at = EXCLUDED.updated_at, \
     notified_at = EXCLUDED.notified_at, notified_severity = EXCLUDED.notified_severity, \
     acknowledged_at = EXCLUDED.acknowledged_at, resolved_at = EXCLUDED.resolved_at \
     WHERE (alerts.severity, alerts.status, alerts.last_seen, alerts.count, alerts.description, alerts.event_ids, \
     alerts.tags, alerts.updated_at, alerts.notified_at, alerts.notified_severity, alerts.acknowledged_at, alerts.resolved_at) \
     IS DISTINCT FROM (EXCLUDED.severity, EXCLUDED.status, EXCLUDED.last_seen, EXCLUDED.count, EXCLUDED.description, \
     EXCLUDED.event_ids, EXCLUDED.tags, EXCLUDED.updated_at, EXCLUDED.notified_at, EXCLUDED.notified_severity, \
     EXCLUDED.acknowledged_at, EXCLUDED.resolved_at) \
     AND (alerts.updated_at < EXCLUDED.updated_at OR (alerts.updated_at = EXCLUDED.updated_at AND ",
    rank!("EXCLUDED"),
    " >= ",
    rank!("alerts"),
    ")) RETURNING (xmax = 0)"
);

/// An outbox row already copied takes the source's later state while it is still pending and
/// unclaimed on the destination: `$1` status, `$2` attempts, `$3` next attempt, `$4` last
/// attempt, `$5` delivered, `$6` last error, `$7` response, `$8` the source row.
const DELIVERY_ADVANCE: &str =
    "UPDATE deliveries SET status = $1, attempts = $2, next_attempt_at = $3, \
     last_attempt_at = $4, delivered_at = $5, last_error = $6, response = $7 \
     WHERE source_ref = $8 AND status = 'pending' \
     AND (claim_expires_at IS NULL OR claim_expires_at <= clock_timestamp()) \
     AND ($1 <> 'pending' OR $2 > attempts)";

/// Where one table stands, after each batch.
#[derive(Debug, Clone, Copy)]
pub struct TableProgress {
    /// The table.
    pub table: Table,
    /// Source rows handled so far.
    pub done: u64,
    /// Source rows to handle.
    pub total: u64,
    /// Rows the destination did not have.
    pub inserted: u64,
    /// Rows the destination had in an earlier state.
    pub updated: u64,
}

/// What the copy did to one table, and what the check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TableReport {
    /// The table.
    pub table: Table,
    /// Source rows (up to where the run started).
    pub source: u64,
    /// Rows the destination did not have.
    pub inserted: u64,
    /// Rows brought up to the source's state.
    pub updated: u64,
    /// Source rows found on the destination afterwards.
    pub verified: u64,
}

/// What the copy of the alert side did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AlertMigrateReport {
    /// Per table, in copy order.
    pub tables: Vec<TableReport>,
    /// Outbox rows pending (unsent) on the source.
    pub pending: u64,
    /// Whether copied outbox rows kept their ids (and so their notification ids).
    pub kept_ids: bool,
}

impl AlertMigrateReport {
    /// Whether every source row of every table is on the destination.
    pub fn verified(&self) -> bool {
        self.tables.iter().all(|t| t.verified == t.source)
    }
}

/// One source row: its position and its columns.
type SourceRow = (i64, Vec<Sql>);

fn read(
    from: &AlertSource,
    table: Table,
    after: i64,
    upto: i64,
    limit: usize,
) -> Result<Vec<SourceRow>, AlertError> {
    let mut st = from.conn.prepare_cached(table.select())?;
    let width = table.types().len();
    let rows = st
        .query_map(rusqlite::params![after, upto, limit as i64], |r| {
            let mut cols = Vec::with_capacity(width);
            for i in 0..width {
                cols.push(r.get::<_, Sql>(i + 1)?);
            }
            Ok((r.get::<_, i64>(0)?, cols))
        })?
        .collect::<Result<Vec<_>, _>>()?;
    Ok(rows)
}

fn bad_column(table: Table, pos: i64, i: usize, v: &Sql) -> AlertError {
    AlertError::Invalid(format!(
        "{} row {pos} in the source has an unexpected value in column {}: {v:?}; nothing after it was copied",
        table.name(),
        i + 1
    ))
}

/// The arguments of [`Table::upsert`] for one source row.
fn args(table: Table, row: &SourceRow, source: &str, keep_ids: bool) -> Result<Args, AlertError> {
    let (pos, cols) = row;
    let mut out: Args = Vec::with_capacity(cols.len() + 1);
    for (i, (kind, v)) in table.types().iter().zip(cols).enumerate() {
        let arg: Box<dyn ToSql + Sync + Send> = match (kind, v) {
            // The id of a copied outbox row: kept, or a new one.
            (b'i', Sql::Integer(n)) if table == Table::Deliveries && i == 0 => {
                Box::new(keep_ids.then_some(*n))
            }
            (b'i', Sql::Integer(n)) => Box::new(*n),
            (b'i', Sql::Null) => Box::new(None::<i64>),
            (b't', Sql::Text(s)) => Box::new(s.clone()),
            (b't', Sql::Null) => Box::new(None::<String>),
            _ => return Err(bad_column(table, *pos, i, v)),
        };
        out.push(arg);
    }
    if table == Table::Deliveries {
        out.push(Box::new(source_ref(source, *pos)));
    }
    Ok(out)
}

/// The arguments of [`DELIVERY_ADVANCE`], from the arguments of the insert.
fn advance_args(row: &SourceRow, source: &str) -> Result<Args, AlertError> {
    let (pos, c) = row;
    let int = |i: usize| match &c[i] {
        Sql::Integer(n) => Ok(Some(*n)),
        Sql::Null => Ok(None),
        v => Err(bad_column(Table::Deliveries, *pos, i, v)),
    };
    let text = |i: usize| match &c[i] {
        Sql::Text(s) => Ok(Some(s.clone())),
        Sql::Null => Ok(None),
        v => Err(bad_column(Table::Deliveries, *pos, i, v)),
    };
    Ok(vec![
        Box::new(text(4)?.unwrap_or_default()),
        Box::new(int(5)?.unwrap_or(0)),
        Box::new(int(7)?.unwrap_or(0)),
        Box::new(int(8)?),
        Box::new(int(9)?),
        Box::new(text(10)?),
        Box::new(text(11)?),
        Box::new(source_ref(source, *pos)),
    ])
}

/// What a copied outbox row on the destination names its source row by.
fn source_ref(source: &str, id: i64) -> String {
    format!("{source}#{id}")
}

/// A failed write, saying what to do when it is the one conflict a copy can meet: an open alert
/// on the destination with the fingerprint of an open alert of the source.
fn write_error(e: tokio_postgres::Error) -> StoreError {
    if e.as_db_error().and_then(|d| d.constraint()) == Some("alerts_open") {
        return StoreError::BadQuery(
            "the destination already has an open alert with the fingerprint of an open alert of the source (a collector ran on PostgreSQL before the copy); resolve it there, or copy into an empty database, then run the command again".into(),
        );
    }
    StoreError::from(e)
}

/// Writes one batch in one transaction: (inserted, updated).
fn write_batch(
    to: &PgAlertStore,
    table: Table,
    batch: Vec<(Args, Option<Args>)>,
    keep_ids: bool,
) -> Result<(u64, u64), AlertError> {
    Ok(to.db().run(move |mut conn| async move {
        let tx = conn.transaction().await?;
        let upsert = tx.prepare_cached(table.upsert()).await?;
        let advance = if table == Table::Deliveries {
            Some(tx.prepare_cached(DELIVERY_ADVANCE).await?)
        } else {
            None
        };
        let (mut inserted, mut updated) = (0u64, 0u64);
        for (args, advance_args) in &batch {
            let rows = tx.query(&upsert, &refs(args)).await.map_err(write_error)?;
            match rows.first() {
                Some(r) if r.get::<_, bool>(0) => inserted += 1,
                Some(_) => updated += 1,
                None => {
                    if let (Some(st), Some(a)) = (&advance, advance_args) {
                        updated += tx.execute(st, &refs(a)).await?;
                    }
                }
            }
        }
        if table == Table::Deliveries && keep_ids {
            // Rows given their ids: the destination's own ids continue after them.
            tx.execute(
                "SELECT setval(pg_get_serial_sequence('deliveries', 'id'), max(id)) FROM deliveries HAVING max(id) IS NOT NULL",
                &[],
            )
            .await?;
        }
        tx.commit().await?;
        Ok((inserted, updated))
    })?)
}

/// Source rows of `table` present on the destination.
fn present(
    to: &PgAlertStore,
    table: Table,
    rows: &[SourceRow],
    source: &str,
) -> Result<u64, AlertError> {
    let text = |r: &SourceRow, i: usize| match &r.1[i] {
        Sql::Text(s) => s.clone(),
        _ => String::new(),
    };
    let (sql, args): (&'static str, Args) = match table {
        Table::Silences => (
            "SELECT count(*) FROM silences WHERE id = ANY($1)",
            vec![Box::new(
                rows.iter().map(|r| text(r, 0)).collect::<Vec<_>>(),
            )],
        ),
        Table::Alerts => (
            "SELECT count(*) FROM alerts WHERE id = ANY($1)",
            vec![Box::new(
                rows.iter().map(|r| text(r, 0)).collect::<Vec<_>>(),
            )],
        ),
        Table::Findings => (
            "SELECT count(*) FROM alert_findings f JOIN unnest($1::text[], $2::text[]) AS s(a, k) \
             ON f.alert_id = s.a AND f.key = s.k",
            vec![
                Box::new(rows.iter().map(|r| text(r, 0)).collect::<Vec<_>>()),
                Box::new(rows.iter().map(|r| text(r, 1)).collect::<Vec<_>>()),
            ],
        ),
        Table::Deliveries => (
            "SELECT count(*) FROM deliveries WHERE source_ref = ANY($1)",
            vec![Box::new(
                rows.iter()
                    .map(|r| source_ref(source, r.0))
                    .collect::<Vec<_>>(),
            )],
        ),
    };
    let n: i64 = to
        .db()
        .run(move |conn| async move { Ok(conn.query_one(sql, &refs(&args)).await?.get(0)) })?;
    Ok(n.max(0) as u64)
}

/// Copies the alert side of `from` into `to`, `batch` rows per transaction, then checks that
/// every source row is there.
pub fn migrate_alerts(
    from: &AlertSource,
    to: &PgAlertStore,
    batch: usize,
    progress: &mut dyn FnMut(TableProgress),
) -> Result<AlertMigrateReport, AlertError> {
    let batch = batch.max(1);
    let source = from.identity().to_owned();
    let prefix = format!("{source}#");
    let keep_ids: bool = to.db().run(move |conn| async move {
        Ok(conn
            .query_one(
                "SELECT NOT EXISTS (SELECT 1 FROM deliveries WHERE source_ref IS NULL OR left(source_ref, length($1)) <> $1)",
                &[&prefix],
            )
            .await?
            .get(0))
    })?;
    let pending: i64 = from.conn.query_row(
        "SELECT count(*) FROM deliveries WHERE status = 'pending'",
        [],
        |r| r.get(0),
    )?;
    let mut tables = Vec::new();
    for table in Table::ALL {
        let upto: i64 = from.conn.query_row(
            &format!(
                "SELECT coalesce(max({0}), 0) FROM {1}",
                table.key(),
                sql_table(table)
            ),
            [],
            |r| r.get(0),
        )?;
        let total: i64 = from.conn.query_row(
            &format!(
                "SELECT count(*) FROM {1} WHERE {0} <= ?1",
                table.key(),
                sql_table(table)
            ),
            [upto],
            |r| r.get(0),
        )?;
        let total = total.max(0) as u64;
        let (mut after, mut done, mut inserted, mut updated) = (0i64, 0u64, 0u64, 0u64);
        loop {
            let rows = read(from, table, after, upto, batch)?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            let writes = rows
                .iter()
                .map(|r| {
                    let advance = if table == Table::Deliveries {
                        Some(advance_args(r, &source)?)
                    } else {
                        None
                    };
                    Ok((args(table, r, &source, keep_ids)?, advance))
                })
                .collect::<Result<Vec<_>, AlertError>>()?;
            let (i, u) = write_batch(to, table, writes, keep_ids)?;
            inserted += i;
            updated += u;
            done += rows.len() as u64;
            after = last;
            progress(TableProgress {
                table,
                done,
                total,
                inserted,
                updated,
            });
        }
        if done == 0 {
            progress(TableProgress {
                table,
                done,
                total,
                inserted,
                updated,
            });
        }
        // The check: every source row up to where the run started is on the destination.
        let (mut after, mut verified) = (0i64, 0u64);
        loop {
            let rows = read(from, table, after, upto, 5_000)?;
            let Some(last) = rows.last().map(|r| r.0) else {
                break;
            };
            verified += present(to, table, &rows, &source)?;
            after = last;
        }
        tables.push(TableReport {
            table,
            source: total,
            inserted,
            updated,
            verified,
        });
    }
    Ok(AlertMigrateReport {
        tables,
        pending: pending.max(0) as u64,
        kept_ids: keep_ids,
    })
}

/// The SQL name of a table.
fn sql_table(table: Table) -> &'static str {
    match table {
        Table::Findings => "alert_findings",
        other => other.name(),
    }
}
