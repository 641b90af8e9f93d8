//! Routing: which channels an alert goes to.
//!
//! Without `[[routes]]`, the original's mapping by severity applies to the configured channels
//! by kind: low → email; medium → email, slack; high → email, slack, pagerduty; critical →
//! email, slack, pagerduty, webhook (a kind with no configured channel is skipped). With
//! `[[routes]]`, they replace the mapping: every route whose matchers all hold contributes its
//! channels, and an alert goes to the union.

use std::collections::BTreeMap;
use std::sync::Arc;

use mcpwatch_detect::{FindingSource, Severity};

use crate::channels::Channel;
use crate::model::AlertRecord;

/// The original's mapping: which channel kinds each severity goes to.
pub const DEFAULT_MAPPING: [(Severity, &[&str]); 4] = [
    (Severity::Low, &["email"]),
    (Severity::Medium, &["email", "slack"]),
    (Severity::High, &["email", "slack", "pagerduty"]),
    (
        Severity::Critical,
        &["email", "slack", "pagerduty", "webhook"],
    ),
];

/// One route, compiled.
#[derive(Debug, Clone, Default)]
pub struct Route {
    /// Severities it takes; all when empty.
    pub severities: Vec<Severity>,
    /// Names (exact, or globs with `*`) it takes; all when empty.
    pub names: Vec<String>,
    /// Tags the alert must all carry.
    pub tags: Vec<String>,
    /// Sources it takes; all when empty.
    pub sources: Vec<FindingSource>,
    /// Where matching alerts go.
    pub channels: Vec<String>,
}

impl Route {
    fn matches(&self, a: &AlertRecord) -> bool {
        let alert = &a.alert;
        (self.severities.is_empty() || self.severities.contains(&alert.severity))
            && (self.sources.is_empty() || self.sources.contains(&alert.source))
            && (self.names.is_empty() || self.names.iter().any(|p| glob(p, &alert.name)))
            && self.tags.iter().all(|t| a.tags.contains(t))
    }
}

/// All routes.
#[derive(Debug, Clone, Default)]
pub struct Routing {
    routes: Vec<Route>,
}

impl Routing {
    /// Explicit routes.
    pub fn new(routes: Vec<Route>) -> Self {
        Self { routes }
    }

    /// The default mapping over the configured channels.
    pub fn defaults(channels: &BTreeMap<String, Arc<dyn Channel>>) -> Self {
        let routes = DEFAULT_MAPPING
            .iter()
            .map(|(severity, kinds)| Route {
                severities: vec![*severity],
                channels: channels
                    .iter()
                    .filter(|(_, c)| kinds.contains(&c.kind()))
                    .map(|(name, _)| name.clone())
                    .collect(),
                ..Route::default()
            })
            .filter(|r| !r.channels.is_empty())
            .collect();
        Self { routes }
    }

    /// The channels `alert` goes to, each once, in route order.
    pub fn channels_for(&self, alert: &AlertRecord) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        for r in self.routes.iter().filter(|r| r.matches(alert)) {
            for c in &r.channels {
                if !out.contains(c) {
                    out.push(c.clone());
                }
            }
        }
        out
    }
}

/// `*` matches any run of characters; everything else matches itself.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || !s[first.len()..].ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::record;

    #[test]
    fn globs_match_prefixes_suffixes_and_middles() {
        for (p, s, want) in [
            ("brute_force_detection", "brute_force_detection", true),
            ("brute_*", "brute_force_detection", true),
            ("*_detection", "brute_force_detection", true),
            ("b*force*n", "brute_force_detection", true),
            ("b*x*n", "brute_force_detection", false),
            ("ab*ba", "aba", false),
            ("brute", "brute_force_detection", false),
        ] {
            assert_eq!(glob(p, s), want, "{p} vs {s}");
        }
    }

    #[test]
    fn explicit_routes_union_their_channels_when_all_matchers_hold() {
        let routing = Routing::new(vec![
            Route {
                names: vec!["brute_*".into()],
                tags: vec!["authentication".into()],
                channels: vec!["sec-slack".into()],
                ..Route::default()
            },
            Route {
                severities: vec![Severity::High, Severity::Critical],
                channels: vec!["pager".into(), "sec-slack".into()],
                ..Route::default()
            },
            Route {
                sources: vec![FindingSource::Anomaly],
                channels: vec!["ml".into()],
                ..Route::default()
            },
        ]);
        let a = record("brute_force_detection", "high", &[]);
        assert_eq!(routing.channels_for(&a), ["sec-slack", "pager"]);
        let b = record("latency", "low", &[]);
        assert!(routing.channels_for(&b).is_empty());
    }
}
