//! The schema of the shared store, its numbered migrations (table `mcpwatch_schema`), and the
//! day partitions of the event table.

use crate::rollup::HOUR;
use crate::StoreError;

/// The schema version this build writes.
pub const VERSION: i64 = 3;

/// A day in microseconds: the width of one event partition.
pub const DAY: i64 = 24 * HOUR;

/// Any constant: the advisory lock that serialises migrations of several starting processes.
const MIGRATION_LOCK: i64 = 0x6d63_7077_6174_6368;

/// Every rollup row belongs to one writer (`writer`); queries sum over writers.
const V1: &str = r#"
CREATE TABLE events(
    id text NOT NULL,
    ts bigint NOT NULL,
    level bigint NOT NULL,
    category text NOT NULL,
    event_type text NOT NULL,
    server text,
    tool text,
    "user" text,
    session text,
    outcome text,
    body text NOT NULL,
    PRIMARY KEY (id, ts)
) PARTITION BY RANGE (ts);
CREATE INDEX events_ts ON events(ts);
CREATE INDEX events_type_ts ON events(event_type, ts);

CREATE TABLE rollup_minute(
    writer text NOT NULL, minute bigint NOT NULL, category text NOT NULL, level bigint NOT NULL,
    tool text NOT NULL, outcome text NOT NULL,
    count bigint NOT NULL, errors bigint NOT NULL, timed bigint NOT NULL, sum_time double precision NOT NULL,
    PRIMARY KEY (minute, category, level, tool, outcome, writer)
);
CREATE TABLE rollup_hour(
    writer text NOT NULL, hour bigint NOT NULL, category text NOT NULL, level bigint NOT NULL,
    outcome text NOT NULL,
    count bigint NOT NULL, errors bigint NOT NULL, timed bigint NOT NULL, sum_time double precision NOT NULL,
    PRIMARY KEY (hour, category, level, outcome, writer)
);
CREATE TABLE security_minute(
    writer text NOT NULL, minute bigint NOT NULL, event_type text NOT NULL,
    count bigint NOT NULL, errors bigint NOT NULL,
    PRIMARY KEY (minute, event_type, writer)
);
CREATE TABLE tool_hour(
    writer text NOT NULL, hour bigint NOT NULL, server text NOT NULL, tool text NOT NULL, outcome text NOT NULL,
    count bigint NOT NULL, sum_time double precision NOT NULL, min_time double precision NOT NULL,
    max_time double precision NOT NULL, last_ts bigint NOT NULL,
    PRIMARY KEY (hour, server, tool, outcome, writer)
);
-- Latency histograms, one row per bucket (see hist.rs), so that writers add counts.
CREATE TABLE tool_hist(
    writer text NOT NULL, hour bigint NOT NULL, server text NOT NULL, tool text NOT NULL,
    bucket bigint NOT NULL, count bigint NOT NULL,
    PRIMARY KEY (hour, server, tool, bucket, writer)
);
CREATE TABLE user_tool(
    writer text NOT NULL, "user" text NOT NULL, server text NOT NULL, tool text NOT NULL,
    count bigint NOT NULL, first_ts bigint NOT NULL, last_ts bigint NOT NULL,
    PRIMARY KEY ("user", server, tool, writer)
);
CREATE TABLE user_params(
    writer text NOT NULL, "user" text NOT NULL, server text NOT NULL, tool text NOT NULL, keys text NOT NULL,
    count bigint NOT NULL, last_ts bigint NOT NULL,
    PRIMARY KEY ("user", server, tool, keys, writer)
);
-- Events stored, as additive rows per writer (retention adds negative deltas).
CREATE TABLE event_count(writer text PRIMARY KEY, value bigint NOT NULL);
"#;

/// Rollup deltas are written up to a second after their events (see writer.rs): each batch
/// names the events it added in `rollup_pending`, with its writer's key, until they are.
/// The latency histograms are also summed per day (`day` = hour div 24), so that per-tool
/// statistics over days read a day's rows instead of 24 hours' (hourly rows serve the hours at
/// either end of a range).
const V2: &str = r#"
CREATE TABLE rollup_pending(
    owner bigint NOT NULL, seq bigint NOT NULL, ids text[] NOT NULL, ts bigint[] NOT NULL,
    PRIMARY KEY (owner, seq)
);
CREATE TABLE tool_hist_day(
    writer text NOT NULL, day bigint NOT NULL, server text NOT NULL, tool text NOT NULL,
    bucket bigint NOT NULL, count bigint NOT NULL,
    PRIMARY KEY (day, server, tool, bucket, writer)
);
INSERT INTO tool_hist_day(writer, day, server, tool, bucket, count)
SELECT writer, floor(hour / 24.0)::bigint, server, tool, bucket, sum(count)::bigint FROM tool_hist
GROUP BY 1, 2, 3, 4, 5;
"#;

/// Rollup rows are updated in place at every write of the deltas: with room left in their
/// pages the new version of a row goes in the same page and no index changes (a HOT update),
/// which halved the time of a write of 16,000 deltas (150 against 300 ms) and keeps it from
/// growing with the table's dead rows. New pages keep half their space for that.
/// A batch's pending row holds its event ids, tens of kilobytes that live for a second:
/// compressing them took 5 % of the server's time per batch; they are stored as they are.
const V3: &str = r#"
ALTER TABLE rollup_pending ALTER COLUMN ids SET STORAGE EXTERNAL;
ALTER TABLE rollup_pending ALTER COLUMN ts SET STORAGE EXTERNAL;
ALTER TABLE rollup_minute SET (fillfactor = 50);
ALTER TABLE rollup_hour SET (fillfactor = 50);
ALTER TABLE security_minute SET (fillfactor = 50);
ALTER TABLE tool_hour SET (fillfactor = 50);
ALTER TABLE tool_hist SET (fillfactor = 50);
ALTER TABLE tool_hist_day SET (fillfactor = 50);
ALTER TABLE user_tool SET (fillfactor = 50);
ALTER TABLE user_params SET (fillfactor = 50);
ALTER TABLE event_count SET (fillfactor = 50);
"#;

/// Brings the schema up to [`VERSION`]. Several processes may start at once: the migration
/// runs under an advisory lock, so one applies it and the others find it done.
pub async fn migrate(client: &mut tokio_postgres::Client, shown: &str) -> Result<(), StoreError> {
    let tx = client.transaction().await?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await?;
    tx.batch_execute("CREATE TABLE IF NOT EXISTS mcpwatch_schema(version bigint NOT NULL)")
        .await?;
    let found: i64 = tx
        .query_one("SELECT coalesce(max(version), 0) FROM mcpwatch_schema", &[])
        .await?
        .get(0);
    if found > VERSION {
        return Err(StoreError::TooNew {
            path: shown.to_owned(),
            found,
            supported: VERSION,
        });
    }
    for (version, sql) in [(1, V1), (2, V2), (3, V3)] {
        if found < version {
            tx.batch_execute(sql).await?;
            tx.execute(
                "INSERT INTO mcpwatch_schema(version) VALUES ($1)",
                &[&version],
            )
            .await?;
        }
    }
    tx.commit().await?;
    Ok(())
}

/// The name of the partition holding day `day` (days since the epoch).
pub fn partition_name(day: i64) -> String {
    if day < 0 {
        format!("events_m{}", -day)
    } else {
        format!("events_d{day}")
    }
}

/// The day of a partition name made by [`partition_name`].
pub fn partition_day(name: &str) -> Option<i64> {
    if let Some(d) = name.strip_prefix("events_d") {
        d.parse().ok()
    } else {
        name.strip_prefix("events_m")?
            .parse::<i64>()
            .ok()
            .map(|d| -d)
    }
}

/// Creates the partition of `day` unless it exists. Another writer may create it at the same
/// moment; that is not an error.
pub async fn ensure_partition(client: &tokio_postgres::Client, day: i64) -> Result<(), StoreError> {
    let sql = format!(
        "CREATE TABLE IF NOT EXISTS {} PARTITION OF events FOR VALUES FROM ({}) TO ({})",
        partition_name(day),
        day * DAY,
        (day + 1) * DAY
    );
    match client.batch_execute(&sql).await {
        Ok(()) => Ok(()),
        // duplicate_table, unique_violation (of the catalog): a concurrent create won.
        Err(e) if matches!(e.code().map(|c| c.code()), Some("42P07" | "23505")) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// The days that have a partition, oldest first.
pub async fn partitions(client: &tokio_postgres::Client) -> Result<Vec<i64>, StoreError> {
    let rows = client
        .query(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
             WHERE i.inhparent = 'events'::regclass",
            &[],
        )
        .await?;
    let mut days: Vec<i64> = rows
        .iter()
        .filter_map(|r| partition_day(r.get::<_, &str>(0)))
        .collect();
    days.sort_unstable();
    Ok(days)
}
