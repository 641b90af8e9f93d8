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
    pub uri: String,
    /// The classification a match gives, e.g. `sensitive`.
    pub classification: String,
}

/// One tool rule: a tool (glob over its name) whose string argument matches a glob.
#[derive(Debug, Clone, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct ToolRule {
    /// Glob over the tool name; `*` for every tool.
    pub tool: String,
    /// The argument name to look at; any top-level string argument when absent.
    #[serde(default)]
    pub argument: Option<String>,
    /// Glob over the argument's value.
    pub value: String,
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
                    uri: format!("file:///{}", p.trim_start_matches('/')),
                    classification: "sensitive".into(),
                })
                .collect(),
            tools: sensitive_paths
                .iter()
                .map(|p| ToolRule {
                    tool: "*".into(),
                    argument: None,
                    value: (*p).into(),
                    classification: "sensitive".into(),
                })
                .collect(),
        }
    }
}

impl ClassificationConfig {
    /// The classification of a resource URI.
    pub fn classify_uri(&self, uri: &str) -> &str {
        self.resources
            .iter()
            .find(|r| glob_match(&r.uri, uri))
            .map_or(UNCLASSIFIED, |r| r.classification.as_str())
    }

    /// The classification of a tool call, and the argument that matched, if any rule matches.
    pub fn classify_tool_call<'a>(
        &'a self,
        tool: &str,
        arguments: &'a Value,
    ) -> Option<(&'a str, &'a str, &'a str)> {
        let args = arguments.as_object()?;
        for rule in self.tools.iter().filter(|r| glob_match(&r.tool, tool)) {
            for (name, value) in args {
                if rule.argument.as_deref().is_some_and(|a| a != name) {
                    continue;
                }
                if let Some(s) = value.as_str().filter(|s| glob_match(&rule.value, s)) {
                    return Some((rule.classification.as_str(), name.as_str(), s));
                }
            }
        }
        None
    }
}

/// Matches `text` against a glob (`*` within a segment, `**` across, `?` one character).
pub fn glob_match(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    // memo[i][j]: pattern from i matches text from j; bounded by |p|·|t|, both short.
    let mut memo = vec![None; (p.len() + 1) * (t.len() + 1)];
    glob_at(&p, &t, 0, 0, &mut memo)
}

fn glob_at(p: &[char], t: &[char], i: usize, j: usize, memo: &mut [Option<bool>]) -> bool {
    let slot = i * (t.len() + 1) + j;
    if let Some(v) = memo[slot] {
        return v;
    }
    let v = match p.get(i) {
        None => j == t.len(),
        Some('*') if p.get(i + 1) == Some(&'*') => {
            // `**/` may also match zero segments.
            let next = if p.get(i + 2) == Some(&'/') {
                i + 3
            } else {
                i + 2
            };
            (j..=t.len()).any(|k| glob_at(p, t, next, k, memo))
                || (next == i + 3 && glob_at(p, t, i + 2, j, memo))
        }
        Some('*') => {
            let mut k = j;
            loop {
                if glob_at(p, t, i + 1, k, memo) {
                    break true;
                }
                if k == t.len() || t[k] == '/' {
                    break false;
                }
                k += 1;
            }
        }
        Some('?') => j < t.len() && t[j] != '/' && glob_at(p, t, i + 1, j + 1, memo),
        Some(c) => j < t.len() && t[j] == *c && glob_at(p, t, i + 1, j + 1, memo),
    };
    memo[slot] = Some(v);
    v
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
        ];
        for (pattern, text, want) in cases {
            assert_eq!(glob_match(pattern, text), want, "{pattern} vs {text}");
        }
    }

    #[test]
    fn default_config_flags_ssh_keys() {
        let c = ClassificationConfig::default();
        assert_eq!(
            c.classify_uri("file:///home/bob/.ssh/id_ed25519"),
            "sensitive"
        );
        assert_eq!(c.classify_uri("file:///home/bob/notes.txt"), UNCLASSIFIED);
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
