//! What detection produces: a [`Finding`] per firing, with the derived event that goes back
//! into the pipeline (a `security_alert`, `anomaly`, `security` or `performance` event).
//!
//! Derived events get ids derived from the triggering event ids ([`derived_id`]), so `replay`
//! and the live path produce byte-identical output for the same events.

use std::collections::BTreeMap;
use std::fmt;

use mcpwatch_core::{Event, Level, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

/// How urgent a finding is (SPEC section 7); routing follows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// Worth a look.
    Low,
    /// Look today.
    Medium,
    /// Look now.
    High,
    /// Wake someone up.
    Critical,
}

impl Severity {
    /// The name as written in rules and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }

    /// Parses `low`, `medium`, `high` or `critical`.
    pub fn parse(s: &str) -> Option<Severity> {
        [
            Severity::Low,
            Severity::Medium,
            Severity::High,
            Severity::Critical,
        ]
        .into_iter()
        .find(|v| v.as_str() == s)
    }

    /// The event level a derived event of this severity carries.
    pub fn level(self) -> Level {
        match self {
            Severity::Low => Level::Info,
            Severity::Medium => Level::Warning,
            Severity::High => Level::Error,
            Severity::Critical => Level::Critical,
        }
    }
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Which part of detection produced a finding.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FindingSource {
    /// A YAML rule (SPEC 6.1).
    Rule,
    /// An anomaly detector (SPEC 6.2).
    Anomaly,
    /// A threat signature (SPEC 6.3).
    Threat,
    /// A performance threshold (SPEC 6.4).
    Threshold,
}

impl FindingSource {
    /// The name as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            FindingSource::Rule => "rule",
            FindingSource::Anomaly => "anomaly",
            FindingSource::Threat => "threat",
            FindingSource::Threshold => "threshold",
        }
    }
}

/// One firing of a rule, detector, signature or threshold.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Finding {
    /// What produced it.
    pub source: FindingSource,
    /// Rule, detector, signature or metric name, e.g. `brute_force_detection`, `latency`.
    pub name: String,
    /// How urgent it is.
    pub severity: Severity,
    /// A sentence a person can act on.
    pub description: String,
    /// What to do about it.
    pub recommended_action: String,
    /// The group it fired for, e.g. `{"metadata.user_id": "alice"}`.
    pub group: BTreeMap<String, String>,
    /// The events that triggered it.
    pub event_ids: Vec<String>,
    /// Event time of the firing.
    pub at: Timestamp,
    /// The event to feed back into the pipeline.
    pub event: Event,
}

/// A UUID-shaped id derived from `parts`: the same parts always give the same id.
pub fn derived_id<'a>(parts: impl IntoIterator<Item = &'a str>) -> String {
    let mut h = Sha256::new();
    for p in parts {
        h.update(p.as_bytes());
        h.update([0u8]);
    }
    let digest = h.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_custom_bytes(bytes)
        .into_uuid()
        .hyphenated()
        .to_string()
}

/// The pieces a derived event is made of.
pub(crate) struct Derived<'a> {
    pub source: FindingSource,
    pub name: &'a str,
    pub category: &'a str,
    pub event_type: &'a str,
    pub severity: Severity,
    pub message: String,
    pub metadata: Map<String, Value>,
    pub tags: Vec<String>,
}

impl Derived<'_> {
    /// Builds the finding and its event; the event id derives from the triggering ids.
    pub fn into_finding(
        self,
        description: String,
        recommended_action: String,
        group: BTreeMap<String, String>,
        event_ids: Vec<String>,
        at: Timestamp,
    ) -> Finding {
        let id = derived_id(
            [self.source.as_str(), self.name]
                .into_iter()
                .chain(event_ids.iter().map(String::as_str)),
        );
        let event = Event {
            id,
            timestamp: at,
            level: self.severity.level(),
            category: self.category.to_owned(),
            source: "mcpwatch:detect".to_owned(),
            event_type: self.event_type.to_owned(),
            message: self.message,
            metadata: self.metadata,
            tags: self.tags,
        };
        Finding {
            source: self.source,
            name: self.name.to_owned(),
            severity: self.severity,
            description,
            recommended_action,
            group,
            event_ids,
            at,
            event,
        }
    }
}

/// `group` as a JSON object.
pub(crate) fn group_json(group: &BTreeMap<String, String>) -> Value {
    Value::Object(
        group
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}
