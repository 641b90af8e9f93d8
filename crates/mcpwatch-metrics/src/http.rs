//! `GET /metrics`: the registry in OpenMetrics text. Needs the `read` role when API tokens are
//! configured (like every read endpoint); open on loopback without tokens.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use mcpwatch_core::auth::Authenticator;
use mcpwatch_core::config::Role;
use mcpwatch_server::http::ApiError;
use prometheus_client::registry::Registry;

use crate::health::StoreStatsCache;

/// The OpenMetrics content type Prometheus negotiates.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

#[derive(Clone)]
struct MetricsState {
    auth: Arc<Authenticator>,
    registry: Arc<Registry>,
    store: Option<Arc<StoreStatsCache>>,
}

pub(crate) fn router(
    auth: Arc<Authenticator>,
    registry: Arc<Registry>,
    store: Option<Arc<StoreStatsCache>>,
) -> Router {
    Router::new()
        .route("/metrics", get(scrape))
        .with_state(MetricsState {
            auth,
            registry,
            store,
        })
}

async fn scrape(State(s): State<MetricsState>, headers: HeaderMap) -> Result<Response, ApiError> {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    s.auth.check(authz, Role::Read).map_err(ApiError::from)?;
    if let Some(store) = &s.store {
        store.refresh_if_stale().await;
    }
    let mut body = String::with_capacity(64 * 1024);
    prometheus_client::encoding::text::encode(&mut body, &s.registry).map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            format!("cannot encode the metrics: {e}"),
        )
    })?;
    Ok(([(header::CONTENT_TYPE, CONTENT_TYPE)], body).into_response())
}
