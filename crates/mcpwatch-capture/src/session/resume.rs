//! Resumable streams: a Streamable HTTP response stream whose events carry SSE ids can break
//! off and be resumed by the client (a GET with `Last-Event-ID`), and the server then sends
//! the responses it still owed on the resumed stream. Ending those requests as
//! `transport_error` when the stream breaks would record a verdict the late response then
//! contradicts (and log that response as unmatched), so the verdict is held instead: the
//! request stays pending, a response on any stream of the session completes it with its true
//! outcome, and only when none has come by its request timeout does it end, as
//! `transport_error` with the break's reason. One outcome per request is ever recorded, so
//! detection live and `mcpwatch replay` count the same one.

use super::{Direction, SessionTracker};
use crate::jsonrpc::{id_key, parse_frame, Message};

impl SessionTracker {
    /// The response stream of a client body (already seen through [`Self::on_frame`]) broke
    /// off after events with SSE ids: its pending requests wait for a resumed stream, until
    /// their timeout (then `transport_error` with `reason`).
    pub fn on_request_stream_broken(&mut self, bytes: &[u8], reason: &str) {
        let dir = Direction::ClientToServer;
        let Ok(frame) = parse_frame(bytes) else {
            return;
        };
        for message in frame.messages {
            if let Message::Request { id, .. } = message {
                if let Some(p) = self.pending[dir.index()].get_mut(&id_key(&id)) {
                    p.held = Some(format!(
                        "{reason}; no resumed stream (Last-Event-ID) answered it within the request timeout"
                    ));
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use mcpwatch_core::clock::ManualClock;
    use mcpwatch_core::{Event, Redactor, Timestamp};

    use super::*;
    use crate::classify::ClassificationConfig;
    use crate::pins::PinStore;
    use crate::session::SessionConfig;

    fn outcomes(out: &[Event]) -> Vec<(String, String)> {
        out.iter()
            .filter(|e| e.event_type == "request_performance")
            .map(|e| {
                (
                    e.metadata["request_id"].as_str().unwrap_or_default().into(),
                    e.metadata["outcome"].as_str().unwrap_or_default().into(),
                )
            })
            .collect()
    }

    #[test]
    fn a_held_request_takes_its_late_answer_or_ends_as_transport_error_at_its_timeout() {
        let clock = ManualClock::new(Timestamp::from_micros(1_790_000_000_000_000));
        let cfg = SessionConfig {
            server: "up".into(),
            source: "gateway:up".into(),
            user_id: "alice".into(),
            request_timeout: Duration::from_secs(60),
            max_pending: 16,
            classification: ClassificationConfig::default(),
            redactor: Redactor::default(),
        };
        let mut t = SessionTracker::new(cfg, Arc::new(clock.clone()), PinStore::new(None));
        let mut out = Vec::new();
        let c = Direction::ClientToServer;
        let s = Direction::ServerToClient;
        let a = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;
        let b = r#"{"jsonrpc":"2.0","id":2,"method":"ping"}"#;
        t.on_frame(c, a.as_bytes(), &mut out);
        t.on_frame(c, b.as_bytes(), &mut out);
        t.on_request_stream_broken(a.as_bytes(), "the stream broke off");
        t.on_request_stream_broken(b.as_bytes(), "the stream broke off");
        clock.advance(Duration::from_secs(30));
        t.on_tick(&mut out);
        assert!(outcomes(&out).is_empty(), "held, not ended");
        t.on_frame(s, br#"{"jsonrpc":"2.0","id":1,"result":{}}"#, &mut out);
        clock.advance(Duration::from_secs(31));
        t.on_tick(&mut out);
        assert_eq!(
            outcomes(&out),
            [
                ("1".to_string(), "success".to_string()),
                ("2".to_string(), "transport_error".to_string())
            ]
        );
        let ended = out
            .iter()
            .rfind(|e| e.event_type == "request_performance")
            .expect("an ending");
        let reason = ended.metadata["reason"].as_str().unwrap_or_default();
        assert!(
            reason.starts_with("the stream broke off; no resumed stream"),
            "{reason}"
        );
        assert!(out.iter().all(|e| e.event_type != "protocol_error"));
    }
}
