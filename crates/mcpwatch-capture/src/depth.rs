//! JSON nested past what the monitor parses: measured, and read as far as it can be.
//!
//! `serde_json` stops at 128 levels of nesting, so a `tools/call` whose arguments nest deeper
//! is no JSON to it, although the server (with a parser of its own) may execute it. Hiding a
//! call that way is an evasion: [`parse_cut`] reads such a frame anyway, down to
//! [`CUT_DEPTH`] levels, and replaces each subtree below with a [`cut_marker`] that keeps the
//! strings found in it (bounded), so the call is recorded with its method, tool name and
//! whatever it carried, and signatures such as `path_traversal` still see the strings. The
//! gateway uses [`exceeds`] to refuse what its policy and monitor cannot judge.
//!
//! Nothing here recurses on the input's depth beyond [`CUT_DEPTH`]: the subtree below is taken
//! as raw text (which `serde_json` skips without recursion) and scanned in one loop.

use std::cell::Cell;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::value::RawValue;
use serde_json::{json, Map, Value};

/// Levels of nesting `serde_json` reads (its recursion limit is 128: the 128th `[` or `{`
/// fails). A message that nests deeper cannot be parsed by the monitor in one piece.
pub const MAX_READABLE_DEPTH: usize = 127;
/// Depth at which [`parse_cut`] stops building values and keeps a subtree's strings instead;
/// below `serde_json`'s limit, so the cut subtree is where the parse stops recursing.
pub const CUT_DEPTH: usize = 64;
/// Strings a cut marker keeps at most, per frame.
pub const MAX_CUT_STRINGS: usize = 64;
/// Bytes of strings a cut marker keeps at most, per frame.
pub const MAX_CUT_STRING_BYTES: usize = 16 * 1024;

/// Whether `bytes` (JSON) nest deeper than `limit` levels of arrays and objects. One pass, no
/// recursion; brackets inside strings do not count.
pub fn exceeds(bytes: &[u8], limit: usize) -> bool {
    max_depth(bytes) > limit
}

/// The deepest nesting of arrays and objects in `bytes`, outside strings.
pub fn max_depth(bytes: &[u8]) -> usize {
    let (mut depth, mut max, mut in_string, mut escaped) = (0usize, 0usize, false, false);
    for &b in bytes {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// What a parse that cut subtrees found.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Cut {
    /// Subtrees replaced by a marker.
    pub subtrees: usize,
    /// Strings kept in the markers.
    pub strings: usize,
    /// Whether strings were left out because the markers' bounds were reached.
    pub strings_dropped: bool,
}

/// Parses `text` as JSON, replacing every array or object deeper than [`CUT_DEPTH`] with a
/// [`cut_marker`]. Fails only where the text is not JSON.
pub fn parse_cut(text: &str) -> Result<(Value, Cut), serde_json::Error> {
    let budget = Budget::default();
    let mut de = serde_json::Deserializer::from_str(text);
    let value = Node {
        depth: 0,
        budget: &budget,
    }
    .deserialize(&mut de)?;
    de.end()?;
    Ok((value, budget.into_cut()))
}

/// The value that stands for a cut subtree: `{"_nesting_cut": true, "_depth": CUT_DEPTH,
/// "_bytes": its size, "_strings": [strings found in it]}`.
pub fn cut_marker(bytes: usize, strings: Vec<Value>) -> Value {
    let mut m = Map::new();
    m.insert("_nesting_cut".into(), Value::Bool(true));
    m.insert("_depth".into(), json!(CUT_DEPTH));
    m.insert("_bytes".into(), json!(bytes));
    m.insert("_strings".into(), Value::Array(strings));
    Value::Object(m)
}

/// What the markers of one parse may still keep.
#[derive(Default)]
struct Budget {
    subtrees: Cell<usize>,
    strings: Cell<usize>,
    bytes: Cell<usize>,
    dropped: Cell<bool>,
}

impl Budget {
    fn into_cut(self) -> Cut {
        Cut {
            subtrees: self.subtrees.get(),
            strings: self.strings.get(),
            strings_dropped: self.dropped.get(),
        }
    }

    /// The strings of a raw JSON subtree, as far as the budget allows.
    fn strings_of(&self, raw: &str) -> Vec<Value> {
        let mut out = Vec::new();
        let bytes = raw.as_bytes();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] != b'"' {
                i += 1;
                continue;
            }
            let start = i;
            i += 1;
            while i < bytes.len() && bytes[i] != b'"' {
                i += if bytes[i] == b'\\' { 2 } else { 1 };
            }
            let end = (i + 1).min(bytes.len());
            i = end;
            let Ok(s) = serde_json::from_str::<String>(&raw[start..end]) else {
                continue;
            };
            if self.strings.get() >= MAX_CUT_STRINGS
                || self.bytes.get() + s.len() > MAX_CUT_STRING_BYTES
            {
                self.dropped.set(true);
                break;
            }
            self.strings.set(self.strings.get() + 1);
            self.bytes.set(self.bytes.get() + s.len());
            out.push(Value::String(s));
        }
        out
    }
}

/// One value at `depth`.
struct Node<'b> {
    depth: usize,
    budget: &'b Budget,
}

impl<'de> DeserializeSeed<'de> for Node<'_> {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        if self.depth >= CUT_DEPTH {
            // Taken whole as text: `serde_json` skips a value without recursing.
            let raw: &RawValue = serde::Deserialize::deserialize(d)?;
            let raw = raw.get();
            if !raw.starts_with(['[', '{']) {
                return serde_json::from_str(raw).map_err(serde::de::Error::custom);
            }
            self.budget.subtrees.set(self.budget.subtrees.get() + 1);
            return Ok(cut_marker(raw.len(), self.budget.strings_of(raw)));
        }
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Node<'_> {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(json!(v))
    }

    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(json!(v))
    }

    fn visit_f64<E>(self, v: f64) -> Result<Value, E> {
        Ok(json!(v))
    }

    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_owned()))
    }

    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(v) = seq.next_element_seed(self.child())? {
            items.push(v);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut m = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(self.child())?;
            m.insert(k, v);
        }
        Ok(Value::Object(m))
    }
}

impl<'b> Node<'b> {
    fn child(&self) -> Node<'b> {
        Node {
            depth: self.depth + 1,
            budget: self.budget,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested(levels: usize, inner: &str) -> String {
        format!("{}{inner}{}", "[".repeat(levels), "]".repeat(levels))
    }

    #[test]
    fn the_readable_depth_is_where_serde_json_stops() {
        let ok = nested(MAX_READABLE_DEPTH, "1");
        let too_deep = nested(MAX_READABLE_DEPTH + 1, "1");
        assert!(serde_json::from_str::<Value>(&ok).is_ok());
        assert!(serde_json::from_str::<Value>(&too_deep).is_err());
        assert!(!exceeds(ok.as_bytes(), MAX_READABLE_DEPTH));
        assert!(exceeds(too_deep.as_bytes(), MAX_READABLE_DEPTH));
        // Brackets in strings are text.
        assert_eq!(max_depth(br#"{"a":"[[[[\"{{{"}"#), 1);
    }

    #[test]
    fn deep_subtrees_become_markers_that_keep_their_strings() {
        let text = format!(
            r#"{{"name":"read","arguments":{{"path":{}}}}}"#,
            nested(5000, r#""../../etc/passwd""#)
        );
        let (v, cut) = parse_cut(&text).expect("JSON");
        assert_eq!(v["name"], json!("read"));
        assert_eq!(cut.subtrees, 1);
        let mut marker = &v["arguments"]["path"];
        for _ in 0..CUT_DEPTH - 2 {
            marker = &marker[0];
        }
        assert_eq!(marker["_nesting_cut"], json!(true), "{marker}");
        assert_eq!(marker["_strings"], json!(["../../etc/passwd"]));
    }

    #[test]
    fn markers_are_bounded_and_bad_json_still_fails() {
        let many: Vec<String> = (0..500).map(|i| format!("\"s{i}\"")).collect();
        let text = nested(CUT_DEPTH + 3, &many.join(","));
        let (_, cut) = parse_cut(&text).expect("JSON");
        assert_eq!(cut.strings, MAX_CUT_STRINGS);
        assert!(cut.strings_dropped);
        assert!(parse_cut(&nested(300, "")[1..]).is_err());
        assert!(parse_cut("[1] x").is_err());
    }
}
