//! `GET /api/v1/events/stream`: committed events as Server-Sent Events, with the list filters.
//!
//! Each event is `event: event` with the stored JSON as data. A subscriber that falls behind
//! gets `event: lagged` with how many events it missed, then continues; the stream never
//! buffers without bound.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::stream::{self, Stream};
use mcpwatch_core::config::Role;
use mcpwatch_store::EventQuery;
use tokio::sync::broadcast::error::RecvError;

use super::params::{matches, EventParams};
use super::query::params;
use super::{ApiError, AppState};
use crate::pipeline::Committed;

pub(super) async fn stream_events(
    State(s): State<AppState>,
    headers: HeaderMap,
    q: Result<Query<EventParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    s.authorize(&headers, Role::Read)?;
    let p = params(q)?;
    if p.cursor.is_some() || p.until.is_some() {
        return Err(ApiError::bad_request(
            "the stream takes filters only; cursor and until do not apply",
        ));
    }
    let query = p.to_query(s.clock.now())?;
    let rx = s.pipeline.subscribe();
    Ok(Sse::new(events(rx, query))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

struct StreamState {
    rx: tokio::sync::broadcast::Receiver<Committed>,
    query: EventQuery,
    ready: std::collections::VecDeque<SseEvent>,
}

fn events(
    rx: tokio::sync::broadcast::Receiver<Committed>,
    query: EventQuery,
) -> impl Stream<Item = Result<SseEvent, Infallible>> {
    let state = StreamState {
        rx,
        query,
        ready: Default::default(),
    };
    stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.ready.pop_front() {
                return Some((Ok(ev), st));
            }
            match st.rx.recv().await {
                Ok(batch) => {
                    for p in batch.iter().filter(|p| matches(&st.query, &p.event)) {
                        st.ready.push_back(
                            SseEvent::default()
                                .event("event")
                                .id(p.event.id.clone())
                                .data(p.body.clone()),
                        );
                    }
                }
                Err(RecvError::Lagged(n)) => {
                    st.ready.push_back(
                        SseEvent::default()
                            .event("lagged")
                            .data(format!("{{\"missed_batches\":{n}}}")),
                    );
                }
                Err(RecvError::Closed) => return None,
            }
        }
    })
}
