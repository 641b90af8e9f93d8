//! The schema of the embedded store and its migrations (`PRAGMA user_version`).

use std::path::Path;

use rusqlite::Connection;

use crate::StoreError;

/// The schema version this build writes.
pub const VERSION: i64 = 3;

const V1: &str = "
CREATE TABLE events(
    seq INTEGER PRIMARY KEY,
    id TEXT NOT NULL,
    ts INTEGER NOT NULL,
    level INTEGER NOT NULL,
    category TEXT NOT NULL,
    event_type TEXT NOT NULL,
    server TEXT,
    tool TEXT,
    user TEXT,
    session TEXT,
    outcome TEXT,
    body TEXT NOT NULL
);
CREATE UNIQUE INDEX events_id ON events(id);
CREATE INDEX events_ts ON events(ts);

-- Per minute: counts for series and the summary.
CREATE TABLE rollup_minute(
    minute INTEGER NOT NULL, category TEXT NOT NULL, level INTEGER NOT NULL,
    tool TEXT NOT NULL, outcome TEXT NOT NULL,
    count INTEGER NOT NULL, errors INTEGER NOT NULL, timed INTEGER NOT NULL, sum_time REAL NOT NULL,
    PRIMARY KEY(minute, category, level, tool, outcome)
) WITHOUT ROWID;

-- Per hour, server, tool and outcome: completed tool executions.
CREATE TABLE tool_hour(
    hour INTEGER NOT NULL, server TEXT NOT NULL, tool TEXT NOT NULL, outcome TEXT NOT NULL,
    count INTEGER NOT NULL, sum_time REAL NOT NULL, min_time REAL NOT NULL, max_time REAL NOT NULL,
    last_ts INTEGER NOT NULL,
    PRIMARY KEY(hour, server, tool, outcome)
) WITHOUT ROWID;

-- Per hour, server and tool: latency histogram, sparse (see hist.rs).
CREATE TABLE tool_hist(
    hour INTEGER NOT NULL, server TEXT NOT NULL, tool TEXT NOT NULL, buckets BLOB NOT NULL,
    PRIMARY KEY(hour, server, tool)
) WITHOUT ROWID;

CREATE TABLE user_tool(
    user TEXT NOT NULL, server TEXT NOT NULL, tool TEXT NOT NULL,
    count INTEGER NOT NULL, first_ts INTEGER NOT NULL, last_ts INTEGER NOT NULL,
    PRIMARY KEY(user, server, tool)
) WITHOUT ROWID;

CREATE TABLE user_params(
    user TEXT NOT NULL, server TEXT NOT NULL, tool TEXT NOT NULL, keys TEXT NOT NULL,
    count INTEGER NOT NULL, last_ts INTEGER NOT NULL,
    PRIMARY KEY(user, server, tool, keys)
) WITHOUT ROWID;

CREATE TABLE counters(name TEXT PRIMARY KEY, value INTEGER NOT NULL) WITHOUT ROWID;
INSERT INTO counters(name, value) VALUES ('events', 0), ('rollup_seq', 0);
";

/// Version 2: per-hour counts without the tool, so long-range series read a few rows per hour.
/// Backfilled from the minute rollup.
const V2: &str = "
CREATE TABLE rollup_hour(
    hour INTEGER NOT NULL, category TEXT NOT NULL, level INTEGER NOT NULL, outcome TEXT NOT NULL,
    count INTEGER NOT NULL, errors INTEGER NOT NULL, timed INTEGER NOT NULL, sum_time REAL NOT NULL,
    PRIMARY KEY(hour, category, level, outcome)
) WITHOUT ROWID;
INSERT INTO rollup_hour(hour, category, level, outcome, count, errors, timed, sum_time)
    SELECT minute / 60, category, level, outcome, sum(count), sum(errors), sum(timed), sum(sum_time)
    FROM rollup_minute GROUP BY minute / 60, category, level, outcome;
";

/// Version 3: per-minute counts of security events by type, so the overview can tell
/// authentication failures from authorization denials without scanning events; and an index by
/// event type, so the pages that look for rare events (definition history, sign-ins) seek
/// instead of scanning the range. Backfilled from the stored events (one scan, at the first
/// open after the upgrade).
const V3: &str = "
CREATE INDEX events_type_ts ON events(event_type, ts);
CREATE TABLE security_minute(
    minute INTEGER NOT NULL, event_type TEXT NOT NULL, count INTEGER NOT NULL,
    errors INTEGER NOT NULL, -- `result` is failure or denied
    PRIMARY KEY(minute, event_type)
) WITHOUT ROWID;
INSERT INTO security_minute(minute, event_type, count, errors)
    SELECT ts / 60000000, event_type, count(*),
        sum(coalesce(json_extract(body, '$.metadata.result'), '') IN ('failure', 'denied'))
    FROM events WHERE category = 'security' GROUP BY ts / 60000000, event_type;
";

/// Brings the schema up to [`VERSION`].
pub fn migrate(conn: &Connection, path: &Path) -> Result<(), StoreError> {
    let found: i64 = conn.pragma_query_value(None, "user_version", |r| r.get(0))?;
    if found > VERSION {
        return Err(StoreError::TooNew {
            path: path.display().to_string(),
            found,
            supported: VERSION,
        });
    }
    for (version, sql) in [(1, V1), (2, V2), (3, V3)] {
        if found < version {
            let tx = conn.unchecked_transaction()?;
            tx.execute_batch(sql)?;
            tx.pragma_update(None, "user_version", version)?;
            tx.commit()?;
        }
    }
    Ok(())
}
