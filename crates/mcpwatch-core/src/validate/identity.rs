//! Sources that name an API token. Ingest fills in `api:<token name>` for events without a
//! `source`; an event that names another token (`api:<someone else>`) would let one client's
//! events pass for another's in rules, queries and alerts, so it is refused, with a problem
//! per event that names the field, as for a `mcpwatch:` source.

use super::FieldError;
use crate::Event;

/// The namespace of sources that identify an ingest token.
pub const TOKEN_SOURCE_PREFIX: &str = "api:";

/// A problem for each event whose `source` is in the token namespace but is not `own` (the
/// source of the token that posted it, `api:<name>`, or `api` without authentication).
pub fn foreign_token_sources(events: &[Event], own: &str) -> Vec<FieldError> {
    events
        .iter()
        .enumerate()
        .filter(|(_, e)| claims_a_token(&e.source) && e.source != own)
        .map(|(index, e)| FieldError {
            index,
            field: "source".into(),
            message: format!(
                "`{}` names an API token other than the one that sent it ({own}); sources starting with \
                 `{TOKEN_SOURCE_PREFIX}` identify the posting token: leave `source` out to have it filled in, \
                 or use a source of your own such as `app:<name>`",
                shown(&e.source)
            ),
        })
        .collect()
}

fn claims_a_token(source: &str) -> bool {
    source
        .trim_start()
        .get(..TOKEN_SOURCE_PREFIX.len())
        .is_some_and(|h| h.eq_ignore_ascii_case(TOKEN_SOURCE_PREFIX))
}

/// The source as quoted in an error: bounded, control characters escaped.
fn shown(s: &str) -> String {
    s.chars().take(64).flat_map(char::escape_debug).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(source: &str) -> Event {
        let mut e: Event = serde_json::from_value(serde_json::json!({
            "id": "x", "timestamp": 0, "level": "info", "category": "c", "source": source,
            "event_type": "t", "message": "", "metadata": {}, "tags": []}))
        .unwrap_or_else(|e| panic!("{e}"));
        e.source = source.into();
        e
    }

    #[test]
    fn only_the_posting_tokens_own_source_is_allowed_in_the_namespace() {
        let events: Vec<Event> = ["api:alice", "api:bob", " API:alice", "app:bob", "apix"]
            .iter()
            .map(|s| event(s))
            .collect();
        let problems = foreign_token_sources(&events, "api:alice");
        let at: Vec<usize> = problems.iter().map(|p| p.index).collect();
        assert_eq!(at, vec![1, 2]);
        assert_eq!(problems[0].field, "source");
        assert!(
            problems[0].message.contains("api:bob"),
            "{}",
            problems[0].message
        );
        assert_eq!(foreign_token_sources(&events[..1], "api").len(), 1);
    }
}
