//! The compiled form of a `when` expression: a predicate tree evaluated against one event.
//!
//! Semantics, for rule authors:
//! - A comparison with a missing field is false, except `!=`, which is `!(==)`; `== null` is
//!   true for a missing field or a JSON null.
//! - Numbers compare as numbers, strings as strings (byte order); a number never equals a
//!   string.
//! - `contains` is a substring test on strings and a membership test on lists (`tags`, JSON
//!   arrays); `"x" in tags` is the same as `tags contains "x"`.
//! - All string tests are case-sensitive; use `matches "(?i)…"` for the other kind.
//! - A bare field (`metadata.success`) means `metadata.success == true`.

use mcpwatch_core::event::FieldRef;
use mcpwatch_core::Event;
use regex::Regex;
use serde_json::Value;

use super::field::Field;

/// A literal in an expression.
#[derive(Debug, Clone, PartialEq)]
pub enum Lit {
    /// `"text"`
    Str(String),
    /// `12`, `0.5`
    Num(f64),
    /// `true`, `false`
    Bool(bool),
    /// `null`
    Null,
    /// `["a", "b"]`
    List(Vec<Lit>),
}

/// A comparison operator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmpOp {
    /// `==`
    Eq,
    /// `!=`
    Ne,
    /// `<`
    Lt,
    /// `<=`
    Le,
    /// `>`
    Gt,
    /// `>=`
    Ge,
}

/// A string test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StrOp {
    /// `startswith`
    StartsWith,
    /// `endswith`
    EndsWith,
}

/// A compiled `when` expression.
#[derive(Debug, Clone)]
pub enum Pred {
    /// A constant (`true`, `false`).
    Const(bool),
    /// All of these.
    And(Vec<Pred>),
    /// Any of these.
    Or(Vec<Pred>),
    /// Not this.
    Not(Box<Pred>),
    /// `exists(field)`: present and not null.
    Exists(Field),
    /// `field <op> literal`.
    Cmp(Field, CmpOp, Lit),
    /// `field in [literals]`.
    In(Field, Vec<Lit>),
    /// `field contains literal` (also `literal in field`).
    Contains(Field, Lit),
    /// `field startswith "x"` / `field endswith "x"`.
    Str(Field, StrOp, String),
    /// `field matches "regex"`, compiled once.
    Matches(Field, Regex),
}

impl Pred {
    /// Whether `event` satisfies this predicate.
    pub fn eval(&self, event: &Event) -> bool {
        match self {
            Pred::Const(b) => *b,
            Pred::And(ps) => ps.iter().all(|p| p.eval(event)),
            Pred::Or(ps) => ps.iter().any(|p| p.eval(event)),
            Pred::Not(p) => !p.eval(event),
            Pred::Exists(f) => !matches!(f.get(event), None | Some(FieldRef::Json(Value::Null))),
            Pred::Cmp(f, op, lit) => compare(f.get(event), *op, lit),
            Pred::In(f, lits) => {
                let v = f.get(event);
                lits.iter().any(|l| equals(v, l))
            }
            Pred::Contains(f, lit) => contains(f.get(event), lit),
            Pred::Str(f, op, s) => as_str(f.get(event)).is_some_and(|v| match op {
                StrOp::StartsWith => v.starts_with(s.as_str()),
                StrOp::EndsWith => v.ends_with(s.as_str()),
            }),
            Pred::Matches(f, re) => as_str(f.get(event)).is_some_and(|v| re.is_match(v)),
        }
    }

    /// The values this predicate pins `field` to, when every matching event must have one of
    /// them (a top-level `field == "x"` or `field in [...]` conjunct). Used for indexing.
    pub fn pinned(&self, field: &Field) -> Option<Vec<String>> {
        match self {
            Pred::Cmp(f, CmpOp::Eq, Lit::Str(s)) if f == field => Some(vec![s.clone()]),
            Pred::In(f, lits) if f == field => lits
                .iter()
                .map(|l| match l {
                    Lit::Str(s) => Some(s.clone()),
                    _ => None,
                })
                .collect(),
            Pred::And(ps) => ps.iter().find_map(|p| p.pinned(field)),
            _ => None,
        }
    }
}

fn as_str(v: Option<FieldRef<'_>>) -> Option<&str> {
    match v? {
        FieldRef::Str(s) => Some(s),
        FieldRef::Json(Value::String(s)) => Some(s),
        _ => None,
    }
}

fn json_equals(v: &Value, lit: &Lit) -> bool {
    match (v, lit) {
        (Value::String(s), Lit::Str(l)) => s == l,
        (Value::Number(n), Lit::Num(l)) => n.as_f64() == Some(*l),
        (Value::Bool(b), Lit::Bool(l)) => b == l,
        (Value::Null, Lit::Null) => true,
        (Value::Array(items), Lit::List(ls)) => {
            items.len() == ls.len() && items.iter().zip(ls).all(|(i, l)| json_equals(i, l))
        }
        _ => false,
    }
}

fn equals(v: Option<FieldRef<'_>>, lit: &Lit) -> bool {
    match v {
        None => matches!(lit, Lit::Null),
        Some(FieldRef::Str(s)) => matches!(lit, Lit::Str(l) if l == s),
        Some(FieldRef::Tags(tags)) => match lit {
            Lit::List(ls) => {
                tags.len() == ls.len()
                    && tags
                        .iter()
                        .zip(ls)
                        .all(|(t, l)| matches!(l, Lit::Str(s) if s == t))
            }
            _ => false,
        },
        Some(FieldRef::Json(v)) => json_equals(v, lit),
    }
}

fn compare(v: Option<FieldRef<'_>>, op: CmpOp, lit: &Lit) -> bool {
    use std::cmp::Ordering;
    match op {
        CmpOp::Eq => return equals(v, lit),
        CmpOp::Ne => return !equals(v, lit),
        _ => {}
    }
    let ord: Option<Ordering> = match (v, lit) {
        (Some(FieldRef::Json(Value::Number(n))), Lit::Num(l)) => {
            n.as_f64().and_then(|x| x.partial_cmp(l))
        }
        (v, Lit::Str(l)) => as_str(v).map(|s| s.cmp(l.as_str())),
        _ => None,
    };
    let Some(ord) = ord else { return false };
    match op {
        CmpOp::Lt => ord == Ordering::Less,
        CmpOp::Le => ord != Ordering::Greater,
        CmpOp::Gt => ord == Ordering::Greater,
        CmpOp::Ge => ord != Ordering::Less,
        CmpOp::Eq | CmpOp::Ne => false,
    }
}

fn contains(v: Option<FieldRef<'_>>, lit: &Lit) -> bool {
    match v {
        None => false,
        Some(FieldRef::Str(s)) => matches!(lit, Lit::Str(l) if s.contains(l.as_str())),
        Some(FieldRef::Tags(tags)) => matches!(lit, Lit::Str(l) if tags.iter().any(|t| t == l)),
        Some(FieldRef::Json(Value::String(s))) => {
            matches!(lit, Lit::Str(l) if s.contains(l.as_str()))
        }
        Some(FieldRef::Json(Value::Array(items))) => items.iter().any(|i| json_equals(i, lit)),
        Some(FieldRef::Json(_)) => false,
    }
}
