//! From request bodies to validated events (SPEC sections 2 and 4.4).
//!
//! A body is one JSON object, a JSON array of them, or NDJSON. Every event is checked against
//! the table of known event types; every problem is reported as a [`FieldError`] naming the
//! event's index and the field, and a batch with any problem is rejected whole. The sizes and
//! namespaces a client may use are bounded in [`bounds`].

use std::time::Duration;

use serde::Serialize;
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::event::{Event, Level, Outcome, Timestamp};
use crate::ids::IdGenerator;

pub mod bounds;
pub mod identity;

/// One thing wrong with one event of a batch.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// Position of the event in the batch (line number minus one for NDJSON).
    pub index: usize,
    /// The field, e.g. `metadata.user_id`; empty when the event as a whole is wrong.
    pub field: String,
    /// What is wrong and what to write instead.
    pub message: String,
}

/// Why a body was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    /// The body is not readable as events at all.
    #[error("{0}")]
    Body(String),
    /// Some events are invalid; none was accepted.
    #[error("{} invalid field(s) in the batch", .0.len())]
    Fields(Vec<FieldError>),
    /// More events than one batch may hold (a size problem, like a body over the byte limit).
    #[error("the batch has {events} events, more than the limit of {limit}; split it into smaller batches")]
    TooManyEvents {
        /// Events in the batch.
        events: usize,
        /// The most one batch may hold.
        limit: usize,
    },
}

/// How the body is framed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFormat {
    /// One JSON object or a JSON array of objects.
    Json,
    /// One JSON object per line.
    Ndjson,
}

/// What ingest fills in where an event leaves it out.
pub struct Defaults<'a> {
    /// Assigns ids to events that have none.
    pub ids: &'a IdGenerator,
    /// Stamps events that have no timestamp.
    pub clock: &'a dyn Clock,
    /// `source` for events that have none (e.g. `api:<token name>`).
    pub source: &'a str,
    /// The most events one batch may hold.
    pub max_events: usize,
    /// How far past `clock` an event's timestamp may be; later ones are refused.
    pub max_future_skew: Duration,
}

/// Parses and validates a whole body. All or nothing.
pub fn parse_batch(
    body: &[u8],
    format: BodyFormat,
    defaults: &Defaults<'_>,
) -> Result<Vec<Event>, BatchError> {
    let text = std::str::from_utf8(body).map_err(|e| {
        BatchError::Body(format!(
            "body is not valid UTF-8 (first bad byte at offset {}); send UTF-8 JSON",
            e.valid_up_to()
        ))
    })?;
    let values = match format {
        BodyFormat::Json => split_json(text)?,
        BodyFormat::Ndjson => split_ndjson(text)?,
    };
    if values.is_empty() {
        return Err(BatchError::Body(
            "the batch is empty; send at least one event".into(),
        ));
    }
    if values.len() > defaults.max_events {
        return Err(BatchError::TooManyEvents {
            events: values.len(),
            limit: defaults.max_events,
        });
    }
    let now = defaults.clock.now();
    let mut errors = Vec::new();
    let mut unlisted = 0;
    let mut events = Vec::with_capacity(values.len());
    // A batch of a thousand events is milliseconds of work: short bursts (see `crate::pace`).
    let mut pacer = crate::pace::Pacer::new();
    for (index, item) in values.into_iter().enumerate() {
        pacer.step();
        let mut ctx = Ctx {
            index,
            failed: false,
            errors: &mut errors,
            unlisted: &mut unlisted,
        };
        if let Some(ev) = event_from_value(item, &mut ctx, now, defaults) {
            events.push(ev);
        }
    }
    if unlisted > 0 {
        errors.push(FieldError {
            index: errors.last().map_or(0, |e| e.index),
            field: String::new(),
            message: format!("and {unlisted} more problem(s) not listed; fix these and send again"),
        });
    }
    if errors.is_empty() {
        Ok(events)
    } else {
        Err(BatchError::Fields(errors))
    }
}

/// The most problems one answer lists, so a body of many small mistakes cannot make an answer
/// many times its own size.
pub const MAX_LISTED_ERRORS: usize = 100;

fn json_error(e: &serde_json::Error, what: &str) -> BatchError {
    let hint = if e.to_string().contains("recursion limit") {
        "nesting is too deep (at most 128 levels)".to_string()
    } else {
        e.to_string()
    };
    BatchError::Body(format!("{what} is not valid JSON: {hint}"))
}

fn split_json(text: &str) -> Result<Vec<Item>, BatchError> {
    use serde::Deserializer as _;
    let mut de = serde_json::Deserializer::from_str(text);
    let parsed = de
        .deserialize_any(PacedBatch)
        .and_then(|items| de.end().map(|()| items));
    match parsed {
        Ok(items) => Ok(items),
        // Valid JSON of another type at the top level (every value below it is accepted).
        Err(e) if e.classify() == serde_json::error::Category::Data => Err(BatchError::Body(
            "expected an event object or an array of event objects".into(),
        )),
        Err(e) => Err(json_error(&e, "body")),
    }
}

/// Reads the body's top level: an array of values, paced element by element (a thousand-event
/// body is milliseconds of parsing, see `crate::pace`), or one object.
struct PacedBatch;

impl<'de> serde::de::Visitor<'de> for PacedBatch {
    type Value = Vec<Item>;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event object or an array of event objects")
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut pacer = crate::pace::Pacer::new();
        let mut items = Vec::new();
        while let Some(v) = seq.next_element::<Item>()? {
            items.push(v);
            pacer.step();
        }
        Ok(items)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
        Ok(vec![ItemVisitor.visit_map(map)?])
    }
}

fn split_ndjson(text: &str) -> Result<Vec<Item>, BatchError> {
    let mut out = Vec::new();
    for (n, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let v = serde_json::from_str::<Item>(line)
            .map_err(|e| json_error(&e, &format!("line {}", n + 1)))?;
        out.push(v);
    }
    Ok(out)
}

/// One element of a batch as read from the body: an object's top-level fields, each kept as
/// the JSON it was, or anything else (refused later with its index). Read straight from the
/// text rather than through a `Value` map: the nine field names are matched, not allocated
/// and looked up again.
enum Item {
    Object(Box<Fields>),
    NotObject,
}

/// The top-level fields of one event object, in [`TOP_LEVEL`]'s order; a field given twice
/// keeps the last value, as a JSON object read into a map would.
#[derive(Default)]
struct Fields {
    known: [Option<Value>; TOP_LEVEL.len()],
    /// Names outside [`TOP_LEVEL`], each refused by name.
    unknown: Vec<String>,
}

impl<'de> serde::Deserialize<'de> for Item {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ItemVisitor)
    }
}

struct ItemVisitor;

impl<'de> serde::de::Visitor<'de> for ItemVisitor {
    type Value = Item;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("an event object")
    }

    fn visit_bool<E>(self, _: bool) -> Result<Item, E> {
        Ok(Item::NotObject)
    }

    fn visit_i64<E>(self, _: i64) -> Result<Item, E> {
        Ok(Item::NotObject)
    }

    fn visit_u64<E>(self, _: u64) -> Result<Item, E> {
        Ok(Item::NotObject)
    }

    fn visit_f64<E>(self, _: f64) -> Result<Item, E> {
        Ok(Item::NotObject)
    }

    fn visit_str<E>(self, _: &str) -> Result<Item, E> {
        Ok(Item::NotObject)
    }

    fn visit_unit<E>(self) -> Result<Item, E> {
        Ok(Item::NotObject)
    }

    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Item, A::Error> {
        // Read as values, not skipped: the nesting limit holds for what is refused too.
        while seq.next_element::<Value>()?.is_some() {}
        Ok(Item::NotObject)
    }

    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Item, A::Error> {
        let mut fields = Box::<Fields>::default();
        while let Some(key) = map.next_key::<Key>()? {
            match key {
                Key::Known(i) => fields.known[i] = Some(map.next_value()?),
                Key::Unknown(name) => {
                    map.next_value::<Value>()?;
                    fields.unknown.push(name);
                }
            }
        }
        Ok(Item::Object(fields))
    }
}

/// A top-level field name: its position in [`TOP_LEVEL`], or the name itself when unknown.
enum Key {
    Known(usize),
    Unknown(String),
}

impl<'de> serde::Deserialize<'de> for Key {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl serde::de::Visitor<'_> for KeyVisitor {
            type Value = Key;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a field name")
            }

            fn visit_str<E>(self, k: &str) -> Result<Key, E> {
                Ok(match TOP_LEVEL.iter().position(|t| *t == k) {
                    Some(i) => Key::Known(i),
                    None => Key::Unknown(k.to_owned()),
                })
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

struct Ctx<'e> {
    index: usize,
    /// Whether this event had a problem.
    failed: bool,
    errors: &'e mut Vec<FieldError>,
    /// Problems beyond [`MAX_LISTED_ERRORS`], counted only.
    unlisted: &'e mut usize,
}

impl Ctx<'_> {
    fn err(&mut self, field: &str, message: impl Into<String>) {
        self.failed = true;
        if self.errors.len() >= MAX_LISTED_ERRORS {
            *self.unlisted += 1;
            return;
        }
        self.errors.push(FieldError {
            index: self.index,
            field: field.into(),
            message: message.into(),
        });
    }
}

const TOP_LEVEL: [&str; 9] = [
    "id",
    "timestamp",
    "level",
    "category",
    "source",
    "event_type",
    "message",
    "metadata",
    "tags",
];

fn event_from_value(
    item: Item,
    ctx: &mut Ctx<'_>,
    now: Timestamp,
    d: &Defaults<'_>,
) -> Option<Event> {
    let Item::Object(obj) = item else {
        ctx.err("", "expected an event object");
        return None;
    };
    let Fields {
        known: [id, timestamp, level, category, source, event_type, message, metadata, tags],
        mut unknown,
    } = *obj;
    unknown.sort_unstable();
    unknown.dedup();
    for key in &unknown {
        let key = bounds::shown(key);
        ctx.err(
            &key,
            format!(
                "unknown field `{key}`; known fields are {}; put custom data under metadata",
                TOP_LEVEL.join(", ")
            ),
        );
    }
    let id = match id {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 128 => Some(s),
        Some(_) => {
            ctx.err("id", "expected a non-empty string of at most 128 characters, or leave it out to have one assigned");
            None
        }
    };
    let timestamp = match timestamp {
        None | Some(Value::Null) => now,
        Some(v) => match Timestamp::from_json(&v) {
            Ok(ts) => {
                bounds::check_not_future(ts, now, d.max_future_skew, ctx);
                ts
            }
            Err(m) => {
                ctx.err("timestamp", m);
                now
            }
        },
    };
    let level = match level {
        None | Some(Value::Null) => Level::Info,
        Some(Value::String(s)) if Level::parse(&s).is_some() => {
            Level::parse(&s).unwrap_or(Level::Info)
        }
        Some(_) => {
            ctx.err(
                "level",
                "expected one of debug, info, warning, error, critical",
            );
            Level::Info
        }
    };
    let category = required_string(category, "category", ctx);
    let event_type = required_string(event_type, "event_type", ctx);
    for (field, name) in [("category", &category), ("event_type", &event_type)] {
        if let Some(name) = name {
            bounds::check_name(field, name, bounds::MAX_NAME_BYTES, ctx);
        }
    }
    let source = match optional_string(source, "source", ctx) {
        Some(s) => {
            bounds::check_source(&s, ctx);
            s
        }
        None => d.source.to_owned(),
    };
    let message = optional_string(message, "message", ctx).unwrap_or_default();
    let metadata = match metadata {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(m)) => {
            bounds::check_metadata_keys(&m, ctx);
            m
        }
        Some(_) => {
            ctx.err("metadata", "expected an object");
            Map::new()
        }
    };
    let tags = match tags {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            let mut tags = Vec::with_capacity(items.len());
            for (i, t) in items.into_iter().enumerate() {
                match t {
                    Value::String(s) => tags.push(s),
                    _ => ctx.err(&format!("tags[{i}]"), "expected a string"),
                }
            }
            tags
        }
        Some(_) => {
            ctx.err("tags", "expected an array of strings");
            Vec::new()
        }
    };
    bounds::check_tags(&tags, ctx);
    let mut event = Event {
        id: String::new(),
        timestamp,
        level,
        category: category.unwrap_or_default(),
        source,
        event_type: event_type.unwrap_or_default(),
        message,
        metadata,
        tags,
    };
    check_known_type(&mut event, ctx);
    if ctx.failed {
        return None;
    }
    event.id = id.unwrap_or_else(|| d.ids.next(timestamp));
    Some(event)
}

fn required_string(value: Option<Value>, key: &str, ctx: &mut Ctx<'_>) -> Option<String> {
    match value {
        Some(Value::String(s)) if !s.is_empty() => Some(s),
        None | Some(Value::Null) => {
            ctx.err(key, "required field is missing");
            None
        }
        Some(_) => {
            ctx.err(key, "expected a non-empty string");
            None
        }
    }
}

fn optional_string(value: Option<Value>, key: &str, ctx: &mut Ctx<'_>) -> Option<String> {
    match value {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) => Some(s),
        Some(_) => {
            ctx.err(key, "expected a string");
            None
        }
    }
}

/// The type a metadata field must have.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Num,
    NonNegNum,
    Bool,
    OneOf(&'static [&'static str]),
}

impl Kind {
    fn check(self, v: &Value) -> Result<(), String> {
        let ok = match self {
            Kind::Str => v.is_string(),
            Kind::Num => v.is_number(),
            Kind::NonNegNum => v.as_f64().is_some_and(|n| n >= 0.0),
            Kind::Bool => v.is_boolean(),
            Kind::OneOf(options) => v.as_str().is_some_and(|s| options.contains(&s)),
        };
        if ok {
            return Ok(());
        }
        Err(match self {
            Kind::Str => "expected a string".into(),
            Kind::Num => "expected a number".into(),
            Kind::NonNegNum => "expected a number of seconds, zero or more".into(),
            Kind::Bool => "expected true or false".into(),
            Kind::OneOf(options) => format!("expected one of {}", options.join(", ")),
        })
    }
}

const OUTCOMES: &[&str] = &[
    "success",
    "tool_error",
    "rpc_error",
    "denied",
    "cancelled",
    "timeout",
    "transport_error",
];

/// A known event type and the metadata it must carry.
struct KnownType {
    category: &'static str,
    event_type: &'static str,
    required: &'static [(&'static str, Kind)],
    optional: &'static [(&'static str, Kind)],
}

const KNOWN_TYPES: &[KnownType] = &[
    KnownType {
        category: "security",
        event_type: "authentication",
        required: &[
            ("user_id", Kind::Str),
            ("result", Kind::OneOf(&["success", "failure"])),
        ],
        optional: &[("ip_address", Kind::Str), ("user_agent", Kind::Str)],
    },
    KnownType {
        category: "security",
        event_type: "authorization",
        required: &[
            ("user_id", Kind::Str),
            ("resource", Kind::Str),
            ("action", Kind::Str),
            ("result", Kind::OneOf(&["allowed", "denied"])),
        ],
        optional: &[],
    },
    KnownType {
        category: "security",
        event_type: "data_access",
        required: &[
            ("user_id", Kind::Str),
            ("data_type", Kind::Str),
            ("operation", Kind::Str),
        ],
        optional: &[
            ("data_classification", Kind::Str),
            ("data_volume", Kind::NonNegNum),
        ],
    },
    KnownType {
        category: "tool_execution",
        event_type: "execution_start",
        required: &[
            ("execution_id", Kind::Str),
            ("tool_name", Kind::Str),
            ("user_id", Kind::Str),
        ],
        optional: &[("server", Kind::Str), ("session_id", Kind::Str)],
    },
    KnownType {
        category: "tool_execution",
        event_type: "execution_complete",
        required: &[
            ("execution_id", Kind::Str),
            ("tool_name", Kind::Str),
            ("user_id", Kind::Str),
            ("execution_time", Kind::NonNegNum),
            ("success", Kind::Bool),
        ],
        optional: &[
            ("outcome", Kind::OneOf(OUTCOMES)),
            ("server", Kind::Str),
            ("session_id", Kind::Str),
        ],
    },
    KnownType {
        category: "performance",
        event_type: "request_performance",
        required: &[
            ("request_id", Kind::Str),
            ("response_time", Kind::NonNegNum),
            ("success", Kind::Bool),
        ],
        optional: &[],
    },
    KnownType {
        category: "performance",
        event_type: "system_performance",
        required: &[("metric_name", Kind::Str), ("value", Kind::Num)],
        optional: &[],
    },
];

fn check_known_type(event: &mut Event, ctx: &mut Ctx<'_>) {
    let Some(known) = KNOWN_TYPES
        .iter()
        .find(|k| k.category == event.category && k.event_type == event.event_type)
    else {
        return;
    };
    for (key, kind) in known.required {
        match event.metadata.get(*key) {
            None | Some(Value::Null) => ctx.err(
                &format!("metadata.{key}"),
                format!("required for {}/{}", known.category, known.event_type),
            ),
            Some(v) => {
                if let Err(m) = kind.check(v) {
                    ctx.err(&format!("metadata.{key}"), m);
                }
            }
        }
    }
    for (key, kind) in known.optional {
        if let Some(v) = event.metadata.get(*key).filter(|v| !v.is_null()) {
            if let Err(m) = kind.check(v) {
                ctx.err(&format!("metadata.{key}"), m);
            }
        }
    }
    if known.event_type == "execution_complete" {
        reconcile_outcome(event, ctx);
    }
}

/// `success` is true exactly when `outcome` is `success`; a missing outcome is derived.
fn reconcile_outcome(event: &mut Event, ctx: &mut Ctx<'_>) {
    let Some(success) = event.metadata.get("success").and_then(Value::as_bool) else {
        return;
    };
    match event
        .metadata
        .get("outcome")
        .and_then(Value::as_str)
        .and_then(Outcome::parse)
    {
        Some(outcome) if (outcome == Outcome::Success) != success => ctx.err(
            "metadata.success",
            format!(
                "is {success} but outcome is {}; success is true only when outcome is success",
                outcome.as_str()
            ),
        ),
        Some(_) => {}
        None => {
            let derived = if success {
                Outcome::Success
            } else {
                Outcome::ToolError
            };
            event
                .metadata
                .insert("outcome".into(), Value::String(derived.as_str().into()));
        }
    }
}

#[cfg(test)]
mod tests;
