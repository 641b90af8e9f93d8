//! Encoded runs, part of normalisation: base64 (standard and URL-safe), hex and
//! percent-encoded runs of the input are decoded when they decode to text, so the layers read
//! what a model that decodes them would read. Binary (images, hashes, keys) stays as it is.

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine as _;

/// Shortest base64 run tried (18 decoded bytes).
const MIN_BASE64: usize = 24;
/// Shortest hex run tried (10 decoded bytes).
const MIN_HEX: usize = 20;
/// Decoded runs per text.
const MAX_RUNS: usize = 16;

/// How a run was encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encoding {
    /// Base64, standard or URL-safe alphabet.
    Base64,
    /// Hexadecimal digits.
    Hex,
    /// `%XX` escapes.
    Percent,
}

impl Encoding {
    /// Name used in evidence.
    pub fn as_str(self) -> &'static str {
        match self {
            Encoding::Base64 => "base64",
            Encoding::Hex => "hex",
            Encoding::Percent => "percent-encoding",
        }
    }
}

/// A run of the input that decodes to text.
#[derive(Debug)]
pub(crate) struct Decoded {
    /// Byte offset of the run in the input.
    pub at: usize,
    pub encoding: Encoding,
    pub text: String,
}

fn engine(a: &alphabet::Alphabet) -> GeneralPurpose {
    GeneralPurpose::new(
        a,
        GeneralPurposeConfig::new()
            .with_decode_padding_mode(DecodePaddingMode::Indifferent)
            .with_decode_allow_trailing_bits(true),
    )
}

/// `bytes` as text, when they are UTF-8 that reads like prose: printable, with spaces (or
/// letters of a script written without them).
pub(crate) fn as_text(bytes: &[u8]) -> Option<String> {
    let s = std::str::from_utf8(bytes).ok()?;
    let (mut n, mut bad, mut spaces, mut wide) = (0usize, 0usize, 0usize, 0usize);
    for c in s.chars() {
        n += 1;
        if c.is_control() && !matches!(c, '\n' | '\r' | '\t') || c == '\u{fffd}' {
            bad += 1;
        }
        if c.is_whitespace() {
            spaces += 1;
        }
        if !c.is_ascii() && c.is_alphabetic() {
            wide += 1;
        }
    }
    (n >= 8 && bad * 20 <= n && (spaces >= 2 || wide >= 4)).then(|| s.to_owned())
}

fn is_b64(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'+' | b'/' | b'-' | b'_')
}

/// Every encoded run of `text` that decodes to text, at most [`MAX_RUNS`], their decoded
/// length bounded by `budget` bytes in total.
pub(crate) fn decode_runs(text: &str, mut budget: usize) -> Vec<Decoded> {
    let b = text.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() && out.len() < MAX_RUNS && budget > 0 {
        if !is_b64(b[i]) || (i > 0 && is_b64(b[i - 1])) {
            if b[i] == b'%' {
                i = percent_run(text, i, &mut out, &mut budget);
            } else {
                i += 1;
            }
            continue;
        }
        let start = i;
        while i < b.len() && is_b64(b[i]) {
            i += 1;
        }
        let run = &text[start..i];
        while i < b.len() && b[i] == b'=' {
            i += 1;
        }
        if let Some(d) = decode_run(run) {
            budget = budget.saturating_sub(d.1.len());
            out.push(Decoded {
                at: start,
                encoding: d.0,
                text: d.1,
            });
        }
    }
    out
}

fn decode_run(run: &str) -> Option<(Encoding, String)> {
    let hex = run.bytes().all(|c| c.is_ascii_hexdigit());
    if hex && run.len() >= MIN_HEX {
        let even = &run[..run.len() & !1];
        let bytes: Option<Vec<u8>> = (0..even.len())
            .step_by(2)
            .map(|k| u8::from_str_radix(&even[k..k + 2], 16).ok())
            .collect();
        if let Some(t) = bytes.and_then(|v| as_text(&v)) {
            return Some((Encoding::Hex, t));
        }
    }
    if run.len() < MIN_BASE64 {
        return None;
    }
    // Plain words and paths have no digits and no case changes worth decoding.
    let mixed =
        run.bytes().any(|c| c.is_ascii_uppercase()) && run.bytes().any(|c| c.is_ascii_lowercase());
    if !mixed {
        return None;
    }
    let body = &run[..run.len() - usize::from(run.len() % 4 == 1)];
    let url_safe = body.contains(['-', '_']);
    let eng = if url_safe {
        engine(&alphabet::URL_SAFE)
    } else {
        engine(&alphabet::STANDARD)
    };
    let bytes = eng.decode(body).ok()?;
    as_text(&bytes).map(|t| (Encoding::Base64, t))
}

/// Decodes the percent-encoded token starting at `i` (a `%`), returns where scanning goes on.
fn percent_run(text: &str, i: usize, out: &mut Vec<Decoded>, budget: &mut usize) -> usize {
    let b = text.as_bytes();
    let start = text[..i]
        .rfind(|c: char| c.is_whitespace() || matches!(c, '(' | '"' | '\'' | '<' | '['))
        .map_or(0, |p| p + 1);
    let end = text[i..]
        .find(|c: char| c.is_whitespace() || matches!(c, ')' | '"' | '\'' | '>' | ']'))
        .map_or(text.len(), |p| i + p);
    let token = &b[start..end];
    let mut bytes = Vec::with_capacity(token.len());
    let mut escapes = 0;
    let mut k = 0;
    while k < token.len() {
        let hex = token
            .get(k + 1..k + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (token[k], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(v)) => {
                bytes.push(v);
                escapes += 1;
                k += 3;
            }
            (b'+', _) => {
                bytes.push(b' ');
                k += 1;
            }
            (c, _) => {
                bytes.push(c);
                k += 1;
            }
        }
    }
    if escapes >= 3 {
        if let Some(t) = as_text(&bytes) {
            *budget = budget.saturating_sub(t.len());
            out.push(Decoded {
                at: start,
                encoding: Encoding::Percent,
                text: t,
            });
        }
    }
    end.max(i + 1)
}
