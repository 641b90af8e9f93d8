//! Threat scans of the full text, before events cut it (issue: padding past truncation).
//!
//! An event keeps 512 bytes of a result's text, strings up to the redactor's
//! `max_value_bytes` (4 KiB by default) and the shape of arguments over 16 KiB; resource
//! contents and prompts not at all. So that a payload placed after the cut still reaches the
//! threat signatures, the tracker runs detection's [`EdgeScanner`] on the text as it arrives,
//! up to [`EDGE_SCAN_BYTES`] (64 KiB) per string, and puts what it finds on the event as a
//! bounded `edge_scan` value (redacted with the event), which detection's threat scanner
//! reads (see `mcpwatch_detect::threat`'s `edge` module for the format and the trust model).
//! Text below the cut is left to detection, which sees it whole.

use mcpwatch_detect::threat::{EdgeScanner, EDGE_SCAN_BYTES};
use serde_json::Value;

use super::summary::MAX_SUMMARY_TEXT;

/// Arguments (serialised) and descriptions longer than this are scanned at the edge: shorter
/// ones reach detection whole unless `max_value_bytes` is configured below it.
const SCAN_ABOVE: usize = 1024;

/// `path_traversal` and `command_injection` in arguments too big to be stored whole.
pub(super) fn parameters(arguments: &Value, size: usize) -> Option<Value> {
    (size > SCAN_ABOVE)
        .then(|| EdgeScanner::shared().parameters(arguments))
        .flatten()
}

/// `prompt_injection` in a `tools/call` result whose text is longer than the stored excerpt.
pub(super) fn tool_result(result: &Value) -> Option<Value> {
    let items = result.get("content").and_then(Value::as_array)?;
    let text = joined(items.iter().map(|i| i.get("text")));
    (text.len() > MAX_SUMMARY_TEXT)
        .then(|| EdgeScanner::shared().text(&text))
        .flatten()
}

/// `prompt_injection` in what `resources/read` and `prompts/get` hand the model (their text is
/// never stored, so it is always scanned here).
pub(super) fn content(method: &str, result: &Value) -> Option<Value> {
    let text = match method {
        "resources/read" => {
            let items = result.get("contents").and_then(Value::as_array)?;
            joined(items.iter().map(|i| i.get("text")))
        }
        "prompts/get" => {
            let messages = result.get("messages").and_then(Value::as_array)?;
            let blocks = messages.iter().flat_map(|m| match m.get("content") {
                Some(Value::Array(items)) => items.iter().collect::<Vec<_>>(),
                Some(block) => vec![block],
                None => Vec::new(),
            });
            let mut text = joined(blocks.map(|b| b.get("text")));
            if let Some(d) = result.get("description").and_then(Value::as_str) {
                push_bounded(&mut text, d);
            }
            text
        }
        _ => return None,
    };
    (!text.is_empty())
        .then(|| EdgeScanner::shared().text(&text))
        .flatten()
}

/// `tool_poisoning` in a description longer than an event keeps whole.
pub(super) fn description(desc: &str) -> Option<Value> {
    (desc.len() > SCAN_ABOVE)
        .then(|| EdgeScanner::shared().description(desc))
        .flatten()
}

/// The string values among `texts`, one per line, up to [`EDGE_SCAN_BYTES`].
fn joined<'a>(texts: impl Iterator<Item = Option<&'a Value>>) -> String {
    let mut out = String::new();
    for t in texts.flatten().filter_map(Value::as_str) {
        if out.len() >= EDGE_SCAN_BYTES {
            break;
        }
        push_bounded(&mut out, t);
    }
    out
}

fn push_bounded(out: &mut String, t: &str) {
    if !out.is_empty() {
        out.push('\n');
    }
    let mut room = EDGE_SCAN_BYTES.saturating_sub(out.len()).min(t.len());
    while !t.is_char_boundary(room) {
        room -= 1;
    }
    out.push_str(&t[..room]);
}
