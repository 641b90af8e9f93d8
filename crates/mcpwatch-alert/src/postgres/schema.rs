//! The alert tables in a shared PostgreSQL database, with numbered migrations of their own
//! (table `mcpwatch_alert_schema`), next to the event store's.

use tokio_postgres::Client;

use crate::error::AlertError;

/// The schema version this build writes.
pub const VERSION: i64 = 4;

/// Any constant (not the event store's): the advisory lock that serialises migrations of
/// several starting processes.
const MIGRATION_LOCK: i64 = 0x6d63_7077_616c_7274;

/// Timestamps are microseconds since the epoch, as everywhere in mcpwatch, except the claim
/// deadline of an outbox row: the database's own clock, so that nodes whose clocks disagree
/// still agree on when a claim has expired.
const V1: &str = r#"
CREATE TABLE alerts(
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    fingerprint text NOT NULL,
    source text NOT NULL,
    name text NOT NULL,
    severity text NOT NULL,
    status text NOT NULL,
    first_seen bigint NOT NULL,
    last_seen bigint NOT NULL,
    count bigint NOT NULL,
    description text NOT NULL,
    recommended_action text NOT NULL,
    grp text NOT NULL,
    event_ids text NOT NULL,
    tags text NOT NULL,
    updated_at bigint NOT NULL,
    notified_at bigint,
    notified_severity text,
    acknowledged_at bigint,
    resolved_at bigint
);
CREATE UNIQUE INDEX alerts_open ON alerts(fingerprint) WHERE status <> 'resolved';
CREATE INDEX alerts_status ON alerts(status, updated_at);
-- Findings already folded into an alert, by their derived key: a finding seen by several nodes
-- folds once.
CREATE TABLE alert_findings(alert_id text NOT NULL, key text NOT NULL, at bigint NOT NULL, PRIMARY KEY (alert_id, key));
CREATE INDEX alert_findings_at ON alert_findings(at);
CREATE TABLE silences(
    seq bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    matchers text NOT NULL,
    starts_at bigint NOT NULL,
    ends_at bigint NOT NULL,
    comment text NOT NULL,
    created_by text NOT NULL,
    created_at bigint NOT NULL
);
-- The outbox. A node that takes a row to send claims it (claimed_by, claim_expires_at) in a
-- transaction of its own and sends after the commit; another node takes it only once the claim
-- expired.
CREATE TABLE deliveries(
    id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    alert_id text NOT NULL,
    channel text NOT NULL,
    kind text NOT NULL,
    status text NOT NULL,
    attempts bigint NOT NULL DEFAULT 0,
    created_at bigint NOT NULL,
    next_attempt_at bigint NOT NULL,
    last_attempt_at bigint,
    delivered_at bigint,
    last_error text,
    response text,
    claimed_by text,
    claim_expires_at timestamptz
);
CREATE INDEX deliveries_pending ON deliveries(next_attempt_at) WHERE status = 'pending';
CREATE INDEX deliveries_alert ON deliveries(alert_id, channel, id);
CREATE UNIQUE INDEX deliveries_one_pending ON deliveries(alert_id, channel, kind) WHERE status = 'pending';
"#;

/// `mcpwatch store migrate`: an outbox row copied from a SQLite `alerts.db` names its source
/// row (`<source file>#<id>`), so that a copy run again, or resumed after it was killed, never
/// adds a row twice.
const V2: &str = r#"
ALTER TABLE deliveries ADD COLUMN source_ref text;
CREATE UNIQUE INDEX deliveries_source_ref ON deliveries(source_ref) WHERE source_ref IS NOT NULL;
"#;

/// Cluster mode (`serve --cluster`, see [`super::cluster`]): the nodes that are up, and one
/// lease row per detection task. Every write a task makes locks and checks its row first
/// (owner, epoch, not expired on the database's clock), and its stream position and engine
/// snapshot are kept on the same row, in the same transaction as its findings.
const V3: &str = r#"
CREATE TABLE cluster_nodes(
    node text PRIMARY KEY,
    info text NOT NULL,
    started_at timestamptz NOT NULL,
    expires_at timestamptz NOT NULL
);
CREATE TABLE cluster_tasks(
    task text PRIMARY KEY,
    owner text NULL,
    epoch bigint NOT NULL DEFAULT 0,
    expires_at timestamptz,
    -- The last stream sequence whose effects are committed.
    position bigint NOT NULL DEFAULT 0,
    -- Messages left in the task's filter at that checkpoint, as the owner saw.
    pending bigint NULL,
    -- The engine's state at snapshot_position.
    snapshot bytea NULL,
    snapshot_position bigint NOT NULL DEFAULT 0,
    updated_at timestamptz
);
CREATE INDEX cluster_tasks_owner ON cluster_tasks(owner) WHERE owner IS NOT NULL;
"#;

/// Version 4: secrets the cluster's nodes share and nobody else holds; `relay` keys the MAC on
/// events a node relays from its ingest API to the stream (`mcpwatch_nats::relay`).
const V4: &str = r#"
CREATE TABLE cluster_secrets(
    name text PRIMARY KEY,
    secret bytea NOT NULL
);
"#;

/// Brings the alert tables up to [`VERSION`], under an advisory lock so that one of several
/// starting processes applies a migration and the others find it done.
pub async fn migrate(client: &mut Client, shown: &str) -> Result<(), AlertError> {
    let db = |e: tokio_postgres::Error| AlertError::from(mcpwatch_store::StoreError::from(e));
    let tx = client.transaction().await.map_err(db)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(db)?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS mcpwatch_alert_schema(version bigint NOT NULL)")
        .await
        .map_err(db)?;
    let found: i64 = tx
        .query_one(
            "SELECT coalesce(max(version), 0) FROM mcpwatch_alert_schema",
            &[],
        )
        .await
        .map_err(db)?
        .get(0);
    if found > VERSION {
        return Err(AlertError::Unavailable(format!(
            "the alert tables in {shown} have schema version {found}, newer than this mcpwatch understands ({VERSION}); upgrade mcpwatch"
        )));
    }
    for (version, sql) in [(1, V1), (2, V2), (3, V3), (4, V4)] {
        if found < version {
            tx.batch_execute(sql).await.map_err(db)?;
            tx.execute(
                "INSERT INTO mcpwatch_alert_schema(version) VALUES ($1)",
                &[&version],
            )
            .await
            .map_err(db)?;
        }
    }
    tx.commit().await.map_err(db)?;
    Ok(())
}
