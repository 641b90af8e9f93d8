//! The compiled shape scanner: finds secrets inside one string and cuts them out.
//!
//! Compiled once from `rules.rs` (and the configured patterns) when the `Redactor` is built.
//! One Aho-Corasick automaton over every rule's keywords (ASCII case-insensitive) tells which
//! rules can match a string; only those run their regular expression, so a string without any
//! keyword costs one pass of the automaton. A built-in rule's expression is compiled the first
//! time one of its keywords turns up: most of the hundred-odd provider rules never see one of
//! their keywords in a given deployment, and compiled they held about 20 MB of the collector's
//! idle memory (a test compiles every one of them, so none can fail at run time). Matches become spans, overlapping spans merge (the
//! first-starting, then longest, then first-listed rule names the kind), and each span is
//! replaced by `[REDACTED:<kind>]`. Markers already in a string (an earlier redaction at the
//! edge) are recognised and reported again, so the collector records what the edge cut.

use std::borrow::Cow;
use std::sync::OnceLock;

use aho_corasick::{AhoCorasick, AhoCorasickBuilder, AhoCorasickKind, MatchKind};
use base64::Engine as _;
use regex::{Captures, Regex};

use super::keys::{self, is_code_reference, is_placeholder, looks_secret, KeyClass, Keys};
use super::rules::{self, Check};

/// Most rules (built-in and configured) one scanner holds: the set of rules a string
/// triggers is a fixed-size bit set.
pub(crate) const MAX_RULES: usize = 256;

/// Strings shorter than this hold no secret any rule finds (`pass=x1` is the shortest).
const MIN_SECRET_TEXT: usize = 6;

/// A rule, compiled when first needed.
#[derive(Debug, Clone)]
struct Compiled {
    /// The expression's source, compiled into `program` on first use.
    source: &'static str,
    program: OnceLock<Result<Program, String>>,
    kind: Cow<'static, str>,
    check: Check,
}

/// A rule's compiled expression.
#[derive(Debug, Clone)]
struct Program {
    regex: Regex,
    /// Index of the capture group named `s`, when only that part is the secret.
    secret_group: Option<usize>,
}

impl Program {
    fn new(regex: Regex) -> Self {
        let secret_group = group_index(&regex, "s");
        Self {
            regex,
            secret_group,
        }
    }
}

impl Compiled {
    /// A built-in rule, compiled on first use.
    fn builtin(source: &'static str, kind: &'static str, check: Check) -> Self {
        Self {
            source,
            program: OnceLock::new(),
            kind: Cow::Borrowed(kind),
            check,
        }
    }

    /// A configured rule: already compiled, since its errors are the configuration's.
    fn configured(regex: Regex, kind: String) -> Self {
        Self {
            source: "",
            program: OnceLock::from(Ok(Program::new(regex))),
            kind: Cow::Owned(kind),
            check: Check::None,
        }
    }

    fn program(&self) -> &Result<Program, String> {
        self.program.get_or_init(|| {
            Regex::new(self.source)
                .map(Program::new)
                .map_err(|e| format!("built-in rule {}: {e}", self.kind))
        })
    }
}

/// A configured pattern, as the scanner takes it.
#[derive(Debug, Clone)]
pub(crate) struct CustomRule {
    pub kind: String,
    pub regex: Regex,
    pub keywords: Vec<String>,
}

/// A secret found in a string: byte range and kind.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Span<'a> {
    start: usize,
    end: usize,
    order: usize,
    pub kind: &'a str,
}

/// Finds and cuts out secrets by shape.
#[derive(Debug, Clone)]
pub(crate) struct Scanner {
    rules: Vec<Compiled>,
    /// Keyword automaton; pattern `i` triggers the rules in `triggers[i]`.
    prefilter: AhoCorasick,
    triggers: Vec<Vec<u16>>,
    /// Rules without keywords: tried on every string.
    always: Vec<u16>,
    /// Recognises `[REDACTED:<kind>]` markers.
    marker: Regex,
    /// Every kind this scanner can write, to recognise markers.
    kinds: Vec<Cow<'static, str>>,
}

impl Scanner {
    /// Compiles the built-in rules (unless `defaults` is false) and the configured ones.
    pub(crate) fn new(
        defaults: bool,
        keys: &Keys,
        custom: Vec<CustomRule>,
    ) -> Result<Self, String> {
        let mut compiled = Vec::new();
        let mut keywords: Vec<(String, u16)> = Vec::new();
        let mut always = Vec::new();
        let mut add = |c: Compiled, kws: Vec<String>, compiled: &mut Vec<Compiled>| {
            let i = compiled.len() as u16;
            if kws.is_empty() {
                always.push(i);
            }
            keywords.extend(kws.into_iter().map(|k| (k, i)));
            compiled.push(c);
        };
        if defaults {
            for rule in rules::all() {
                let kws = if rule.check == Check::Assignment {
                    keys.keywords()
                } else {
                    rule.keywords.iter().map(|k| (*k).to_owned()).collect()
                };
                add(
                    Compiled::builtin(rule.regex, rule.kind, rule.check),
                    kws,
                    &mut compiled,
                );
            }
        } else {
            // Configured keys still apply inside `KEY=value` text.
            let rule = rules::all()
                .find(|r| r.check == Check::Assignment)
                .ok_or("no assignment rule")?;
            let c = Compiled::builtin(rule.regex, rule.kind, Check::Assignment);
            let kws = keys.keywords();
            if !kws.is_empty() {
                add(c, kws, &mut compiled);
            }
        }
        for rule in custom {
            add(
                Compiled::configured(rule.regex, rule.kind),
                rule.keywords,
                &mut compiled,
            );
        }
        if compiled.len() > MAX_RULES {
            return Err(format!("at most {MAX_RULES} rules in all"));
        }
        let mut patterns: Vec<String> = Vec::new();
        let mut triggers: Vec<Vec<u16>> = Vec::new();
        for (k, i) in keywords {
            let k = k.to_ascii_lowercase();
            match patterns.iter().position(|p| *p == k) {
                Some(j) => triggers[j].push(i),
                None => {
                    patterns.push(k);
                    triggers.push(vec![i]);
                }
            }
        }
        patterns.push("[redacted:".into());
        triggers.push(Vec::new());
        let prefilter = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .match_kind(MatchKind::Standard)
            .kind(Some(AhoCorasickKind::DFA))
            .build(&patterns)
            .map_err(|e| e.to_string())?;
        let mut kinds: Vec<Cow<'static, str>> = rules::kinds().map(Cow::Borrowed).collect();
        for c in &compiled {
            if !kinds.contains(&c.kind) {
                kinds.push(c.kind.clone());
            }
        }
        Ok(Self {
            rules: compiled,
            prefilter,
            triggers,
            always,
            marker: Regex::new(r"\[REDACTED:([a-z0-9_]{1,48})\]").map_err(|e| e.to_string())?,
            kinds,
        })
    }

    /// Cuts every secret out of `s`, calling `found` with the kind of each (markers already in
    /// `s` included). Returns the new string when anything was cut.
    pub(crate) fn redact<'a>(
        &'a self,
        s: &str,
        keys: &Keys,
        found: &mut dyn FnMut(&'a str),
    ) -> Option<String> {
        if s.len() < MIN_SECRET_TEXT || (self.always.is_empty() && !self.prefilter.is_match(s)) {
            return None;
        }
        let mut hit = [0u64; MAX_RULES / 64];
        let mut any = false;
        let mut markers = false;
        for m in self.prefilter.find_overlapping_iter(s) {
            let p = m.pattern().as_usize();
            if p == self.triggers.len() - 1 {
                markers = true;
            }
            for &r in &self.triggers[p] {
                hit[r as usize / 64] |= 1 << (r % 64);
                any = true;
            }
        }
        if markers {
            for caps in self.marker.captures_iter(s) {
                if let Some(k) = self.kinds.iter().find(|k| caps[1] == **k) {
                    found(k);
                }
            }
        }
        if !any && self.always.is_empty() {
            return None;
        }
        let mut spans: Vec<Span<'a>> = Vec::new();
        for (i, rule) in self.rules.iter().enumerate() {
            let triggered = hit[i / 64] & (1 << (i % 64)) != 0 || self.always.contains(&(i as u16));
            if triggered {
                rule.find(s, i, keys, &mut spans);
            }
        }
        if spans.is_empty() {
            return None;
        }
        spans.sort_by_key(|sp| (sp.start, std::cmp::Reverse(sp.end), sp.order));
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        let mut cur: Option<Span<'a>> = None;
        // A merged span is named by the most specific rule in it (the first listed).
        let mut flush = |sp: Span<'a>, out: &mut String, at: &mut usize| {
            out.push_str(&s[*at..sp.start]);
            out.push_str("[REDACTED:");
            out.push_str(sp.kind);
            out.push(']');
            *at = sp.end;
            found(sp.kind);
        };
        for sp in spans {
            match &mut cur {
                Some(c) if sp.start < c.end => {
                    c.end = c.end.max(sp.end);
                    if sp.order < c.order {
                        c.order = sp.order;
                        c.kind = sp.kind;
                    }
                }
                _ => {
                    if let Some(c) = cur.take() {
                        flush(c, &mut out, &mut at);
                    }
                    cur = Some(sp);
                }
            }
        }
        if let Some(c) = cur {
            flush(c, &mut out, &mut at);
        }
        out.push_str(&s[at..]);
        Some(out)
    }
}

impl Compiled {
    fn find<'a>(&'a self, s: &str, order: usize, keys: &Keys, out: &mut Vec<Span<'a>>) {
        let kind: &'a str = &self.kind;
        let Ok(program) = self.program() else {
            // Cannot happen for the shipped rules (a test compiles each); if it did, the
            // whole string is treated as the secret rather than stored as it came.
            out.push(Span {
                start: 0,
                end: s.len(),
                order,
                kind,
            });
            return;
        };
        let Program {
            regex,
            secret_group,
        } = program;
        if secret_group.is_none() && self.check == Check::None {
            out.extend(regex.find_iter(s).map(|m| Span {
                start: m.start(),
                end: m.end(),
                order,
                kind,
            }));
            return;
        }
        if self.check == Check::Assignment {
            // A match whose key names nothing must not hide a `key=value` inside its value
            // (`https://host/?access_token=…`): search again right after its key.
            let mut at = 0;
            while let Some(caps) = regex.captures_at(s, at) {
                let (Some(whole), Some(key)) = (caps.get(0), caps.name("key")) else {
                    break;
                };
                match assignment(&caps, s, keys) {
                    Some((start, end, kind)) => {
                        out.push(Span {
                            start,
                            end,
                            order,
                            kind,
                        });
                        at = whole.end();
                    }
                    None => at = key.end(),
                }
            }
            return;
        }
        for caps in regex.captures_iter(s) {
            let Some(m) = secret_group.and_then(|g| caps.get(g)).or(caps.get(0)) else {
                continue;
            };
            if passes(self.check, m.as_str()) {
                out.push(Span {
                    start: m.start(),
                    end: m.end(),
                    order,
                    kind,
                });
            }
        }
    }
}

fn group_index(re: &Regex, name: &str) -> Option<usize> {
    re.capture_names().position(|n| n == Some(name))
}

/// Whether a match of a rule with a check is a secret.
fn passes(check: Check, m: &str) -> bool {
    match check {
        Check::None | Check::Assignment => true,
        Check::Basic => base64::engine::general_purpose::STANDARD
            .decode(m)
            .ok()
            .and_then(|b| String::from_utf8(b).ok())
            .is_some_and(|d| d.contains(':') && d.len() >= 3),
        Check::Bearer => {
            let t = m.trim_end_matches('=');
            t.bytes().any(|c| c.is_ascii_digit())
                || (t.len() >= 20
                    && t.bytes().any(|c| c.is_ascii_uppercase())
                    && t.bytes().any(|c| c.is_ascii_lowercase()))
        }
        Check::AwsSecret => {
            let b = m.as_bytes();
            b.iter().any(u8::is_ascii_uppercase)
                && b.iter().any(u8::is_ascii_lowercase)
                && b.iter().any(u8::is_ascii_digit)
        }
    }
}

/// The secret part of a `key = value` match, when the key names a secret and the value looks
/// like one.
fn assignment(caps: &Captures<'_>, s: &str, keys: &Keys) -> Option<(usize, usize, &'static str)> {
    let key = caps.name("key")?.as_str();
    let class = keys.classify(key);
    if class == KeyClass::Plain {
        return None;
    }
    let val = caps.name("val")?;
    let raw = val.as_str();
    let quoted = raw.len() >= 2
        && ((raw.starts_with('"') && raw.ends_with('"'))
            || (raw.starts_with('\'') && raw.ends_with('\'')));
    let (start, end) = if quoted {
        (val.start() + 1, val.end() - 1)
    } else {
        (val.start(), val.end())
    };
    let inner = &s[start..end];
    if is_placeholder(inner) {
        return None;
    }
    let env_style = caps.name("sep").is_some_and(|m| m.as_str() == "=")
        && caps.name("pre").is_some_and(|m| m.as_str().is_empty())
        && caps.name("post").is_some_and(|m| m.as_str().is_empty());
    let secret = match class {
        KeyClass::Plain => false,
        KeyClass::Weak(_) => keys::high_entropy(inner),
        KeyClass::Strong(_) if quoted => true,
        KeyClass::Strong(_) => {
            let call = s[val.end()..].starts_with(['(', '{', '[']);
            let echoes_key = inner.eq_ignore_ascii_case(key)
                || (inner.bytes().all(|c| c.is_ascii_lowercase() || c == b'_')
                    && keys.classify(inner) != KeyClass::Plain);
            !call && !is_code_reference(inner) && !echoes_key && (env_style || looks_secret(inner))
        }
    };
    let kind = match class {
        KeyClass::Strong(k) | KeyClass::Weak(k) => k,
        KeyClass::Plain => return None,
    };
    secret.then_some((start, end, kind))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scanner() -> (Scanner, Keys) {
        let keys = Keys::new(true, Vec::new()).unwrap();
        (Scanner::new(true, &keys, Vec::new()).unwrap(), keys)
    }

    fn compiled(scanner: &Scanner) -> Vec<&str> {
        let mut kinds: Vec<&str> = scanner
            .rules
            .iter()
            .filter(|r| r.program.get().is_some())
            .map(|r| &*r.kind)
            .collect();
        kinds.dedup();
        kinds
    }

    #[test]
    fn every_built_in_rule_compiles() {
        let (scanner, _) = scanner();
        assert!(scanner.rules.len() > 90, "{} rules", scanner.rules.len());
        for rule in &scanner.rules {
            if let Err(e) = rule.program() {
                panic!("{e}");
            }
        }
    }

    #[test]
    fn a_built_in_rule_is_compiled_when_its_keyword_first_turns_up() {
        let (scanner, keys) = scanner();
        assert_eq!(compiled(&scanner), Vec::<&str>::new());
        let benign = "listed 14 files under /home/dev/project/src in 3 ms";
        assert_eq!(scanner.redact(benign, &keys, &mut |_| {}), None);
        assert_eq!(
            compiled(&scanner),
            Vec::<&str>::new(),
            "no keyword, nothing compiled"
        );

        let token = format!("push with ghp_{}", "a1B2c3D4e5".repeat(4));
        let mut found = Vec::new();
        let out = scanner.redact(&token, &keys, &mut |k| found.push(k));
        assert_eq!(out.as_deref(), Some("push with [REDACTED:github_pat]"));
        assert_eq!(found, ["github_pat"]);
        assert_eq!(compiled(&scanner), ["github_pat"]);
    }
}
