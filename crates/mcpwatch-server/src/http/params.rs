//! Query parameters as the API takes them: relative or absolute times, filters, pages.

use mcpwatch_core::{time_fmt, Event, Level, Timestamp};
use mcpwatch_store::query::Cursor;
use mcpwatch_store::EventQuery;
use serde::Deserialize;
use serde_json::Value;

use super::ApiError;

/// Default page size.
pub const DEFAULT_LIMIT: usize = 100;
/// Largest page size.
pub const MAX_LIMIT: usize = 10_000;

/// `since`/`until`: a duration back from now (`1h`), RFC 3339, or Unix seconds.
pub fn parse_time(name: &str, s: &str, now: Timestamp) -> Result<Timestamp, ApiError> {
    if let Ok(secs) = s.parse::<f64>() {
        return Timestamp::from_unix_seconds(secs)
            .map_err(|m| ApiError::bad_request(format!("{name}: {m}")));
    }
    if let Ok(d) = time_fmt::parse_duration(s) {
        return Ok(now.saturating_sub(d));
    }
    time_fmt::parse_rfc3339(s).map_err(|_| {
        ApiError::bad_request(format!("{name}=`{s}` is not a time; write a duration back from now (1h), RFC 3339, or Unix seconds"))
    })
}

/// Filters shared by listing and streaming events.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventParams {
    pub since: Option<String>,
    pub until: Option<String>,
    pub category: Option<String>,
    pub level: Option<String>,
    pub event_type: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub user: Option<String>,
    pub session: Option<String>,
    pub outcome: Option<String>,
    pub q: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

impl EventParams {
    /// The store query these parameters ask for.
    pub fn to_query(&self, now: Timestamp) -> Result<EventQuery, ApiError> {
        let level = self
            .level
            .as_deref()
            .map(|l| {
                Level::parse(l).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "level=`{l}`; use debug, info, warning, error or critical"
                    ))
                })
            })
            .transpose()?;
        let limit = self.limit.unwrap_or(DEFAULT_LIMIT);
        if limit == 0 || limit > MAX_LIMIT {
            return Err(ApiError::bad_request(format!(
                "limit must be between 1 and {MAX_LIMIT}"
            )));
        }
        Ok(EventQuery {
            since: self
                .since
                .as_deref()
                .map(|s| parse_time("since", s, now))
                .transpose()?,
            until: self
                .until
                .as_deref()
                .map(|s| parse_time("until", s, now))
                .transpose()?,
            category: self.category.clone(),
            level,
            event_type: self.event_type.clone(),
            server: self.server.clone(),
            tool: self.tool.clone(),
            user: self.user.clone(),
            session: self.session.clone(),
            outcome: self.outcome.clone(),
            text: self.q.clone(),
            cursor: self.cursor.as_deref().map(Cursor::decode).transpose()?,
            limit,
        })
    }
}

/// Whether a live event matches a query's filters (the stream applies them in memory).
pub fn matches(q: &EventQuery, e: &Event) -> bool {
    let meta = |k: &str| e.metadata.get(k).and_then(Value::as_str);
    let eq =
        |want: &Option<String>, got: Option<&str>| want.as_deref().is_none_or(|w| got == Some(w));
    q.since.is_none_or(|t| e.timestamp >= t)
        && q.until.is_none_or(|t| e.timestamp < t)
        && q.level.is_none_or(|l| e.level == l)
        && eq(&q.category, Some(&e.category))
        && eq(&q.event_type, Some(&e.event_type))
        && eq(&q.server, meta("server"))
        && eq(&q.tool, meta("tool_name"))
        && eq(&q.user, meta("user_id"))
        && eq(&q.session, meta("session_id"))
        && eq(&q.outcome, meta("outcome"))
        && q.text
            .as_deref()
            .is_none_or(|t| e.message.to_lowercase().contains(&t.to_lowercase()))
}

/// Filters for statistics endpoints.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StatsParams {
    pub since: Option<String>,
    pub until: Option<String>,
    pub server: Option<String>,
    pub tool: Option<String>,
    pub user: Option<String>,
    pub limit: Option<usize>,
}

/// Parameters of `/api/v1/series`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SeriesParams {
    pub since: Option<String>,
    pub until: Option<String>,
    /// Bucket width, whole minutes (`1m`, `5m`, `1h`).
    pub bucket: Option<String>,
    pub category: Option<String>,
    pub tool: Option<String>,
}
