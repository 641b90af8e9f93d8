//! Users: per-user activity from the user rollups (tools used, counts, parameter-key
//! patterns), with recent events, authentication history and the alerts that name them.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use mcpwatch_alert::store::AlertFilter;
use mcpwatch_alert::AlertRecord;
use mcpwatch_core::Event;
use mcpwatch_store::{EventQuery, StatsQuery, UserUsage};
use serde::Deserialize;

use super::overview::urlenc;
use super::{Range, RANGES};
use crate::format;
use crate::session::Viewer;
use crate::view::{self, blocking, PageError};
use crate::WebState;

/// Users listed, at most.
const MAX_USERS: usize = 500;
/// Recent events and authentications on a user's page.
const RECENT: usize = 20;
/// Alerts scanned for the user's name.
const ALERT_SCAN: usize = 500;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct UsersParams {
    range: Option<String>,
}

fn parse(q: Result<Query<UsersParams>, QueryRejection>) -> Result<UsersParams, PageError> {
    q.map(|Query(p)| p)
        .map_err(|e| PageError::bad_request(format!("{}; users take range", e.body_text())))
}

pub(crate) async fn list(
    State(s): State<WebState>,
    v: Viewer,
    q: Result<Query<UsersParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let p = parse(q)?;
    let now = s.clock.now();
    let range = Range::parse(p.range.as_deref(), None, None, now, "24h")?;
    let (reader, r) = (s.reader.clone(), range.clone());
    let users = blocking("the user query", move || {
        reader.users(&StatsQuery {
            since: Some(r.since),
            until: Some(r.until),
            limit: MAX_USERS,
            ..StatsQuery::default()
        })
    })
    .await?;
    let current = range.relative.as_deref().unwrap_or("24h");
    let body = html! {
        h1 { "Users" }
        form.filters method="get" action="/users" {
            label { "range " select name="range" { @for r in RANGES { @if r == current { option value=(r) selected { (r) } } @else { option value=(r) { (r) } } } } }
            button type="submit" { "Apply" }
        }
        @if users.is_empty() { p.muted { "No tool executions by any user in this range." } }
        (view::payload(html! {
            div.scroll { table {
                thead { tr { th { "User" } th.num { "Calls" } th.num { "Tools" } th { "Most used" } th { "Last call" } } }
                tbody { @for u in &users {
                    tr data-user=(u.user) {
                        td { a href=(format!("/users/{}", urlenc(&u.user))) { (u.user) } }
                        td.num { (format::count(u.count)) }
                        td.num { (u.tools.len()) }
                        td { @if let Some(t) = u.tools.iter().max_by_key(|t| t.count) { (t.tool) " (" (t.count) ")" } }
                        td { (format::ago(now, u.last_used)) }
                    }
                } }
            } }
        }))
    };
    Ok(view::page("Users", "/users", &v, body).into_response())
}

struct Detail {
    usage: Option<UserUsage>,
    recent: Vec<Event>,
    auth: Vec<Event>,
    alerts: Vec<AlertRecord>,
}

fn load(s: &WebState, user: &str, range: &Range) -> Result<Detail, String> {
    let e = |e: mcpwatch_store::StoreError| e.to_string();
    let usage = s
        .reader
        .users(&StatsQuery {
            since: Some(range.since),
            until: Some(range.until),
            user: Some(user.to_owned()),
            limit: 1,
            ..StatsQuery::default()
        })
        .map_err(e)?
        .into_iter()
        .next();
    let q = |event_type: Option<&str>| EventQuery {
        since: Some(range.since),
        until: Some(range.until),
        user: Some(user.to_owned()),
        event_type: event_type.map(str::to_owned),
        limit: RECENT,
        ..EventQuery::default()
    };
    let parse = |p: mcpwatch_store::EventPage| {
        p.events
            .iter()
            .filter_map(|r| serde_json::from_str(r.get()).ok())
            .collect::<Vec<Event>>()
    };
    let recent = parse(s.reader.events(&q(None)).map_err(e)?);
    let auth = parse(s.reader.events(&q(Some("authentication"))).map_err(e)?);
    let (alerts, _) = s
        .alerting
        .list(&AlertFilter {
            limit: ALERT_SCAN,
            ..AlertFilter::default()
        })
        .map_err(|e| e.to_string())?;
    let alerts = alerts
        .into_iter()
        .filter(|a| a.alert.group.values().any(|v| v == user))
        .collect();
    Ok(Detail {
        usage,
        recent,
        auth,
        alerts,
    })
}

pub(crate) async fn detail(
    State(s): State<WebState>,
    v: Viewer,
    Path(user): Path<String>,
    q: Result<Query<UsersParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let p = parse(q)?;
    let now = s.clock.now();
    let range = Range::parse(p.range.as_deref(), None, None, now, "24h")?;
    let (st, u, r) = (s.clone(), user.clone(), range.clone());
    let d = blocking("the user page", move || load(&st, &u, &r)).await?;
    let body = html! {
        p { a href="/users" { "← Users" } }
        (view::payload(html! {
            h1 { (user) }
            @match &d.usage {
                Some(u) => {
                    p { (format::count(u.count)) " tool calls, last " (format::ago(now, u.last_used)) "." }
                    div.scroll { table {
                        thead { tr { th { "Tool" } th { "Server" } th.num { "Calls" } th { "First" } th { "Last" } th { "Parameter keys" } } }
                        tbody { @for t in &u.tools {
                            tr { td { (t.tool) } td { (t.server) } td.num { (t.count) } td { (format::time(t.first_used)) } td { (format::time(t.last_used)) }
                                 td { @for (keys, n) in &t.parameter_patterns { code { (if keys.is_empty() { "(none)" } else { keys }) } " ×" (n) " " } } }
                        } }
                    } }
                }
                None => p.muted { "No tool executions in this range." }
            }
            h2 { "Alerts naming this user" }
            @if d.alerts.is_empty() { p.muted { "None." } }
            ul { @for a in &d.alerts {
                li { (view::badge("warn", a.alert.severity.as_str())) " " a href=(format!("/alerts/{}", urlenc(&a.alert.id))) { (a.alert.name) } " " span.muted { (format::ago(now, a.alert.last_seen)) } }
            } }
            h2 { "Authentication" }
            @if d.auth.is_empty() { p.muted { "No authentication events in this range." } }
            ul { @for e in &d.auth {
                li { (format::time(e.timestamp)) " " (e.metadata.get("result").and_then(|v| v.as_str()).unwrap_or("?"))
                     " " span.muted { (e.metadata.get("ip_address").and_then(|v| v.as_str()).unwrap_or("")) } }
            } }
            h2 { "Recent events" }
            div.scroll { table.events { (super::events::head()) tbody { @for e in &d.recent { (super::events::row(e, now)) } } } }
            p { a href=(format!("/events?user={}&range=24h", urlenc(&user))) { "All events of this user →" } }
        }))
    };
    Ok(view::page("User", "/users", &v, body).into_response())
}
