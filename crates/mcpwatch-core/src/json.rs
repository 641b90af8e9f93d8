//! Compact JSON output for events and values: byte for byte what `serde_json::to_writer`
//! writes, faster.
//!
//! Every event is serialised at least once on its way in (the collector's stored body, the
//! edge's delivery batch, the spool, the stream), and serde_json's string escaping inspects
//! one byte at a time behind its `io::Write` layer: in the monitor benchmark it was the
//! largest single cost of shipping an event. Here a string is checked eight bytes at a time
//! for the three things JSON must escape (a control character, `"` and `\`) and copied in
//! runs; integers go through the same `itoa` serde_json uses and floats through serde_json itself, and maps in their
//! order, so the output is identical (asserted against serde_json by property tests, on
//! values and on events from the real producers).

use serde_json::{Map, Value};

/// Where JSON goes: a buffer, or a counter when only the length is wanted.
pub trait Out {
    /// Appends `bytes`.
    fn put(&mut self, bytes: &[u8]);
}

impl Out for Vec<u8> {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.extend_from_slice(bytes);
    }
}

/// Counts bytes instead of keeping them: the serialised size of a value without allocating it.
#[derive(Debug, Default, Clone, Copy)]
pub struct Count(pub usize);

impl Out for Count {
    #[inline]
    fn put(&mut self, bytes: &[u8]) {
        self.0 += bytes.len();
    }
}

/// Hands what serde_json writes to an [`Out`].
struct Forward<'a, O: ?Sized>(&'a mut O);

impl<O: Out + ?Sized> std::io::Write for Forward<'_, O> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.put(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// How long `v` is in compact JSON (`serde_json::to_vec(v).len()`), without writing it.
pub fn value_len(v: &Value) -> usize {
    let mut n = Count(0);
    write_value(&mut n, v);
    n.0
}

const LO: u64 = 0x0101_0101_0101_0101;
const HI: u64 = 0x8080_8080_8080_8080;

/// Whether any of the eight bytes of `w` is a control character, `"` or `\`.
#[inline]
fn needs_escape(w: u64) -> bool {
    // The classic "has a byte less than n" and "has a zero byte" tests: exact as booleans.
    let control = w.wrapping_sub(LO * 0x20) & !w;
    let q = w ^ (LO * u64::from(b'"'));
    let quote = q.wrapping_sub(LO) & !q;
    let b = w ^ (LO * u64::from(b'\\'));
    let backslash = b.wrapping_sub(LO) & !b;
    (control | quote | backslash) & HI != 0
}

/// The escape serde_json writes for `c`, if it needs one.
#[inline]
fn escape(c: u8) -> Option<&'static [u8]> {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    const fn unicode(c: u8) -> [u8; 6] {
        [
            b'\\',
            b'u',
            b'0',
            b'0',
            HEX[(c >> 4) as usize],
            HEX[(c & 0xf) as usize],
        ]
    }
    const CONTROLS: [[u8; 6]; 32] = {
        let mut t = [[0u8; 6]; 32];
        let mut i = 0;
        while i < 32 {
            t[i] = unicode(i as u8);
            i += 1;
        }
        t
    };
    match c {
        b'"' => Some(b"\\\""),
        b'\\' => Some(b"\\\\"),
        0x08 => Some(b"\\b"),
        0x09 => Some(b"\\t"),
        0x0a => Some(b"\\n"),
        0x0c => Some(b"\\f"),
        0x0d => Some(b"\\r"),
        0..=0x1f => Some(&CONTROLS[c as usize]),
        _ => None,
    }
}

/// Writes `s` as a JSON string, quoted and escaped.
pub fn write_str(out: &mut impl Out, s: &str) {
    let b = s.as_bytes();
    out.put(b"\"");
    let (mut start, mut i) = (0, 0);
    while i < b.len() {
        if let Some(chunk) = b.get(i..i + 8) {
            let w = u64::from_le_bytes(chunk.try_into().unwrap_or([0; 8]));
            if !needs_escape(w) {
                i += 8;
                continue;
            }
        }
        let end = (i + 8).min(b.len());
        while i < end {
            if let Some(e) = escape(b[i]) {
                out.put(&b[start..i]);
                out.put(e);
                start = i + 1;
            }
            i += 1;
        }
    }
    out.put(&b[start..]);
    out.put(b"\"");
}

/// Writes `v` as compact JSON.
pub fn write_value(out: &mut impl Out, v: &Value) {
    match v {
        Value::Null => out.put(b"null"),
        Value::Bool(true) => out.put(b"true"),
        Value::Bool(false) => out.put(b"false"),
        Value::Number(n) => {
            if let Some(u) = n.as_u64() {
                out.put(itoa::Buffer::new().format(u).as_bytes());
            } else if let Some(i) = n.as_i64() {
                out.put(itoa::Buffer::new().format(i).as_bytes());
            } else {
                // A float: serde_json's own formatter, whichever it uses, so the digits match.
                let _ = serde_json::to_writer(Forward(out), n);
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.put(b"[");
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.put(b",");
                }
                write_value(out, item);
            }
            out.put(b"]");
        }
        Value::Object(map) => write_map(out, map),
    }
}

/// Writes `map` as a compact JSON object, in its order.
pub fn write_map(out: &mut impl Out, map: &Map<String, Value>) {
    out.put(b"{");
    for (i, (k, v)) in map.iter().enumerate() {
        if i > 0 {
            out.put(b",");
        }
        write_str(out, k);
        out.put(b":");
        write_value(out, v);
    }
    out.put(b"}");
}

#[cfg(test)]
mod tests;
