//! Printing attacker-controlled text to a terminal safely.

/// Replaces control characters (escape sequences, carriage returns, bidi overrides) with
/// visible escapes so event text cannot rewrite the terminal.
pub fn sanitize(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\t' => out.push(' '),
            c if c.is_control()
                || ('\u{202a}'..='\u{202e}').contains(&c)
                || ('\u{2066}'..='\u{2069}').contains(&c) =>
            {
                out.push_str(&c.escape_unicode().to_string())
            }
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn escape_sequences_are_made_visible() {
        assert_eq!(
            super::sanitize("a\x1b[2Jb\r\nc\u{202e}"),
            "a\\u{1b}[2Jb\\u{d}\\nc\\u{202e}"
        );
    }
}
