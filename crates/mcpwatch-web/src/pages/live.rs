//! The live tail: new events and new detections over SSE, with the explorer's filters,
//! pausable (the page script cancels swaps while paused), resuming after a reconnect from the
//! last event id the browser saw (`Last-Event-ID`): the missed events come from the store
//! first, then the stream goes on, without duplicates.

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use maud::html;
use mcpwatch_core::{Event, Timestamp};
use mcpwatch_server::http::params::matches;
use mcpwatch_server::Committed;
use mcpwatch_store::EventQuery;
use tokio::sync::broadcast::error::RecvError;

use super::events::{bad_query, filter_form, head, row, ExplorerParams};
use super::Range;
use crate::session::Viewer;
use crate::view::{self, blocking, PageError};
use crate::WebState;

/// Events replayed from the store after a reconnect, at most.
const MAX_RESUME: usize = 500;
/// Longest `Last-Event-ID` looked up.
const MAX_ID: usize = 128;
/// Events that mcpwatch derives itself (rule triggers, anomalies, threats, thresholds).
const DERIVED_SOURCE: &str = "mcpwatch:detect";

pub(crate) async fn page(
    State(_s): State<WebState>,
    v: Viewer,
    q: Result<Query<ExplorerParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(p) = q.map_err(bad_query)?;
    let stream_url = format!("/live/stream?{}", p.link(&[]));
    let body = html! {
        h1 { "Live" }
        (filter_form(&p, "/live"))
        div.live hx-ext="sse" sse-connect=(stream_url) {
            p.controls {
                button #pause type="button" aria-pressed="false" { "Pause" }
                " " span #live-status role="status" { "connecting…" }
                " " span #live-buffered {}
            }
            section.card {
                h2 { "Detections" }
                ul #live-alerts sse-swap="alert" hx-swap="afterbegin" {}
            }
            section.card {
                h2 { "Events" }
                div.scroll { table.events {
                    (head())
                    tbody #live-rows sse-swap="event" hx-swap="afterbegin" {}
                } }
            }
        }
    };
    Ok(view::page("Live", "/live", &v, body).into_response())
}

pub(crate) async fn stream(
    State(s): State<WebState>,
    _v: Viewer,
    headers: HeaderMap,
    q: Result<Query<ExplorerParams>, QueryRejection>,
) -> Result<Response, PageError> {
    let Query(p) = q.map_err(bad_query)?;
    if p.get("cursor").is_some() || p.get("until").is_some() || p.get("range").is_some() {
        return Err(PageError::bad_request(
            "the live tail takes filters only; range, until and cursor do not apply",
        ));
    }
    let now = s.clock.now();
    let range = Range {
        since: now.saturating_sub(Duration::from_secs(365 * 86_400)),
        until: now,
        relative: None,
    };
    let mut api = p.to_api(&range);
    api.since = p.get("since").map(str::to_owned);
    api.until = None;
    api.limit = Some(MAX_RESUME);
    let query = api
        .to_query(now)
        .map_err(|e| PageError::bad_request(e.message()))?;
    // Subscribe before reading the backlog, so nothing falls between the two.
    let rx = s.pipeline.subscribe();
    let last = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= MAX_ID)
        .map(str::to_owned);
    let backlog = match last {
        Some(id) => {
            let (reader, q) = (s.reader.clone(), query.clone());
            blocking("the resume query", move || missed_since(&*reader, &id, q)).await?
        }
        None => Vec::new(),
    };
    let seen: HashSet<String> = backlog.iter().map(|e| e.id.clone()).collect();
    let ready: VecDeque<SseEvent> = backlog.iter().flat_map(|e| render(e, now)).collect();
    let state = Tail {
        rx,
        query,
        ready,
        seen,
        clock: s.clock.clone(),
    };
    Ok(Sse::new(tail(state))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// The stored events after `last_id` that match `q`, oldest first.
fn missed_since(
    reader: &dyn mcpwatch_store::EventReader,
    last_id: &str,
    mut q: EventQuery,
) -> Result<Vec<Event>, mcpwatch_store::StoreError> {
    let Some(raw) = reader.event(last_id)? else {
        return Ok(Vec::new());
    };
    let Ok(last) = serde_json::from_str::<Event>(raw.get()) else {
        return Ok(Vec::new());
    };
    q.since = Some(q.since.map_or(last.timestamp, |s| s.max(last.timestamp)));
    let page = reader.events(&q)?;
    let mut out: Vec<Event> = page
        .events
        .iter()
        .filter_map(|r| serde_json::from_str::<Event>(r.get()).ok())
        .take_while(|e| e.id != last_id)
        .collect();
    out.reverse();
    Ok(out)
}

struct Tail {
    rx: tokio::sync::broadcast::Receiver<Committed>,
    query: EventQuery,
    ready: VecDeque<SseEvent>,
    seen: HashSet<String>,
    clock: mcpwatch_core::clock::SharedClock,
}

/// The SSE messages for one event: its row, and a detection line when mcpwatch derived it.
fn render(e: &Event, now: Timestamp) -> Vec<SseEvent> {
    let mut out = vec![SseEvent::default()
        .event("event")
        .id(e.id.clone())
        .data(row(e, now).into_string())];
    if e.source == DERIVED_SOURCE {
        let line = html! {
            li hx-disable data-event=(e.id) {
                (view::badge(super::events::level_class(e.level), e.level.as_str())) " "
                a href=(format!("/events/{}", super::overview::urlenc(&e.id))) { (e.event_type) } " " (e.message)
            }
        };
        out.push(SseEvent::default().event("alert").data(line.into_string()));
    }
    out
}

fn tail(st: Tail) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    stream::unfold(st, |mut st| async move {
        loop {
            if let Some(ev) = st.ready.pop_front() {
                return Some((Ok(ev), st));
            }
            match st.rx.recv().await {
                Ok(batch) => {
                    let now = st.clock.now();
                    for p in batch.iter().filter(|p| matches(&st.query, &p.event)) {
                        if !st.seen.is_empty() && st.seen.remove(&p.event.id) {
                            continue;
                        }
                        st.ready.extend(render(&p.event, now));
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    let note = html! { tr.lagged hx-disable { td colspan="8" { "missed " (n) " batches: the page fell behind" } } };
                    st.ready
                        .push_back(SseEvent::default().event("event").data(note.into_string()));
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
