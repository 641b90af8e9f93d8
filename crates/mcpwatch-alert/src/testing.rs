//! Helpers shared by the unit tests.

use mcpwatch_core::Timestamp;
use mcpwatch_detect::{Alert, AlertStatus, FindingSource, Severity};

use crate::model::AlertRecord;

/// A stored alert with the given name, severity and group, tagged `authentication`.
pub fn record(name: &str, severity: &str, group: &[(&str, &str)]) -> AlertRecord {
    let at = Timestamp::from_micros(1_767_225_600_000_000);
    AlertRecord {
        alert: Alert {
            id: "0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f".into(),
            fingerprint: "4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f".into(),
            source: FindingSource::Rule,
            name: name.into(),
            severity: Severity::parse(severity).unwrap_or(Severity::Low),
            status: AlertStatus::New,
            first_seen: at,
            last_seen: Timestamp::from_micros(at.as_micros() + 90_000_000),
            count: 6,
            description: "6 failed authentications for user alice in 5m".into(),
            recommended_action: "Lock or rate-limit the account".into(),
            group: group
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            event_ids: vec!["e1".into(), "e2".into()],
        },
        tags: vec!["authentication".into(), "brute_force".into()],
        updated_at: at,
        notified_at: None,
        acknowledged_at: None,
        resolved_at: None,
        channels: Default::default(),
        deliveries: None,
    }
}
