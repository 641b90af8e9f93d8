//! What a server asks of the client's model: the text of `session`/`sampling_request` events
//! (every message and the system prompt, as capture bounded and redacted them) goes through the
//! [`injection`](super::injection) detector; a sampling request carrying instructions aimed at
//! the model is a `prompt_injection` finding naming the server. (Elicitation phishing is a
//! default rule, `elicitation_phishing`, on `elicitation_request` events.)

use mcpwatch_core::Event;
use serde_json::Value;

use super::ThreatScanner;
use super::{add_verdict, clip, meta_group, threat, verdict_hits, verdict_severity, Context};
use crate::finding::Finding;

impl ThreatScanner {
    pub(super) fn scan_sampling(&self, event: &Event, out: &mut Vec<Finding>) {
        let mut texts: Vec<&str> = Vec::new();
        if let Some(s) = event.metadata.get("system_prompt").and_then(Value::as_str) {
            texts.push(s);
        }
        if let Some(messages) = event.metadata.get("messages").and_then(Value::as_array) {
            texts.extend(
                messages
                    .iter()
                    .filter_map(|m| m.get("text").and_then(Value::as_str)),
            );
        }
        // The strongest verdict over the texts: each is what the model reads as one turn.
        let best = texts
            .into_iter()
            .map(|t| self.injection.scan(clip(t)))
            .filter(|v| v.fires())
            .max_by(|a, b| a.score.total_cmp(&b.score));
        let Some(verdict) = best else {
            return;
        };
        let ctx = Context {
            event,
            group: meta_group(event, &["server", "user_id"]),
        };
        let mut f = threat(
            &ctx,
            "prompt_injection",
            verdict_severity(&verdict),
            &verdict_hits(&verdict),
            "a sampling request",
        );
        add_verdict(&mut f, &verdict);
        out.push(f);
    }
}
