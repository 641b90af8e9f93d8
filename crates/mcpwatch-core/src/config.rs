//! The TOML configuration file and its validation (SPEC section 3, `config check`).
//!
//! Every section is a struct with `deny_unknown_fields` and a doc comment on each field; the
//! file is checked section by section and every error found is reported at once, each with the
//! key path and, where it can be found, the line and column in the file.

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

pub use crate::redact::RedactionConfig;

/// One problem in a configuration file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Key path, e.g. `auth.tokens[1].roles`.
    pub path: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// 1-based column in the file, when known.
    pub column: Option<usize>,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl ConfigError {
    /// An error at a key path, position unknown.
    pub fn at(path: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            path: path.into(),
            line: None,
            column: None,
            message: message.into(),
        }
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (self.line, self.column) {
            (Some(l), Some(c)) => write!(f, "line {l}, column {c}: ")?,
            (Some(l), None) => write!(f, "line {l}: ")?,
            _ => {}
        }
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// The whole configuration file. Every section is optional; an empty file is valid.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Config {
    /// `[server]`: the HTTP listener and ingest limits.
    pub server: ServerConfig,
    /// `[store]`: where and how events are kept.
    pub store: StoreConfig,
    /// `[retention]`: how long events are kept.
    pub retention: RetentionConfig,
    /// `[redaction]`: what is removed before anything is persisted.
    pub redaction: RedactionConfig,
    /// `[auth]`: API tokens and their roles.
    pub auth: AuthConfig,
    /// Sections that later stages read (detection, alerting, capture), kept as TOML so this
    /// crate need not know their types; each stage validates its own.
    pub extra: toml::Table,
}

/// Top-level sections other crates own; accepted here and handed on in [`Config::extra`].
pub const EXTENSION_SECTIONS: &[&str] = &[
    "detection",
    "rules",
    "alerting",
    "channels",
    "routes",
    "wrap",
    "gateway",
    "metrics",
    "otlp",
    "nats",
    "sink",
    "cluster",
];

/// `[server]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Address to listen on. Anything but loopback requires `[[auth.tokens]]`.
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes (larger gets 413).
    #[serde(with = "size_str")]
    pub max_body_bytes: u64,
    /// Most events in one ingest request (more get 413).
    pub max_batch_events: usize,
    /// Most events waiting for the writer; beyond it ingest answers 503 with Retry-After.
    pub max_pending_events: usize,
    /// How far ahead of the collector's clock an event's timestamp may be (later gets 400).
    #[serde(with = "duration_str")]
    pub max_clock_skew: Duration,
    /// A connection must send a whole request head within this (also while idle between
    /// requests) or it is closed.
    #[serde(with = "duration_str")]
    pub header_read_timeout: Duration,
    /// A request body must arrive whole within this of its head.
    #[serde(with = "duration_str")]
    pub body_read_timeout: Duration,
    /// Most connections open at once; more are answered 503 and closed. Keep it below the
    /// process's file descriptor limit (`ulimit -n`).
    pub max_connections: usize,
    /// Most connections open at once from one address (an IPv6 /64 counts as one); more are
    /// answered 429 and closed.
    pub max_connections_per_address: usize,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: SocketAddr::from(([127, 0, 0, 1], 7878)),
            max_body_bytes: 16 * 1024 * 1024,
            max_batch_events: 10_000,
            max_pending_events: 200_000,
            max_clock_skew: crate::validate::bounds::DEFAULT_MAX_FUTURE_SKEW,
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_connections: 512,
            max_connections_per_address: 128,
        }
    }
}

/// How hard the store works to keep a commit across a power loss.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// fsync on every commit: survives power loss (SQLite `synchronous=FULL`).
    #[default]
    Full,
    /// fsync at checkpoints: survives a process crash, may lose the last commits on power loss.
    Normal,
}

/// `[store]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// Data directory; default `$MCPWATCH_DATA_DIR` or the platform data dir.
    pub data_dir: Option<PathBuf>,
    /// `full` (default) or `normal`.
    pub durability: Durability,
    /// A PostgreSQL URL (`postgres://user:${PGPASSWORD}@host:5432/db`) to keep events in a
    /// shared database instead of the SQLite file in `data_dir`. `${NAME}` is expanded from the
    /// environment when `serve` starts, so the password need not be in the file.
    pub url: Option<String>,
}

impl StoreConfig {
    /// [`StoreConfig::url`] with `${NAME}` expanded from `env`.
    pub fn expanded_url(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Option<String>, String> {
        self.url
            .as_deref()
            .map(|u| expand_env(u, env).map_err(|e| format!("store.url: {e}")))
            .transpose()
    }
}

/// `[retention]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Events older than this are deleted (e.g. `30d`).
    #[serde(with = "duration_str")]
    pub max_age: Duration,
    /// When the event store grows past this size the oldest events are deleted (e.g. `10GB`).
    #[serde(with = "opt_size_str")]
    pub max_size: Option<u64>,
    /// How often retention runs.
    #[serde(with = "duration_str")]
    pub interval: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            max_age: Duration::from_secs(30 * 86_400),
            max_size: None,
            interval: Duration::from_secs(60),
        }
    }
}

/// What a token may do.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// Post events.
    Ingest,
    /// Read events, stats and alerts.
    Read,
    /// Everything, including alert actions and rule reloads.
    Admin,
}

/// `[auth]`.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// API tokens. With none, only a loopback listener is allowed and it needs no token.
    pub tokens: Vec<TokenConfig>,
}

/// One `[[auth.tokens]]` entry.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct TokenConfig {
    /// A name for logs and the `source` of events it posts.
    pub name: String,
    /// SHA-256 of the token, in hex (`printf %s "$TOKEN" | sha256sum`). Preferred.
    pub token_sha256: Option<String>,
    /// The token itself, usually `${ENV_VAR}`; hashed on load, never logged.
    pub token: Option<String>,
    /// Roles: `ingest`, `read`, `admin`.
    pub roles: Vec<Role>,
    /// Requests per second this token may make; more get 429 with Retry-After.
    pub rate_limit: Option<f64>,
}

impl Config {
    /// Parses and validates a config file's text. All errors at once.
    pub fn from_toml(text: &str) -> Result<Config, Vec<ConfigError>> {
        let table: toml::Table = match text.parse() {
            Ok(t) => t,
            Err(e) => {
                let (line, column) = e.span().map(|s| line_col(text, s.start)).unzip();
                return Err(vec![ConfigError {
                    path: String::new(),
                    line,
                    column,
                    message: e.message().to_owned(),
                }]);
            }
        };
        let mut errors = Vec::new();
        let mut config = Config::default();
        for (key, value) in table {
            match key.as_str() {
                "server" => config.server = section(&key, value, &mut errors),
                "store" => config.store = section(&key, value, &mut errors),
                "retention" => config.retention = section(&key, value, &mut errors),
                "redaction" => config.redaction = section(&key, value, &mut errors),
                "auth" => config.auth = section(&key, value, &mut errors),
                k if EXTENSION_SECTIONS.contains(&k) => {
                    config.extra.insert(key, value);
                }
                _ => errors.push(ConfigError::at(
                    key.clone(),
                    format!(
                        "unknown section `{key}`; known sections are server, store, retention, redaction, auth, {}",
                        EXTENSION_SECTIONS.join(", ")
                    ),
                )),
            }
        }
        config.validate(&mut errors);
        if errors.is_empty() {
            return Ok(config);
        }
        locate_errors(text, &mut errors);
        Err(errors)
    }

    fn validate(&self, errors: &mut Vec<ConfigError>) {
        if let Err(errs) = self.redaction.build() {
            errors.extend(errs);
        }
        if let Some(url) = &self.store.url {
            if !(url.starts_with("postgres://") || url.starts_with("postgresql://")) {
                errors.push(ConfigError::at(
                    "store.url",
                    "must be a PostgreSQL URL, postgres://user:${PGPASSWORD}@host:5432/database; leave it out to keep events in SQLite under data_dir",
                ));
            }
        }
        let s = &self.server;
        if s.max_body_bytes < 1024 {
            errors.push(ConfigError::at(
                "server.max_body_bytes",
                "must be at least 1KB",
            ));
        }
        if s.max_batch_events == 0 {
            errors.push(ConfigError::at(
                "server.max_batch_events",
                "must be at least 1",
            ));
        }
        if s.max_pending_events < s.max_batch_events {
            errors.push(ConfigError::at(
                "server.max_pending_events",
                "must be at least server.max_batch_events",
            ));
        }
        for (key, d) in [
            ("server.header_read_timeout", s.header_read_timeout),
            ("server.body_read_timeout", s.body_read_timeout),
        ] {
            if d < Duration::from_secs(1) {
                errors.push(ConfigError::at(key, "must be at least 1s"));
            }
        }
        if s.max_connections == 0 {
            errors.push(ConfigError::at(
                "server.max_connections",
                "must be at least 1",
            ));
        }
        if s.max_connections_per_address == 0 || s.max_connections_per_address > s.max_connections {
            errors.push(ConfigError::at(
                "server.max_connections_per_address",
                "must be at least 1 and at most server.max_connections",
            ));
        }
        if self.retention.interval < Duration::from_secs(1) {
            errors.push(ConfigError::at("retention.interval", "must be at least 1s"));
        }
        if self.retention.max_age < Duration::from_secs(60) {
            errors.push(ConfigError::at("retention.max_age", "must be at least 1m"));
        }
        if self.retention.max_size.is_some_and(|b| b < 1_000_000) {
            errors.push(ConfigError::at(
                "retention.max_size",
                "must be at least 1MB",
            ));
        }
        let mut names = std::collections::HashSet::new();
        for (i, t) in self.auth.tokens.iter().enumerate() {
            let at = |f: &str| format!("auth.tokens[{i}].{f}");
            if t.name.trim().is_empty() {
                errors.push(ConfigError::at(at("name"), "must not be empty"));
            } else if !names.insert(t.name.as_str()) {
                errors.push(ConfigError::at(
                    at("name"),
                    format!(
                        "`{}` is used by another token; names must be unique",
                        t.name
                    ),
                ));
            }
            match (&t.token, &t.token_sha256) {
                (None, None) => errors.push(ConfigError::at(
                    at("token_sha256"),
                    "a token needs token_sha256 (hex SHA-256 of the token) or token (e.g. \"${MCPWATCH_TOKEN}\")",
                )),
                (Some(_), Some(_)) => errors.push(ConfigError::at(at("token"), "give token or token_sha256, not both")),
                (None, Some(h)) if h.len() != 64 || !h.bytes().all(|b| b.is_ascii_hexdigit()) => {
                    errors.push(ConfigError::at(at("token_sha256"), "must be 64 hex digits (the output of sha256sum)"))
                }
                _ => {}
            }
            if t.roles.is_empty() {
                errors.push(ConfigError::at(
                    at("roles"),
                    "give at least one role: ingest, read, admin",
                ));
            }
            if t.rate_limit.is_some_and(|r| !(r > 0.0 && r.is_finite())) {
                errors.push(ConfigError::at(
                    at("rate_limit"),
                    "must be a positive number of requests per second",
                ));
            }
        }
    }
}

fn section<T: DeserializeOwned + Default>(
    key: &str,
    value: toml::Value,
    errors: &mut Vec<ConfigError>,
) -> T {
    match serde_path_to_error::deserialize::<_, T>(value) {
        Ok(v) => v,
        Err(e) => {
            let inner = e.path().to_string();
            let path = if inner == "." {
                key.to_owned()
            } else {
                format!("{key}.{inner}")
            };
            errors.push(ConfigError::at(path, e.into_inner().message().to_owned()));
            T::default()
        }
    }
}

/// Expands `${NAME}` from `lookup`; an unset variable is an error that names it.
pub fn expand_env(s: &str, lookup: &dyn Fn(&str) -> Option<String>) -> Result<String, String> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let after = &rest[start + 2..];
        let end = after
            .find('}')
            .ok_or_else(|| format!("`${{` without a closing `}}` in `{s}`"))?;
        let name = &after[..end];
        let value = lookup(name).ok_or_else(|| {
            format!("environment variable {name} is not set; export it or write the value")
        })?;
        out.push_str(&value);
        rest = &after[end + 1..];
    }
    out.push_str(rest);
    Ok(out)
}

/// Fills in the line and column of every error that has none, from its key path in `text`
/// (the file the config was parsed from), so errors found later by the sections' owners
/// (alerting, channels, gateway) point into the file too.
pub fn locate_errors(text: &str, errors: &mut [ConfigError]) {
    for e in errors {
        if e.line.is_none() {
            if let Some(offset) = locate(text, &e.path) {
                let (l, c) = line_col(text, offset);
                e.line = Some(l);
                e.column = Some(c);
            }
        }
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let column = before
        .rfind('\n')
        .map_or(before.len(), |nl| before.len() - nl - 1)
        + 1;
    (line, column)
}

/// Finds where a key path such as `auth.tokens[1].roles` is written, for the usual layout of
/// `[table]` / `[[array]]` headers and `key = value` lines. Best effort: `None` if not found.
fn locate(text: &str, path: &str) -> Option<usize> {
    let mut parts: Vec<(String, Option<usize>)> = Vec::new();
    for seg in path.split('.') {
        match seg.split_once('[') {
            Some((name, idx)) => {
                parts.push((name.to_owned(), idx.trim_end_matches(']').parse().ok()))
            }
            None => parts.push((seg.to_owned(), None)),
        }
    }
    // The longest prefix of the path that is a table header, then the key inside it.
    let mut header_offset = None;
    let mut header_len = 0;
    for n in (1..=parts.len()).rev() {
        let name: Vec<&str> = parts[..n].iter().map(|(s, _)| s.as_str()).collect();
        let name = name.join(".");
        let want = parts[n - 1].1;
        let mut seen = 0;
        let mut offset = 0;
        for line in text.split_inclusive('\n') {
            let t = line.trim();
            let is_array = t == format!("[[{name}]]");
            if t == format!("[{name}]") || is_array {
                if want.is_none_or(|w| w == seen) {
                    header_offset = Some(offset + (line.len() - line.trim_start().len()));
                    header_len = n;
                    break;
                }
                seen += 1;
            }
            offset += line.len();
        }
        if header_offset.is_some() {
            break;
        }
    }
    let start = header_offset.unwrap_or(0);
    let Some((key, _)) = parts.get(header_len) else {
        return header_offset;
    };
    let mut offset = start;
    for (i, line) in text[start..].split_inclusive('\n').enumerate() {
        let t = line.trim_start();
        if i > 0 && t.starts_with('[') {
            break;
        }
        if let Some(after) = t.strip_prefix(key.as_str()) {
            if after.trim_start().starts_with('=') {
                return Some(offset + (line.len() - t.len()));
            }
        }
        offset += line.len();
    }
    header_offset
}

mod duration_str {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<std::time::Duration, D::Error> {
        let s = String::deserialize(d).map_err(|_: D::Error| {
            serde::de::Error::custom(
                "write a duration as a string with a unit, e.g. \"30s\", \"5m\" or \"30d\"",
            )
        })?;
        crate::time_fmt::parse_duration(&s).map_err(serde::de::Error::custom)
    }

    pub fn serialize<S: Serializer>(v: &std::time::Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*v).to_string())
    }
}

mod size_str {
    use serde::{Deserialize, Deserializer, Serializer};

    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Raw {
        Text(String),
        Number(u64),
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<u64, D::Error> {
        match Raw::deserialize(d)? {
            Raw::Text(s) => crate::time_fmt::parse_size(&s).map_err(serde::de::Error::custom),
            Raw::Number(n) => Ok(n),
        }
    }

    pub fn serialize<S: Serializer>(v: &u64, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(*v)
    }
}

mod opt_size_str {
    use serde::{Deserializer, Serializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
        super::size_str::deserialize(d).map(Some)
    }

    pub fn serialize<S: Serializer>(v: &Option<u64>, s: S) -> Result<S::Ok, S::Error> {
        match v {
            Some(n) => s.serialize_u64(*n),
            None => s.serialize_none(),
        }
    }
}

#[cfg(test)]
mod tests;
