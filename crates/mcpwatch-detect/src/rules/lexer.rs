//! Tokens of the `when` language, each with its byte offset in the expression so that errors
//! point at the exact place.

/// One token.
#[derive(Debug, Clone, PartialEq)]
pub enum Tok {
    /// A field path or keyword: `metadata.user_id`, `in`, `true`, `exists`.
    Ident(String),
    /// A quoted string, escapes resolved.
    Str(String),
    /// A number.
    Num(f64),
    /// `(`
    LParen,
    /// `)`
    RParen,
    /// `[`
    LBracket,
    /// `]`
    RBracket,
    /// `,`
    Comma,
    /// `==`, `!=`, `<`, `<=`, `>`, `>=`
    Op(&'static str),
    /// `&&`
    And,
    /// `||`
    Or,
    /// `!`
    Not,
    /// End of the expression.
    End,
}

/// An error at a byte offset of the expression.
#[derive(Debug, Clone, PartialEq)]
pub struct ExprError {
    /// Byte offset in the expression text.
    pub offset: usize,
    /// What is wrong and what to write instead.
    pub message: String,
}

impl ExprError {
    pub(crate) fn new(offset: usize, message: impl Into<String>) -> Self {
        Self {
            offset,
            message: message.into(),
        }
    }
}

/// Splits an expression into tokens with their byte offsets; the last token is `End`.
pub fn lex(src: &str) -> Result<Vec<(usize, Tok)>, ExprError> {
    let bytes = src.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let c = bytes[i];
        let start = i;
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let two = bytes.get(i..i + 2);
        let tok = match (c, two) {
            (_, Some(b"==")) => two_char(&mut i, Tok::Op("==")),
            (_, Some(b"!=")) => two_char(&mut i, Tok::Op("!=")),
            (_, Some(b"<=")) => two_char(&mut i, Tok::Op("<=")),
            (_, Some(b">=")) => two_char(&mut i, Tok::Op(">=")),
            (_, Some(b"&&")) => two_char(&mut i, Tok::And),
            (_, Some(b"||")) => two_char(&mut i, Tok::Or),
            (b'<', _) => one_char(&mut i, Tok::Op("<")),
            (b'>', _) => one_char(&mut i, Tok::Op(">")),
            (b'!', _) => one_char(&mut i, Tok::Not),
            (b'(', _) => one_char(&mut i, Tok::LParen),
            (b')', _) => one_char(&mut i, Tok::RParen),
            (b'[', _) => one_char(&mut i, Tok::LBracket),
            (b']', _) => one_char(&mut i, Tok::RBracket),
            (b',', _) => one_char(&mut i, Tok::Comma),
            (b'=', _) => return Err(ExprError::new(start, "`=` is not an operator; write `==`")),
            (b'&', _) => return Err(ExprError::new(start, "`&` is not an operator; write `&&`")),
            (b'|', _) => return Err(ExprError::new(start, "`|` is not an operator; write `||`")),
            (b'"' | b'\'', _) => string(src, &mut i)?,
            (b'-' | b'0'..=b'9', _) => number(src, &mut i)?,
            (c, _) if c.is_ascii_alphabetic() || c == b'_' => {
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || matches!(bytes[i], b'_' | b'.' | b'-'))
                {
                    i += 1;
                }
                Tok::Ident(src[start..i].to_owned())
            }
            _ => {
                let ch = src[start..].chars().next().unwrap_or('?');
                return Err(ExprError::new(
                    start,
                    format!("unexpected character `{ch}`; strings need quotes"),
                ));
            }
        };
        out.push((start, tok));
    }
    out.push((src.len(), Tok::End));
    Ok(out)
}

fn one_char(i: &mut usize, t: Tok) -> Tok {
    *i += 1;
    t
}

fn two_char(i: &mut usize, t: Tok) -> Tok {
    *i += 2;
    t
}

fn string(src: &str, i: &mut usize) -> Result<Tok, ExprError> {
    let start = *i;
    let quote = src.as_bytes()[start] as char;
    let mut out = String::new();
    let mut chars = src[start + 1..].char_indices();
    while let Some((k, ch)) = chars.next() {
        match ch {
            c if c == quote => {
                *i = start + 1 + k + 1;
                return Ok(Tok::Str(out));
            }
            '\\' => match chars.next() {
                Some((_, 'n')) => out.push('\n'),
                Some((_, 't')) => out.push('\t'),
                Some((_, c @ ('\\' | '"' | '\''))) => out.push(c),
                // Keep other escapes as written so regexes like "\d" need no doubling.
                Some((_, c)) => {
                    out.push('\\');
                    out.push(c);
                }
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(ExprError::new(
        start,
        format!("string is not closed; add a closing {quote}"),
    ))
}

fn number(src: &str, i: &mut usize) -> Result<Tok, ExprError> {
    let start = *i;
    let bytes = src.as_bytes();
    *i += 1;
    while *i < bytes.len()
        && (bytes[*i].is_ascii_digit() || matches!(bytes[*i], b'.' | b'e' | b'E'))
    {
        *i += 1;
    }
    let text = &src[start..*i];
    text.parse::<f64>()
        .ok()
        .filter(|n| n.is_finite())
        .map(Tok::Num)
        .ok_or_else(|| ExprError::new(start, format!("`{text}` is not a number")))
}
