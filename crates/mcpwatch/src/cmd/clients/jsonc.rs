//! A JSON-with-comments reader that keeps where every value is in the text.
//!
//! Client configs are edited in place: `edit` replaces the byte ranges of the few values it
//! changes and leaves every other byte (comments, key order, indentation) as it was, so this
//! parser returns spans instead of a value tree to re-serialise. It accepts strict JSON plus
//! what JSONC clients (VS Code) allow: `//` and `/* */` comments and trailing commas. Nesting
//! is bounded, so a hostile file cannot exhaust the stack.

use std::ops::Range;

/// Deeper nesting than this is refused; no client config comes close.
const MAX_DEPTH: usize = 64;

/// A value and the bytes it occupies in the text.
#[derive(Debug, Clone)]
pub struct Node {
    /// Byte range of the value's own text (for a string, the quotes included).
    pub span: Range<usize>,
    pub kind: Kind,
}

/// What a value is.
#[derive(Debug, Clone)]
pub enum Kind {
    Object(Vec<Member>),
    Array(Vec<Node>),
    /// A string, decoded.
    Str(String),
    /// Numbers, booleans and null: only their span matters here.
    Scalar,
}

/// One `"key": value` of an object.
#[derive(Debug, Clone)]
pub struct Member {
    pub key: String,
    /// From the key's opening quote to the end of the value.
    pub span: Range<usize>,
    pub value: Node,
}

impl Node {
    /// The last member named `key` (later keys win, as in JavaScript's `JSON.parse`).
    pub fn get(&self, key: &str) -> Option<&Node> {
        self.member(key).map(|m| &m.value)
    }

    /// The last member named `key`.
    pub fn member(&self, key: &str) -> Option<&Member> {
        match &self.kind {
            Kind::Object(members) => members.iter().rev().find(|m| m.key == key),
            _ => None,
        }
    }

    /// The members of an object, in file order.
    pub fn members(&self) -> &[Member] {
        match &self.kind {
            Kind::Object(m) => m,
            _ => &[],
        }
    }

    /// The string, when this is one.
    pub fn as_str(&self) -> Option<&str> {
        match &self.kind {
            Kind::Str(s) => Some(s),
            _ => None,
        }
    }

    /// The elements, when this is an array.
    pub fn as_array(&self) -> Option<&[Node]> {
        match &self.kind {
            Kind::Array(a) => Some(a),
            _ => None,
        }
    }
}

/// Where and why the text is not JSON(C).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyntaxError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

impl std::fmt::Display for SyntaxError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "line {}, column {}: {}",
            self.line, self.column, self.message
        )
    }
}

/// Parses a whole document: one value, with only whitespace and comments around it.
pub fn parse(text: &str) -> Result<Node, SyntaxError> {
    let mut p = Parser {
        text,
        bytes: text.as_bytes(),
        pos: 0,
    };
    if text.starts_with('\u{feff}') {
        p.pos = '\u{feff}'.len_utf8();
    }
    p.skip_trivia()?;
    let root = p.value(0)?;
    p.skip_trivia()?;
    if p.pos < p.bytes.len() {
        return Err(p.error("unexpected text after the end of the document"));
    }
    Ok(root)
}

struct Parser<'a> {
    text: &'a str,
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn error(&self, message: &str) -> SyntaxError {
        let before = &self.text[..self.pos.min(self.text.len())];
        let line = before.matches('\n').count() + 1;
        let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
        SyntaxError {
            line,
            column,
            message: message.to_string(),
        }
    }

    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// Skips whitespace and comments.
    fn skip_trivia(&mut self) -> Result<(), SyntaxError> {
        loop {
            match self.peek() {
                Some(b' ' | b'\t' | b'\n' | b'\r') => self.pos += 1,
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'/') => {
                    while self.peek().is_some_and(|b| b != b'\n') {
                        self.pos += 1;
                    }
                }
                Some(b'/') if self.bytes.get(self.pos + 1) == Some(&b'*') => {
                    let start = self.pos;
                    match self.text[self.pos + 2..].find("*/") {
                        Some(end) => self.pos += 2 + end + 2,
                        None => {
                            self.pos = start;
                            return Err(self.error("a /* comment is never closed"));
                        }
                    }
                }
                _ => return Ok(()),
            }
        }
    }

    fn value(&mut self, depth: usize) -> Result<Node, SyntaxError> {
        if depth > MAX_DEPTH {
            return Err(self.error("nested too deeply"));
        }
        let start = self.pos;
        let kind = match self.peek() {
            Some(b'{') => self.object(depth)?,
            Some(b'[') => self.array(depth)?,
            Some(b'"') => Kind::Str(self.string()?),
            Some(b't') => self.word("true")?,
            Some(b'f') => self.word("false")?,
            Some(b'n') => self.word("null")?,
            Some(b'-' | b'0'..=b'9') => self.number()?,
            Some(_) => return Err(self.error("expected a value")),
            None => return Err(self.error("the document ends where a value was expected")),
        };
        Ok(Node {
            span: start..self.pos,
            kind,
        })
    }

    fn word(&mut self, w: &str) -> Result<Kind, SyntaxError> {
        if self.text[self.pos..].starts_with(w) {
            self.pos += w.len();
            Ok(Kind::Scalar)
        } else {
            Err(self.error("expected a value"))
        }
    }

    fn number(&mut self) -> Result<Kind, SyntaxError> {
        let start = self.pos;
        while self
            .peek()
            .is_some_and(|b| matches!(b, b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9'))
        {
            self.pos += 1;
        }
        let text = &self.text[start..self.pos];
        if serde_json::from_str::<serde_json::Number>(text).is_err() {
            self.pos = start;
            return Err(self.error("malformed number"));
        }
        Ok(Kind::Scalar)
    }

    fn string(&mut self) -> Result<String, SyntaxError> {
        let start = self.pos;
        self.pos += 1;
        loop {
            match self.peek() {
                None => {
                    self.pos = start;
                    return Err(self.error("a string is never closed"));
                }
                Some(b'"') => break,
                Some(b'\\') => self.pos += 2,
                Some(b) if b < 0x20 => {
                    return Err(self.error("a control character inside a string must be escaped"))
                }
                Some(_) => self.pos += 1,
            }
        }
        self.pos += 1;
        let literal = self.text.get(start..self.pos).unwrap_or_default();
        serde_json::from_str::<String>(literal).map_err(|_| {
            self.pos = start;
            self.error("malformed escape in a string")
        })
    }

    fn object(&mut self, depth: usize) -> Result<Kind, SyntaxError> {
        self.pos += 1;
        let mut members = Vec::new();
        loop {
            self.skip_trivia()?;
            match self.peek() {
                Some(b'}') => {
                    self.pos += 1;
                    return Ok(Kind::Object(members));
                }
                Some(b'"') => {}
                _ => return Err(self.error("expected a \"key\" or }")),
            }
            let key_start = self.pos;
            let key = self.string()?;
            self.skip_trivia()?;
            if self.peek() != Some(b':') {
                return Err(self.error("expected : after the key"));
            }
            self.pos += 1;
            self.skip_trivia()?;
            let value = self.value(depth + 1)?;
            members.push(Member {
                key,
                span: key_start..value.span.end,
                value,
            });
            self.skip_trivia()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b'}') => {}
                _ => return Err(self.error("expected , or } after a value")),
            }
        }
    }

    fn array(&mut self, depth: usize) -> Result<Kind, SyntaxError> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_trivia()?;
            if self.peek() == Some(b']') {
                self.pos += 1;
                return Ok(Kind::Array(items));
            }
            items.push(self.value(depth + 1)?);
            self.skip_trivia()?;
            match self.peek() {
                Some(b',') => self.pos += 1,
                Some(b']') => {}
                _ => return Err(self.error("expected , or ] after a value")),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_the_values_through_comments_and_trailing_commas() {
        let text = "// top\n{ \"a\" /* c */ : [1, \"x\\u00e9\",], \"b\": {\"c\": null,}, }";
        let root = parse(text).expect("parses");
        let a = root.get("a").expect("a");
        assert_eq!(&text[a.span.clone()], "[1, \"x\\u00e9\",]");
        let items = a.as_array().expect("array");
        assert_eq!(items[1].as_str(), Some("xé"));
        assert_eq!(&text[items[1].span.clone()], "\"x\\u00e9\"");
        assert_eq!(
            &text[root.member("b").expect("b").span.clone()],
            "\"b\": {\"c\": null,}"
        );
    }

    #[test]
    fn errors_name_the_line_and_column() {
        let check = |text: &str, line: usize, column: usize| {
            let e = parse(text).expect_err(text);
            assert_eq!((e.line, e.column), (line, column), "{text}: {e}");
        };
        check("{\n  \"a\": 1\n  \"b\": 2}", 3, 3);
        check("{\"a\": [1, 2}", 1, 12);
        check("{\"a\": \"open", 1, 7);
        check("{} x", 1, 4);
        check("/* never closed", 1, 1);
        check("{\"a\": 01x}", 1, 7);
        check(&"[".repeat(200), 1, 66);
    }
}
