//! What can be asked of the store, and the shapes of the answers (SPEC sections 5 and 9).

use std::collections::BTreeMap;

use mcpwatch_core::{Level, Timestamp};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::StoreError;

/// Filters for listing events. Every filter is optional; all given must match.
#[derive(Debug, Clone, Default)]
pub struct EventQuery {
    /// Events at or after this time.
    pub since: Option<Timestamp>,
    /// Events before this time.
    pub until: Option<Timestamp>,
    /// `category`.
    pub category: Option<String>,
    /// `level`.
    pub level: Option<Level>,
    /// `event_type`.
    pub event_type: Option<String>,
    /// `metadata.server`.
    pub server: Option<String>,
    /// `metadata.tool_name`.
    pub tool: Option<String>,
    /// `metadata.user_id`.
    pub user: Option<String>,
    /// `metadata.session_id`.
    pub session: Option<String>,
    /// `metadata.outcome`.
    pub outcome: Option<String>,
    /// Text the message contains (case-insensitive).
    pub text: Option<String>,
    /// Continue after this cursor (from a previous page).
    pub cursor: Option<Cursor>,
    /// Page size.
    pub limit: usize,
}

/// A position in the newest-first order of events, `(timestamp, id)` descending: defined by the
/// events themselves rather than by how a backend stores them, so every backend pages the same
/// way (and a cursor stays meaningful after the history moves to another backend).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cursor {
    /// Timestamp in microseconds of the last event of the previous page.
    pub ts: i64,
    /// Its id.
    pub id: String,
}

impl Cursor {
    /// The opaque text form handed to clients: the timestamp and the id in hex, so that any id
    /// survives a URL unescaped.
    pub fn encode(&self) -> String {
        let mut s = format!("{}_", self.ts);
        for b in self.id.as_bytes() {
            s.push_str(&format!("{b:02x}"));
        }
        s
    }

    /// Parses what [`Cursor::encode`] made.
    pub fn decode(s: &str) -> Result<Cursor, StoreError> {
        let bad = || {
            StoreError::BadQuery(format!(
                "invalid cursor `{}`; pass the next_cursor of a previous page",
                s.chars().take(64).collect::<String>()
            ))
        };
        let (ts, hex) = s.split_once('_').ok_or_else(bad)?;
        if hex.len() % 2 != 0 || hex.len() > 1024 {
            return Err(bad());
        }
        let bytes = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(hex.get(i..i + 2).ok_or_else(bad)?, 16).map_err(|_| bad()))
            .collect::<Result<Vec<u8>, _>>()?;
        Ok(Cursor {
            ts: ts.parse().map_err(|_| bad())?,
            id: String::from_utf8(bytes).map_err(|_| bad())?,
        })
    }
}

/// A page of events.
#[derive(Debug, Serialize)]
pub struct EventPage {
    /// The events, newest first, as stored.
    pub events: Vec<Box<RawValue>>,
    /// Where the next page starts; `null` on the last page.
    pub next_cursor: Option<String>,
}

/// Filters for statistics.
#[derive(Debug, Clone, Default)]
pub struct StatsQuery {
    /// From this time (rounded down to the hour for tool stats).
    pub since: Option<Timestamp>,
    /// Until this time (rounded up to the hour for tool stats).
    pub until: Option<Timestamp>,
    /// Only this server.
    pub server: Option<String>,
    /// Only this tool.
    pub tool: Option<String>,
    /// Only this user (for `users`).
    pub user: Option<String>,
    /// At most this many rows.
    pub limit: usize,
}

/// Statistics of one tool on one server.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct ToolStats {
    /// `metadata.server` (empty when events had none).
    pub server: String,
    /// `metadata.tool_name`.
    pub tool: String,
    /// Completed executions.
    pub count: u64,
    /// Executions whose outcome was `success`.
    pub successes: u64,
    /// Failed executions by outcome (`tool_error`, `rpc_error`, …).
    pub failures: BTreeMap<String, u64>,
    /// `successes / count`.
    pub success_rate: f64,
    /// Latency in seconds.
    pub latency: Latency,
    /// Last completed execution.
    pub last_seen: Timestamp,
}

/// Latency summary in seconds. Percentiles are within 2 % (log-bucketed histograms).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Latency {
    /// Mean.
    pub avg: f64,
    /// Smallest.
    pub min: f64,
    /// Largest.
    pub max: f64,
    /// Median.
    pub p50: f64,
    /// 95th percentile.
    pub p95: f64,
    /// 99th percentile.
    pub p99: f64,
}

/// How one user uses tools.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserUsage {
    /// `metadata.user_id`.
    pub user: String,
    /// Completed executions.
    pub count: u64,
    /// Last completed execution.
    pub last_used: Timestamp,
    /// Per tool.
    pub tools: Vec<UserTool>,
}

/// One tool as one user uses it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct UserTool {
    /// `metadata.server`.
    pub server: String,
    /// `metadata.tool_name`.
    pub tool: String,
    /// Executions.
    pub count: u64,
    /// First execution.
    pub first_used: Timestamp,
    /// Last execution.
    pub last_used: Timestamp,
    /// The sets of parameter keys seen, e.g. `path,encoding`, with counts.
    pub parameter_patterns: BTreeMap<String, u64>,
}

/// Parameters of a time series.
#[derive(Debug, Clone)]
pub struct SeriesQuery {
    /// Start.
    pub since: Timestamp,
    /// End.
    pub until: Timestamp,
    /// Bucket width in whole minutes.
    pub bucket_minutes: i64,
    /// Only this category.
    pub category: Option<String>,
    /// Only this tool.
    pub tool: Option<String>,
}

/// A time series.
#[derive(Debug, Clone, Serialize)]
pub struct Series {
    /// Bucket width.
    pub bucket_seconds: i64,
    /// One point per bucket, empty buckets included.
    pub points: Vec<SeriesPoint>,
}

/// One bucket of a series.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SeriesPoint {
    /// Bucket start.
    pub t: Timestamp,
    /// Events.
    pub count: u64,
    /// Events that failed (an outcome other than success, or level error and above).
    pub errors: u64,
    /// Mean duration in seconds of the events that have one.
    pub avg_time: Option<f64>,
    /// Events by category.
    pub by_category: BTreeMap<String, u64>,
}

/// A time series of security events by type (`authentication`, `authorization`, …).
#[derive(Debug, Clone, Copy)]
pub struct SecurityQuery {
    /// Start.
    pub since: Timestamp,
    /// End.
    pub until: Timestamp,
    /// Bucket width in whole minutes.
    pub bucket_minutes: i64,
}

/// Security events over time, by event type.
#[derive(Debug, Clone, Serialize)]
pub struct SecuritySeries {
    /// Bucket width.
    pub bucket_seconds: i64,
    /// One point per bucket, empty buckets included.
    pub points: Vec<SecurityPoint>,
}

/// One bucket of a [`SecuritySeries`].
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SecurityPoint {
    /// Bucket start.
    pub t: Timestamp,
    /// Counts by event type.
    pub by_type: BTreeMap<String, KindCount>,
}

/// Events of one type in a bucket, and how many of them failed (a failed sign-in, a denial).
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct KindCount {
    /// Events.
    pub count: u64,
    /// Events whose outcome is not success (or whose level is error and above).
    pub failures: u64,
}

/// The overview on the dashboard's first screen.
#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    /// When it was computed.
    pub at: Timestamp,
    /// Events in the store.
    pub total_events: u64,
    /// Events in the last hour, by category.
    pub last_hour_by_category: BTreeMap<String, u64>,
    /// Events in the last 24 hours, by level.
    pub last_day_by_level: BTreeMap<String, u64>,
    /// Tool executions in the last hour.
    pub tool_executions_last_hour: u64,
    /// Failed tool executions in the last hour.
    pub tool_failures_last_hour: u64,
    /// The busiest tools of the last 24 hours.
    pub top_tools: Vec<ToolStats>,
    /// Distinct users with tool executions in the last 24 hours.
    pub active_users_last_day: u64,
    /// Store size and counts.
    pub store: StoreStats,
}

/// Size and counts of the store.
#[derive(Debug, Clone, Copy, Serialize, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// Events stored.
    pub events: u64,
    /// Bytes used by the database (excluding free pages).
    pub used_bytes: u64,
}
