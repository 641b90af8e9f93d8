//! Alert records (SPEC 7) folded from findings in memory: a finding with the fingerprint of an
//! open alert updates it (count, last_seen, event ids, severity up) instead of creating
//! another. Persistence, notification and the rest of the lifecycle live in mcpwatch-alert.

use std::collections::{BTreeMap, HashMap};

use mcpwatch_core::Timestamp;
use serde::{Deserialize, Serialize};

use crate::finding::{derived_id, Finding, FindingSource, Severity};

/// Where an alert is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AlertStatus {
    /// Created, not yet delivered.
    New,
    /// Delivered to its channels.
    Sent,
    /// A person took it.
    Acknowledged,
    /// Over.
    Resolved,
    /// Matched a silence; stored, not sent.
    Suppressed,
}

impl AlertStatus {
    /// Whether new findings fold into it.
    pub fn is_open(self) -> bool {
        !matches!(self, AlertStatus::Resolved)
    }
}

/// One alert record.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Alert {
    /// Stable id: derived from the fingerprint and the first triggering event.
    pub id: String,
    /// source + name + group, hashed: findings with equal fingerprints fold together.
    pub fingerprint: String,
    /// What produced it.
    pub source: FindingSource,
    /// Rule, detector, signature or metric name.
    pub name: String,
    /// The highest severity seen.
    pub severity: Severity,
    /// Where it is in its life.
    pub status: AlertStatus,
    /// Event time of the first firing.
    pub first_seen: Timestamp,
    /// Event time of the latest firing.
    pub last_seen: Timestamp,
    /// Firings folded into it.
    pub count: u64,
    /// The latest firing's description.
    pub description: String,
    /// What to do.
    pub recommended_action: String,
    /// The group it is about.
    pub group: BTreeMap<String, String>,
    /// Triggering events, the most recent `max_event_ids` of them.
    pub event_ids: Vec<String>,
}

/// What [`AlertBook::fold`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AlertChange {
    /// A new alert at this index.
    Created(usize),
    /// The open alert at this index was updated.
    Updated(usize),
}

/// The fingerprint of a finding: source, name and group.
pub fn fingerprint(source: FindingSource, name: &str, group: &BTreeMap<String, String>) -> String {
    let mut parts = vec![source.as_str(), name];
    for (k, v) in group {
        parts.push(k);
        parts.push(v);
    }
    derived_id(parts).replace('-', "")
}

/// Alerts folded from findings.
#[derive(Debug, Clone)]
pub struct AlertBook {
    alerts: Vec<Alert>,
    open: HashMap<String, usize>,
    max_event_ids: usize,
}

impl AlertBook {
    /// An empty book keeping at most `max_event_ids` event ids per alert.
    pub fn new(max_event_ids: usize) -> Self {
        Self {
            alerts: Vec::new(),
            open: HashMap::new(),
            max_event_ids: max_event_ids.max(1),
        }
    }

    /// Folds one finding in.
    pub fn fold(&mut self, f: &Finding) -> AlertChange {
        let fp = fingerprint(f.source, &f.name, &f.group);
        if let Some(&i) = self.open.get(&fp) {
            let a = &mut self.alerts[i];
            a.count += 1;
            a.last_seen = a.last_seen.max(f.at);
            a.severity = a.severity.max(f.severity);
            a.description.clone_from(&f.description);
            a.event_ids.extend(f.event_ids.iter().cloned());
            let excess = a.event_ids.len().saturating_sub(self.max_event_ids);
            a.event_ids.drain(..excess);
            return AlertChange::Updated(i);
        }
        let first = f.event_ids.first().map_or("", String::as_str);
        let mut event_ids = f.event_ids.clone();
        let excess = event_ids.len().saturating_sub(self.max_event_ids);
        event_ids.drain(..excess);
        self.alerts.push(Alert {
            id: derived_id([fp.as_str(), first]),
            fingerprint: fp.clone(),
            source: f.source,
            name: f.name.clone(),
            severity: f.severity,
            status: AlertStatus::New,
            first_seen: f.at,
            last_seen: f.at,
            count: 1,
            description: f.description.clone(),
            recommended_action: f.recommended_action.clone(),
            group: f.group.clone(),
            event_ids,
        });
        let i = self.alerts.len() - 1;
        self.open.insert(fp, i);
        AlertChange::Created(i)
    }

    /// Marks an alert resolved; later findings with its fingerprint open a new one.
    pub fn resolve(&mut self, id: &str) -> bool {
        let Some(a) = self.alerts.iter_mut().find(|a| a.id == id) else {
            return false;
        };
        a.status = AlertStatus::Resolved;
        self.open.remove(&a.fingerprint);
        true
    }

    /// All alerts, in creation order.
    pub fn alerts(&self) -> &[Alert] {
        &self.alerts
    }

    /// The alerts, consumed.
    pub fn into_alerts(self) -> Vec<Alert> {
        self.alerts
    }
}
