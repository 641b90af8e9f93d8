//! The rule engine: per rule and group key, a sliding window on event time that fires when
//! `threshold` matching events (or distinct values) fall inside it.
//!
//! Semantics:
//! - The window is inclusive: events at `t - window` and `t` are in the same window.
//! - After a firing the group's window is emptied, so 10 failures with threshold 5 fire twice.
//! - `suppress` drops firings of the same group for that long after one fired (counted).
//! - Out-of-order events: each group's window ends at the newest event time seen for that
//!   group. A late event inside that window is counted in time order; one older than the
//!   window start cannot change any firing and is dropped and counted (`late_dropped`).
//! - An event that lacks a `group_by` or `distinct` field cannot be attributed and does not
//!   count (`ungrouped`).
//! - Idle groups expire once the watermark (newest event time seen) has passed their last event
//!   by more than `max(window, suppress)`; groups per rule are capped ([`BoundedMap`]).

use std::collections::BTreeMap;
use std::mem::size_of;

use mcpwatch_core::{Event, Timestamp};
use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::{Rule, RuleSet};
use crate::finding::{group_json, Derived, Finding, FindingSource};
use crate::state::{stable_hash, to_value, Aged, BoundedMap, CompactId, MapSnapshot};

/// Counters of one rule, for summaries and metrics.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuleStats {
    /// Events whose `when` matched.
    pub matched: u64,
    /// Firings produced.
    pub fired: u64,
    /// Firings dropped by `suppress`.
    pub suppressed: u64,
    /// Matching events too late to count.
    pub late_dropped: u64,
    /// Matching events without a `group_by`/`distinct` value.
    pub ungrouped: u64,
}

#[derive(Debug, Serialize, Deserialize)]
struct Hit {
    ts: i64,
    distinct: u64,
    id: CompactId,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct Group {
    hits: Vec<Hit>,
    last_ts: i64,
    suppressed_until: i64,
}

impl Aged for Group {
    fn last_seen(&self) -> i64 {
        self.last_ts
    }
    fn heap_bytes(&self) -> usize {
        self.hits.capacity() * size_of::<Hit>()
            + self.hits.iter().map(|h| h.id.heap_bytes()).sum::<usize>()
    }
}

#[derive(Debug)]
struct RuleState {
    groups: BoundedMap<Group>,
    stats: RuleStats,
}

/// Runs a [`RuleSet`] over events.
#[derive(Debug)]
pub struct RuleEngine {
    rules: RuleSet,
    states: Vec<RuleState>,
    max_keys: usize,
    watermark: i64,
    next_sweep: i64,
    key_buf: String,
}

/// One rule's state in a snapshot, under its name and a hash of its definition.
#[derive(Serialize)]
struct RuleOut<'a> {
    name: &'a str,
    definition: String,
    stats: RuleStats,
    groups: &'a BoundedMap<Group>,
}

#[derive(Deserialize)]
struct RuleIn {
    name: String,
    definition: String,
    stats: RuleStats,
    groups: MapSnapshot<Group>,
}

#[derive(Serialize)]
struct EngineOut<'a> {
    watermark: i64,
    next_sweep: i64,
    rules: Vec<RuleOut<'a>>,
}

#[derive(Deserialize)]
struct EngineIn {
    watermark: i64,
    next_sweep: i64,
    rules: Vec<RuleIn>,
}

/// A short hash of a rule's definition: a snapshot keeps a rule's state only for the same
/// definition, as [`RuleEngine::reload`] does.
fn definition_hash(rule: &Rule) -> String {
    let d = Sha256::digest(rule.definition.as_bytes());
    d.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

/// How often (event time) idle groups are swept.
const SWEEP_EVERY_US: i64 = 60_000_000;

impl RuleEngine {
    /// An engine for `rules` keeping at most `max_keys_per_rule` groups per rule.
    pub fn new(rules: RuleSet, max_keys_per_rule: usize) -> Self {
        let states = Self::fresh_states(&rules, max_keys_per_rule);
        Self {
            rules,
            states,
            max_keys: max_keys_per_rule,
            watermark: i64::MIN,
            next_sweep: i64::MIN,
            key_buf: String::new(),
        }
    }

    fn fresh_states(rules: &RuleSet, cap: usize) -> Vec<RuleState> {
        rules
            .rules()
            .iter()
            .map(|_| RuleState {
                groups: BoundedMap::new(cap),
                stats: RuleStats::default(),
            })
            .collect()
    }

    /// Replaces the rules; rules whose name and definition are unchanged keep their windows
    /// and counters, all others start empty.
    pub fn reload(&mut self, rules: RuleSet) {
        let mut states = Self::fresh_states(&rules, self.max_keys);
        for (new_i, new) in rules.rules().iter().enumerate() {
            let old = self
                .rules
                .rules()
                .iter()
                .position(|r| r.name == new.name && r.definition == new.definition);
            if let Some(old_i) = old {
                states[new_i].groups = self.states[old_i].groups.take();
                states[new_i].stats = self.states[old_i].stats;
            }
        }
        self.rules = rules;
        self.states = states;
    }

    /// Every rule's windows, groups, suppression and counters, for a snapshot.
    pub(crate) fn save(&self) -> Value {
        let rules = self
            .rules
            .rules()
            .iter()
            .zip(&self.states)
            .map(|(r, s)| RuleOut {
                name: &r.name,
                definition: definition_hash(r),
                stats: s.stats,
                groups: &s.groups,
            })
            .collect();
        to_value(&EngineOut {
            watermark: self.watermark,
            next_sweep: self.next_sweep,
            rules,
        })
    }

    /// Takes the state of [`RuleEngine::save`]: rules in force with the same name and
    /// definition get theirs back, others (changed, new) start empty; rules no longer in force
    /// are dropped.
    pub(crate) fn load(&mut self, state: Value) -> Result<(), serde_json::Error> {
        let snap: EngineIn = serde_json::from_value(state)?;
        self.watermark = snap.watermark;
        self.next_sweep = snap.next_sweep;
        for saved in snap.rules {
            let i = self
                .rules
                .rules()
                .iter()
                .position(|r| r.name == saved.name && definition_hash(r) == saved.definition);
            if let Some(i) = i {
                self.states[i] = RuleState {
                    groups: BoundedMap::restore(self.max_keys, saved.groups),
                    stats: saved.stats,
                };
            }
        }
        Ok(())
    }

    /// The rules in force.
    pub fn rules(&self) -> &RuleSet {
        &self.rules
    }

    /// Counters per rule name, in rule order.
    pub fn stats(&self) -> impl Iterator<Item = (&str, RuleStats)> {
        self.rules
            .rules()
            .iter()
            .zip(&self.states)
            .map(|(r, s)| (r.name.as_str(), s.stats))
    }

    /// Groups currently tracked, over all rules.
    pub fn tracked_keys(&self) -> usize {
        self.states.iter().map(|s| s.groups.len()).sum()
    }

    /// Groups removed for idleness and for the cap, over all rules.
    pub fn expired_and_evicted(&self) -> (u64, u64) {
        self.states.iter().fold((0, 0), |(e, v), s| {
            (e + s.groups.expired, v + s.groups.evicted)
        })
    }

    /// Approximate bytes of state held, over all rules.
    pub fn state_bytes(&self) -> usize {
        self.states.iter().map(|s| s.groups.state_bytes()).sum()
    }

    /// Tests `event` against the rules that can match it; firings go to `out`.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Finding>) {
        let ts = event.timestamp.as_micros();
        if ts > self.watermark {
            self.watermark = ts;
            if ts >= self.next_sweep {
                self.sweep();
                self.next_sweep = ts.saturating_add(SWEEP_EVERY_US);
            }
        }
        let Self {
            rules,
            states,
            key_buf,
            watermark,
            ..
        } = self;
        let all = rules.rules();
        rules.candidates(&event.category, &event.event_type, |i| {
            let rule = &all[i];
            if rule.when.eval(event) {
                apply(rule, &mut states[i], event, ts, *watermark, key_buf, out);
            }
        });
    }

    fn sweep(&mut self) {
        for (rule, st) in self.rules.rules().iter().zip(&mut self.states) {
            st.groups.expire(idle_before(rule, self.watermark));
        }
    }
}

fn idle_before(rule: &Rule, watermark: i64) -> i64 {
    watermark.saturating_sub(rule.window_us.max(rule.suppress_us.unwrap_or(0)))
}

fn apply(
    rule: &Rule,
    st: &mut RuleState,
    event: &Event,
    ts: i64,
    watermark: i64,
    key: &mut String,
    out: &mut Vec<Finding>,
) {
    st.stats.matched += 1;
    key.clear();
    for (n, f) in rule.group_by.iter().enumerate() {
        let Some(v) = f.text(event) else {
            st.stats.ungrouped += 1;
            return;
        };
        if n > 0 {
            key.push('\u{1f}');
        }
        key.push_str(&v);
    }
    let distinct = match &rule.distinct {
        None => 0,
        Some(f) => match f.text(event) {
            Some(v) => stable_hash(&[&v]),
            None => {
                st.stats.ungrouped += 1;
                return;
            }
        },
    };
    let Some(threshold) = rule.threshold else {
        if let Some(suppress) = rule.suppress_us {
            let g = st
                .groups
                .entry(key, idle_before(rule, watermark), Group::default);
            g.last_ts = g.last_ts.max(ts);
            if ts < g.suppressed_until {
                st.stats.suppressed += 1;
                return;
            }
            g.suppressed_until = ts.saturating_add(suppress);
        }
        st.stats.fired += 1;
        out.push(finding(rule, key, vec![event.id.clone()], ts, 1));
        return;
    };
    let g = st
        .groups
        .entry(key, idle_before(rule, watermark), Group::default);
    g.last_ts = g.last_ts.max(ts);
    let horizon = g.last_ts.saturating_sub(rule.window_us);
    if ts < horizon {
        st.stats.late_dropped += 1;
        return;
    }
    g.hits.retain(|h| h.ts >= horizon);
    if rule.distinct.is_some() {
        if let Some(pos) = g.hits.iter().position(|h| h.distinct == distinct) {
            if g.hits[pos].ts > ts {
                return; // The same value already counts, later in the window.
            }
            g.hits.remove(pos);
        }
    }
    // Grow one hit at a time: most groups hold one or two hits, and state per key is
    // budgeted (SPEC 11: 300 bytes).
    if g.hits.len() == g.hits.capacity() {
        g.hits.reserve_exact(1);
    } else if g.hits.capacity() > 2 * g.hits.len() + 2 {
        g.hits.shrink_to(g.hits.len() + 1);
    }
    let pos = g.hits.partition_point(|h| h.ts <= ts);
    g.hits.insert(
        pos,
        Hit {
            ts,
            distinct,
            id: CompactId::new(&event.id),
        },
    );
    if g.hits.len() < threshold as usize {
        return;
    }
    let at = g.hits.last().map_or(ts, |h| h.ts);
    let ids: Vec<String> = g.hits.drain(..).map(|h| h.id.to_string()).collect();
    g.hits.shrink_to_fit();
    if at < g.suppressed_until {
        st.stats.suppressed += 1;
        return;
    }
    if let Some(s) = rule.suppress_us {
        g.suppressed_until = at.saturating_add(s);
    }
    st.stats.fired += 1;
    let count = ids.len();
    out.push(finding(rule, key, ids, at, count));
}

fn finding(rule: &Rule, key: &str, event_ids: Vec<String>, at: i64, count: usize) -> Finding {
    let group: BTreeMap<String, String> = rule
        .group_by
        .iter()
        .map(ToString::to_string)
        .zip(key.split('\u{1f}').map(str::to_owned))
        .collect();
    let who = if group.is_empty() {
        String::new()
    } else {
        let parts: Vec<String> = group.iter().map(|(k, v)| format!("{k}={v}")).collect();
        format!(" for {}", parts.join(", "))
    };
    let what = match (&rule.distinct, rule.threshold) {
        (Some(d), _) => format!("{count} distinct {d} values"),
        (None, Some(_)) => format!("{count} matching events"),
        (None, None) => "a matching event".to_owned(),
    };
    let within = if rule.threshold.is_some() {
        format!(" within {}", humanize_us(rule.window_us))
    } else {
        String::new()
    };
    let lead = if rule.description.is_empty() {
        rule.name.as_str()
    } else {
        rule.description.as_str()
    };
    let description = format!("{lead}: {what}{who}{within}");
    let mut metadata = Map::new();
    metadata.insert("rule_name".into(), json!(rule.name));
    metadata.insert("rule_description".into(), json!(rule.description));
    metadata.insert("severity".into(), json!(rule.severity.as_str()));
    metadata.insert("recommended_action".into(), json!(rule.recommended_action));
    metadata.insert("group".into(), group_json(&group));
    metadata.insert("event_ids".into(), json!(event_ids));
    metadata.insert("count".into(), json!(count));
    if rule.threshold.is_some() {
        metadata.insert(
            "window_seconds".into(),
            Value::from(rule.window_us / 1_000_000),
        );
    }
    let mut tags = vec![
        "security".to_owned(),
        "alert".to_owned(),
        "rule".to_owned(),
        rule.name.clone(),
    ];
    tags.extend(rule.tags.iter().cloned());
    Derived {
        source: FindingSource::Rule,
        name: &rule.name,
        category: "security_alert",
        event_type: "rule_trigger",
        severity: rule.severity,
        message: format!("Security rule triggered: {}", rule.name),
        metadata,
        tags,
    }
    .into_finding(
        description,
        rule.recommended_action.clone(),
        group,
        event_ids,
        Timestamp::from_micros(at),
    )
}

/// `300000000` µs as `5m`, for descriptions.
pub(crate) fn humanize_us(us: i64) -> String {
    let s = us / 1_000_000;
    match s {
        s if s > 0 && s % 3600 == 0 => format!("{}h", s / 3600),
        s if s > 0 && s % 60 == 0 => format!("{}m", s / 60),
        s if s > 0 => format!("{s}s"),
        _ => format!("{}ms", us / 1000),
    }
}
