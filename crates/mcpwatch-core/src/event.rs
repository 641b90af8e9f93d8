//! The event: every fact mcpwatch knows is one of these (SPEC section 2).
//!
//! An [`Event`] is what ingest validated and redacted; it is what the store persists, detection
//! reads and the API returns. Incoming JSON becomes an `Event` only through
//! [`crate::validate::parse_batch`], which names every field that is wrong.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::{Map, Value};

use crate::{json, time_fmt};

/// Wall-clock time, microseconds since the Unix epoch, UTC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Timestamp(i64);

/// The latest time an event may carry: 9999-12-31T23:59:59Z.
const MAX_MICROS: i64 = 253_402_300_799_000_000;

impl Timestamp {
    /// From microseconds since the epoch.
    pub const fn from_micros(micros: i64) -> Self {
        Self(micros)
    }

    /// From microseconds, refusing times before 1970 or after 9999.
    pub fn checked_from_micros(micros: i128) -> Result<Self, String> {
        if !(0..=MAX_MICROS as i128).contains(&micros) {
            return Err("timestamp is outside 1970..9999".into());
        }
        Ok(Self(micros as i64))
    }

    /// From Unix seconds as the original's `time.time()` gives them.
    pub fn from_unix_seconds(secs: f64) -> Result<Self, String> {
        if !secs.is_finite() {
            return Err("timestamp is not a finite number".into());
        }
        Self::checked_from_micros((secs * 1e6).round() as i128)
    }

    /// Microseconds since the epoch.
    pub const fn as_micros(self) -> i64 {
        self.0
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> i64 {
        self.0.div_euclid(1_000)
    }

    /// Seconds since the epoch, as a float.
    pub fn as_secs_f64(self) -> f64 {
        self.0 as f64 / 1e6
    }

    /// This time moved back by `d` (saturating at the epoch).
    pub fn saturating_sub(self, d: std::time::Duration) -> Self {
        Self(self.0.saturating_sub(micros_of(d)).max(0))
    }

    /// This time moved forward by `d` (saturating, so `Duration::MAX` means "any time").
    pub fn saturating_add(self, d: std::time::Duration) -> Self {
        Self(self.0.saturating_add(micros_of(d)))
    }
}

/// `d` in microseconds, saturating rather than wrapping for huge durations.
fn micros_of(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_micros()).unwrap_or(i64::MAX)
}

impl fmt::Display for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(time_fmt::Rfc3339Buf::new(*self).as_str())
    }
}

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(time_fmt::Rfc3339Buf::new(*self).as_str())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = Value::deserialize(d)?;
        Timestamp::from_json(&v).map_err(serde::de::Error::custom)
    }
}

impl Timestamp {
    /// From JSON: an RFC 3339 string or Unix seconds as a number.
    pub fn from_json(v: &Value) -> Result<Self, String> {
        match v {
            Value::String(s) => time_fmt::parse_rfc3339(s),
            Value::Number(n) => Timestamp::from_unix_seconds(n.as_f64().unwrap_or(f64::NAN)),
            _ => Err("expected an RFC 3339 string or Unix seconds as a number".into()),
        }
    }
}

/// How bad an event is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    /// Detail for debugging.
    Debug,
    /// Normal operation.
    Info,
    /// Something to look at.
    Warning,
    /// Something failed.
    Error,
    /// Something needs a person now.
    Critical,
}

impl Level {
    /// Every level, least severe first.
    pub const ALL: [Level; 5] = [
        Level::Debug,
        Level::Info,
        Level::Warning,
        Level::Error,
        Level::Critical,
    ];

    /// The name as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warning => "warning",
            Level::Error => "error",
            Level::Critical => "critical",
        }
    }

    /// Parses a level name.
    pub fn parse(s: &str) -> Option<Level> {
        Level::ALL.into_iter().find(|l| l.as_str() == s)
    }

    /// A small integer that orders levels; what the store keeps.
    pub fn rank(self) -> i64 {
        self as i64
    }

    /// The level of a rank, if it is one.
    pub fn from_rank(rank: i64) -> Option<Level> {
        Level::ALL.get(usize::try_from(rank).ok()?).copied()
    }
}

/// How a tool execution or request ended (SPEC section 2). `success` only for `Success`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// The call returned a result without `isError`.
    Success,
    /// The result had `isError: true`: the tool ran and failed.
    ToolError,
    /// A JSON-RPC error answered the request.
    RpcError,
    /// Policy refused the call.
    Denied,
    /// `notifications/cancelled` ended the request.
    Cancelled,
    /// No response arrived in time.
    Timeout,
    /// The server died or the connection was lost.
    TransportError,
}

impl Outcome {
    /// Every outcome.
    pub const ALL: [Outcome; 7] = [
        Outcome::Success,
        Outcome::ToolError,
        Outcome::RpcError,
        Outcome::Denied,
        Outcome::Cancelled,
        Outcome::Timeout,
        Outcome::TransportError,
    ];

    /// The name as written in JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::ToolError => "tool_error",
            Outcome::RpcError => "rpc_error",
            Outcome::Denied => "denied",
            Outcome::Cancelled => "cancelled",
            Outcome::Timeout => "timeout",
            Outcome::TransportError => "transport_error",
        }
    }

    /// Parses an outcome name.
    pub fn parse(s: &str) -> Option<Outcome> {
        Outcome::ALL.into_iter().find(|o| o.as_str() == s)
    }
}

/// The categories SPEC section 2 names; others are accepted as custom events.
pub const KNOWN_CATEGORIES: [&str; 7] = [
    "tool_execution",
    "security",
    "performance",
    "anomaly",
    "security_alert",
    "session",
    "system",
];

/// One monitoring event, validated and redacted.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// Time-ordered id (UUIDv7 when assigned by mcpwatch).
    pub id: String,
    /// When it happened, UTC.
    pub timestamp: Timestamp,
    /// How bad it is.
    pub level: Level,
    /// `tool_execution`, `security`, … or a custom category.
    pub category: String,
    /// Where it came from, e.g. `wrap:filesystem` or `api`.
    pub source: String,
    /// What kind of fact it is within its category, e.g. `execution_complete`.
    pub event_type: String,
    /// A sentence for people.
    #[serde(default)]
    pub message: String,
    /// Structured detail; required keys depend on category and event type.
    #[serde(default)]
    pub metadata: Map<String, Value>,
    /// Free-form labels.
    #[serde(default)]
    pub tags: Vec<String>,
}

impl Event {
    /// Appends the event as compact JSON: what `serde_json::to_writer(out, self)` writes,
    /// faster (see [`crate::json`]).
    pub fn write_json(&self, out: &mut impl json::Out) {
        use json::write_str;
        out.put(b"{\"id\":");
        write_str(out, &self.id);
        out.put(b",\"timestamp\":");
        write_str(out, time_fmt::Rfc3339Buf::new(self.timestamp).as_str());
        out.put(b",\"level\":");
        write_str(out, self.level.as_str());
        out.put(b",\"category\":");
        write_str(out, &self.category);
        out.put(b",\"source\":");
        write_str(out, &self.source);
        out.put(b",\"event_type\":");
        write_str(out, &self.event_type);
        out.put(b",\"message\":");
        write_str(out, &self.message);
        out.put(b",\"metadata\":");
        json::write_map(out, &self.metadata);
        out.put(b",\"tags\":[");
        for (i, t) in self.tags.iter().enumerate() {
            if i > 0 {
                out.put(b",");
            }
            write_str(out, t);
        }
        out.put(b"]}");
    }

    fn meta_str(&self, key: &str) -> Option<&str> {
        self.metadata.get(key).and_then(Value::as_str)
    }

    /// `metadata.server`.
    pub fn server(&self) -> Option<&str> {
        self.meta_str("server")
    }

    /// `metadata.tool_name`.
    pub fn tool(&self) -> Option<&str> {
        self.meta_str("tool_name")
    }

    /// `metadata.user_id`.
    pub fn user(&self) -> Option<&str> {
        self.meta_str("user_id")
    }

    /// `metadata.session_id`.
    pub fn session(&self) -> Option<&str> {
        self.meta_str("session_id")
    }

    /// `metadata.outcome`, when it names a known outcome.
    pub fn outcome(&self) -> Option<Outcome> {
        self.meta_str("outcome").and_then(Outcome::parse)
    }

    /// `metadata.execution_time` (or `response_time`) in seconds.
    pub fn duration_secs(&self) -> Option<f64> {
        self.metadata
            .get("execution_time")
            .or_else(|| self.metadata.get("response_time"))
            .and_then(Value::as_f64)
    }

    /// Whether this is a completed tool execution, the event tool statistics count.
    pub fn is_execution_complete(&self) -> bool {
        self.category == "tool_execution" && self.event_type == "execution_complete"
    }

    /// A field by the path rules and filters use: `category`, `metadata.a.b`, …
    pub fn field(&self, path: &str) -> Option<FieldRef<'_>> {
        match path {
            "id" => Some(FieldRef::Str(&self.id)),
            "level" => Some(FieldRef::Str(self.level.as_str())),
            "category" => Some(FieldRef::Str(&self.category)),
            "source" => Some(FieldRef::Str(&self.source)),
            "event_type" => Some(FieldRef::Str(&self.event_type)),
            "message" => Some(FieldRef::Str(&self.message)),
            "tags" => Some(FieldRef::Tags(&self.tags)),
            _ => {
                let rest = path.strip_prefix("metadata.")?;
                let mut parts = rest.split('.');
                let mut cur = self.metadata.get(parts.next()?)?;
                for p in parts {
                    cur = cur.get(p)?;
                }
                Some(FieldRef::Json(cur))
            }
        }
    }
}

/// A borrowed view of one field of an event.
#[derive(Debug, Clone, Copy)]
pub enum FieldRef<'a> {
    /// A top-level string field.
    Str(&'a str),
    /// The tags.
    Tags(&'a [String]),
    /// A metadata value.
    Json(&'a Value),
}
