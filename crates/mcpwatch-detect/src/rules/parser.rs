//! Parses a `when` expression into a [`Pred`] tree, checking fields, operand types and regexes
//! at compile time so that evaluation never fails.
//!
//! Grammar (lowest precedence first):
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | primary
//! primary := "(" expr ")" | "exists" "(" field ")" | "true" | "false"
//!          | field [ op literal | "in" list | "contains" literal
//!                  | "startswith" string | "endswith" string | "matches" string ]
//!          | literal "in" field
//! ```

use regex::RegexBuilder;

use super::field::{Field, FIELD_HELP};
use super::lexer::{lex, ExprError, Tok};
use super::pred::{CmpOp, Lit, Pred, StrOp};

/// Compiles `src` into a predicate tree.
pub fn compile(src: &str) -> Result<Pred, ExprError> {
    let toks = lex(src)?;
    let mut p = Parser {
        toks,
        pos: 0,
        depth: 0,
    };
    let pred = p.or()?;
    match p.peek() {
        Tok::End => Ok(pred),
        t => Err(ExprError::new(
            p.offset(),
            format!("unexpected {}; join conditions with && or ||", describe(t)),
        )),
    }
}

struct Parser {
    toks: Vec<(usize, Tok)>,
    pos: usize,
    /// Open `(` and `!` around the current position; bounded so that parsing, evaluating and
    /// dropping the tree cannot overflow the stack (a property test found 20,000 `(` did).
    depth: usize,
}

/// The deepest nesting of `(` and `!` an expression may have.
pub const MAX_DEPTH: usize = 64;

const KEYWORDS: &[&str] = &[
    "in",
    "contains",
    "startswith",
    "endswith",
    "matches",
    "exists",
    "true",
    "false",
    "null",
];

fn describe(t: &Tok) -> String {
    match t {
        Tok::Ident(s) => format!("`{s}`"),
        Tok::Str(s) => format!("string \"{s}\""),
        Tok::Num(n) => format!("number {n}"),
        Tok::LParen => "`(`".into(),
        Tok::RParen => "`)`".into(),
        Tok::LBracket => "`[`".into(),
        Tok::RBracket => "`]`".into(),
        Tok::Comma => "`,`".into(),
        Tok::Op(o) => format!("`{o}`"),
        Tok::And => "`&&`".into(),
        Tok::Or => "`||`".into(),
        Tok::Not => "`!`".into(),
        Tok::End => "end of expression".into(),
    }
}

impl Parser {
    fn peek(&self) -> &Tok {
        self.toks.get(self.pos).map_or(&Tok::End, |(_, t)| t)
    }

    fn offset(&self) -> usize {
        self.toks
            .get(self.pos)
            .or(self.toks.last())
            .map_or(0, |(o, _)| *o)
    }

    fn bump(&mut self) -> Tok {
        let t = self.peek().clone();
        if self.pos < self.toks.len() {
            self.pos += 1;
        }
        t
    }

    fn expect(&mut self, want: &Tok, what: &str) -> Result<(), ExprError> {
        if self.peek() == want {
            self.bump();
            return Ok(());
        }
        Err(ExprError::new(
            self.offset(),
            format!("expected {what}, found {}", describe(self.peek())),
        ))
    }

    fn or(&mut self) -> Result<Pred, ExprError> {
        let mut items = vec![self.and()?];
        while *self.peek() == Tok::Or {
            self.bump();
            items.push(self.and()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Pred::Or(items)
        })
    }

    fn and(&mut self) -> Result<Pred, ExprError> {
        let mut items = vec![self.unary()?];
        while *self.peek() == Tok::And {
            self.bump();
            items.push(self.unary()?);
        }
        Ok(if items.len() == 1 {
            items.remove(0)
        } else {
            Pred::And(items)
        })
    }

    fn unary(&mut self) -> Result<Pred, ExprError> {
        if *self.peek() == Tok::Not {
            self.enter()?;
            self.bump();
            let inner = self.unary()?;
            self.depth -= 1;
            return Ok(Pred::Not(Box::new(inner)));
        }
        self.primary()
    }

    fn enter(&mut self) -> Result<(), ExprError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return Err(ExprError::new(
                self.offset(),
                format!("nesting is too deep (more than {MAX_DEPTH} levels of `(` and `!`); split the rule"),
            ));
        }
        Ok(())
    }

    fn primary(&mut self) -> Result<Pred, ExprError> {
        let at = self.offset();
        match self.bump() {
            Tok::LParen => {
                self.enter()?;
                let inner = self.or()?;
                self.depth -= 1;
                self.expect(&Tok::RParen, "`)` to close the `(`")?;
                Ok(inner)
            }
            Tok::Ident(name) if name == "exists" => {
                self.expect(&Tok::LParen, "`(` after exists")?;
                let f = self.field()?;
                self.expect(&Tok::RParen, "`)` to close exists(")?;
                Ok(Pred::Exists(f))
            }
            Tok::Ident(name) if name == "true" || name == "false" => {
                if matches!(self.peek(), Tok::Ident(k) if k == "in") {
                    self.bump();
                    let f = self.field()?;
                    return Ok(Pred::Contains(f, Lit::Bool(name == "true")));
                }
                Ok(Pred::Const(name == "true"))
            }
            Tok::Ident(name) if !KEYWORDS.contains(&name.as_str()) => {
                let field = resolve(&name, at)?;
                self.after_field(field)
            }
            Tok::Str(_) | Tok::Num(_) | Tok::Ident(_) => {
                self.pos -= 1;
                let lit = self.literal()?;
                match self.bump() {
                    Tok::Ident(k) if k == "in" => {
                        let f = self.field()?;
                        Ok(Pred::Contains(f, lit))
                    }
                    _ => Err(ExprError::new(
                        at,
                        "a literal must be compared with a field: put the field first, e.g. metadata.result == \"failure\"",
                    )),
                }
            }
            t => Err(ExprError::new(
                at,
                format!("expected a condition, found {}", describe(&t)),
            )),
        }
    }

    fn field(&mut self) -> Result<Field, ExprError> {
        let at = self.offset();
        match self.bump() {
            Tok::Ident(name) if !KEYWORDS.contains(&name.as_str()) => resolve(&name, at),
            t => Err(ExprError::new(
                at,
                format!("expected a field, found {}; {FIELD_HELP}", describe(&t)),
            )),
        }
    }

    fn after_field(&mut self, field: Field) -> Result<Pred, ExprError> {
        let at = self.offset();
        let op = match self.peek().clone() {
            Tok::Op(op) => op,
            Tok::Ident(k) if KEYWORDS.contains(&k.as_str()) => {
                self.bump();
                return self.keyword_op(field, &k, at);
            }
            // A bare field is a boolean test.
            _ => return Ok(Pred::Cmp(field, CmpOp::Eq, Lit::Bool(true))),
        };
        self.bump();
        let lit_at = self.offset();
        let lit = self.literal()?;
        let op = match op {
            "==" => CmpOp::Eq,
            "!=" => CmpOp::Ne,
            "<" => CmpOp::Lt,
            "<=" => CmpOp::Le,
            ">" => CmpOp::Gt,
            _ => CmpOp::Ge,
        };
        if !matches!(op, CmpOp::Eq | CmpOp::Ne) && !matches!(lit, Lit::Num(_) | Lit::Str(_)) {
            return Err(ExprError::new(
                lit_at,
                "`<`, `<=`, `>`, `>=` compare with a number or a string",
            ));
        }
        Ok(Pred::Cmp(field, op, lit))
    }

    fn keyword_op(&mut self, field: Field, kw: &str, at: usize) -> Result<Pred, ExprError> {
        let lit_at = self.offset();
        match kw {
            "in" => match self.literal()? {
                Lit::List(items) => Ok(Pred::In(field, items)),
                _ => Err(ExprError::new(
                    lit_at,
                    "`in` needs a list, e.g. [\"a\", \"b\"]",
                )),
            },
            "contains" => match self.literal()? {
                Lit::List(_) => Err(ExprError::new(
                    lit_at,
                    "`contains` takes one value; for several, join tests with ||",
                )),
                lit => Ok(Pred::Contains(field, lit)),
            },
            "startswith" | "endswith" => {
                let s = self.string_lit(kw)?;
                let op = if kw == "startswith" {
                    StrOp::StartsWith
                } else {
                    StrOp::EndsWith
                };
                Ok(Pred::Str(field, op, s))
            }
            "matches" => {
                let s = self.string_lit(kw)?;
                let re = RegexBuilder::new(&s)
                    .size_limit(1 << 20)
                    .build()
                    .map_err(|e| {
                        let first = e.to_string();
                        let last = first.lines().last().unwrap_or("").trim().to_owned();
                        ExprError::new(
                            lit_at,
                            format!(
                                "bad regex \"{s}\": {last}; fix the pattern (Rust regex syntax)"
                            ),
                        )
                    })?;
                Ok(Pred::Matches(field, re))
            }
            _ => Err(ExprError::new(
                at,
                format!(
                    "`{kw}` cannot follow a field; expected an operator such as == or contains"
                ),
            )),
        }
    }

    fn string_lit(&mut self, kw: &str) -> Result<String, ExprError> {
        let at = self.offset();
        match self.bump() {
            Tok::Str(s) => Ok(s),
            t => Err(ExprError::new(
                at,
                format!("`{kw}` needs a quoted string, found {}", describe(&t)),
            )),
        }
    }

    fn literal(&mut self) -> Result<Lit, ExprError> {
        let at = self.offset();
        match self.bump() {
            Tok::Str(s) => Ok(Lit::Str(s)),
            Tok::Num(n) => Ok(Lit::Num(n)),
            Tok::Ident(k) if k == "true" => Ok(Lit::Bool(true)),
            Tok::Ident(k) if k == "false" => Ok(Lit::Bool(false)),
            Tok::Ident(k) if k == "null" => Ok(Lit::Null),
            Tok::LBracket => {
                let mut items = Vec::new();
                if *self.peek() == Tok::RBracket {
                    self.bump();
                    return Ok(Lit::List(items));
                }
                loop {
                    items.push(self.literal()?);
                    match self.bump() {
                        Tok::Comma => continue,
                        Tok::RBracket => return Ok(Lit::List(items)),
                        t => {
                            return Err(ExprError::new(
                                self.toks[self.pos - 1].0,
                                format!("expected `,` or `]` in the list, found {}", describe(&t)),
                            ))
                        }
                    }
                }
            }
            Tok::Ident(name) => Err(ExprError::new(
                at,
                format!("expected a value, found `{name}`; quote strings: \"{name}\""),
            )),
            t => Err(ExprError::new(
                at,
                format!("expected a value, found {}", describe(&t)),
            )),
        }
    }
}

fn resolve(name: &str, at: usize) -> Result<Field, ExprError> {
    Field::parse(name)
        .ok_or_else(|| ExprError::new(at, format!("unknown field `{name}`; {FIELD_HELP}")))
}

#[cfg(test)]
mod tests;
