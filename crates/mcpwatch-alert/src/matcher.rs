//! Label matchers, shared by silences and routes: `label=value`, `label!=value`,
//! `label=~regex` and `label!~regex`.
//!
//! An alert's labels are `name` (also `alertname`), `severity`, `source`, `fingerprint`, every
//! group key as written in the rule (`metadata.user_id`) or as an Alertmanager label
//! (`metadata_user_id`), and `tag`, which matches when any of the alert's tags does.

use std::fmt;

use regex::Regex;

use crate::model::AlertRecord;

/// How a matcher compares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Eq,
    Ne,
    Re,
    NotRe,
}

/// One parsed matcher.
#[derive(Debug, Clone)]
pub struct Matcher {
    label: String,
    op: Op,
    value: String,
    regex: Option<Regex>,
}

impl Matcher {
    /// Parses `label=value`, `label!=value`, `label=~regex` or `label!~regex`.
    pub fn parse(text: &str) -> Result<Matcher, String> {
        let (label, op, value) = split(text).ok_or_else(|| {
            format!("matcher `{text}` has no operator; write label=value, label!=value or label=~regex (e.g. name=brute_force_detection)")
        })?;
        let label = label.trim();
        if label.is_empty() {
            return Err(format!(
                "matcher `{text}` has no label before the operator (e.g. severity=high)"
            ));
        }
        let value = value.trim().trim_matches('"').to_owned();
        let regex = match op {
            Op::Re | Op::NotRe => Some(
                Regex::new(&format!("^(?:{value})$"))
                    .map_err(|e| format!("matcher `{text}`: bad regular expression: {e}"))?,
            ),
            Op::Eq | Op::Ne => None,
        };
        Ok(Matcher {
            label: label.to_owned(),
            op,
            value,
            regex,
        })
    }

    /// Whether `alert` satisfies this matcher.
    pub fn matches(&self, alert: &AlertRecord) -> bool {
        let values = label_values(alert, &self.label);
        let hit = |v: &str| match self.op {
            Op::Eq | Op::Ne => v == self.value,
            Op::Re | Op::NotRe => self.regex.as_ref().is_some_and(|r| r.is_match(v)),
        };
        let any = if values.is_empty() {
            hit("")
        } else {
            values.iter().any(|v| hit(v))
        };
        match self.op {
            Op::Eq | Op::Re => any,
            Op::Ne | Op::NotRe => !any,
        }
    }
}

impl fmt::Display for Matcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let op = match self.op {
            Op::Eq => "=",
            Op::Ne => "!=",
            Op::Re => "=~",
            Op::NotRe => "!~",
        };
        write!(f, "{}{op}{}", self.label, self.value)
    }
}

fn split(text: &str) -> Option<(&str, Op, &str)> {
    let i = text.find(['=', '!'])?;
    let (label, rest) = text.split_at(i);
    for (token, op) in [
        ("!=", Op::Ne),
        ("!~", Op::NotRe),
        ("=~", Op::Re),
        ("=", Op::Eq),
    ] {
        if let Some(value) = rest.strip_prefix(token) {
            return Some((label, op, value));
        }
    }
    None
}

/// An Alertmanager-style label name for a group key: `metadata.user_id` → `metadata_user_id`.
pub fn label_name(key: &str) -> String {
    let mut out: String = key
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if out.starts_with(|c: char| c.is_ascii_digit()) || out.is_empty() {
        out.insert(0, '_');
    }
    out
}

fn label_values<'a>(alert: &'a AlertRecord, label: &str) -> Vec<&'a str> {
    let a = &alert.alert;
    match label {
        "name" | "alertname" => vec![a.name.as_str()],
        "severity" => vec![a.severity.as_str()],
        "source" => vec![a.source.as_str()],
        "fingerprint" => vec![a.fingerprint.as_str()],
        "tag" | "tags" => alert.tags.iter().map(String::as_str).collect(),
        other => a
            .group
            .iter()
            .filter(|(k, _)| k.as_str() == other || label_name(k) == other)
            .map(|(_, v)| v.as_str())
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::record;

    #[test]
    fn matchers_compare_labels_groups_and_tags() {
        let a = record(
            "brute_force_detection",
            "high",
            &[("metadata.user_id", "alice")],
        );
        let check = |m: &str, want: bool| {
            let parsed = Matcher::parse(m).unwrap();
            assert_eq!(parsed.matches(&a), want, "{m}");
        };
        check("name=brute_force_detection", true);
        check("alertname=other", false);
        check("severity!=low", true);
        check("metadata.user_id=alice", true);
        check("metadata_user_id=~al.*", true);
        check("metadata.user_id!~al.*", false);
        check("tag=authentication", true);
        check("tag=nope", false);
        check("missing=", true);
        check("missing=x", false);
    }

    #[test]
    fn bad_matchers_say_how_to_write_one() {
        for (m, want) in [
            ("severity", "has no operator"),
            ("=high", "has no label"),
            ("name=~(", "bad regular expression"),
        ] {
            let err = Matcher::parse(m).unwrap_err();
            assert!(err.contains(want), "{m}: {err}");
        }
    }
}
