//! `POST /api/v1/events`: one event, a JSON array, or NDJSON; all or nothing; 202 after commit
//! (on a cluster node: after the stream acknowledged every event).

use axum::body::Body;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use mcpwatch_core::config::Role;
use mcpwatch_core::validate::identity::foreign_token_sources;
use mcpwatch_core::validate::{parse_batch, BatchError, BodyFormat, Defaults};
use serde_json::json;

use super::{ApiError, AppState};

pub(super) async fn post_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let principal = s.authorize(&headers, Role::Ingest)?;
    let format = body_format(&headers)?;
    let limit = s.limits.max_body_bytes;
    let too_large = || {
        ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body is larger than the limit of {limit} bytes; send smaller batches"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, limit)
        .await
        .map_err(|e| unreadable(&e).unwrap_or_else(too_large))?;
    let source = principal.map_or_else(|| "api".to_owned(), |p| format!("api:{}", p.name));
    let defaults = Defaults {
        ids: &s.ids,
        clock: s.clock.as_ref(),
        source: &source,
        max_events: s.limits.max_batch_events,
        max_future_skew: s.limits.max_clock_skew,
    };
    let events = parse_batch(&bytes, format, &defaults).map_err(|e| match e {
        BatchError::Body(m) => ApiError::new(StatusCode::BAD_REQUEST, "invalid_body", m),
        too_many @ BatchError::TooManyEvents { .. } => ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_events",
            too_many.to_string(),
        ),
        BatchError::Fields(errors) => ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_events",
            format!("{} problem(s) in the batch; nothing was stored; fix them and resend the whole batch", errors.len()),
        )
        .with_details(json!(errors)),
    })?;
    drop(bytes);
    let foreign = foreign_token_sources(&events, &source);
    if !foreign.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_events",
            format!("{} problem(s) in the batch; nothing was stored; fix them and resend the whole batch", foreign.len()),
        )
        .with_details(json!(foreign)));
    }
    let ids = match &s.ingest_to {
        Some(sink) => sink.submit(events).await?,
        None => s.pipeline.submit_events(events).await?,
    };
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({"accepted": ids.len(), "ids": ids})),
    )
        .into_response())
}

/// Why a body could not be read, when it is not its size: it came too slowly, or broke off.
fn unreadable(e: &axum::Error) -> Option<ApiError> {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if c.is::<http_body_util::LengthLimitError>() {
            return None;
        }
        if let Some(t) = c.downcast_ref::<mcpwatch_listen::BodyTimeout>() {
            return Some(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                t.to_string(),
            ));
        }
        cause = c.source();
    }
    Some(ApiError::bad_request(format!(
        "the body could not be read: {e}; nothing was stored, send it again"
    )))
}

fn body_format(headers: &HeaderMap) -> Result<BodyFormat, ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match mime.as_str() {
        "application/json" => Ok(BodyFormat::Json),
        "application/x-ndjson" | "application/jsonl" | "application/x-jsonlines" => Ok(BodyFormat::Ndjson),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type `{}` is not accepted; send application/json (an event or an array) or application/x-ndjson",
                if ct.is_empty() { "(none)" } else { ct }
            ),
        )),
    }
}
