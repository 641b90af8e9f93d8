//! Text from traffic, made safe for a channel. Every user id, tool name, server name and
//! description in an alert may be chosen by an attacker, so a channel renders it through these
//! helpers: [`visible`] turns what a renderer would act on (control characters, bidi overrides)
//! into a visible `[U+202E]`, and [`bounded`] escapes for the receiver's syntax and cuts to its
//! limit with a visible [`CUT`] marker, never inside an escape.
//!
//! Lengths are counted in UTF-16 code units, which is never less than the characters a
//! receiver counts, so a bounded value fits whichever way the receiver measures.

/// What a cut value ends with, so a reader knows there was more.
pub const CUT: &str = "…[truncated]";

/// Whether a value may span lines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Lines {
    /// Titles, subjects, header values: newlines and tabs become spaces.
    One,
    /// Bodies and descriptions: `\n` stays, `\r\n` and `\r` become `\n`.
    Many,
}

/// Characters a renderer reorders text by or hides (bidi embeddings, overrides, isolates and
/// marks): shown as `[U+…]` so a user id like `alice\u{202E}nimda` cannot pass for another.
fn is_bidi_control(c: char) -> bool {
    matches!(c, '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}')
}

/// `s` with control characters and bidi controls shown as `[U+XXXX]`; newlines as `lines` says.
pub fn visible(s: &str, lines: Lines) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\r' if chars.peek() == Some(&'\n') => {}
            '\t' if lines == Lines::Many => out.push('\t'),
            '\n' | '\r' | '\u{2028}' | '\u{2029}' if lines == Lines::Many => out.push('\n'),
            '\n' | '\r' | '\t' | '\u{2028}' | '\u{2029}' => out.push(' '),
            c if c.is_control() || is_bidi_control(c) => {
                out.push_str(&format!("[U+{:04X}]", c as u32));
            }
            c => out.push(c),
        }
    }
    out
}

/// How one character is written for a receiver: itself, or an escape such as `&lt;`.
pub type Escape = fn(char) -> Option<&'static str>;

/// No escaping: JSON encoding or MIME encoding does the rest.
pub fn no_escape(_: char) -> Option<&'static str> {
    None
}

/// Slack's three reserved characters, the only way to write links, mentions (`<!channel>`,
/// `<@U123>`) and commands in Slack text.
pub fn slack_escape(c: char) -> Option<&'static str> {
    match c {
        '&' => Some("&amp;"),
        '<' => Some("&lt;"),
        '>' => Some("&gt;"),
        _ => None,
    }
}

/// `s` escaped with `escape` and at most `max` UTF-16 units long, [`CUT`] included when cut.
pub fn bounded(s: &str, max: usize, escape: Escape) -> String {
    // Escapes are ASCII: their length in bytes is their length in UTF-16 units.
    let cost = |c: char| escape(c).map_or(c.len_utf16(), str::len);
    let total: usize = s.chars().map(cost).sum();
    let budget = if total <= max {
        max
    } else {
        max.saturating_sub(CUT.encode_utf16().count())
    };
    let mut out = String::with_capacity(s.len().min(max.saturating_mul(4)));
    let mut used = 0;
    for c in s.chars() {
        let n = cost(c);
        if used + n > budget {
            out.push_str(CUT);
            return out;
        }
        used += n;
        match escape(c) {
            Some(e) => out.push_str(e),
            None => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_overrides_become_visible() {
        assert_eq!(
            visible("a\u{202E}b\u{0}c\r\nd\te", Lines::One),
            "a[U+202E]b[U+0000]c d e"
        );
        assert_eq!(visible("a\r\nb\rc\u{7}", Lines::Many), "a\nb\nc[U+0007]");
    }

    #[test]
    fn bounded_cuts_with_a_marker_and_never_inside_an_escape() {
        assert_eq!(bounded("a<b", 10, slack_escape), "a&lt;b");
        let long = "<".repeat(100);
        let cut = bounded(&long, 30, slack_escape);
        assert!(cut.ends_with(CUT), "{cut}");
        assert!(cut.encode_utf16().count() <= 30, "{cut}");
        assert!(cut.trim_end_matches(CUT).replace("&lt;", "").is_empty());
        let emoji = "😀".repeat(10);
        let cut = bounded(&emoji, 15, no_escape);
        assert!(cut.encode_utf16().count() <= 15, "{cut}");
        assert_eq!(bounded(&"x".repeat(15), 15, no_escape), "x".repeat(15));
    }
}
