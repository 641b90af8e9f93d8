//! Alert records (SPEC 7) folded from findings: a finding with the fingerprint of an open alert
//! updates it (count, last_seen, event ids, severity up) instead of creating another, and an
//! alert quiet for the [`FoldPolicy`]'s period resolves. [`fold_into`], [`new_alert`] and
//! [`FoldPolicy::is_quiet`] are the one definition of that fold: live alerting (mcpwatch-alert,
//! on its store, in collector time) and [`AlertBook`] (replay, in memory, in event time) both
//! call them, so replay equals live on firing and resolution by construction. Persistence,
//! notification and the rest of the lifecycle live in mcpwatch-alert.

use std::collections::{BTreeMap, BTreeSet, HashMap};

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

/// How findings fold into alerts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FoldPolicy {
    /// Event ids kept per alert, the most recent.
    pub max_event_ids: usize,
    /// An open alert with no firing for this long resolves (µs); `None`: only by hand.
    pub resolve_after_us: Option<i64>,
}

impl FoldPolicy {
    /// Whether an open alert last folded at `last` has been quiet long enough at `now`.
    pub fn is_quiet(&self, last: Timestamp, now: Timestamp) -> bool {
        self.resolve_after_us
            .is_some_and(|q| last.as_micros() < now.as_micros().saturating_sub(q))
    }
}

/// Folds a finding into its open alert.
pub fn fold_into(a: &mut Alert, f: &Finding, max_event_ids: usize) {
    a.count += 1;
    a.last_seen = a.last_seen.max(f.at);
    a.severity = a.severity.max(f.severity);
    a.description.clone_from(&f.description);
    a.event_ids.extend(f.event_ids.iter().cloned());
    let excess = a.event_ids.len().saturating_sub(max_event_ids.max(1));
    a.event_ids.drain(..excess);
}

/// The alert a finding opens when no alert with its fingerprint `fp` is open, with id `id`
/// (see [`alert_id`]).
pub fn new_alert(fp: &str, id: String, f: &Finding, max_event_ids: usize) -> Alert {
    let mut event_ids = f.event_ids.clone();
    let excess = event_ids.len().saturating_sub(max_event_ids.max(1));
    event_ids.drain(..excess);
    Alert {
        id,
        fingerprint: fp.to_owned(),
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
    }
}

/// The id of the alert `f` opens: derived from the fingerprint and the first triggering event,
/// so replay and live give the same id.
pub fn alert_id(fp: &str, f: &Finding) -> String {
    derived_id([fp, f.event_ids.first().map_or("", String::as_str)])
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

/// Alerts folded from findings in memory, on event time (replay).
#[derive(Debug, Clone)]
pub struct AlertBook {
    alerts: Vec<Alert>,
    open: HashMap<String, usize>,
    /// Open alerts by the time they were last folded, for resolution after the quiet period.
    by_last: BTreeSet<(Timestamp, usize)>,
    last_fold: Vec<Timestamp>,
    policy: FoldPolicy,
}

impl AlertBook {
    /// An empty book keeping at most `max_event_ids` event ids per alert, never resolving.
    pub fn new(max_event_ids: usize) -> Self {
        Self::with_policy(FoldPolicy {
            max_event_ids,
            resolve_after_us: None,
        })
    }

    /// An empty book folding by `policy`.
    pub fn with_policy(policy: FoldPolicy) -> Self {
        Self {
            alerts: Vec::new(),
            open: HashMap::new(),
            by_last: BTreeSet::new(),
            last_fold: Vec::new(),
            policy,
        }
    }

    /// Folds one finding in at its own time: alerts quiet by then resolve first, as live
    /// alerting's periodic resolution would have resolved them.
    pub fn fold(&mut self, f: &Finding) -> AlertChange {
        self.resolve_quiet(f.at);
        let fp = fingerprint(f.source, &f.name, &f.group);
        if let Some(&i) = self.open.get(&fp) {
            fold_into(&mut self.alerts[i], f, self.policy.max_event_ids);
            self.touch(i, f.at);
            return AlertChange::Updated(i);
        }
        let mut id = alert_id(&fp, f);
        if self.alerts.iter().any(|a| a.id == id) {
            // The same events fired again after a resolve (live gives a fresh id too).
            id = derived_id([id.as_str(), &self.alerts.len().to_string()]);
        }
        self.alerts
            .push(new_alert(&fp, id, f, self.policy.max_event_ids));
        let i = self.alerts.len() - 1;
        self.open.insert(fp, i);
        self.last_fold.push(f.at);
        self.by_last.insert((f.at, i));
        AlertChange::Created(i)
    }

    fn touch(&mut self, i: usize, at: Timestamp) {
        self.by_last.remove(&(self.last_fold[i], i));
        self.last_fold[i] = self.last_fold[i].max(at);
        self.by_last.insert((self.last_fold[i], i));
    }

    /// Resolves the open alerts that are quiet at `now`; returns how many.
    pub fn resolve_quiet(&mut self, now: Timestamp) -> usize {
        let mut n = 0;
        while let Some(&(last, i)) = self.by_last.first() {
            if !self.policy.is_quiet(last, now) {
                break;
            }
            self.by_last.pop_first();
            let a = &mut self.alerts[i];
            a.status = AlertStatus::Resolved;
            self.open.remove(&a.fingerprint);
            n += 1;
        }
        n
    }

    /// Marks an alert resolved; later findings with its fingerprint open a new one.
    pub fn resolve(&mut self, id: &str) -> bool {
        let Some(i) = self.alerts.iter().position(|a| a.id == id) else {
            return false;
        };
        let a = &mut self.alerts[i];
        a.status = AlertStatus::Resolved;
        self.open.remove(&a.fingerprint);
        self.by_last.remove(&(self.last_fold[i], i));
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
