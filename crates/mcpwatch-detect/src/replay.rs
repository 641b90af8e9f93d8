//! Replay as a library (SPEC 3, `mcpwatch replay`): recorded events through detection offline,
//! in event-time order, with the same engine and the same output as the live path.

use std::io::{BufRead, BufReader};
use std::path::Path;

use mcpwatch_core::Event;

use crate::error::DetectError;

/// Reads a JSON-lines file of events (one event per line, blank lines skipped). A bad line is
/// an error naming the file and the 1-based line.
pub fn load_events_jsonl(path: &Path) -> Result<Vec<Event>, DetectError> {
    let io = |source| DetectError::Io {
        path: path.to_owned(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    let mut events = Vec::new();
    for (n, line) in BufReader::new(file).lines().enumerate() {
        let line = line.map_err(io)?;
        if line.trim().is_empty() {
            continue;
        }
        let event =
            serde_json::from_str::<Event>(&line).map_err(|e| DetectError::BadEventLine {
                path: path.to_owned(),
                line: n + 1,
                message: e.to_string(),
            })?;
        events.push(event);
    }
    Ok(events)
}
