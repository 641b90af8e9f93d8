//! Redaction: secrets never reach the store, a log or a channel (SPEC sections 5 and 12).
//!
//! Runs on every event at the edge (`wrap`, `gateway`, before the spool) and again in the
//! collector before anything is persisted. Two mechanisms, both saying what they cut as
//! `[REDACTED:<kind>]` and recording it by field and kind in `metadata.redacted` (which
//! `secret_exposure` detection reads, since the store never sees the value):
//! - keys: values under keys that name a secret (`password`, `GITHUB_TOKEN`, `apiKey`, at any
//!   depth) are replaced; keys that only might (`ENCRYPTION_KEY`, a provider's name) lose
//!   high-entropy values (`keys.rs`);
//! - shapes: provider token formats and generic shapes (URL credentials, `Authorization`
//!   values, `KEY=value` lines, private key blocks, JWTs, connection strings) are cut out of
//!   every string, object keys included (`rules.rs`, compiled by `scan.rs`).
//!
//! Long strings are truncated after redaction (never before: a cut token would no longer
//! match); in privacy mode tool parameters are replaced by hashes.

mod keys;
mod rules;
mod scan;
mod words;

use serde::Deserialize;
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::config::ConfigError;
use crate::event::Event;
use keys::{high_entropy, is_placeholder, KeyClass, Keys};
pub use rules::{kinds, label};
use scan::{CustomRule, Scanner, MAX_RULES};
use words::words;

/// What replaces a secret whose kind is not known.
pub const REDACTED: &str = "[REDACTED]";

/// Where secrets cut out are recorded on the event: `[{"field", "kind"}]`, so detection can
/// report a credential a tool exposed even though the store never sees it.
pub const REDACTED_FIELD: &str = "redacted";

/// Most entries kept in `metadata.redacted`.
const MAX_RECORDED: usize = 16;

/// Most configured patterns.
const MAX_CUSTOM_PATTERNS: usize = 64;

/// The marker for one kind: `[REDACTED:stripe_secret_key]`.
pub fn marker(kind: &str) -> String {
    format!("[REDACTED:{kind}]")
}

/// One configured pattern: a regular expression, or a table naming its kind and keywords.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(untagged)]
pub enum PatternConfig {
    /// A regular expression; what it matches is redacted as kind `custom`.
    Regex(String),
    /// A named pattern.
    Named {
        /// The kind written into the marker (`[a-z0-9_]`, at most 48 characters).
        kind: String,
        /// The regular expression; a group named `s` limits what is cut to that group.
        regex: String,
        /// Literals one of which must occur (case-insensitively) for the pattern to run;
        /// none: it runs on every string.
        #[serde(default)]
        keywords: Vec<String>,
    },
}

/// `[redaction]` in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Extra key names to redact, added to the defaults (`session_cookie`, `ssn`).
    pub keys: Vec<String>,
    /// Extra patterns for secrets inside strings, added to the built-in ones.
    pub patterns: Vec<PatternConfig>,
    /// Use only `keys` and `patterns`, not the built-in lists.
    pub replace_defaults: bool,
    /// Strings longer than this many bytes are truncated with a marker (after redaction).
    pub max_value_bytes: usize,
    /// Store only hashes of tool parameters, never their values.
    pub privacy_mode: bool,
}

impl Default for RedactionConfig {
    fn default() -> Self {
        Self {
            keys: Vec::new(),
            patterns: Vec::new(),
            replace_defaults: false,
            max_value_bytes: 4096,
            privacy_mode: false,
        }
    }
}

impl RedactionConfig {
    /// Compiles the rules; every bad key or pattern is reported with where it is.
    pub fn build(&self) -> Result<Redactor, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let custom = self.custom_rules(&mut errors);
        if self.max_value_bytes < 64 {
            errors.push(ConfigError::at(
                "redaction.max_value_bytes",
                "must be at least 64",
            ));
        }
        let mut custom_keys: Vec<Vec<String>> = Vec::new();
        for (i, k) in self.keys.iter().enumerate() {
            let w = words(k);
            if w.is_empty() {
                errors.push(ConfigError::at(
                    format!("redaction.keys[{i}]"),
                    "a key name needs at least one letter or digit",
                ));
            } else {
                custom_keys.push(w);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let defaults = !self.replace_defaults;
        let keys = Keys::new(defaults, custom_keys)
            .map_err(|e| vec![ConfigError::at("redaction.keys", e)])?;
        let scanner = Scanner::new(defaults, &keys, custom)
            .map_err(|e| vec![ConfigError::at("redaction.patterns", e)])?;
        Ok(Redactor {
            keys,
            scanner,
            max_value_bytes: self.max_value_bytes,
            privacy_mode: self.privacy_mode,
        })
    }

    fn custom_rules(&self, errors: &mut Vec<ConfigError>) -> Vec<CustomRule> {
        if self.patterns.len() > MAX_CUSTOM_PATTERNS {
            errors.push(ConfigError::at(
                "redaction.patterns",
                format!("at most {MAX_CUSTOM_PATTERNS} patterns; combine some with `|`"),
            ));
            return Vec::new();
        }
        let mut out = Vec::new();
        for (i, p) in self.patterns.iter().enumerate() {
            let at = format!("redaction.patterns[{i}]");
            let (kind, source, keywords) = match p {
                PatternConfig::Regex(r) => ("custom", r, &[][..]),
                PatternConfig::Named {
                    kind,
                    regex,
                    keywords,
                } => (kind.as_str(), regex, keywords.as_slice()),
            };
            let kind_ok = !kind.is_empty()
                && kind.len() <= 48
                && kind
                    .bytes()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == b'_');
            if !kind_ok {
                errors.push(ConfigError::at(
                    format!("{at}.kind"),
                    format!("`{kind}`: a kind is 1 to 48 of a-z, 0-9 and _ (e.g. acme_token)"),
                ));
            }
            if let Some(j) = keywords.iter().position(|k| k.trim().is_empty()) {
                errors.push(ConfigError::at(
                    format!("{at}.keywords[{j}]"),
                    "a keyword cannot be empty",
                ));
            }
            match regex::Regex::new(source) {
                Ok(re) if re.is_match("") => errors.push(ConfigError::at(
                    at,
                    "the pattern matches the empty string, so it would redact everywhere; make it require at least one character",
                )),
                Ok(re) => out.push(CustomRule {
                    kind: kind.to_owned(),
                    regex: re,
                    keywords: keywords.to_vec(),
                }),
                Err(e) => errors.push(ConfigError::at(at, regex_error(&e))),
            }
        }
        if out.len() + rules::all().count() > MAX_RULES {
            errors.push(ConfigError::at("redaction.patterns", "too many patterns"));
        }
        out
    }
}

/// A regular expression's error on one line, with the character where it is: the regex crate
/// draws a caret under the pattern, which a one-line message would lose.
fn regex_error(e: &regex::Error) -> String {
    let text = e.to_string();
    let lines: Vec<&str> = text.lines().collect();
    let what = lines
        .iter()
        .rev()
        .find_map(|l| l.strip_prefix("error: "))
        .unwrap_or(text.as_str());
    let caret = lines
        .iter()
        .find(|l| l.trim_start().starts_with('^'))
        .map(|l| l.len() - l.trim_start().len());
    match caret {
        // The pattern is quoted with 4 spaces of indentation.
        Some(c) => format!(
            "not a valid regular expression at character {}: {what}",
            c.saturating_sub(4) + 1
        ),
        None => format!(
            "not a valid regular expression: {}",
            text.replace('\n', " ")
        ),
    }
}

/// Applies the redaction policy to events.
#[derive(Debug, Clone)]
pub struct Redactor {
    keys: Keys,
    scanner: Scanner,
    max_value_bytes: usize,
    privacy_mode: bool,
}

impl Default for Redactor {
    /// The built-in rules, compiled once per process (a clone shares the compiled automata).
    fn default() -> Self {
        static DEFAULT: std::sync::OnceLock<Redactor> = std::sync::OnceLock::new();
        DEFAULT
            .get_or_init(|| {
                RedactionConfig::default()
                    .build()
                    .unwrap_or_else(|_| unreachable!("the built-in rules compile"))
            })
            .clone()
    }
}

/// What was cut so far while redacting one event: (field, kind), deduplicated and bounded.
struct Seen<'r>(Vec<(String, &'r str)>);

impl<'r> Seen<'r> {
    fn push(&mut self, path: &Path<'_>, kind: &'r str) {
        if self.0.len() >= MAX_RECORDED {
            return;
        }
        let field = path.render();
        if !self.0.iter().any(|(f, k)| *f == field && *k == kind) {
            self.0.push((field, kind));
        }
    }
}

impl Redactor {
    /// Redacts one event in place. What is cut out is recorded, by field and kind, in
    /// `metadata.redacted` (merged with what an earlier redaction, e.g. at the edge, recorded).
    pub fn redact_event(&self, event: &mut Event) {
        let mut seen = Seen(Vec::new());
        self.redact_str_at(&mut event.message, &Path::root("message"), &mut seen);
        let metadata = Path::root("metadata");
        self.redact_keys(&mut event.metadata, &metadata, &mut seen);
        for (key, value) in event.metadata.iter_mut() {
            if key == REDACTED_FIELD {
                continue;
            }
            let path = metadata.child(key);
            if self.privacy_mode && (key == "parameters" || key == "arguments") {
                self.walk(value, &path, &mut seen);
                hash_leaves(value);
                continue;
            }
            self.entry_at(key, value, &path, &mut seen);
        }
        for tag in &mut event.tags {
            self.redact_str_at(tag, &Path::root("tags"), &mut seen);
        }
        if !seen.0.is_empty() {
            record(event, seen.0);
        }
    }

    /// Redacts a JSON value in place, as found under no particular key.
    pub fn redact_value(&self, value: &mut Value) {
        self.walk(value, &Path::root(""), &mut Seen(Vec::new()));
    }

    /// Redacts secrets inside one string and truncates it if it is too long.
    pub fn redact_string(&self, s: &mut String) {
        self.redact_str_at(s, &Path::root(""), &mut Seen(Vec::new()));
    }

    fn walk<'r>(&'r self, value: &mut Value, path: &Path<'_>, seen: &mut Seen<'r>) {
        match value {
            Value::String(s) => self.redact_str_at(s, path, seen),
            Value::Array(items) => items
                .iter_mut()
                .for_each(|v| self.walk(v, &path.child("*"), seen)),
            Value::Object(map) => {
                self.redact_keys(map, path, seen);
                map.iter_mut()
                    .for_each(|(k, v)| self.entry_at(k, v, &path.child(k), seen));
            }
            _ => {}
        }
    }

    /// Renames keys that are themselves secrets (a token used as a map key).
    fn redact_keys<'r>(
        &'r self,
        map: &mut Map<String, Value>,
        path: &Path<'_>,
        seen: &mut Seen<'r>,
    ) {
        let mut renames: Vec<(String, String)> = Vec::new();
        for key in map.keys() {
            // Every token format is at least this long; shorter keys are names, not secrets.
            if key.len() < 16 || key == REDACTED_FIELD {
                continue;
            }
            if let Some(new) = self.scanner.redact(key, &self.keys, &mut |kind| {
                seen.push(&path.child("(key)"), kind)
            }) {
                renames.push((key.clone(), new));
            }
        }
        for (old, mut new) in renames {
            if let Some(v) = map.remove(&old) {
                let base = new.clone();
                let mut n = 2;
                while map.contains_key(&new) {
                    new = format!("{base}#{n}");
                    n += 1;
                }
                map.insert(new, v);
            }
        }
    }

    fn entry_at<'r>(&'r self, key: &str, value: &mut Value, path: &Path<'_>, seen: &mut Seen<'r>) {
        match self.keys.classify(key) {
            KeyClass::Strong(kind) => {
                let keep = match &*value {
                    Value::Bool(_) | Value::Null => true,
                    Value::String(s) => is_placeholder(s),
                    _ => false,
                };
                if !keep {
                    *value = Value::String(marker(kind));
                    seen.push(path, kind);
                }
            }
            KeyClass::Weak(kind) if value.as_str().is_some_and(high_entropy) => {
                *value = Value::String(marker(kind));
                seen.push(path, kind);
            }
            _ => self.walk(value, path, seen),
        }
    }

    fn redact_str_at<'r>(&'r self, s: &mut String, path: &Path<'_>, seen: &mut Seen<'r>) {
        if let Some(new) = self
            .scanner
            .redact(s, &self.keys, &mut |kind| seen.push(path, kind))
        {
            *s = new;
        }
        truncate(s, self.max_value_bytes);
    }

    /// Whether values under this key are redacted whatever they look like.
    pub fn is_sensitive_key(&self, key: &str) -> bool {
        matches!(self.keys.classify(key), KeyClass::Strong(_))
    }
}

/// A field's path, built on the stack while walking and rendered only when a secret is found.
struct Path<'a> {
    key: &'a str,
    parent: Option<&'a Path<'a>>,
}

impl<'a> Path<'a> {
    fn root(key: &'a str) -> Self {
        Path { key, parent: None }
    }

    fn child(&'a self, key: &'a str) -> Path<'a> {
        Path {
            key,
            parent: Some(self),
        }
    }

    fn render(&self) -> String {
        match self.parent {
            Some(p) => format!("{}.{}", p.render(), self.key),
            None => self.key.to_owned(),
        }
    }
}

/// Merges what was cut out into `metadata.redacted`, keeping what was already there.
fn record(event: &mut Event, seen: Vec<(String, &str)>) {
    let mut entries = match event.metadata.remove(REDACTED_FIELD) {
        Some(Value::Array(items)) => items,
        _ => Vec::new(),
    };
    for (field, kind) in seen {
        let entry = serde_json::json!({"field": field, "kind": kind});
        if entries.len() < MAX_RECORDED && !entries.contains(&entry) {
            entries.push(entry);
        }
    }
    event
        .metadata
        .insert(REDACTED_FIELD.into(), Value::Array(entries));
}

/// Cuts `s` to about `max` bytes at a character boundary, noting how much was cut. A
/// redaction marker is never split: a cut inside one keeps it whole (up to 60 bytes more).
pub fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    let from = cut.saturating_sub(60);
    let from = (from..cut).find(|&i| s.is_char_boundary(i)).unwrap_or(cut);
    let open = s[from..cut].rfind('[').map(|i| from + i);
    if let Some(open) = open.filter(|&o| s[o..].starts_with("[REDACTED:")) {
        if let Some(close) = s[open..].find(']') {
            let end = open + close + 1;
            if end > cut && end - open <= 60 {
                cut = end;
            }
        }
    }
    if cut >= s.len() {
        return;
    }
    let dropped = s.len() - cut;
    s.truncate(cut);
    s.push_str(&format!("…[truncated {dropped} bytes]"));
}

/// Replaces every scalar under `value` by `sha256:<16 hex>` of its JSON, keeping keys.
fn hash_leaves(value: &mut Value) {
    match value {
        Value::Array(items) => items.iter_mut().for_each(hash_leaves),
        Value::Object(map) => map.values_mut().for_each(hash_leaves),
        Value::String(s) if s.starts_with("[REDACTED") => {}
        leaf => {
            let digest = Sha256::digest(leaf.to_string().as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            *leaf = Value::String(format!("sha256:{hex}"));
        }
    }
}

#[cfg(test)]
mod corpus;
#[cfg(test)]
mod tests;
