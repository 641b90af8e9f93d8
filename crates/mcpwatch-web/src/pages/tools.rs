//! Tools: per server, each tool's statistics (from the hourly rollups), its current
//! definition (the newest `tools_listed` in the range), and its definition history (changes,
//! additions, removals) with the poisoning findings detection raised.

use std::collections::BTreeMap;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::response::{IntoResponse, Response};
use maud::html;
use mcpwatch_alert::store::AlertFilter;
use mcpwatch_alert::AlertRecord;
use mcpwatch_core::Event;
use mcpwatch_store::{EventQuery, StatsQuery, ToolStats};
use serde::Deserialize;
use serde_json::Value;

use super::overview::urlenc;
use super::{Range, RANGES};
use crate::format;
use crate::session::Viewer;
use crate::view::{self, blocking, PageError};
use crate::WebState;

/// Tools shown, at most.
const MAX_TOOLS: usize = 500;
/// Definition events read per kind.
const MAX_HISTORY: usize = 50;
/// The kinds of definition history, as capture emits them.
const HISTORY: [&str; 3] = ["tool_definition_changed", "tool_added", "tool_removed"];

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ToolsParams {
    range: Option<String>,
    server: Option<String>,
}

struct Data {
    stats: Vec<ToolStats>,
    listings: BTreeMap<String, (Event, Vec<Value>)>,
    history: Vec<Event>,
    poisoning: Vec<AlertRecord>,
}

fn load(s: &WebState, range: &Range, server: Option<String>) -> Result<Data, String> {
    let e = |e: mcpwatch_store::StoreError| e.to_string();
    let stats = s
        .reader
        .tool_stats(&StatsQuery {
            since: Some(range.since),
            until: Some(range.until),
            server: server.clone(),
            limit: MAX_TOOLS,
            ..StatsQuery::default()
        })
        .map_err(e)?;
    let q = |event_type: &str, limit| EventQuery {
        since: Some(range.since),
        until: Some(range.until),
        event_type: Some(event_type.to_owned()),
        server: server.clone(),
        limit,
        ..EventQuery::default()
    };
    let parse = |page: mcpwatch_store::EventPage| -> Vec<Event> {
        page.events
            .iter()
            .filter_map(|r| serde_json::from_str(r.get()).ok())
            .collect()
    };
    let mut listings = BTreeMap::new();
    for ev in parse(
        s.reader
            .events(&q("tools_listed", MAX_HISTORY))
            .map_err(e)?,
    ) {
        let sv = ev.server().unwrap_or("").to_owned();
        if listings.contains_key(&sv) {
            continue;
        }
        let tools = ev
            .metadata
            .get("tools")
            .and_then(Value::as_array)
            .cloned()
            .unwrap_or_default();
        listings.insert(sv, (ev, tools));
    }
    let mut history = Vec::new();
    for kind in HISTORY {
        history.extend(parse(s.reader.events(&q(kind, MAX_HISTORY)).map_err(e)?));
    }
    history.sort_by_key(|e| std::cmp::Reverse(e.timestamp));
    let (poisoning, _) = s
        .alerting
        .list(&AlertFilter {
            name: Some("tool_poisoning".into()),
            limit: MAX_HISTORY,
            ..AlertFilter::default()
        })
        .map_err(|e| e.to_string())?;
    Ok(Data {
        stats,
        listings,
        history,
        poisoning,
    })
}

pub(crate) async fn list(
    State(s): State<WebState>,
    v: Viewer,
    q: Result<Query<ToolsParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(p) = q.map_err(|e| {
        PageError::bad_request(format!("{}; tools take range and server", e.body_text()))
    })?;
    let now = s.clock.now();
    let range = Range::parse(p.range.as_deref(), None, None, now, "24h")?;
    let server = p.server.clone().filter(|x| !x.is_empty());
    let (st, r) = (s.clone(), range.clone());
    let d = blocking("the tools page", move || load(&st, &r, server)).await?;
    let mut by_server: BTreeMap<&str, Vec<&ToolStats>> = BTreeMap::new();
    for t in &d.stats {
        by_server.entry(t.server.as_str()).or_default().push(t);
    }
    let current = range.relative.as_deref().unwrap_or("24h");
    let body = html! {
        h1 { "Tools" }
        form.filters method="get" action="/tools" {
            label { "range " select name="range" { @for r in RANGES { @if r == current { option value=(r) selected { (r) } } @else { option value=(r) { (r) } } } } }
            label { "server " input name="server" value=(p.server.as_deref().unwrap_or("")); }
            button type="submit" { "Apply" }
        }
        (view::payload(html! {
            @if by_server.is_empty() && d.listings.is_empty() { p.muted { "No tools seen in this range." } }
            @for (server, tools) in &by_server {
                section.card {
                    h2 { (if server.is_empty() { "(no server)" } else { server }) }
                    div.scroll { table {
                        thead { tr { th { "Tool" } th.num { "Calls" } th.num { "Success" } th { "Failures" } th.num { "p50" } th.num { "p95" } th.num { "p99" } th { "Last call" } } }
                        tbody { @for t in tools {
                            tr {
                                td { a href=(format!("/events?tool={}&server={}&range={current}", urlenc(&t.tool), urlenc(&t.server))) { (t.tool) } }
                                td.num { (format::count(t.count)) }
                                td.num { (format::pct(t.success_rate)) }
                                td { @for (o, n) in &t.failures { code { (o) } " " (n) " " } }
                                td.num { (format::secs(t.latency.p50)) } td.num { (format::secs(t.latency.p95)) } td.num { (format::secs(t.latency.p99)) }
                                td { (format::ago(now, t.last_seen)) }
                            }
                        } }
                    } }
                }
            }
            @if !d.listings.is_empty() { h2 { "Current definitions" } }
            @for (server, (ev, tools)) in &d.listings {
                section.card {
                    h3 { (server) " " span.muted { "listed " (format::ago(now, ev.timestamp)) } }
                    dl.defs { @for t in tools {
                        dt { code { (t.get("name").and_then(Value::as_str).unwrap_or("?")) } }
                        dd { (t.get("description").and_then(Value::as_str).unwrap_or("")) " " span.muted { "hash " (t.get("hash").and_then(Value::as_str).unwrap_or("")) } }
                    } }
                }
            }
            h2 { "Definition history" }
            @if d.history.is_empty() { p.muted { "No definition changes in this range." } }
            ul.history { @for ev in &d.history {
                li { (format::time(ev.timestamp)) " " code { (ev.event_type) } " "
                     a href=(format!("/events/{}", urlenc(&ev.id))) { (ev.message) } }
            } }
            h2 { "Poisoning findings" }
            @if d.poisoning.is_empty() { p.muted { "None." } }
            ul { @for a in &d.poisoning {
                li { a href=(format!("/alerts/{}", urlenc(&a.alert.id))) { (a.alert.description) } " " span.muted { (format::ago(now, a.alert.last_seen)) } }
            } }
        }))
    };
    Ok(view::page("Tools", "/tools", &v, body).into_response())
}
