//! The threat signatures (SPEC 6.3): patterns compiled once into regex sets, each pattern with
//! a short label that goes into the finding's evidence.
//!
//! Patterns are deliberately specific (two or more `../`, shell metacharacters followed by a
//! command, known credential formats) so that ordinary text in parameters and results does not
//! fire; the tests hold both the attacks and benign look-alikes.

use std::sync::OnceLock;

use regex::{Regex, RegexSet, RegexSetBuilder};

/// One family of patterns. The set decides whether anything matches; the single regexes, only
/// needed to quote the matched text as evidence, are compiled on first use: they are most of the
/// memory (case-insensitive patterns compile large) and most never match.
#[derive(Debug)]
pub(crate) struct Signature {
    set: RegexSet,
    sources: Vec<String>,
    regexes: Vec<OnceLock<Option<Regex>>>,
    labels: Vec<&'static str>,
}

/// A match: which pattern and what text it matched.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Hit {
    pub label: std::borrow::Cow<'static, str>,
    pub evidence: String,
}

impl Signature {
    fn new(patterns: &[(&'static str, &str)]) -> Self {
        let sources: Vec<String> = patterns.iter().map(|(_, p)| p.to_string()).collect();
        // The patterns are constants of this file; the tests compile every one of them.
        let set = RegexSetBuilder::new(&sources)
            .case_insensitive(true)
            .build()
            .unwrap_or_else(|e| panic!("built-in signature does not compile: {e}"));
        Self {
            set,
            regexes: sources.iter().map(|_| OnceLock::new()).collect(),
            sources,
            labels: patterns.iter().map(|(l, _)| *l).collect(),
        }
    }

    fn regex(&self, i: usize) -> Option<&Regex> {
        self.regexes[i]
            .get_or_init(|| {
                regex::RegexBuilder::new(&self.sources[i])
                    .case_insensitive(true)
                    .build()
                    .ok()
            })
            .as_ref()
    }

    /// Every pattern of this family that matches `text`.
    pub fn scan(&self, text: &str, hits: &mut Vec<Hit>) {
        if !self.set.is_match(text) {
            return;
        }
        for i in self.set.matches(text).iter() {
            let evidence = self
                .regex(i)
                .and_then(|re| re.find(text))
                .map_or(String::new(), |m| snippet(m.as_str()));
            hits.push(Hit {
                label: self.labels[i].into(),
                evidence,
            });
        }
    }
}

/// Matched text made safe to show: at most 80 characters, invisible characters escaped.
pub(crate) fn snippet(s: &str) -> String {
    let mut out = String::new();
    for (n, c) in s.chars().enumerate() {
        if n == 80 {
            out.push('…');
            break;
        }
        if is_invisible(c) || c.is_control() {
            out.push_str(&format!("\\u{{{:x}}}", c as u32));
        } else {
            out.push(c);
        }
    }
    out
}

/// Characters that render as nothing but carry text to a model: zero-width characters, bidi
/// controls, the Unicode tag block.
pub(crate) fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x2064 | 0x2066..=0x2069 | 0xFEFF
        | 0xE0000..=0xE007F)
}

/// All families, compiled once.
#[derive(Debug)]
pub(crate) struct Signatures {
    pub path_traversal: Signature,
    pub command_injection: Signature,
    pub secret_exposure: Signature,
    pub poisoning: Signature,
}

const SECRET_PLACES: &str = r"(~/\.ssh|\.ssh/|id_rsa|id_ed25519|\.env\b|mcp\.json|\.aws/|credentials|private key|api[ _-]?keys?|passwords?|secrets?\b|tokens?\b)";

impl Signatures {
    pub fn new() -> Self {
        let read_secrets = format!(
            r"\b(read|cat|open|send|include|pass|upload|attach|provide|append)\b[^.\n]{{0,80}}{SECRET_PLACES}"
        );
        Self {
            path_traversal: Signature::new(&[
                ("dot-dot sequence", r"(\.\.[/\\]){2,}"),
                ("encoded dot-dot", r"(%2e%2e|\.\.)(%2f|%5c)|%2e%2e[/\\]"),
                (
                    "system file",
                    r"(^|[/\\])etc[/\\](passwd|shadow|sudoers)\b|/proc/self/environ|(^|[/\\])windows[/\\]system32[/\\]",
                ),
                (
                    "dot-dot to secrets",
                    r"\.\.[/\\][^\s]*(\.ssh|\.aws|\.env\b|id_rsa)",
                ),
            ]),
            command_injection: Signature::new(&[
                (
                    "chained command",
                    r"[;&|]\s*(rm|curl|wget|nc|ncat|bash|sh|zsh|python3?|perl|ruby|powershell|chmod|chown|base64|mkfifo)\b",
                ),
                ("command substitution", r"\$\([^)]{1,200}\)"),
                (
                    "backtick command",
                    r"`[^`]{0,100}\b(rm|curl|wget|nc|bash|sh|python3?|whoami|id|uname)\b[^`]{0,100}`",
                ),
                ("pipe to shell", r"\|\s*(ba|z)?sh\b"),
                ("reverse shell", r"/dev/tcp/|\bnc\s+(-e|-c)\b"),
            ]),
            secret_exposure: Signature::new(&[
                ("AWS access key", r"\b(AKIA|ASIA)[0-9A-Z]{16}\b"),
                ("private key", r"-----BEGIN ([A-Z]+ )?PRIVATE KEY-----"),
                ("GitHub token", r"\bgh[pousr]_[A-Za-z0-9]{36,}\b"),
                ("Slack token", r"\bxox[baprs]-[A-Za-z0-9-]{10,}"),
                ("API key", r"\bsk-(proj-|ant-)?[A-Za-z0-9_-]{20,}"),
                ("Google API key", r"\bAIza[0-9A-Za-z_-]{35}\b"),
                ("bearer token", r"\bbearer\s+[A-Za-z0-9._~+/-]{20,}"),
                (
                    "password assignment",
                    r#"\b(password|passwd|secret|api[_-]?key|access[_-]?token)\s*[:=]\s*['"]?[^\s'"\[]{8,}"#,
                ),
            ]),
            poisoning: Signature::new(&[
                (
                    "instruction block",
                    r"<\s*(important|system|instructions?|secret|hidden|note\s+to\s+(the\s+)?(ai|assistant|model))\s*>",
                ),
                ("reads secrets", &read_secrets),
                (
                    "calls other tools",
                    r"\b(before|after|instead\s+of)\s+(using|calling)\s+(this|any|the)\b[^.\n]{0,40}\btool|\b(must|always)\s+(first\s+)?(call|invoke|run|use)\s+(the\s+)?\w+\s+tool\b",
                ),
                (
                    "hides from user",
                    r"\b(do\s+not|don't|never)\s+(tell|inform|mention|reveal|show)\b[^.\n]{0,40}\buser\b|\buser\s+(must|should)\s+not\s+(know|see)\b",
                ),
                (
                    "ignore instructions",
                    r"\b(ignore|disregard|forget)\s+(all\s+|any\s+|the\s+)?(previous|prior|above|earlier|your)\s+(instructions|prompts|directions|rules|guidelines)",
                ),
            ]),
        }
    }
}
