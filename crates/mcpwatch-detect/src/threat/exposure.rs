//! `secret_exposure` from what redaction cut out: the store never sees a credential a tool
//! returned, so detection reads the redactor's record of it.
//!
//! Redaction (`mcpwatch_core::redact`) runs before detection, at the edge and in the collector,
//! and records every secret it removes in `metadata.redacted` by field and kind. Each entry
//! under `metadata.result` becomes one indicator named by the kind's label ("Stripe secret
//! key"), for every kind the redactor knows; a kind it does not know (a configured pattern)
//! is reported as a secret.

use mcpwatch_core::Event;
use serde_json::Value;

use super::signatures::Hit;

/// Adds one hit per kind of credential cut out of the tool result.
pub(super) fn redacted_in_result(event: &Event, hits: &mut Vec<Hit>) {
    let Some(entries) = event
        .metadata
        .get(mcpwatch_core::redact::REDACTED_FIELD)
        .and_then(Value::as_array)
    else {
        return;
    };
    for entry in entries {
        let field = entry.get("field").and_then(Value::as_str).unwrap_or("");
        if !field.starts_with("metadata.result") {
            continue;
        }
        let kind = entry.get("kind").and_then(Value::as_str).unwrap_or("");
        let label = mcpwatch_core::redact::label(kind).unwrap_or("secret");
        if !hits.iter().any(|h| h.label == label) {
            hits.push(Hit {
                label: label.into(),
                evidence: format!("{label} removed from {field} before storage"),
            });
        }
    }
}
