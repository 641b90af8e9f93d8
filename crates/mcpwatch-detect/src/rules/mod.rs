//! Rules (SPEC 6.1): the YAML rule language, its compiled form and the index that picks, for
//! one event, only the rules that can match it.
//!
//! Pipeline position: [`load`] turns YAML into a [`RuleSet`] (or every error at once);
//! [`engine::RuleEngine`] keeps the per-group windows and fires.
//!
//! Architecture Invariant: a `RuleSet` is either completely valid or not built at all.

pub mod engine;
pub mod field;
pub mod lexer;
pub mod load;
pub mod parser;
pub mod pred;

use std::collections::HashMap;
use std::path::Path;

pub use engine::RuleEngine;
pub use field::Field;
pub use pred::Pred;

use crate::error::{DetectError, RuleError};
use crate::finding::Severity;

/// The rules shipped with mcpwatch, each documented in the file.
pub const DEFAULT_RULES_YAML: &str = include_str!("defaults.yaml");

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    /// Unique name.
    pub name: String,
    /// What it detects.
    pub description: String,
    /// The `when` expression as written.
    pub when_text: String,
    /// The compiled `when`.
    pub when: Pred,
    /// Fields whose values form the group key.
    pub group_by: Vec<Field>,
    /// Matching events (or distinct values) needed to fire; `None` fires on every match.
    pub threshold: Option<u32>,
    /// Sliding window in microseconds of event time.
    pub window_us: i64,
    /// Count distinct values of this field instead of events.
    pub distinct: Option<Field>,
    /// After a firing, further firings for the same group are suppressed for this long (µs).
    pub suppress_us: Option<i64>,
    /// How urgent a firing is.
    pub severity: Severity,
    /// What a person should do.
    pub recommended_action: String,
    /// Labels copied onto the derived event.
    pub tags: Vec<String>,
    /// The file it came from.
    pub file: String,
    /// A fingerprint of the definition: equal fingerprints keep state across reloads.
    pub definition: String,
}

/// A complete, valid set of rules with its index.
#[derive(Debug, Clone, Default)]
pub struct RuleSet {
    rules: Vec<Rule>,
    index: Index,
}

/// Rules by the category and event type their `when` pins; unpinned rules are tried always.
#[derive(Debug, Clone, Default)]
struct Index {
    by_both: HashMap<String, HashMap<String, Vec<usize>>>,
    by_category: HashMap<String, Vec<usize>>,
    by_event_type: HashMap<String, Vec<usize>>,
    always: Vec<usize>,
}

impl RuleSet {
    /// Builds a set from compiled rules; names must be unique.
    fn new(rules: Vec<Rule>) -> Self {
        let mut index = Index::default();
        for (i, r) in rules.iter().enumerate() {
            let cats = r.when.pinned(&Field::Category);
            let types = r.when.pinned(&Field::EventType);
            match (cats, types) {
                (Some(cs), Some(ts)) => {
                    for c in &cs {
                        for t in &ts {
                            let m = index.by_both.entry(c.clone()).or_default();
                            m.entry(t.clone()).or_default().push(i);
                        }
                    }
                }
                (Some(cs), None) => cs
                    .into_iter()
                    .for_each(|c| index.by_category.entry(c).or_default().push(i)),
                (None, Some(ts)) => ts
                    .into_iter()
                    .for_each(|t| index.by_event_type.entry(t).or_default().push(i)),
                (None, None) => index.always.push(i),
            }
        }
        Self { rules, index }
    }

    /// The built-in rules.
    pub fn defaults() -> Self {
        // The defaults are tested to compile; an error here is a bug in this crate.
        load::parse_rules(DEFAULT_RULES_YAML, "<defaults>")
            .map(RuleSet::new)
            .unwrap_or_else(|errors| panic!("built-in rules do not compile: {errors:?}"))
    }

    /// Compiles rules from YAML text; `file` names it in errors.
    pub fn from_yaml(text: &str, file: &str) -> Result<Self, Vec<RuleError>> {
        load::parse_rules(text, file).map(RuleSet::new)
    }

    /// Loads rule files, optionally on top of the defaults; every error of every file at once,
    /// and nothing when there is any.
    pub fn load(paths: &[impl AsRef<Path>], with_defaults: bool) -> Result<Self, DetectError> {
        let mut rules = if with_defaults {
            RuleSet::defaults().rules
        } else {
            Vec::new()
        };
        let mut errors = Vec::new();
        for path in paths {
            let path = path.as_ref();
            let text = std::fs::read_to_string(path).map_err(|source| DetectError::Io {
                path: path.to_owned(),
                source,
            })?;
            match load::parse_rules(&text, &path.display().to_string()) {
                Ok(more) => rules.extend(more),
                Err(e) => errors.extend(e),
            }
        }
        let mut seen: HashMap<&str, &str> = HashMap::new();
        for r in &rules {
            if let Some(first) = seen.insert(&r.name, &r.file) {
                errors.push(RuleError {
                    file: r.file.clone(),
                    rule: Some(r.name.clone()),
                    line: None,
                    column: None,
                    message: format!(
                        "a rule with this name is already defined in {first}; rename one of them"
                    ),
                });
            }
        }
        if !errors.is_empty() {
            return Err(DetectError::Rules(errors));
        }
        Ok(RuleSet::new(rules))
    }

    /// The rules `keep` accepts, in load order, indexed anew.
    pub(crate) fn retain(&self, keep: impl Fn(&Rule) -> bool) -> RuleSet {
        RuleSet::new(self.rules.iter().filter(|r| keep(r)).cloned().collect())
    }

    /// The rules, in load order.
    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// Calls `f` with the index of every rule that can match an event of this category and
    /// event type (rules still test their whole `when`).
    #[inline]
    pub fn candidates(&self, category: &str, event_type: &str, mut f: impl FnMut(usize)) {
        let ix = &self.index;
        if let Some(v) = ix.by_both.get(category).and_then(|m| m.get(event_type)) {
            v.iter().for_each(|&i| f(i));
        }
        if let Some(v) = ix.by_category.get(category) {
            v.iter().for_each(|&i| f(i));
        }
        if let Some(v) = ix.by_event_type.get(event_type) {
            v.iter().for_each(|&i| f(i));
        }
        ix.always.iter().for_each(|&i| f(i));
    }
}

/// Checks rule files for `mcpwatch rules check`: every error of every file, each with file,
/// rule, line and column. `Ok` carries the number of rules per file.
pub fn check_rule_files(
    paths: &[impl AsRef<Path>],
) -> Result<Vec<(String, usize)>, Vec<RuleError>> {
    let mut counts = Vec::new();
    let mut errors = Vec::new();
    for path in paths {
        let path = path.as_ref();
        let name = path.display().to_string();
        match std::fs::read_to_string(path) {
            Err(e) => errors.push(RuleError {
                file: name,
                rule: None,
                line: None,
                column: None,
                message: format!("cannot read the file: {e}; check the path"),
            }),
            Ok(text) => match load::parse_rules(&text, &name) {
                Ok(rules) => counts.push((name, rules.len())),
                Err(e) => errors.extend(e),
            },
        }
    }
    if errors.is_empty() {
        Ok(counts)
    } else {
        Err(errors)
    }
}
