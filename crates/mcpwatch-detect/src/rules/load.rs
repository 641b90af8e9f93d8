//! Loads YAML rule files (SPEC 6.1) into compiled [`Rule`]s, collecting every error with file,
//! rule, line and column; positions inside `when` point at the offending token.
//!
//! The YAML parser gives positions only for syntax errors, so a small [`Locator`] finds each
//! rule's keys in the text (block-style YAML, the style every example uses). Where it cannot
//! (flow style), errors still name file and rule.

use mcpwatch_core::time_fmt::parse_duration;
use serde_yaml_ng::{Mapping, Value};

use super::field::{Field, FIELD_HELP};
use super::parser::compile;
use super::Rule;
use crate::error::RuleError;
use crate::finding::Severity;

const KEYS: &[&str] = &[
    "name",
    "description",
    "when",
    "group_by",
    "threshold",
    "window",
    "distinct",
    "suppress",
    "severity",
    "recommended_action",
    "tags",
];

/// Compiles every rule in `text`; on any error returns all of them and no rule.
pub(crate) fn parse_rules(text: &str, file: &str) -> Result<Vec<Rule>, Vec<RuleError>> {
    let err = |line: Option<usize>, column: Option<usize>, message: String| RuleError {
        file: file.to_owned(),
        rule: None,
        line,
        column,
        message,
    };
    let doc: Value = match serde_yaml_ng::from_str(text) {
        Ok(v) => v,
        Err(e) => {
            let loc = e.location();
            return Err(vec![err(
                loc.as_ref().map(|l| l.line()),
                loc.as_ref().map(|l| l.column()),
                format!("not valid YAML: {e}"),
            )]);
        }
    };
    let Value::Mapping(top) = doc else {
        return Err(vec![err(
            Some(1),
            Some(1),
            "expected a mapping with a `rules:` list at the top".into(),
        )]);
    };
    let loc = Locator::new(text);
    let mut errors = Vec::new();
    for (k, _) in &top {
        if k.as_str() != Some("rules") {
            let name = k.as_str().unwrap_or("?");
            let (line, col) = loc.top_key(name).unzip();
            errors.push(err(
                line,
                col,
                format!("unknown top-level key `{name}`; a rule file has only `rules:`"),
            ));
        }
    }
    let items = match top.get("rules") {
        Some(Value::Sequence(items)) => items.as_slice(),
        Some(_) => {
            let (line, col) = loc.top_key("rules").unzip();
            errors.push(err(line, col, "`rules` must be a list of rules".into()));
            &[]
        }
        None => {
            errors.push(err(
                None,
                None,
                "missing `rules:`; list the rules under it".into(),
            ));
            &[]
        }
    };
    let mut rules: Vec<Rule> = Vec::new();
    for (i, item) in items.iter().enumerate() {
        let mut ctx = RuleCtx {
            file,
            index: i,
            name: None,
            loc: &loc,
            errors: &mut errors,
        };
        if let Some(rule) = ctx.compile(item) {
            if rules.iter().any(|r| r.name == rule.name) {
                ctx.error(
                    Some("name"),
                    "duplicate rule name; names must be unique".into(),
                );
            } else {
                rules.push(rule);
            }
        }
    }
    if errors.is_empty() {
        Ok(rules)
    } else {
        Err(errors)
    }
}

struct RuleCtx<'a> {
    file: &'a str,
    index: usize,
    name: Option<String>,
    loc: &'a Locator<'a>,
    errors: &'a mut Vec<RuleError>,
}

impl RuleCtx<'_> {
    fn error_at(&mut self, pos: Option<(usize, usize)>, message: String) {
        let (line, column) = pos.unzip();
        self.errors.push(RuleError {
            file: self.file.to_owned(),
            rule: Some(
                self.name
                    .clone()
                    .unwrap_or_else(|| format!("#{}", self.index + 1)),
            ),
            line,
            column,
            message,
        });
    }

    /// An error at `key`'s value (or at the rule when the key is absent).
    fn error(&mut self, key: Option<&str>, message: String) {
        let pos = key
            .and_then(|k| self.loc.key(self.index, k).map(|p| p.value))
            .or_else(|| self.loc.item(self.index));
        self.error_at(pos, message);
    }

    fn string(&mut self, map: &Mapping, key: &str, required: bool) -> Option<String> {
        match map.get(key) {
            Some(Value::String(s)) => Some(s.clone()),
            None | Some(Value::Null) if !required => None,
            None | Some(Value::Null) => {
                self.error(None, format!("missing `{key}`; every rule needs one"));
                None
            }
            Some(_) => {
                self.error(Some(key), format!("`{key}` must be a string"));
                None
            }
        }
    }

    fn duration(&mut self, map: &Mapping, key: &str) -> Option<Option<i64>> {
        let Some(text) = self.string_or_number(map, key)? else {
            return Some(None);
        };
        match parse_duration(&text) {
            Ok(d) if d.is_zero() => {
                self.error(Some(key), format!("`{key}` must be longer than zero"));
                None
            }
            Ok(d) => Some(Some(i64::try_from(d.as_micros()).unwrap_or(i64::MAX))),
            Err(e) => {
                self.error(Some(key), format!("`{key}: {text}` is {e}"));
                None
            }
        }
    }

    fn string_or_number(&mut self, map: &Mapping, key: &str) -> Option<Option<String>> {
        match map.get(key) {
            None | Some(Value::Null) => Some(None),
            Some(Value::String(s)) => Some(Some(s.clone())),
            Some(Value::Number(n)) => Some(Some(n.to_string())),
            Some(_) => {
                self.error(Some(key), format!("`{key}` must be a duration such as 5m"));
                None
            }
        }
    }

    fn field(&mut self, key: &str, text: &str) -> Option<Field> {
        let f = Field::parse(text);
        if f.is_none() {
            self.error(
                Some(key),
                format!("unknown field `{text}` in `{key}`; {FIELD_HELP}"),
            );
        }
        f
    }

    fn compile(&mut self, item: &Value) -> Option<Rule> {
        let Value::Mapping(map) = item else {
            self.error(
                None,
                "each rule must be a mapping with name, when, severity …".into(),
            );
            return None;
        };
        let before = self.errors.len();
        if let Some(Value::String(n)) = map.get("name") {
            self.name = Some(n.clone());
        }
        for (k, _) in map {
            let key = k.as_str().unwrap_or("?");
            if !KEYS.contains(&key) {
                let pos = self.loc.key(self.index, key).map(|p| p.key);
                self.error_at(
                    pos,
                    format!("unknown field `{key}`; rule fields are {}", KEYS.join(", ")),
                );
            }
        }
        let name = self.string(map, "name", true);
        if let Some(n) = &name {
            if n.is_empty()
                || !n
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "_-.".contains(c))
            {
                self.error(
                    Some("name"),
                    "a rule name uses only letters, digits, `_`, `-` and `.`".into(),
                );
            }
        }
        let description = self.string(map, "description", false).unwrap_or_default();
        let when_text = self.string(map, "when", true);
        let when = when_text.as_deref().and_then(|t| match compile(t) {
            Ok(p) => Some(p),
            Err(e) => {
                let pos = self.loc.expr_pos(self.index, t, e.offset);
                self.error_at(pos, format!("in `when`: {}", e.message));
                None
            }
        });
        let group_by = match map.get("group_by") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::String(s)) => self.field("group_by", s).into_iter().collect(),
            Some(Value::Sequence(items)) => {
                let mut fields = Vec::new();
                for it in items {
                    match it.as_str() {
                        Some(s) => fields.extend(self.field("group_by", s)),
                        None => self.error(Some("group_by"), "`group_by` lists field names".into()),
                    }
                }
                fields
            }
            Some(_) => {
                self.error(
                    Some("group_by"),
                    "`group_by` must be a list of fields".into(),
                );
                Vec::new()
            }
        };
        let threshold = match map.get("threshold") {
            None | Some(Value::Null) => None,
            Some(v) => match v.as_u64() {
                Some(0) => {
                    self.error(
                        Some("threshold"),
                        "`threshold` must be at least 1; leave it out to fire on every match"
                            .into(),
                    );
                    None
                }
                Some(n) if n <= 100_000 => Some(n as u32),
                _ => {
                    self.error(
                        Some("threshold"),
                        "`threshold` must be a whole number from 1 to 100000".into(),
                    );
                    None
                }
            },
        };
        let window = self.duration(map, "window");
        let suppress = self.duration(map, "suppress");
        let distinct = match self.string(map, "distinct", false) {
            Some(s) => self.field("distinct", &s),
            None => None,
        };
        let severity = self.string(map, "severity", true).and_then(|s| {
            let v = Severity::parse(&s);
            if v.is_none() {
                self.error(
                    Some("severity"),
                    format!("severity `{s}` is not one of low, medium, high, critical"),
                );
            }
            v
        });
        let recommended_action = self
            .string(map, "recommended_action", false)
            .unwrap_or_else(|| "Review the triggering events".to_owned());
        let tags = match map.get("tags") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Sequence(items)) if items.iter().all(Value::is_string) => items
                .iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect(),
            Some(_) => {
                self.error(Some("tags"), "`tags` must be a list of strings".into());
                Vec::new()
            }
        };
        let has_threshold = map.get("threshold").is_some_and(|v| !v.is_null());
        let window_given = matches!(window, Some(Some(_)));
        if has_threshold && !window_given && window.is_some() {
            self.error(None, "`threshold` needs a `window`, e.g. window: 5m".into());
        }
        if !has_threshold && window_given {
            self.error(
                Some("window"),
                "`window` has no effect without `threshold`; add a threshold or remove it".into(),
            );
        }
        if !has_threshold && map.get("distinct").is_some() {
            self.error(Some("distinct"), "`distinct` needs a `threshold`".into());
        }
        if self.errors.len() > before {
            return None;
        }
        let (name, when_text, when, severity) = (name?, when_text?, when?, severity?);
        let window_us = window.flatten().unwrap_or(0);
        let suppress_us = suppress.flatten();
        let definition = format!(
            "{when_text}\u{1f}{:?}\u{1f}{threshold:?}\u{1f}{window_us}\u{1f}{:?}\u{1f}{suppress_us:?}",
            group_by.iter().map(ToString::to_string).collect::<Vec<_>>(),
            distinct.as_ref().map(ToString::to_string),
        );
        Some(Rule {
            name,
            description,
            when_text,
            when,
            group_by,
            threshold,
            window_us,
            distinct,
            suppress_us,
            severity,
            recommended_action,
            tags,
            file: self.file.to_owned(),
            definition,
        })
    }
}

/// 1-based positions of a key and of its value.
#[derive(Debug, Clone, Copy)]
struct KeyPos {
    key: (usize, usize),
    value: (usize, usize),
}

/// Finds rules and their keys in block-style YAML text.
struct Locator<'a> {
    lines: Vec<&'a str>,
    /// 0-based line of each rule item's `-`, and the column of its first key.
    items: Vec<(usize, usize)>,
    end: usize,
}

fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

impl<'a> Locator<'a> {
    fn new(text: &'a str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let mut items = Vec::new();
        let mut end = lines.len();
        let start = lines.iter().position(|l| l.starts_with("rules:"));
        let mut item_indent = None;
        for (j, line) in lines
            .iter()
            .enumerate()
            .skip(start.map_or(lines.len(), |s| s + 1))
        {
            let t = line.trim_start();
            if t.is_empty() || t.starts_with('#') {
                continue;
            }
            let ind = indent(line);
            if ind == 0 && !t.starts_with('-') {
                end = j;
                break;
            }
            if (t == "-" || t.starts_with("- ")) && *item_indent.get_or_insert(ind) == ind {
                let after = t[1..].trim_start();
                let key_col = line.len() - after.len();
                items.push((j, key_col));
            }
        }
        Self { lines, items, end }
    }

    fn top_key(&self, key: &str) -> Option<(usize, usize)> {
        let j = self
            .lines
            .iter()
            .position(|l| l.strip_prefix(key).is_some_and(|r| r.starts_with(':')))?;
        Some((j + 1, 1))
    }

    fn item(&self, i: usize) -> Option<(usize, usize)> {
        let (line, key_col) = *self.items.get(i)?;
        Some((line + 1, key_col.saturating_sub(1)))
    }

    fn range(&self, i: usize) -> Option<(usize, usize, usize)> {
        let (start, key_col) = *self.items.get(i)?;
        let stop = self.items.get(i + 1).map_or(self.end, |n| n.0);
        Some((start, stop, key_col))
    }

    fn key(&self, i: usize, key: &str) -> Option<KeyPos> {
        let (start, stop, key_col) = self.range(i)?;
        (start..stop).find_map(|j| {
            let line = self.lines[j];
            let rest = line.get(key_col..)?;
            if j != start && indent(line) != key_col {
                return None;
            }
            let after = rest.strip_prefix(key)?.strip_prefix(':')?;
            let value_col = line.len() - after.trim_start().len();
            Some(KeyPos {
                key: (j + 1, key_col + 1),
                value: (j + 1, value_col + 1),
            })
        })
    }

    /// The file position of byte `offset` of the `when` expression `expr`.
    fn expr_pos(&self, i: usize, expr: &str, offset: usize) -> Option<(usize, usize)> {
        let pos = self.key(i, "when")?;
        let (line0, col0) = (pos.value.0 - 1, pos.value.1 - 1);
        let first = self.lines[line0].get(col0..).unwrap_or("");
        // Collect the physical lines that hold the expression and where its text starts.
        let mut parts: Vec<(usize, usize, &str)> = Vec::new();
        let block = first.starts_with('|') || first.starts_with('>');
        if !block {
            let quoted = usize::from(first.starts_with('"') || first.starts_with('\''));
            parts.push((line0, col0 + quoted, &first[quoted..]));
        }
        let (_, stop, key_col) = self.range(i)?;
        for j in line0 + 1..stop {
            let line = self.lines[j];
            if !line.trim().is_empty() && indent(line) <= key_col {
                break;
            }
            parts.push((j, indent(line), line.trim_start()));
        }
        let mut remaining = offset.min(expr.len());
        for (j, col, text) in &parts {
            if remaining <= text.len() {
                return Some((j + 1, col + remaining + 1));
            }
            remaining -= text.len() + 1;
        }
        Some(pos.value)
    }
}
