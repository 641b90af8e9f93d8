//! Read endpoints: events, one event, tools, users, series, summary.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcpwatch_core::config::Role;
use mcpwatch_core::time_fmt;
use mcpwatch_store::{SeriesQuery, StatsQuery};

use super::params::{parse_time, EventParams, SeriesParams, StatsParams};
use super::{blocking, ApiError, AppState};

/// Unwraps query parameters, turning serde's complaint into a 400 that names the parameter.
pub(super) fn params<T>(q: Result<Query<T>, QueryRejection>) -> Result<T, ApiError> {
    q.map(|Query(p)| p).map_err(|e| {
        ApiError::bad_request(format!(
            "{}; see the API reference in README",
            e.body_text()
        ))
    })
}

pub(super) async fn list_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<EventParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Role::Read)?;
    let query = params(q)?.to_query(s.clock.now())?;
    let reader = s.reader.clone();
    let page = blocking(move || reader.events(&query)).await?;
    Ok(Json(page).into_response())
}

pub(super) async fn get_event(
    State(s): State<AppState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Role::Read)?;
    let reader = s.reader.clone();
    match blocking(move || reader.event(&id)).await? {
        Some(raw) => Ok(Json(raw).into_response()),
        None => Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            "no event with that id",
        )),
    }
}

fn stats_query(s: &AppState, p: StatsParams) -> Result<StatsQuery, ApiError> {
    let now = s.clock.now();
    Ok(StatsQuery {
        since: p
            .since
            .as_deref()
            .map(|v| parse_time("since", v, now))
            .transpose()?,
        until: p
            .until
            .as_deref()
            .map(|v| parse_time("until", v, now))
            .transpose()?,
        server: p.server,
        tool: p.tool,
        user: p.user,
        limit: p.limit.unwrap_or(0),
    })
}

pub(super) async fn tools(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<StatsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Role::Read)?;
    let query = stats_query(&s, params(q)?)?;
    let reader = s.reader.clone();
    let tools = blocking(move || reader.tool_stats(&query)).await?;
    Ok(Json(serde_json::json!({"tools": tools, "next_cursor": null})).into_response())
}

pub(super) async fn users(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<StatsParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Role::Read)?;
    let query = stats_query(&s, params(q)?)?;
    let reader = s.reader.clone();
    let users = blocking(move || reader.users(&query)).await?;
    Ok(Json(serde_json::json!({"users": users, "next_cursor": null})).into_response())
}

pub(super) async fn series(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<SeriesParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Role::Read)?;
    let p = params(q)?;
    let now = s.clock.now();
    let since = parse_time("since", p.since.as_deref().unwrap_or("1h"), now)?;
    let until = p
        .until
        .as_deref()
        .map(|v| parse_time("until", v, now))
        .transpose()?
        .unwrap_or(now);
    let bucket = time_fmt::parse_duration(p.bucket.as_deref().unwrap_or("1m"))
        .map_err(|m| ApiError::bad_request(format!("bucket: {m}")))?;
    if bucket.as_secs() < 60 || bucket.as_secs() % 60 != 0 {
        return Err(ApiError::bad_request(
            "bucket must be whole minutes (1m, 5m, 1h)",
        ));
    }
    let query = SeriesQuery {
        since,
        until,
        bucket_minutes: (bucket.as_secs() / 60) as i64,
        category: p.category,
        tool: p.tool,
    };
    let reader = s.reader.clone();
    let series = blocking(move || reader.series(&query)).await?;
    Ok(Json(series).into_response())
}

pub(super) async fn summary(
    State(s): State<AppState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Role::Read)?;
    let now = s.clock.now();
    let reader = s.reader.clone();
    let summary = blocking(move || reader.summary(now)).await?;
    let h = s.pipeline.health();
    let pipeline = serde_json::json!({
        "pending_events": h.pending_events.load(std::sync::atomic::Ordering::Relaxed),
        "committed_events": h.committed_events.load(std::sync::atomic::Ordering::Relaxed),
        "overloaded_batches": h.overloaded_batches.load(std::sync::atomic::Ordering::Relaxed),
        "store_errors": h.store_errors.load(std::sync::atomic::Ordering::Relaxed),
        "retention_deleted": h.retention_deleted.load(std::sync::atomic::Ordering::Relaxed),
    });
    let mut body =
        serde_json::to_value(summary).map_err(|e| ApiError::bad_request(e.to_string()))?;
    body["pipeline"] = pipeline;
    Ok(Json(body).into_response())
}
