//! A read-only view of a tool call's `metadata.parameters`, whichever form capture recorded:
//! the arguments whole, or (over capture's size bound) their shape `{"_truncated": true,
//! "_size": n, "_keys": […], "_sizes": {key: n}}`. Detection and the store's per-user parameter
//! patterns read parameters through it, so both forms mean the same key set and sizes.

use serde_json::{Map, Value};

/// Nesting followed when sizing a value; deeper parts count as nothing.
const MAX_DEPTH: u32 = 32;

/// `metadata.parameters` of a tool event.
#[derive(Debug, Clone, Copy)]
pub enum Params<'a> {
    /// The arguments as the client sent them (redacted).
    Whole(&'a Map<String, Value>),
    /// What capture kept of arguments too big to store.
    Shape {
        /// Serialised bytes of all the arguments.
        size: u64,
        /// The top-level keys, in order.
        keys: &'a [Value],
        /// Serialised bytes per key, when recorded.
        sizes: Option<&'a Map<String, Value>>,
    },
}

impl<'a> Params<'a> {
    /// The view of `v`, if it is an object of arguments or a shape.
    pub fn of(v: &'a Value) -> Option<Params<'a>> {
        let m = v.as_object()?;
        if m.get("_truncated") == Some(&Value::Bool(true)) {
            if let (Some(size), Some(keys)) = (
                m.get("_size").and_then(Value::as_u64),
                m.get("_keys").and_then(Value::as_array),
            ) {
                return Some(Params::Shape {
                    size,
                    keys,
                    sizes: m.get("_sizes").and_then(Value::as_object),
                });
            }
        }
        Some(Params::Whole(m))
    }

    /// The top-level keys (sorted for whole arguments: serde_json maps are ordered).
    pub fn keys(&self) -> impl Iterator<Item = &'a str> + 'a {
        let (whole, shape) = match *self {
            Params::Whole(m) => (Some(m.keys().map(String::as_str)), None),
            Params::Shape { keys, .. } => (None, Some(keys.iter().filter_map(Value::as_str))),
        };
        whole
            .into_iter()
            .flatten()
            .chain(shape.into_iter().flatten())
    }

    /// Each top-level key with the (approximate, for whole arguments) serialised bytes of its
    /// value, and the value itself when it was kept.
    pub fn entries(&self) -> Vec<(&'a str, u64, Option<&'a Value>)> {
        match *self {
            Params::Whole(m) => m
                .iter()
                .map(|(k, v)| (k.as_str(), json_len(v, 0), Some(v)))
                .collect(),
            Params::Shape { keys, sizes, .. } => keys
                .iter()
                .filter_map(Value::as_str)
                .map(|k| {
                    let n = sizes
                        .and_then(|s| s.get(k))
                        .and_then(Value::as_u64)
                        .unwrap_or(0);
                    (k, n, None)
                })
                .collect(),
        }
    }

    /// [`Params::entries`] with the sizes capture measured on the arguments as sent
    /// (`metadata.parameter_sizes`, before redaction shortened anything) where it did.
    pub fn entries_sized(
        &self,
        sizes: Option<&'a Map<String, Value>>,
    ) -> Vec<(&'a str, u64, Option<&'a Value>)> {
        let mut entries = self.entries();
        if let Some(sizes) = sizes {
            for e in &mut entries {
                if let Some(n) = sizes.get(e.0).and_then(Value::as_u64) {
                    e.1 = n;
                }
            }
        }
        entries
    }

    /// Serialised bytes of all the arguments (approximate for whole arguments).
    pub fn size(&self) -> u64 {
        match *self {
            Params::Whole(m) => object_len(m, 0),
            Params::Shape { size, .. } => size,
        }
    }

    /// Whether only the shape was kept.
    pub fn is_shape(&self) -> bool {
        matches!(self, Params::Shape { .. })
    }
}

/// The length of `v` serialised, without serialising it (escapes not counted).
fn json_len(v: &Value, depth: u32) -> u64 {
    if depth > MAX_DEPTH {
        return 0;
    }
    match v {
        Value::Null => 4,
        Value::Bool(b) => 4 + u64::from(!*b),
        Value::Number(n) => n.to_string().len() as u64,
        Value::String(s) => s.len() as u64 + 2,
        Value::Array(a) if a.is_empty() => 2,
        Value::Array(a) => 1 + a.iter().map(|i| json_len(i, depth + 1) + 1).sum::<u64>(),
        Value::Object(m) => object_len(m, depth),
    }
}

fn object_len(m: &Map<String, Value>, depth: u32) -> u64 {
    if m.is_empty() {
        return 2;
    }
    1 + m
        .iter()
        .map(|(k, i)| k.len() as u64 + 4 + json_len(i, depth + 1))
        .sum::<u64>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn whole_and_shape_give_keys_and_sizes() {
        let whole = json!({"path": "/tmp/a", "n": 3});
        let p = Params::of(&whole).expect("an object");
        assert_eq!(p.keys().collect::<Vec<_>>(), ["n", "path"]);
        assert_eq!(p.entries()[1].1, 8, "\"/tmp/a\" is 8 bytes serialised");
        assert_eq!(
            p.size(),
            serde_json::to_vec(&whole).map_or(0, |v| v.len()) as u64
        );
        let shape = json!({"_truncated": true, "_size": 20000, "_keys": ["content", "path"],
                           "_sizes": {"content": 19980, "path": 8}});
        let s = Params::of(&shape).expect("a shape");
        assert!(s.is_shape());
        assert_eq!(s.keys().collect::<Vec<_>>(), ["content", "path"]);
        assert_eq!(s.entries()[0], ("content", 19980, None));
        assert_eq!(s.size(), 20000);
        // Arguments that merely look a bit like a shape are arguments.
        let odd = json!({"_truncated": true, "x": 1});
        assert!(!Params::of(&odd).expect("an object").is_shape());
        assert!(Params::of(&json!("text")).is_none());
    }
}
