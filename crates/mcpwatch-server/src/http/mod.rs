//! The HTTP API of SPEC section 9, under `/api/v1`, plus `/healthz` and `/readyz`.
//!
//! Errors are always `{"error": {"code", "message", "details"}}` with a status that says what
//! to do: 400 fix the request, 401/403 fix the token, 413 send less, 415 set the content type,
//! 429/503 retry after `Retry-After` seconds.

mod ingest;
pub mod params;
mod query;
mod stream;

use std::sync::Arc;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::config::Role;
use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::SinkError;
use mcpwatch_store::{EventReader, StoreError};
use serde_json::{json, Value};

use crate::pipeline::Pipeline;
use mcpwatch_core::auth::{Authenticator, Denial, Principal};

/// Limits on ingest requests.
#[derive(Debug, Clone, Copy)]
pub struct IngestLimits {
    /// Largest body in bytes.
    pub max_body_bytes: usize,
    /// Most events per request; more get 413.
    pub max_batch_events: usize,
    /// How far ahead of the collector's clock an event's timestamp may be; later gets 400.
    pub max_clock_skew: std::time::Duration,
}

/// Everything a handler needs.
#[derive(Clone)]
pub struct AppState {
    /// Where events go.
    pub pipeline: Pipeline,
    /// Where ingested events go instead, when not straight into the pipeline: a cluster node
    /// publishes them to the stream, whose consumers store them and whose tasks detect on them.
    pub ingest_to: Option<Arc<dyn mcpwatch_core::EventSink>>,
    /// Where queries go.
    pub reader: Arc<dyn EventReader>,
    /// Who may call.
    pub auth: Arc<Authenticator>,
    /// Wall time, for relative `since` and defaults.
    pub clock: SharedClock,
    /// Ingest limits.
    pub limits: IngestLimits,
    /// Ids for events that come without one.
    pub ids: Arc<IdGenerator>,
}

impl AppState {
    /// Checks the caller's token for `role`.
    pub fn authorize(
        &self,
        headers: &HeaderMap,
        role: Role,
    ) -> Result<Option<Principal>, ApiError> {
        let authz = headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok());
        self.auth.check(authz, role).map_err(ApiError::from)
    }
}

/// The API's routes.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route(
            "/api/v1/events",
            post(ingest::post_events).get(query::list_events),
        )
        .route("/api/v1/events/stream", get(stream::stream_events))
        .route("/api/v1/events/{id}", get(query::get_event))
        .route("/api/v1/tools", get(query::tools))
        .route("/api/v1/users", get(query::users))
        .route("/api/v1/series", get(query::series))
        .route("/api/v1/summary", get(query::summary))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .fallback(not_found)
        .with_state(state)
}

async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

async fn readyz(axum::extract::State(s): axum::extract::State<AppState>) -> Response {
    let h = s.pipeline.health();
    let alive = h.writer_alive.load(std::sync::atomic::Ordering::SeqCst);
    let pending = h.pending_events.load(std::sync::atomic::Ordering::SeqCst);
    let body = json!({"status": if alive { "ready" } else { "not_ready" }, "writer_alive": alive, "pending_events": pending});
    let status = if alive {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body)).into_response()
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such endpoint; the API lives under /api/v1 (see README)",
    )
}

/// An API error, rendered as `{"error": {...}}`.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    details: Value,
    retry_after: Option<u64>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    /// A 400 for a bad parameter.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// What went wrong, for a caller that shows it another way (the dashboard's pages).
    pub fn message(&self) -> &str {
        &self.message
    }

    fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    fn retry_after(mut self, secs: u64) -> Self {
        self.retry_after = Some(secs);
        self
    }
}

impl From<Denial> for ApiError {
    fn from(d: Denial) -> Self {
        match d {
            Denial::Unauthenticated => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthenticated",
                "missing or unknown token; send Authorization: Bearer <token>",
            ),
            Denial::Forbidden(why) => ApiError::new(StatusCode::FORBIDDEN, "forbidden", why),
            Denial::RateLimited(secs) => ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                format!("this token is over its request rate; retry in {secs}s"),
            )
            .retry_after(secs),
        }
    }
}

impl From<SinkError> for ApiError {
    fn from(e: SinkError) -> Self {
        match e {
            SinkError::Overloaded { retry_after_secs } => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
                    .retry_after(retry_after_secs)
            }
            SinkError::Store(m) => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                format!("the store could not commit the batch and kept none of it: {m}"),
            )
            .retry_after(5),
            SinkError::TooLarge(m) => {
                ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "event_too_large", m)
            }
            SinkError::Closed => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "shutting_down",
                "the collector is shutting down",
            )
            .retry_after(5),
        }
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::BadQuery(m) => ApiError::bad_request(m),
            other => {
                tracing::error!(error = %other, "query failed");
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    other.to_string(),
                )
            }
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        let mut resp = (self.status, Json(body)).into_response();
        let headers = resp.headers_mut();
        if let Some(secs) = self.retry_after {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            headers.insert(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static("Bearer realm=\"mcpwatch\""),
            );
        }
        resp
    }
}

/// Runs a blocking store query off the async workers.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, StoreError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("query task failed: {e}"),
            )
        })?
        .map_err(ApiError::from)
}

#[cfg(test)]
mod tests;
