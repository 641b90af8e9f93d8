//! The bounds ingest puts on what a client may write: string sizes, the reserved `source`
//! prefix and how far ahead of the collector's clock a timestamp may be.
//!
//! Redaction truncates string *values* (message, tags, metadata values) before anything is
//! stored; these bounds cover what it does not touch: names that become index keys and
//! Prometheus labels (`category`, `event_type`, `source`, metadata keys at every depth) and the
//! number of tags. Each violation is a [`super::FieldError`] that names the field and the limit.

use std::time::Duration;

use serde_json::{Map, Value};

use super::Ctx;
use crate::event::Timestamp;

/// Longest `category` and `event_type`, in bytes.
pub const MAX_NAME_BYTES: usize = 64;
/// Longest `source`, in bytes.
pub const MAX_SOURCE_BYTES: usize = 256;
/// Longest metadata key at any depth, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Most tags on one event.
pub const MAX_TAGS: usize = 64;
/// Longest tag, in bytes.
pub const MAX_TAG_BYTES: usize = 256;
/// Events whose `source` starts with this (any case) are mcpwatch's own, derived ones; detection
/// does not run on them again, so no client may claim it.
pub const RESERVED_SOURCE_PREFIX: &str = "mcpwatch:";
/// How far ahead of the collector's clock a timestamp may be by default.
pub const DEFAULT_MAX_FUTURE_SKEW: Duration = Duration::from_secs(300);
/// How much of a client-chosen name an error message repeats.
const SHOWN_BYTES: usize = 64;

/// `s` cut to a few dozen bytes (at a character boundary) for an error message or field path.
pub(super) fn shown(s: &str) -> String {
    if s.len() <= SHOWN_BYTES {
        return s.to_owned();
    }
    let mut cut = SHOWN_BYTES;
    while !s.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}… ({} bytes)", &s[..cut], s.len())
}

/// A name that becomes an index key or a label: bounded, and free of control characters.
pub(super) fn check_name(field: &str, s: &str, max: usize, ctx: &mut Ctx<'_>) {
    if s.len() > max {
        ctx.err(
            field,
            format!(
                "is {} bytes, more than the limit of {max}; use a shorter name and put detail under metadata",
                s.len()
            ),
        );
    } else if s.chars().any(char::is_control) {
        ctx.err(field, "must not contain control characters");
    }
}

/// `source`: bounded, and not in mcpwatch's reserved namespace.
pub(super) fn check_source(s: &str, ctx: &mut Ctx<'_>) {
    check_name("source", s, MAX_SOURCE_BYTES, ctx);
    let head = s.trim_start().get(..RESERVED_SOURCE_PREFIX.len());
    if head.is_some_and(|h| h.eq_ignore_ascii_case(RESERVED_SOURCE_PREFIX)) {
        ctx.err(
            "source",
            format!(
                "`{}` is reserved: sources starting with `{RESERVED_SOURCE_PREFIX}` are events mcpwatch derives itself; \
                 use another source, or leave it out to have `api:<token name>` filled in",
                shown(s)
            ),
        );
    }
}

/// The number and size of tags.
pub(super) fn check_tags(tags: &[String], ctx: &mut Ctx<'_>) {
    if tags.len() > MAX_TAGS {
        ctx.err(
            "tags",
            format!("has {} tags, more than the limit of {MAX_TAGS}", tags.len()),
        );
    }
    for (i, t) in tags.iter().enumerate().take(MAX_TAGS) {
        if t.len() > MAX_TAG_BYTES {
            ctx.err(
                &format!("tags[{i}]"),
                format!(
                    "is {} bytes, more than the limit of {MAX_TAG_BYTES}",
                    t.len()
                ),
            );
        }
    }
}

/// Metadata keys at every depth (objects inside arrays too). JSON nesting is already bounded by
/// the parser, so the walk is too; the path is only spelled out for an error.
pub(super) fn check_metadata_keys(metadata: &Map<String, Value>, ctx: &mut Ctx<'_>) {
    let mut path = Vec::new();
    walk_keys(metadata, &mut path, ctx);
}

#[derive(Clone, Copy)]
enum Step<'a> {
    Key(&'a str),
    Index(usize),
}

fn walk_keys<'a>(map: &'a Map<String, Value>, path: &mut Vec<Step<'a>>, ctx: &mut Ctx<'_>) {
    for (key, value) in map {
        path.push(Step::Key(key));
        if key.len() > MAX_KEY_BYTES {
            ctx.err(
                &spell(path),
                format!(
                    "key is {} bytes, more than the limit of {MAX_KEY_BYTES}; use a shorter key",
                    key.len()
                ),
            );
        }
        walk_value(value, path, ctx);
        path.pop();
    }
}

fn walk_value<'a>(value: &'a Value, path: &mut Vec<Step<'a>>, ctx: &mut Ctx<'_>) {
    match value {
        Value::Object(m) => walk_keys(m, path, ctx),
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                if matches!(v, Value::Object(_) | Value::Array(_)) {
                    path.push(Step::Index(i));
                    walk_value(v, path, ctx);
                    path.pop();
                }
            }
        }
        _ => {}
    }
}

fn spell(path: &[Step<'_>]) -> String {
    let mut out = String::from("metadata");
    for step in path {
        match step {
            Step::Key(k) => {
                out.push('.');
                out.push_str(&shown(k));
            }
            Step::Index(i) => out.push_str(&format!("[{i}]")),
        }
    }
    out
}

/// A timestamp no later than `now + skew`.
pub(super) fn check_not_future(ts: Timestamp, now: Timestamp, skew: Duration, ctx: &mut Ctx<'_>) {
    let latest = now.saturating_add(skew);
    if ts > latest {
        ctx.err(
            "timestamp",
            format!(
                "is {ts}, more than {} ahead of the collector's clock ({now}); fix the sender's clock, \
                 or leave timestamp out to have the time of arrival filled in",
                humantime::format_duration(skew)
            ),
        );
    }
}
