//! Alerts: the list with filters (status, severity, source, name), grouped by name; one alert
//! with its triggering events and per-channel delivery history; ack, resolve and silence from
//! the page (a silence pre-filled from the alert's labels). Reads need `read`, actions `admin`,
//! as in the API; every action carries a CSRF token.

use std::collections::HashMap;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::{html, Markup};
use mcpwatch_alert::store::{parse_status_name, AlertFilter};
use mcpwatch_alert::{AlertError, AlertRecord, NewSilence, Silence};
use mcpwatch_core::Timestamp;
use mcpwatch_detect::{AlertStatus, FindingSource, Severity};
use serde::Deserialize;

use super::overview::urlenc;
use crate::format;
use crate::session::{check_csrf, Viewer};
use crate::view::{self, PageError};
use crate::WebState;

/// Alerts per page.
const PAGE: usize = 100;
/// Triggering events listed on an alert's page.
const MAX_EVENT_LINKS: usize = 50;

fn status_class(s: AlertStatus) -> &'static str {
    match s {
        AlertStatus::New => "bad",
        AlertStatus::Sent => "warn",
        AlertStatus::Acknowledged => "info",
        AlertStatus::Resolved => "ok",
        AlertStatus::Suppressed => "muted",
    }
}

fn status_name(s: AlertStatus) -> &'static str {
    mcpwatch_alert::store::status_str(s)
}

fn sev_class(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn page_error(e: AlertError) -> PageError {
    match e {
        AlertError::NotFound(m) => PageError::new(StatusCode::NOT_FOUND, m),
        AlertError::Conflict(m) => PageError::new(StatusCode::CONFLICT, m),
        AlertError::Invalid(m) => PageError::bad_request(m),
        other => PageError::internal("the alert store", other),
    }
}

async fn alerting<T: Send + 'static>(
    s: &WebState,
    f: impl FnOnce(&mcpwatch_alert::Alerting) -> Result<T, AlertError> + Send + 'static,
) -> Result<T, PageError> {
    let a = s.alerting.clone();
    match tokio::task::spawn_blocking(move || f(&a)).await {
        Ok(r) => r.map_err(page_error),
        Err(e) => Err(PageError::internal("the alert store", e)),
    }
}

fn filter_from(q: &HashMap<String, String>) -> Result<AlertFilter, PageError> {
    let mut f = AlertFilter {
        limit: PAGE,
        ..AlertFilter::default()
    };
    for (k, v) in q.iter().filter(|(_, v)| !v.is_empty()) {
        match k.as_str() {
            "status" => {
                f.status = Some(parse_status_name(v).ok_or_else(|| {
                    PageError::bad_request(
                        "status must be new, sent, acknowledged, resolved or suppressed",
                    )
                })?)
            }
            "severity" => {
                f.severity = Some(Severity::parse(v).ok_or_else(|| {
                    PageError::bad_request("severity must be low, medium, high or critical")
                })?)
            }
            "source" => {
                f.source = Some(
                    serde_json::from_value::<FindingSource>(serde_json::Value::String(v.clone()))
                        .map_err(|_| {
                        PageError::bad_request("source must be rule, anomaly, threat or threshold")
                    })?,
                )
            }
            "name" => f.name = Some(v.clone()),
            "cursor" => {
                f.before_seq = Some(
                    v.parse()
                        .map_err(|_| PageError::bad_request("bad cursor; follow the page links"))?,
                )
            }
            other => {
                return Err(PageError::bad_request(format!(
                    "unknown filter `{other}`; alerts take status, severity, source, name, cursor"
                )))
            }
        }
    }
    Ok(f)
}

fn select(name: &'static str, options: &[&'static str], current: Option<&str>) -> Markup {
    html! {
        label { (name) " "
            select name=(name) {
                option value="" { "any" }
                @for o in options {
                    @if current == Some(*o) { option value=(o) selected { (o) } } @else { option value=(o) { (o) } }
                }
            }
        }
    }
}

pub(crate) async fn list(
    State(s): State<WebState>,
    v: Viewer,
    Query(q): Query<HashMap<String, String>>,
) -> Result<Response, PageError> {
    let filter = filter_from(&q)?;
    let (alerts, next) = alerting(&s, move |a| a.list(&filter)).await?;
    let now = s.clock.now();
    // Groups in the order of their newest alert.
    let mut groups: Vec<(String, Vec<&AlertRecord>)> = Vec::new();
    for a in &alerts {
        match groups.iter_mut().find(|(n, _)| *n == a.alert.name) {
            Some((_, g)) => g.push(a),
            None => groups.push((a.alert.name.clone(), vec![a])),
        }
    }
    let cur = |k: &str| q.get(k).map(String::as_str).filter(|v| !v.is_empty());
    let next_link = next.map(|c| {
        let mut p: Vec<String> = q
            .iter()
            .filter(|(k, v)| k.as_str() != "cursor" && !v.is_empty())
            .map(|(k, v)| format!("{}={}", urlenc(k), urlenc(v)))
            .collect();
        p.sort();
        p.push(format!("cursor={c}"));
        format!("/alerts?{}", p.join("&"))
    });
    let body = html! {
        h1 { "Alerts" }
        form.filters method="get" action="/alerts" {
            (select("status", &["new", "sent", "acknowledged", "resolved", "suppressed"], cur("status")))
            (select("severity", &["critical", "high", "medium", "low"], cur("severity")))
            (select("source", &["rule", "anomaly", "threat", "threshold"], cur("source")))
            label { "name " input name="name" value=(cur("name").unwrap_or("")); }
            button type="submit" { "Filter" }
            a href="/silences" { "Silences" }
        }
        @if groups.is_empty() { p.muted { "No alerts match." } }
        (view::payload(html! {
            @for (name, group) in &groups {
                section.card.group {
                    h2 { a href=(format!("/alerts?name={}", urlenc(name))) { (name) } " " span.muted { (group.len()) " shown" } }
                    div.scroll { table {
                        thead { tr { th { "Severity" } th { "Status" } th { "Group" } th.num { "Count" } th { "Last seen" } th { "Delivery" } th { "" } } }
                        tbody { @for a in group { (row(&v, a, now)) } }
                    } }
                }
            }
        }))
        @if let Some(link) = next_link { p { a href=(link) rel="next" { "Older alerts →" } } }
    };
    Ok(view::page("Alerts", "/alerts", &v, body).into_response())
}

fn labels(a: &AlertRecord) -> Markup {
    html! {
        @for (k, val) in &a.alert.group { code.label { (k) "=" (val) } " " }
    }
}

fn channels(a: &AlertRecord) -> Markup {
    html! {
        @if a.channels.is_empty() { span.muted { "none" } }
        @for (ch, d) in &a.channels {
            span.channel title=(d.last_error.as_deref().unwrap_or("")) {
                (ch) " " (view::badge(match d.status.as_str() { "delivered" => "ok", "failed" => "bad", _ => "warn" }, d.status.as_str()))
            } " "
        }
    }
}

fn actions(v: &Viewer, a: &AlertRecord) -> Markup {
    let id = urlenc(&a.alert.id);
    html! {
        @if v.admin && a.alert.status != AlertStatus::Resolved {
            div.actions {
                @if a.alert.status != AlertStatus::Acknowledged {
                    form method="post" action=(format!("/alerts/{id}/ack")) { (view::csrf_field(v)) button type="submit" { "Ack" } }
                }
                form method="post" action=(format!("/alerts/{id}/resolve")) { (view::csrf_field(v)) button type="submit" { "Resolve" } }
                a.button href=(format!("/silences?alert={id}")) { "Silence…" }
            }
        }
    }
}

fn row(v: &Viewer, a: &AlertRecord, now: Timestamp) -> Markup {
    html! {
        tr data-alert=(a.alert.id) {
            td { (view::badge(sev_class(a.alert.severity), a.alert.severity.as_str())) }
            td { (view::badge(status_class(a.alert.status), status_name(a.alert.status))) }
            td { a href=(format!("/alerts/{}", urlenc(&a.alert.id))) { (labels(a)) @if a.alert.group.is_empty() { "details" } } }
            td.num { (a.alert.count) }
            td { time datetime=(format::time(a.alert.last_seen)) { (format::ago(now, a.alert.last_seen)) } }
            td { (channels(a)) }
            td { (actions(v, a)) }
        }
    }
}

pub(crate) async fn detail(
    State(s): State<WebState>,
    v: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let a = alerting(&s, move |al| al.get(&id)).await?;
    let now = s.clock.now();
    let body = html! {
        p { a href="/alerts" { "← Alerts" } }
        (view::payload(html! {
            h1 { (a.alert.name) }
            p { (view::badge(sev_class(a.alert.severity), a.alert.severity.as_str())) " "
                (view::badge(status_class(a.alert.status), status_name(a.alert.status)))
                " from " (a.alert.source.as_str()) ", " (a.alert.count) " firings" }
            p.description { (a.alert.description) }
            @if !a.alert.recommended_action.is_empty() { p { strong { "Recommended: " } (a.alert.recommended_action) } }
            dl.metrics {
                dt { "First seen" } dd { (format::time(a.alert.first_seen)) }
                dt { "Last seen" } dd { (format::time(a.alert.last_seen)) " (" (format::ago(now, a.alert.last_seen)) ")" }
                dt { "Labels" } dd { (labels(&a)) @for t in &a.tags { code.label { "tag=" (t) } " " } }
                dt { "Fingerprint" } dd { code { (a.alert.fingerprint) } }
            }
            (actions(&v, &a))
            h2 { "Triggering events" }
            ul.events { @for e in a.alert.event_ids.iter().take(MAX_EVENT_LINKS) {
                li { a href=(format!("/events/{}", urlenc(e))) { code { (e) } } }
            } }
            h2 { "Deliveries" }
            @let deliveries = a.deliveries.as_deref().unwrap_or(&[]);
            @if deliveries.is_empty() { p.muted { "No notifications queued (silenced, acknowledged, or no channel routes this severity)." } }
            @else {
                div.scroll { table {
                    thead { tr { th { "Channel" } th { "Kind" } th { "Status" } th.num { "Attempts" } th { "Queued" } th { "Last error" } } }
                    tbody { @for d in deliveries {
                        tr { td { (d.channel) } td { (d.kind.as_str()) }
                             td { (view::badge(match d.status.as_str() { "delivered" => "ok", "failed" => "bad", _ => "warn" }, d.status.as_str())) }
                             td.num { (d.attempts) } td { (format::time(d.created_at)) } td { (d.last_error.as_deref().unwrap_or("")) } }
                    } }
                } }
            }
        }))
    };
    Ok(view::page("Alert", "/alerts", &v, body).into_response())
}

#[derive(Deserialize)]
pub(crate) struct CsrfOnly {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn ack(
    State(s): State<WebState>,
    v: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    check_csrf(&headers, &v, &f.csrf)?;
    v.require_admin()?;
    let rec = alerting(&s, move |a| a.acknowledge(&id)).await?;
    tracing::info!(alert = %rec.alert.id, by = %who(&v), "alert acknowledged from the dashboard");
    Ok(Redirect::to(&format!("/alerts/{}", urlenc(&rec.alert.id))).into_response())
}

pub(crate) async fn resolve(
    State(s): State<WebState>,
    v: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    check_csrf(&headers, &v, &f.csrf)?;
    v.require_admin()?;
    let rec = alerting(&s, move |a| a.resolve(&id)).await?;
    tracing::info!(alert = %rec.alert.id, by = %who(&v), "alert resolved from the dashboard");
    Ok(Redirect::to(&format!("/alerts/{}", urlenc(&rec.alert.id))).into_response())
}

fn who(v: &Viewer) -> String {
    v.name.clone().unwrap_or_else(|| "anonymous".to_owned())
}

#[derive(Deserialize)]
pub(crate) struct SilenceQuery {
    alert: Option<String>,
}

/// The matchers that silence exactly alerts like this one: its name and its group labels.
fn prefill(a: &AlertRecord) -> String {
    let mut lines = vec![format!("name={}", a.alert.name)];
    for (k, v) in &a.alert.group {
        lines.push(format!("{k}={v}"));
    }
    lines.join("\n")
}

pub(crate) async fn silences(
    State(s): State<WebState>,
    v: Viewer,
    Query(q): Query<SilenceQuery>,
) -> Result<Response, PageError> {
    let alert = match q.alert.filter(|a| !a.is_empty()) {
        Some(id) => Some(alerting(&s, move |a| a.get(&id)).await?),
        None => None,
    };
    let list = alerting(&s, |a| a.silences(false)).await?;
    Ok(view::page(
        "Silences",
        "/alerts",
        &v,
        silences_markup(&v, &list, alert.as_ref(), None),
    )
    .into_response())
}

fn silences_markup(
    v: &Viewer,
    list: &[Silence],
    alert: Option<&AlertRecord>,
    error: Option<&str>,
) -> Markup {
    html! {
        h1 { "Silences" }
        @if v.admin {
            section.card {
                h2 { "New silence" }
                @if let Some(a) = alert { p { "Pre-filled from alert " a href=(format!("/alerts/{}", urlenc(&a.alert.id))) { (a.alert.name) } "." } }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form.silence method="post" action="/silences" {
                    (view::csrf_field(v))
                    label { "Matchers, one per line (label=value, label!=value, label=~regex)"
                        textarea name="matchers" rows="4" required { (alert.map(prefill).unwrap_or_default()) } }
                    label { "Duration " input name="duration" value="2h" required; }
                    label { "Comment " input name="comment" required placeholder="why, e.g. pen test until 17:00"; }
                    button type="submit" { "Create silence" }
                }
            }
        }
        h2 { "Active and pending" }
        @if list.is_empty() { p.muted { "No silences in force." } }
        (view::payload(html! {
            ul.silences { @for si in list {
                li data-silence=(si.id) {
                    @for m in &si.matchers { code.label { (m) } " " }
                    " until " (format::time(si.ends_at)) " — " (si.comment) " (" (si.created_by) ")"
                    @if v.admin {
                        form.inline method="post" action=(format!("/silences/{}/expire", urlenc(&si.id))) {
                            (view::csrf_field(v)) button type="submit" { "Expire" }
                        }
                    }
                }
            } }
        }))
    }
}

#[derive(Deserialize)]
pub(crate) struct SilenceForm {
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    matchers: String,
    #[serde(default)]
    duration: String,
    #[serde(default)]
    comment: String,
}

pub(crate) async fn create_silence(
    State(s): State<WebState>,
    v: Viewer,
    headers: HeaderMap,
    Form(f): Form<SilenceForm>,
) -> Result<Response, PageError> {
    check_csrf(&headers, &v, &f.csrf)?;
    v.require_admin()?;
    let req = NewSilence {
        matchers: f
            .matchers
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(str::to_owned)
            .collect(),
        duration: Some(f.duration.trim().to_owned()),
        comment: f.comment,
        ..NewSilence::default()
    };
    let by = who(&v);
    match alerting(&s, move |a| a.add_silence(req, &by)).await {
        Ok(si) => {
            tracing::info!(silence = %si.id, by = %who(&v), "silence created from the dashboard");
            Ok(Redirect::to("/silences").into_response())
        }
        Err(e) if e.status() == StatusCode::BAD_REQUEST => {
            let list = alerting(&s, |a| a.silences(false)).await?;
            let page = silences_markup(&v, &list, None, Some(e.message()));
            Ok((
                StatusCode::BAD_REQUEST,
                view::page("Silences", "/alerts", &v, page),
            )
                .into_response())
        }
        Err(e) => Err(e),
    }
}

pub(crate) async fn expire_silence(
    State(s): State<WebState>,
    v: Viewer,
    headers: HeaderMap,
    Path(id): Path<String>,
    Form(f): Form<CsrfOnly>,
) -> Result<Response, PageError> {
    check_csrf(&headers, &v, &f.csrf)?;
    v.require_admin()?;
    alerting(&s, move |a| a.expire_silence(&id)).await?;
    Ok(Redirect::to("/silences").into_response())
}
