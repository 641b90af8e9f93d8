//! Redaction: secrets never reach the store, a log or a channel (SPEC sections 5 and 12).
//!
//! Runs on every event before it is persisted or sent. Values under sensitive keys (password,
//! token, secret, api_key, authorization, …) become `[REDACTED]`; secrets recognised by shape
//! anywhere in a string (AWS keys, private keys, bearer tokens, GitHub and Slack tokens, JWTs)
//! are cut out of it; long strings are truncated with a marker; in privacy mode tool parameters
//! are replaced by hashes.

use aho_corasick::AhoCorasick;
use regex::Regex;
use serde::Deserialize;
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::config::ConfigError;
use crate::event::Event;

/// What replaces a secret.
pub const REDACTED: &str = "[REDACTED]";

/// Key names (as word sequences) whose values are always redacted.
pub const DEFAULT_KEYS: &[&str] = &[
    "password",
    "passwd",
    "passphrase",
    "token",
    "secret",
    "api_key",
    "apikey",
    "authorization",
    "access_key",
    "private_key",
    "cookie",
    "credential",
    "credentials",
];

/// Shapes of secrets redacted wherever they appear in a string.
/// Each with the kind recorded in `metadata.redacted` when it is cut out.
pub const DEFAULT_PATTERNS: &[(&str, &str)] = &[
    ("aws_access_key", r"\b(?:AKIA|ASIA)[0-9A-Z]{16}\b"),
    (
        "private_key",
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----(?s:.*?)(?:-----END [A-Z ]*PRIVATE KEY-----|\z)",
    ),
    ("bearer_token", r"\b[Bb]earer\s+[A-Za-z0-9\-._~+/]{8,}=*"),
    (
        "github_token",
        r"\b(?:ghp|gho|ghu|ghs|ghr)_[A-Za-z0-9]{30,}\b",
    ),
    ("github_token", r"\bgithub_pat_[A-Za-z0-9_]{20,}\b"),
    ("slack_token", r"\bxox[abprs]-[A-Za-z0-9-]{10,}"),
    ("api_key", r"\bsk-[A-Za-z0-9_-]{20,}"),
    (
        "jwt",
        r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}",
    ),
];

/// Where secrets cut out by shape are recorded on the event: `[{"field", "kind"}]`, so
/// detection can report a credential a tool exposed even though the store never sees it.
pub const REDACTED_FIELD: &str = "redacted";

/// Most entries kept in `metadata.redacted`.
const MAX_RECORDED: usize = 16;

/// Literals one of which every built-in pattern contains: strings without any of them skip
/// the regular expressions entirely (most strings).
const DEFAULT_LITERALS: &[&str] = &[
    "AKIA",
    "ASIA",
    "PRIVATE KEY",
    "earer",
    "ghp_",
    "gho_",
    "ghu_",
    "ghs_",
    "ghr_",
    "github_pat_",
    "xox",
    "sk-",
    "eyJ",
];

/// `[redaction]` in the config file.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RedactionConfig {
    /// Extra key names to redact, added to the defaults (`session_cookie`, `ssn`).
    pub keys: Vec<String>,
    /// Extra regular expressions for secrets inside strings, added to the defaults.
    pub patterns: Vec<String>,
    /// Use only `keys` and `patterns`, not the built-in lists.
    pub replace_defaults: bool,
    /// Strings longer than this many bytes are truncated with a marker.
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
    /// Compiles the patterns; every bad one is reported.
    pub fn build(&self) -> Result<Redactor, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut sources: Vec<String> = Vec::new();
        for (i, p) in self.patterns.iter().enumerate() {
            match Regex::new(p) {
                Ok(_) => sources.push(p.clone()),
                Err(e) => errors.push(ConfigError::at(
                    format!("redaction.patterns[{i}]"),
                    format!("not a valid regular expression: {e}"),
                )),
            }
        }
        if self.max_value_bytes < 64 {
            errors.push(ConfigError::at(
                "redaction.max_value_bytes",
                "must be at least 64",
            ));
        }
        let mut keys: Vec<Vec<String>> = Vec::new();
        if !self.replace_defaults {
            keys.extend(DEFAULT_KEYS.iter().map(|k| words(k)));
        }
        for (i, k) in self.keys.iter().enumerate() {
            let w = words(k);
            if w.is_empty() {
                errors.push(ConfigError::at(
                    format!("redaction.keys[{i}]"),
                    "a key name needs at least one letter or digit",
                ));
            } else {
                keys.push(w);
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let combine = |sources: &[String]| -> Result<Option<Regex>, Vec<ConfigError>> {
            if sources.is_empty() {
                return Ok(None);
            }
            let joined = sources
                .iter()
                .map(|s| format!("(?:{s})"))
                .collect::<Vec<_>>()
                .join("|");
            Regex::new(&joined)
                .map(Some)
                .map_err(|e| vec![ConfigError::at("redaction.patterns", e.to_string())])
        };
        let builtin = if self.replace_defaults {
            None
        } else {
            // Named groups tell which shape matched, for `metadata.redacted`.
            let defaults: Vec<String> = DEFAULT_PATTERNS
                .iter()
                .enumerate()
                .map(|(i, (_, re))| format!("(?P<k{i}>{re})"))
                .collect();
            let literals = AhoCorasick::new(DEFAULT_LITERALS)
                .map_err(|e| vec![ConfigError::at("redaction", e.to_string())])?;
            combine(&defaults)?.map(|re| (literals, re))
        };
        let firsts: Vec<&str> = keys
            .iter()
            .filter_map(|k| k.first().map(String::as_str))
            .collect();
        let first_words = aho_corasick::AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(&firsts)
            .map_err(|e| vec![ConfigError::at("redaction.keys", e.to_string())])?;
        Ok(Redactor {
            keys,
            first_words,
            builtin,
            custom: combine(&sources)?,
            max_value_bytes: self.max_value_bytes,
            privacy_mode: self.privacy_mode,
        })
    }
}

/// Applies the redaction policy to events.
#[derive(Debug, Clone)]
pub struct Redactor {
    keys: Vec<Vec<String>>,
    /// The first word of every sensitive key name, ASCII case-insensitive: a key containing
    /// none of them cannot be sensitive, which settles most keys without splitting them.
    first_words: AhoCorasick,
    /// The built-in patterns, behind a literal prefilter.
    builtin: Option<(AhoCorasick, Regex)>,
    /// Configured patterns, tried on every string.
    custom: Option<Regex>,
    max_value_bytes: usize,
    privacy_mode: bool,
}

impl Default for Redactor {
    fn default() -> Self {
        RedactionConfig::default()
            .build()
            .unwrap_or_else(|_| unreachable!("the built-in patterns compile"))
    }
}

impl Redactor {
    /// Redacts one event in place. Secrets cut out by shape are recorded, by field and kind, in
    /// `metadata.redacted` (merged with what an earlier redaction, e.g. at the edge, recorded).
    pub fn redact_event(&self, event: &mut Event) {
        let mut seen = Vec::new();
        self.redact_str_at(&mut event.message, &Path::root("message"), &mut seen);
        let metadata = Path::root("metadata");
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
        if !seen.is_empty() {
            record(event, seen);
        }
    }

    /// Redacts a JSON value in place, as found under no particular key.
    pub fn redact_value(&self, value: &mut Value) {
        self.walk(value, &Path::root(""), &mut Vec::new());
    }

    /// Redacts secrets inside one string and truncates it if it is too long.
    pub fn redact_string(&self, s: &mut String) {
        self.redact_str_at(s, &Path::root(""), &mut Vec::new());
    }

    fn walk(&self, value: &mut Value, path: &Path<'_>, seen: &mut Vec<(String, &'static str)>) {
        match value {
            Value::String(s) => self.redact_str_at(s, path, seen),
            Value::Array(items) => items
                .iter_mut()
                .for_each(|v| self.walk(v, &path.child("*"), seen)),
            Value::Object(map) => map
                .iter_mut()
                .for_each(|(k, v)| self.entry_at(k, v, &path.child(k), seen)),
            _ => {}
        }
    }

    fn entry_at(
        &self,
        key: &str,
        value: &mut Value,
        path: &Path<'_>,
        seen: &mut Vec<(String, &'static str)>,
    ) {
        if self.is_sensitive_key(key) {
            if !matches!(value, Value::Bool(_) | Value::Null) {
                *value = Value::String(REDACTED.into());
            }
            return;
        }
        self.walk(value, path, seen);
    }

    fn redact_str_at(
        &self,
        s: &mut String,
        path: &Path<'_>,
        seen: &mut Vec<(String, &'static str)>,
    ) {
        if let Some((literals, re)) = &self.builtin {
            if literals.is_match(s.as_str()) {
                let replaced = re.replace_all(s, |caps: &regex::Captures<'_>| {
                    let kind = (0..DEFAULT_PATTERNS.len())
                        .find(|i| caps.name(&format!("k{i}")).is_some())
                        .map_or("secret", |i| DEFAULT_PATTERNS[i].0);
                    if seen.len() < MAX_RECORDED {
                        seen.push((path.render(), kind));
                    }
                    REDACTED
                });
                if let std::borrow::Cow::Owned(r) = replaced {
                    *s = r;
                }
            }
        }
        if let Some(re) = &self.custom {
            let mut hit = false;
            if let std::borrow::Cow::Owned(r) = re.replace_all(s, REDACTED) {
                *s = r;
                hit = true;
            }
            if hit && seen.len() < MAX_RECORDED {
                seen.push((path.render(), "custom"));
            }
        }
        truncate(s, self.max_value_bytes);
    }

    /// Whether values under this key are redacted whatever they look like.
    pub fn is_sensitive_key(&self, key: &str) -> bool {
        if key.len() > 128 || !self.first_words.is_match(key) {
            return false;
        }
        let mut spans = [(0usize, 0usize); MAX_KEY_WORDS];
        let n = word_spans(key, &mut spans);
        let kw = &spans[..n];
        self.keys.iter().any(|needle| {
            kw.windows(needle.len()).any(|w| {
                w.iter()
                    .zip(needle)
                    .all(|(&(a, b), word)| key[a..b].eq_ignore_ascii_case(word))
            })
        })
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
fn record(event: &mut Event, seen: Vec<(String, &'static str)>) {
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

/// Most words of a key that are told apart; the rest count as part of the last.
const MAX_KEY_WORDS: usize = 16;

/// The byte spans of the words of `key` (see [`words`]), without allocating.
fn word_spans(key: &str, out: &mut [(usize, usize); MAX_KEY_WORDS]) -> usize {
    let mut n = 0;
    let mut push = |start: usize, end: usize, n: &mut usize| {
        if *n < MAX_KEY_WORDS {
            out[*n] = (start, end);
            *n += 1;
        } else {
            out[MAX_KEY_WORDS - 1].1 = end;
        }
    };
    let mut start: Option<usize> = None;
    let mut prev: Option<char> = None;
    let mut chars = key.char_indices().peekable();
    while let Some((i, c)) = chars.next() {
        let next = chars.peek().map(|&(_, c)| c);
        if !c.is_alphanumeric() {
            if let Some(s) = start.take() {
                push(s, i, &mut n);
            }
        } else {
            let boundary = c.is_uppercase()
                && prev.is_some_and(|p| {
                    p.is_lowercase()
                        || p.is_ascii_digit()
                        || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
                });
            if boundary {
                if let Some(s) = start.take() {
                    push(s, i, &mut n);
                }
            }
            start.get_or_insert(i);
        }
        prev = Some(c);
    }
    if let Some(s) = start {
        push(s, key.len(), &mut n);
    }
    n
}

/// Splits a key into lowercase words at separators and camelCase boundaries:
/// `X-Api-Key` and `apiKey` both give `[api, key]` (after `x`).
fn words(key: &str) -> Vec<String> {
    let chars: Vec<char> = key.chars().collect();
    let mut out = Vec::new();
    let mut cur = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if !c.is_alphanumeric() {
            if !cur.is_empty() {
                out.push(std::mem::take(&mut cur));
            }
            continue;
        }
        let prev = i.checked_sub(1).map(|j| chars[j]);
        let next = chars.get(i + 1).copied();
        let boundary = c.is_uppercase()
            && prev.is_some_and(|p| {
                p.is_lowercase()
                    || p.is_ascii_digit()
                    || (p.is_uppercase() && next.is_some_and(char::is_lowercase))
            });
        if boundary && !cur.is_empty() {
            out.push(std::mem::take(&mut cur));
        }
        cur.extend(c.to_lowercase());
    }
    if !cur.is_empty() {
        out.push(cur);
    }
    out
}

/// Cuts `s` to at most `max` bytes at a character boundary, noting how much was cut.
pub fn truncate(s: &mut String, max: usize) {
    if s.len() <= max {
        return;
    }
    let mut cut = max;
    while !s.is_char_boundary(cut) {
        cut -= 1;
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
        Value::String(s) if s == REDACTED => {}
        leaf => {
            let digest = Sha256::digest(leaf.to_string().as_bytes());
            let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
            *leaf = Value::String(format!("sha256:{hex}"));
        }
    }
}

#[cfg(test)]
mod tests;
