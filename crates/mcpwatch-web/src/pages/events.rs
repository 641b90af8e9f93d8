//! The events explorer: every filter the API has, a time range in the URL (`range=1h` or
//! `since`/`until`), keyset pages; and one event on its own page, its JSON pretty-printed and
//! escaped, with links to its session, user and tool.

use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use maud::{html, Markup};
use mcpwatch_core::{Event, Level};
use mcpwatch_server::http::params::EventParams;
use mcpwatch_store::query::Cursor;
use serde::Deserialize;
use serde_json::Value;

use super::overview::urlenc;
use super::{Range, RANGES};
use crate::format;
use crate::security::json_for_html;
use crate::session::Viewer;
use crate::view::{self, blocking, PageError};
use crate::WebState;

/// Events per page.
const PAGE: usize = 50;
/// Longest message shown in the list; the event's page shows all of it.
const MESSAGE_CHARS: usize = 160;

/// The explorer's parameters: the API's filters plus `range`.
#[derive(Debug, Default, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct ExplorerParams {
    pub range: Option<String>,
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
}

/// Filter fields in the order the form shows them: (name, label).
pub const FILTERS: [(&str, &str); 9] = [
    ("category", "category"),
    ("level", "level"),
    ("event_type", "type"),
    ("server", "server"),
    ("tool", "tool"),
    ("user", "user"),
    ("session", "session"),
    ("outcome", "outcome"),
    ("q", "text"),
];

impl ExplorerParams {
    /// The value of a filter, `None` when empty.
    pub fn get(&self, name: &str) -> Option<&str> {
        let v = match name {
            "range" => &self.range,
            "since" => &self.since,
            "until" => &self.until,
            "category" => &self.category,
            "level" => &self.level,
            "event_type" => &self.event_type,
            "server" => &self.server,
            "tool" => &self.tool,
            "user" => &self.user,
            "session" => &self.session,
            "outcome" => &self.outcome,
            "q" => &self.q,
            "cursor" => &self.cursor,
            _ => &None,
        };
        v.as_deref().filter(|v| !v.is_empty())
    }

    /// The API's parameters with the range resolved, so the same validation applies.
    pub fn to_api(&self, range: &Range) -> EventParams {
        let own = |n: &str| self.get(n).map(str::to_owned);
        EventParams {
            since: Some(range.since.as_secs_f64().to_string()),
            until: Some(range.until.as_secs_f64().to_string()),
            category: own("category"),
            level: own("level"),
            event_type: own("event_type"),
            server: own("server"),
            tool: own("tool"),
            user: own("user"),
            session: own("session"),
            outcome: own("outcome"),
            q: own("q"),
            cursor: own("cursor"),
            limit: Some(PAGE),
        }
    }

    /// This query as a URL query string, without the cursor, plus `extra`.
    pub fn link(&self, extra: &[(&str, &str)]) -> String {
        let mut parts: Vec<String> = ["range", "since", "until"]
            .into_iter()
            .chain(FILTERS.iter().map(|(n, _)| *n))
            .filter_map(|n| self.get(n).map(|v| format!("{n}={}", urlenc(v))))
            .collect();
        parts.extend(extra.iter().map(|(k, v)| format!("{k}={}", urlenc(v))));
        parts.join("&")
    }
}

pub(crate) fn bad_query(e: QueryRejection) -> PageError {
    PageError::bad_request(format!("{}; the explorer takes range, since, until, category, level, event_type, server, tool, user, session, outcome, q", e.body_text()))
}

pub(crate) async fn list(
    State(s): State<WebState>,
    v: Viewer,
    q: Result<Query<ExplorerParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(p) = q.map_err(bad_query)?;
    let now = s.clock.now();
    let range = Range::parse(p.get("range"), p.get("since"), p.get("until"), now, "1h")?;
    let query = p
        .to_api(&range)
        .to_query(now)
        .map_err(|e| PageError::bad_request(e.message()))?;
    let reader = s.reader.clone();
    let page = blocking("the event query", move || reader.events(&query)).await?;
    let events: Vec<Event> = page
        .events
        .iter()
        .filter_map(|r| serde_json::from_str(r.get()).ok())
        .collect();
    let next = page
        .next_cursor
        .as_deref()
        .and_then(|c| Cursor::decode(c).ok())
        .map(|c| c.encode());
    let body = html! {
        h1 { "Events" }
        (filter_form(&p, "/events"))
        p.muted { (format::time(range.since)) " – " (format::time(range.until)) }
        @if events.is_empty() { p.muted { "No events match." } }
        @else { (view::payload(table(&events, now))) }
        @if let Some(c) = next { p { a href=(format!("/events?{}", p.link(&[("cursor", &c)]))) rel="next" { "Older events →" } } }
    };
    Ok(view::page("Events", "/events", &v, body).into_response())
}

/// The filter form, shared with the live page.
pub(crate) fn filter_form(p: &ExplorerParams, action: &'static str) -> Markup {
    html! {
        form.filters method="get" action=(action) {
            @if action == "/events" {
                label { "range "
                    select name="range" {
                        @let current = p.get("range").or(if p.get("since").is_none() && p.get("until").is_none() { Some("1h") } else { None });
                        @for r in RANGES {
                            @if current == Some(r) { option value=(r) selected { (r) } } @else { option value=(r) { (r) } }
                        }
                        @if current.is_none() { option value="" selected { "custom" } }
                    }
                }
                @if let Some(since) = p.get("since") { input type="hidden" name="since" value=(since); }
                @if let Some(until) = p.get("until") { input type="hidden" name="until" value=(until); }
            }
            @for (name, label) in FILTERS {
                label { (label) " " input name=(name) value=(p.get(name).unwrap_or("")) size="10"; }
            }
            button type="submit" { "Apply" }
        }
    }
}

fn meta<'a>(e: &'a Event, k: &str) -> Option<&'a str> {
    e.metadata.get(k).and_then(Value::as_str)
}

pub(crate) fn level_class(l: Level) -> &'static str {
    match l {
        Level::Debug | Level::Info => "info",
        Level::Warning => "warn",
        Level::Error | Level::Critical => "bad",
    }
}

fn truncate(s: &str, n: usize) -> String {
    match s.char_indices().nth(n) {
        Some((i, _)) => format!("{}…", &s[..i]),
        None => s.to_owned(),
    }
}

/// One event as a table row (also what the live page streams).
pub(crate) fn row(e: &Event, now: mcpwatch_core::Timestamp) -> Markup {
    html! {
        tr hx-disable data-event=(e.id) {
            td { a href=(format!("/events/{}", urlenc(&e.id))) { time datetime=(format::time(e.timestamp)) { (format::ago(now, e.timestamp)) } } }
            td { (view::badge(level_class(e.level), e.level.as_str())) }
            td { (e.category) "/" (e.event_type) }
            td { @if let Some(t) = meta(e, "tool_name") { a href=(format!("/events?tool={}&range=24h", urlenc(t))) { (t) } } }
            td { @if let Some(u) = meta(e, "user_id") { a href=(format!("/users/{}", urlenc(u))) { (u) } } }
            td { (meta(e, "outcome").unwrap_or("")) }
            td.num { @if let Some(d) = e.duration_secs() { (format::secs(d)) } }
            td.msg { (truncate(&e.message, MESSAGE_CHARS)) }
        }
    }
}

/// The table head matching [`row`].
pub(crate) fn head() -> Markup {
    html! { thead { tr { th { "When" } th { "Level" } th { "Type" } th { "Tool" } th { "User" } th { "Outcome" } th.num { "Time" } th { "Message" } } } }
}

fn table(events: &[Event], now: mcpwatch_core::Timestamp) -> Markup {
    html! { div.scroll { table.events { (head()) tbody { @for e in events { (row(e, now)) } } } } }
}

pub(crate) async fn detail(
    State(s): State<WebState>,
    v: Viewer,
    Path(id): Path<String>,
) -> Result<Response, PageError> {
    let reader = s.reader.clone();
    let lookup = id.clone();
    let raw = blocking("the event lookup", move || reader.event(&lookup))
        .await?
        .ok_or_else(|| {
            PageError::new(
                StatusCode::NOT_FOUND,
                "no event with that id; it may have aged out of retention",
            )
        })?;
    let value: Value = serde_json::from_str(raw.get())
        .map_err(|e| PageError::internal("reading the stored event", e))?;
    let ev: Option<Event> = serde_json::from_value(value.clone()).ok();
    let now = s.clock.now();
    let body = html! {
        p { a href="/events" { "← Events" } }
        h1 { "Event" }
        (view::payload(html! {
            @if let Some(e) = &ev {
                dl.metrics {
                    dt { "Id" } dd { code { (e.id) } }
                    dt { "When" } dd { (format::time(e.timestamp)) " (" (format::ago(now, e.timestamp)) ")" }
                    dt { "Level" } dd { (view::badge(level_class(e.level), e.level.as_str())) }
                    dt { "Type" } dd { (e.category) "/" (e.event_type) " from " code { (e.source) } }
                    dt { "Message" } dd { (e.message) }
                    @if let Some(sid) = meta(e, "session_id") { dt { "Session" } dd { a href=(format!("/events?session={}&range=30d", urlenc(sid))) { code { (sid) } } } }
                    @if let Some(u) = meta(e, "user_id") { dt { "User" } dd { a href=(format!("/users/{}", urlenc(u))) { (u) } } }
                    @if let Some(t) = meta(e, "tool_name") {
                        dt { "Tool" } dd { a href=(format!("/events?tool={}&range=24h", urlenc(t))) { (t) }
                            @if let Some(sv) = meta(e, "server") { " on " a href=(format!("/tools?server={}", urlenc(sv))) { (sv) } } }
                    }
                }
            }
            h2 { "JSON" }
            pre.json { code { (json_for_html(&value, true)) } }
        }))
    };
    Ok(view::page("Event", "/events", &v, body).into_response())
}
