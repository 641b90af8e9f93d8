//! Generic credential shapes: private key blocks, JWTs, URL credentials, `Authorization` values,
//! bearer and basic credentials, command-line secrets, Kubernetes secrets and `KEY=value`
//! assignments whose key names a secret (decided by `keys.rs`).

use super::{c, r, Check, Rule};

/// The generic rules; the assignment rule comes last (its kind is the key's).
#[rustfmt::skip]
pub(super) const RULES: &[Rule] = &[
    r("private_key", "private key", &["-----begin", "putty-user-key-file"],
      r"-----BEGIN[ A-Z0-9_-]{0,40}PRIVATE KEY(?: BLOCK)?-----(?s:.*?)(?:-----END[ A-Z0-9_-]{0,40}PRIVATE KEY(?: BLOCK)?-----|\z)|PuTTY-User-Key-File-\d:(?s:.*?)(?:Private-MAC: [0-9a-f]+|\z)"),
    r("jwt", "JWT", &["eyj"],
      r"\beyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"),
    r("url_credentials", "credentials in a URL", &["://"],
      r#"\b[A-Za-z][A-Za-z0-9+.-]{1,20}://[^\s:/?#@"'<>`]{0,128}:(?P<s>[^\s/?#"'<>`]{1,256})@[^\s/?#@"'<>`]"#),
    r("authorization_header", "authorization header", &["authorization"],
      r#"(?i)\b(?:proxy-)?authorization["']?\s*[:=]\s*["']?(?P<s>digest\s+(?:[0-9A-Za-z_-]+=(?:"[^"\r\n]*"|[^\s,"']+),?\s*)+|[^\r\n"']+)"#),
    c("bearer_token", "bearer token", &["bearer"],
      r"\b[Bb]earer[ \t]+(?P<s>[A-Za-z0-9\-._~+/]{8,}=*)", Check::Bearer),
    c("basic_auth", "basic auth credentials", &["basic"],
      r"\b[Bb]asic[ \t]+(?P<s>[A-Za-z0-9+/]{6,}={0,2})", Check::Basic),
    r("curl_credentials", "curl credentials", &["curl"],
      r#"\bcurl\b[^\n]*?\s(?:-u|--user)(?:=|[ \t]+)(?P<s>"[^"\n]+:[^"\n]+"|'[^'\n]+:[^'\n]+'|[^\s'"]+:[^\s'"]+)"#),
    r("cli_secret_flag", "secret on a command line", &["--"],
      r"(?i)\s--?(?:password|passwd|pass|token|secret|api-key|apikey|auth-token|access-token|client-secret|secret-key)(?:=|[ \t]+)(?P<s>[^\s'`-][^\s'`]{2,})"),
    r("kubernetes_secret", "Kubernetes secret data", &["secret"],
      r#"(?s)kind:\s*["']?Secret["']?\b.{0,2000}?\b(?:data|stringData):[ \t]*\r?\n(?P<s>(?:[ \t]+[0-9A-Za-z_.-]+:[^\n]*(?:\n|\z))+)"#),
    r("generic_api_key", "API key", &["sk-"],
      r"\bsk-[A-Za-z0-9_-]{20,}"),
    c("secret_assignment", "secret assigned to a secret-named key", &[],
      r#"(?P<key>[A-Za-z_][A-Za-z0-9_.-]{0,63})["']?(?P<pre>[ \t]*)(?P<sep>:=|=>|=|:)(?P<post>[ \t]*)(?P<val>"(?:[^"\\\r\n]|\\.){0,1024}"|'[^'\r\n]{0,1024}'|[^\s"'`,;&<>(){}\[\]]{1,1024})"#, Check::Assignment),
];
