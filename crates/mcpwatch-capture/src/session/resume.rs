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
