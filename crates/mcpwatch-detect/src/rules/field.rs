//! Field paths of the rule language (`category`, `metadata.a.b`, …), resolved once at compile
//! time so that evaluating a rule never matches field names as text.

use std::fmt;

use mcpwatch_core::event::FieldRef;
use mcpwatch_core::Event;
use serde_json::Value;

/// A field of an event, as a rule names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Field {
    /// `id`
    Id,
    /// `level`
    Level,
    /// `category`
    Category,
    /// `source`
    Source,
    /// `event_type`
    EventType,
    /// `message`
    Message,
    /// `tags`
    Tags,
    /// `metadata.a.b`: the path below `metadata`, split at dots.
    Meta(Box<[String]>),
}

/// What a rule author is told when a field name is not one of ours.
pub const FIELD_HELP: &str =
    "fields are category, level, event_type, source, message, tags, id or metadata.<key>[.<key>…]";

impl Field {
    /// Resolves a dotted path; `None` when it names no field.
    pub fn parse(path: &str) -> Option<Field> {
        Some(match path {
            "id" => Field::Id,
            "level" => Field::Level,
            "category" => Field::Category,
            "source" => Field::Source,
            "event_type" => Field::EventType,
            "message" => Field::Message,
            "tags" => Field::Tags,
            _ => {
                let rest = path.strip_prefix("metadata.")?;
                let parts: Vec<String> = rest.split('.').map(str::to_owned).collect();
                if parts.iter().any(String::is_empty) {
                    return None;
                }
                Field::Meta(parts.into_boxed_slice())
            }
        })
    }

    /// The value of this field in `event`, if it has one.
    #[inline]
    pub fn get<'a>(&self, event: &'a Event) -> Option<FieldRef<'a>> {
        Some(match self {
            Field::Id => FieldRef::Str(&event.id),
            Field::Level => FieldRef::Str(event.level.as_str()),
            Field::Category => FieldRef::Str(&event.category),
            Field::Source => FieldRef::Str(&event.source),
            Field::EventType => FieldRef::Str(&event.event_type),
            Field::Message => FieldRef::Str(&event.message),
            Field::Tags => FieldRef::Tags(&event.tags),
            Field::Meta(path) => {
                let (first, rest) = path.split_first()?;
                let mut cur = event.metadata.get(first)?;
                for p in rest {
                    cur = cur.get(p.as_str())?;
                }
                FieldRef::Json(cur)
            }
        })
    }

    /// The value as text for grouping and distinct counting: strings as they are, other
    /// scalars as JSON. `None` when the field is missing or null.
    pub fn text<'a>(&self, event: &'a Event) -> Option<std::borrow::Cow<'a, str>> {
        use std::borrow::Cow;
        match self.get(event)? {
            FieldRef::Str(s) => Some(Cow::Borrowed(s)),
            FieldRef::Tags(t) => Some(Cow::Owned(t.join(","))),
            FieldRef::Json(Value::String(s)) => Some(Cow::Borrowed(s)),
            FieldRef::Json(Value::Null) => None,
            FieldRef::Json(v) => Some(Cow::Owned(v.to_string())),
        }
    }
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = match self {
            Field::Id => "id",
            Field::Level => "level",
            Field::Category => "category",
            Field::Source => "source",
            Field::EventType => "event_type",
            Field::Message => "message",
            Field::Tags => "tags",
            Field::Meta(p) => return write!(f, "metadata.{}", p.join(".")),
        };
        f.write_str(s)
    }
}
