//! Which part of detection runs where when detection is split over partitions (the cluster,
//! issue #14): every rule, anomaly detector, threat signature and threshold runs in exactly one
//! [`Scope`] family, the one whose key is part of every key of that component's state.
//!
//! A family's partitions hash one event field (`metadata.user_id`, `metadata.server` or
//! `metadata.ip_address`); events without it (absent, empty or not a string) go to the family's
//! `_` partition. So all events that touch one state key land in the same partition exactly when
//! that key contains the family's field, and a scoped [`crate::Engine`] per partition finds what
//! one [`Scope::All`] engine finds over all events. Components whose keys contain none of the
//! three fields run on the one `global` task, which reads every event.
//!
//! | component | state kept per | scope |
//! |---|---|---|
//! | rule with `metadata.user_id` in `group_by` | its group key | user |
//! | rule with `metadata.server` (and no user) in `group_by` | its group key | server |
//! | rule with `metadata.ip_address` (and neither of the above) in `group_by` | its group key | ip |
//! | rule grouped on other fields (`metadata.session_id`, …) or not grouped | its group key | global |
//! | anomaly `latency`, `error_rate` | (server, tool) | server |
//! | anomaly `unusual_parameters` | (server, tool), (server, tool, parameter) | server |
//! | anomaly `new_capability_use` | (server, capability) | server |
//! | anomaly `call_rate` | user | user |
//! | anomaly `new_tool` | user, (user, server, tool) | user |
//! | anomaly `repetition` | session (user when there is none) | global |
//! | threats `path_traversal`, `command_injection` (reported once per execution) | (server, execution) | server |
//! | threat `tool_poisoning` on listings (scanned once per definition) | (server, tool, hash) | server |
//! | threats `secret_exposure`, `prompt_injection`, `tool_definition_changed` | nothing (per event) | server |
//! | threshold `response_time` (quiet time) | (server, tool), or source without a server | server |
//! | thresholds `cpu_usage`, `memory_usage`, `disk_usage` | source | global |
//! | thresholds `error_rate`, `throughput` | one window over all requests | global |
//!
//! Stateless work (the per-event threat signatures) goes to the server family to spread the
//! load. `repetition` is keyed by session id alone, which partitions by none of the families,
//! so it runs on `global`.
//!
//! Where a partitioned run can differ from one engine (none of these happen under the caps and
//! idle times, which the property test in `scope_tests.rs` checks):
//! - caps: a scoped engine holds fewer keys, so when one engine would have evicted keys at its
//!   cap (`max_keys_per_rule`, `anomaly.max_keys`, the 4096 recent executions of the threat
//!   scanner), the scoped one may still remember them;
//! - idle expiry: anomaly keys idle for `anomaly.idle_us` are swept at each engine's own sweeps
//!   (every minute of the event time that engine saw), so a key idle for almost exactly the idle
//!   time may be forgotten at a slightly different moment;
//! - events out of time order: rule groups are swept once the newest event time an engine has
//!   seen (which differs per engine) is `max(window, suppress)` past their last event. For
//!   events in time order that cannot change a finding; an event arriving more than that behind
//!   the newest one seen may find its group's earlier hits in one engine and not in another;
//! - a key field that is a number (`"user_id": 42`) groups like the string `"42"` in rules but
//!   partitions to `_`; capture and ingest write these fields as strings.

use serde::{Deserialize, Serialize};

use crate::anomaly::DetectorKind;
use crate::rules::{Field, Rule};

/// The part of detection an [`crate::Engine`] runs: everything, or one key family's share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Every rule, detector, signature and threshold (one node, replay).
    All,
    /// Components whose state is keyed by `metadata.user_id`.
    User,
    /// Components whose state is keyed by `metadata.server`, and the stateless signatures.
    Server,
    /// Components whose state is keyed by `metadata.ip_address`.
    Ip,
    /// Components keyed by none of those fields; one task reads every event.
    Global,
}

impl Scope {
    /// The families a cluster partitions by, and `global`.
    pub const FAMILIES: [Scope; 4] = [Scope::User, Scope::Server, Scope::Ip, Scope::Global];

    /// The name: `all`, `user`, `server`, `ip` or `global`.
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::All => "all",
            Scope::User => "user",
            Scope::Server => "server",
            Scope::Ip => "ip",
            Scope::Global => "global",
        }
    }

    /// The scope named `name` (as [`Scope::as_str`] writes it).
    pub fn parse(name: &str) -> Option<Scope> {
        [
            Scope::All,
            Scope::User,
            Scope::Server,
            Scope::Ip,
            Scope::Global,
        ]
        .into_iter()
        .find(|s| s.as_str() == name)
    }

    /// The key in `event.metadata` whose value picks the partition: `user_id`, `server` or
    /// `ip_address`; `None` for `All` and `Global`, which are not partitioned.
    pub fn key_field(self) -> Option<&'static str> {
        match self {
            Scope::User => Some("user_id"),
            Scope::Server => Some("server"),
            Scope::Ip => Some("ip_address"),
            Scope::All | Scope::Global => None,
        }
    }

    /// Whether an engine of this scope runs a component of scope `component`.
    pub fn runs(self, component: Scope) -> bool {
        self == Scope::All || self == component
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The family a rule runs in: by the first of user, server and IP its `group_by` contains,
/// else `Global`.
pub fn rule_scope(rule: &Rule) -> Scope {
    let has = |key: &str| {
        rule.group_by
            .iter()
            .any(|f| matches!(f, Field::Meta(p) if p.len() == 1 && p[0] == key))
    };
    [Scope::User, Scope::Server, Scope::Ip]
        .into_iter()
        .find(|s| s.key_field().is_some_and(has))
        .unwrap_or(Scope::Global)
}

/// The family an anomaly detector runs in (see the table in this module's documentation).
pub fn detector_scope(kind: DetectorKind) -> Scope {
    match kind {
        DetectorKind::Latency
        | DetectorKind::ErrorRate
        | DetectorKind::UnusualParameters
        | DetectorKind::NewCapabilityUse => Scope::Server,
        DetectorKind::CallRate | DetectorKind::NewTool => Scope::User,
        DetectorKind::Repetition => Scope::Global,
    }
}

/// The family of the threat scanner (all its signatures): its state is keyed by server.
pub const THREATS_SCOPE: Scope = Scope::Server;

/// The family of the `response_time` threshold; the host metrics and the windowed error rate
/// and throughput run in [`Scope::Global`].
pub const RESPONSE_TIME_SCOPE: Scope = Scope::Server;

/// `settings` with only what an engine of `scope` runs left on (rules are filtered separately,
/// by [`rule_scope`]).
pub(crate) fn scoped_settings(
    settings: &crate::DetectSettings,
    scope: Scope,
) -> crate::DetectSettings {
    let mut s = settings.clone();
    s.anomaly.enabled.retain(|k| scope.runs(detector_scope(*k)));
    s.threats &= scope.runs(THREATS_SCOPE);
    let t = &mut s.thresholds;
    if !scope.runs(RESPONSE_TIME_SCOPE) {
        t.response_time = None;
    }
    if !scope.runs(Scope::Global) {
        t.cpu_usage = None;
        t.memory_usage = None;
        t.disk_usage = None;
        t.error_rate = None;
        t.throughput_floor = None;
    }
    s
}
