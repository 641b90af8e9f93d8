//! Data classification: which resource URIs and tool arguments touch sensitive data.
//!
//! Consulted by session tracking when a `resources/read` or `tools/call` passes by; a match
//! gives the `data_classification` of a `security`/`data_access` event. Patterns are globs:
//! `*` matches within one path segment, `**` across segments, `?` one character.

use serde::Deserialize;
use serde_json::Value;

/// Classification used when no pattern matches a resource.
pub const UNCLASSIFIED: &str = "unclassified";

/// `[capture.classification]`: the patterns, first match wins.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ClassificationConfig {
    /// Resource URI patterns, e.g. `file:///home/*/.ssh/**` → `sensitive`.
    pub resources: Vec<ResourceRule>,
    /// Tool argument patterns, e.g. any tool whose `path` argument matches `**/.ssh/**`.
    pub tools: Vec<ToolRule>,
}

/// One resource rule.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ResourceRule {
    /// Glob over the resource URI.
    pub uri: Glob,
    /// The classification a match gives, e.g. `sensitive`.
    pub classification: String,
}

/// One tool rule: a tool (glob over its name) whose string argument matches a glob.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    /// Glob over the tool name; `*` for every tool.
    pub tool: Glob,
    /// The argument name to look at; any top-level string argument when absent.
    #[serde(default)]
    pub argument: Option<String>,
    /// Glob over the argument's value.
    pub value: Glob,
    /// The classification a match gives.
    pub classification: String,
}

impl Default for ClassificationConfig {
    fn default() -> Self {
        let sensitive_paths = [
            "**/.ssh/**",
            "**/.aws/credentials",
            "**/.aws/config",
            "**/.gnupg/**",
            "**/.env",
            "**/.netrc",
            "**/.kube/config",
            "**/.docker/config.json",
            "**/id_rsa*",
            "**/id_ed25519*",
            "/etc/shadow",
        ];
        Self {
            resources: sensitive_paths
                .iter()
                .map(|p| ResourceRule {
                    uri: Glob::new(&format!("file:///{}", p.trim_start_matches('/'))),
                    classification: "sensitive".into(),
                })
                .collect(),
            tools: sensitive_paths
                .iter()
                .map(|p| ToolRule {
                    tool: Glob::new("*"),
                    argument: None,
                    value: Glob::new(p),
                    classification: "sensitive".into(),
                })
                .collect(),
        }
    }
}

impl ClassificationConfig {
    /// The classification of a resource URI, matched in its canonical spelling (see
    /// [`crate::uri`]; one without is matched as written).
    pub fn classify_uri(&self, uri: &str) -> &str {
        let canonical = crate::uri::normalize(uri);
        let uri = canonical.as_deref().unwrap_or(uri);
        self.resources
            .iter()
            .find(|r| r.uri.matches(uri))
            .map_or(UNCLASSIFIED, |r| r.classification.as_str())
    }

    /// The classification of a tool call, and the argument that matched, if any rule matches.
    pub fn classify_tool_call<'a>(
        &'a self,
        tool: &str,
        arguments: &'a Value,
    ) -> Option<(&'a str, &'a str, &'a str)> {
        let args = arguments.as_object()?;
        for rule in self.tools.iter().filter(|r| r.tool.matches(tool)) {
            for (name, value) in args {
                if rule.argument.as_deref().is_some_and(|a| a != name) {
                    continue;
                }
                if let Some(s) = value.as_str().filter(|s| rule.value.matches(s)) {
                    return Some((rule.classification.as_str(), name.as_str(), s));
                }
            }
        }
        None
    }
}

/// Matches `text` against a glob (`*` within a segment, `**` across, `?` one character).
/// Compiles the pattern on every call; keep a [`Glob`] for patterns used more than once.
pub fn glob_match(pattern: &str, text: &str) -> bool {
    Glob::new(pattern).matches(text)
}

/// One step of a compiled glob.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Tok {
    Lit(char),
    /// `?`: one character other than `/`.
    One,
    /// `*`: any run of characters other than `/`.
    Star,
    /// `**` not followed by `/`: any run of characters.
    Any,
    /// `**/`: nothing, or any run of characters ending with `/` (whole segments).
    Segments,
    /// Inside a `**/` that has read something: it may end only after a `/`. Always follows
    /// [`Tok::Segments`], which alone may be skipped.
    InSegments,
}

/// A glob compiled once and matched in time linear in the text (times the pattern's length,
/// in 64-step words): the texts are tool arguments and resource URIs an agent chose, so no
/// backtracking, and no allocation per match for patterns of up to 127 steps.
#[derive(Debug, Clone)]
pub struct Glob {
    text: String,
    toks: Vec<Tok>,
    /// The longest literal run: a text without it cannot match.
    needle: Option<String>,
    /// The literal run the pattern ends with: a text must end with it.
    tail: String,
}

impl Glob {
    /// Compiles a pattern; every string is a valid pattern.
    pub fn new(pattern: &str) -> Self {
        let chars: Vec<char> = pattern.chars().collect();
        let mut toks = Vec::with_capacity(chars.len());
        let mut i = 0;
        while i < chars.len() {
            let tok = match chars[i] {
                '*' if chars.get(i + 1) == Some(&'*') => {
                    if chars.get(i + 2) == Some(&'/') {
                        i += 3;
                        toks.push(Tok::Segments);
                        Tok::InSegments
                    } else {
                        i += 2;
                        Tok::Any
                    }
                }
                '*' => {
                    i += 1;
                    Tok::Star
                }
                '?' => {
                    i += 1;
                    Tok::One
                }
                c => {
                    i += 1;
                    Tok::Lit(c)
                }
            };
            toks.push(tok);
        }
        let mut runs: Vec<String> = vec![String::new()];
        for t in &toks {
            match t {
                Tok::Lit(c) => runs.last_mut().map_or((), |r| r.push(*c)),
                _ => runs.push(String::new()),
            }
        }
        let tail = runs.last().cloned().unwrap_or_default();
        let needle = runs
            .into_iter()
            .max_by_key(String::len)
            .filter(|r| !r.is_empty());
        Self {
            text: pattern.to_string(),
            toks,
            needle,
            tail,
        }
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether `text` matches the whole pattern.
    pub fn matches(&self, text: &str) -> bool {
        match self.toks.as_slice() {
            [Tok::Any] => return true,
            [Tok::Star] => return !text.contains('/'),
            _ => {}
        }
        if self.tail.len() == self.text.len() {
            return text == self.text;
        }
        if !text.ends_with(self.tail.as_str()) {
            return false;
        }
        if let Some(n) = &self.needle {
            if memchr::memmem::find(text.as_bytes(), n.as_bytes()).is_none() {
                return false;
            }
        }
        let words = (self.toks.len() + 1).div_ceil(64);
        if words <= 2 {
            let mut sets = [[0u64; 2]; 2];
            let [now, next] = &mut sets;
            self.run(text, &mut now[..words], &mut next[..words])
        } else {
            self.run(text, &mut vec![0; words], &mut vec![0; words])
        }
    }

    /// Simulates the pattern as an automaton whose states are positions in it: `now` holds
    /// the positions reachable after the characters read so far.
    fn run<'a>(&self, text: &str, mut now: &'a mut [u64], mut next: &'a mut [u64]) -> bool {
        let n = self.toks.len();
        now.fill(0);
        set(now, 0);
        self.close(now);
        for c in text.chars() {
            next.fill(0);
            let mut live = false;
            for (i, tok) in self.toks.iter().enumerate() {
                if !get(now, i) {
                    continue;
                }
                live = true;
                match *tok {
                    Tok::Lit(l) if l == c => set(next, i + 1),
                    Tok::One if c != '/' => set(next, i + 1),
                    Tok::Star if c != '/' => set(next, i),
                    Tok::Any => set(next, i),
                    Tok::Segments => {
                        set(next, i + 1);
                        if c == '/' {
                            set(next, i + 2);
                        }
                    }
                    Tok::InSegments => {
                        set(next, i);
                        if c == '/' {
                            set(next, i + 1);
                        }
                    }
                    _ => {}
                }
            }
            if !live {
                return false;
            }
            self.close(next);
            std::mem::swap(&mut now, &mut next);
        }
        get(now, n)
    }

    /// Adds the positions reachable without reading: past `*`, `**` and a `**/` not begun.
    fn close(&self, set_: &mut [u64]) {
        for (i, tok) in self.toks.iter().enumerate() {
            if get(set_, i) {
                match tok {
                    Tok::Star | Tok::Any => set(set_, i + 1),
                    Tok::Segments => set(set_, i + 2),
                    _ => {}
                }
            }
        }
    }
}

fn set(bits: &mut [u64], i: usize) {
    bits[i / 64] |= 1 << (i % 64);
}

fn get(bits: &[u64], i: usize) -> bool {
    bits[i / 64] & (1 << (i % 64)) != 0
}

impl PartialEq for Glob {
    fn eq(&self, other: &Self) -> bool {
        self.text == other.text
    }
}

impl<'de> Deserialize<'de> for Glob {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(|s| Glob::new(&s))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn globs() {
        let cases = [
            (
                "file:///home/*/.ssh/**",
                "file:///home/alice/.ssh/id_rsa",
                true,
            ),
            (
                "file:///home/*/.ssh/**",
                "file:///home/a/b/.ssh/id_rsa",
                false,
            ),
            ("**/.ssh/**", "/root/.ssh/known_hosts", true),
            ("**/.env", ".env", true),
            ("**/.env", "/srv/app/.env", true),
            ("**/.env", "/srv/app/.envrc", false),
            ("a?c", "abc", true),
            ("a?c", "a/c", false),
            ("*", "read_file", true),
            // `**/` is whole segments: a name that merely ends the same way is no match.
            ("**/.env", "/srv/app/prod.env", false),
            ("**/id_rsa*", "/home/a/.ssh/id_rsa.pub", true),
            ("**/id_rsa*", "/home/a/.ssh/id_rsa/x", false),
            ("tool:**", "tool:fs/delete", true),
            ("tool:fs/delete_*", "tool:fs/delete_file", true),
            ("tool:fs/delete_*", "tool:fs/x/delete_file", false),
            ("a**b", "a/x/b", true),
            ("", "", true),
            ("", "x", false),
            ("?", "é", true),
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_match(pattern, text), want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn hostile_texts_match_in_linear_time() {
        // A backtracking matcher takes |text|² steps per `**` here; this one reads the text
        // once per pattern step.
        let text = format!("/{}x", "a/".repeat(200_000));
        let started = std::time::Instant::now();
        for p in ["**/a/**/a/**/b", "**/*/*/*/*/b", "**a**a**a**b"] {
            assert!(!glob_match(p, &text), "{p}");
        }
        assert!(started.elapsed() < std::time::Duration::from_secs(2));
        // Patterns of more than 127 steps use the heap for their state sets.
        let long = format!("{}*", "x".repeat(300));
        assert!(glob_match(&long, &format!("{}yz", "x".repeat(300))));
        assert!(!glob_match(&long, &"x".repeat(299)));
    }

    #[test]
    fn default_config_flags_ssh_keys() {
        let c = ClassificationConfig::default();
        assert_eq!(
            c.classify_uri("file:///home/bob/.ssh/id_ed25519"),
            "sensitive"
        );
        assert_eq!(c.classify_uri("file:///home/bob/notes.txt"), UNCLASSIFIED);
        assert_eq!(
            c.classify_uri("FILE://localhost/home/bob/./x/../.ssh/id_rsa"),
            "sensitive",
            "another spelling of the same key"
        );
        let args = json!({"path": "/home/bob/.ssh/id_rsa"});
        assert_eq!(
            c.classify_tool_call("read_file", &args),
            Some(("sensitive", "path", "/home/bob/.ssh/id_rsa"))
        );
        assert_eq!(
            c.classify_tool_call("read_file", &json!({"path": "/tmp/x"})),
            None
        );
    }
}
