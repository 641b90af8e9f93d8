//! `new_capability_use`: a server uses a capability that reaches past its tools for the first
//! time: it asks the client's model to generate (`session`/`sampling_request`) or asks the user
//! for input (`elicitation_request`). A server that has never done so and starts is worth a
//! look (a compromised or updated server reaching for the model); it is reported at once, with
//! no learning period, one key per (server, capability). An expired key may be reported again.

use std::collections::BTreeMap;

use mcpwatch_core::Event;

use super::keyed::{Keyed, KeyedStats};
use super::{shown, Anomaly, AnomalySettings, Call, Detector, DetectorKind};
use crate::finding::Severity;
use crate::state::Aged;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Seen(i64);

impl Aged for Seen {
    fn last_seen(&self) -> i64 {
        self.0
    }
}

pub(crate) struct NewCapabilityUse {
    seen: Keyed<Seen>,
}

impl NewCapabilityUse {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            seen: Keyed::new(s),
        }
    }
}

/// The capability a server-initiated request event uses, if it is one this detector follows.
pub(crate) fn capability_of(e: &Event) -> Option<&'static str> {
    match (e.category.as_str(), e.event_type.as_str()) {
        ("session", "sampling_request") => Some("sampling"),
        ("session", "elicitation_request") => Some("elicitation"),
        _ => None,
    }
}

impl Detector for NewCapabilityUse {
    fn observe(&mut self, _: &Call<'_>, _: &mut Vec<Anomaly>) {}

    fn observe_event(&mut self, e: &Event, out: &mut Vec<Anomaly>) {
        let Some(capability) = capability_of(e) else {
            return;
        };
        let server = e.server().unwrap_or("");
        let ts = e.timestamp.as_micros();
        let key = [server, capability];
        let fresh = !self.seen.contains(&key);
        self.seen.entry(&key, ts, || Seen(ts)).0 = ts;
        if !fresh {
            return;
        }
        let mut group = BTreeMap::new();
        group.insert("metadata.server".into(), server.to_owned());
        group.insert("metadata.capability".into(), capability.to_owned());
        let what = match capability {
            "sampling" => "asked the client's model to generate (sampling)",
            _ => "asked the user for input (elicitation)",
        };
        let server = if server.is_empty() {
            "An unnamed server".to_owned()
        } else {
            format!("Server {}", shown(server))
        };
        out.push(Anomaly {
            kind: DetectorKind::NewCapabilityUse,
            score: 1.0,
            severity: Severity::Low,
            description: format!("{server} {what} for the first time"),
            action: "Confirm the server is expected to use this capability; read what it asked in the session's events",
            group,
            behavioral: false,
        });
    }

    fn maps_mut(&mut self) -> Vec<&mut dyn KeyedStats> {
        vec![&mut self.seen]
    }

    fn maps(&self) -> Vec<&dyn KeyedStats> {
        vec![&self.seen]
    }

    fn save(&self) -> serde_json::Value {
        crate::state::to_value(&self.seen)
    }

    fn load(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error> {
        self.seen.restore(serde_json::from_value(state)?);
        Ok(())
    }
}
