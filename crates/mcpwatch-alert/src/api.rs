//! The alerting API under `/api/v1` (SPEC 9): alerts with filters and cursor paging, ack and
//! resolve, silences, and channel tests. GETs need the `read` role, actions `admin`.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::routing::{get, post};
use axum::{Json, Router};
use mcpwatch_core::auth::Authenticator;
use mcpwatch_core::config::Role;
use mcpwatch_detect::{FindingSource, Severity};
use mcpwatch_server::http::ApiError;
use serde_json::{json, Value};

use crate::error::AlertError;
use crate::service::{Alerting, NewSilence};
use crate::store::{parse_status_name, AlertFilter};

/// Most alerts per page.
const MAX_LIMIT: usize = 1000;

#[derive(Clone)]
struct ApiState {
    alerting: Arc<Alerting>,
    auth: Arc<Authenticator>,
}

/// The alerting routes.
pub fn router(alerting: Arc<Alerting>, auth: Arc<Authenticator>) -> Router {
    Router::new()
        .route("/api/v1/alerts", get(list_alerts))
        .route("/api/v1/alerts/{id}", get(get_alert))
        .route("/api/v1/alerts/{id}/ack", post(ack_alert))
        .route("/api/v1/alerts/{id}/resolve", post(resolve_alert))
        .route("/api/v1/silences", get(list_silences).post(create_silence))
        .route(
            "/api/v1/silences/{id}",
            get(get_silence).delete(delete_silence),
        )
        .route("/api/v1/channels", get(list_channels))
        .route("/api/v1/channels/{name}/test", post(test_channel))
        .with_state(ApiState { alerting, auth })
}

/// Checks the token for `role`; returns the caller's name for the record.
fn authorize(s: &ApiState, headers: &HeaderMap, role: Role) -> Result<String, ApiError> {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let who = s.auth.check(authz, role).map_err(ApiError::from)?;
    Ok(who.map_or_else(|| "anonymous".to_owned(), |p| p.name))
}

fn api_error(e: AlertError) -> ApiError {
    match e {
        AlertError::NotFound(m) => ApiError::new(StatusCode::NOT_FOUND, "not_found", m),
        AlertError::Conflict(m) => ApiError::new(StatusCode::CONFLICT, "conflict", m),
        AlertError::Invalid(m) => ApiError::bad_request(m),
        other => {
            tracing::error!(error = %other, "alert store failed");
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "store_error",
                other.to_string(),
            )
        }
    }
}

/// Runs a store call off the async workers.
async fn blocking<T: Send + 'static>(
    s: &ApiState,
    f: impl FnOnce(&Alerting) -> Result<T, AlertError> + Send + 'static,
) -> Result<T, ApiError> {
    let a = s.alerting.clone();
    tokio::task::spawn_blocking(move || f(&a))
        .await
        .map_err(|e| {
            ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal",
                format!("alert task failed: {e}"),
            )
        })?
        .map_err(api_error)
}

fn parse_filter(q: &HashMap<String, String>) -> Result<AlertFilter, ApiError> {
    let mut f = AlertFilter {
        limit: 100,
        ..AlertFilter::default()
    };
    for (k, v) in q {
        match k.as_str() {
            "status" => {
                f.status = Some(parse_status_name(v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "status `{v}` is not one of new, sent, acknowledged, resolved, suppressed"
                    ))
                })?)
            }
            "severity" => {
                f.severity = Some(Severity::parse(v).ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "severity `{v}` is not one of low, medium, high, critical"
                    ))
                })?)
            }
            "source" => {
                f.source = Some(
                    serde_json::from_value::<FindingSource>(Value::String(v.clone())).map_err(
                        |_| {
                            ApiError::bad_request(format!(
                                "source `{v}` is not one of rule, anomaly, threat, threshold"
                            ))
                        },
                    )?,
                )
            }
            "name" => f.name = Some(v.clone()),
            "limit" => {
                f.limit = v
                    .parse::<usize>()
                    .ok()
                    .filter(|n| (1..=MAX_LIMIT).contains(n))
                    .ok_or_else(|| {
                        ApiError::bad_request(format!(
                            "limit must be a number from 1 to {MAX_LIMIT}"
                        ))
                    })?
            }
            "cursor" => {
                f.before_seq = Some(v.parse::<i64>().map_err(|_| {
                    ApiError::bad_request(
                        "cursor is not one this API gave out; pass next_cursor back unchanged",
                    )
                })?)
            }
            other => {
                return Err(ApiError::bad_request(format!(
                    "unknown parameter `{other}`; alerts take status, severity, name, source, limit, cursor"
                )))
            }
        }
    }
    Ok(f)
}

async fn list_alerts(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Role::Read)?;
    let filter = parse_filter(&q)?;
    let (alerts, next) = blocking(&s, move |a| a.list(&filter)).await?;
    Ok(Json(
        json!({"alerts": alerts, "next_cursor": next.map(|c| c.to_string())}),
    ))
}

async fn get_alert(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Role::Read)?;
    let alert = blocking(&s, move |a| a.get(&id)).await?;
    Ok(Json(json!(alert)))
}

async fn ack_alert(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = authorize(&s, &headers, Role::Admin)?;
    let alert = blocking(&s, move |a| a.acknowledge(&id)).await?;
    tracing::info!(alert = %alert.alert.id, by = %who, "alert acknowledged");
    Ok(Json(json!(alert)))
}

async fn resolve_alert(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let who = authorize(&s, &headers, Role::Admin)?;
    let alert = blocking(&s, move |a| a.resolve(&id)).await?;
    tracing::info!(alert = %alert.alert.id, by = %who, "alert resolved");
    Ok(Json(json!(alert)))
}

async fn list_silences(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Role::Read)?;
    let all = match q.get("all").map(String::as_str) {
        None | Some("false") => false,
        Some("true") => true,
        Some(_) => return Err(ApiError::bad_request("all must be true or false")),
    };
    let silences = blocking(&s, move |a| a.silences(all)).await?;
    Ok(Json(json!({"silences": silences, "next_cursor": null})))
}

async fn create_silence(
    State(s): State<ApiState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<(StatusCode, Json<Value>), ApiError> {
    let who = authorize(&s, &headers, Role::Admin)?;
    let req: NewSilence = serde_json::from_slice(&body).map_err(|e| {
        ApiError::bad_request(format!(
            "the body is not a silence ({e}); send {{\"matchers\": [\"name=…\"], \"duration\": \"2h\", \"comment\": \"…\"}}"
        ))
    })?;
    let silence = blocking(&s, move |a| a.add_silence(req, &who)).await?;
    Ok((StatusCode::CREATED, Json(json!(silence))))
}

async fn get_silence(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Role::Read)?;
    let silence = blocking(&s, move |a| {
        a.silences(true)?
            .into_iter()
            .find(|x| x.id == id)
            .ok_or_else(|| AlertError::NotFound(format!("no silence {id}")))
    })
    .await?;
    Ok(Json(json!(silence)))
}

async fn delete_silence(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Role::Admin)?;
    let silence = blocking(&s, move |a| a.expire_silence(&id)).await?;
    Ok(Json(json!(silence)))
}

async fn list_channels(
    State(s): State<ApiState>,
    headers: HeaderMap,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Role::Read)?;
    let channels: Vec<Value> = s
        .alerting
        .channels()
        .into_iter()
        .map(|(name, kind)| json!({"name": name, "type": kind}))
        .collect();
    Ok(Json(json!({"channels": channels, "next_cursor": null})))
}

async fn test_channel(
    State(s): State<ApiState>,
    headers: HeaderMap,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    authorize(&s, &headers, Role::Admin)?;
    let result = s.alerting.test_channel(&name).await.map_err(api_error)?;
    Ok(Json(match result {
        Ok(r) => json!({"channel": name, "ok": true, "response": r.response}),
        Err(e) => {
            json!({"channel": name, "ok": false, "error": e.message, "retryable": e.retryable})
        }
    }))
}
