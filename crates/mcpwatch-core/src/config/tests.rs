//! Config file tests: defaults, every error at once with its position.

use super::*;

fn errors(text: &str) -> Vec<String> {
    Config::from_toml(text)
        .unwrap_err()
        .iter()
        .map(ToString::to_string)
        .collect()
}

#[test]
fn empty_file_gives_the_defaults() {
    let c = Config::from_toml("").unwrap();
    assert_eq!(c.server.listen.to_string(), "127.0.0.1:7878");
    assert_eq!(c.retention.max_age, Duration::from_secs(30 * 86_400));
    assert_eq!(c.store.durability, Durability::Full);
}

#[test]
fn a_full_file_parses() {
    let c = Config::from_toml(
        r#"
[server]
listen = "0.0.0.0:9000"
max_body_bytes = "8MB"

[retention]
max_age = "7d"
max_size = "2GB"

[[auth.tokens]]
name = "ci"
token_sha256 = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
roles = ["ingest", "read"]
rate_limit = 50

[rules]
files = ["rules.yaml"]
"#,
    )
    .unwrap();
    assert_eq!(c.server.max_body_bytes, 8_000_000);
    assert_eq!(c.retention.max_size, Some(2_000_000_000));
    assert_eq!(c.auth.tokens[0].roles, [Role::Ingest, Role::Read]);
    assert!(c.extra.contains_key("rules"));
}

#[test]
fn every_error_is_reported_at_once_with_its_line() {
    let text = r#"[server]
listen = "nowhere"

[retention]
max_age = "forever"

[bogus]
x = 1

[[auth.tokens]]
name = "a"
token_sha256 = "abc"
roles = ["ingest"]

[[auth.tokens]]
name = "b"
token = "t"
roles = ["writer"]
"#;
    let errs = errors(text);
    assert_eq!(errs.len(), 4, "{errs:#?}");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("line 2, column 1: server.listen: invalid socket address")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("line 5, column 1: retention.max_age: not a duration")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.starts_with("line 7, column 1: bogus: unknown section")),
        "{errs:#?}"
    );
    assert!(
        errs.iter()
            .any(|e| e.contains("auth.tokens[1].roles") && e.contains("unknown variant `writer`")),
        "{errs:#?}"
    );
}

#[test]
fn semantic_errors_name_the_token() {
    let errs = errors(
        r#"[[auth.tokens]]
name = "a"
token_sha256 = "abc"
roles = []

[[auth.tokens]]
name = "a"
roles = ["read"]
"#,
    );
    assert_eq!(
        errs,
        [
            "line 3, column 1: auth.tokens[0].token_sha256: must be 64 hex digits (the output of sha256sum)",
            "line 4, column 1: auth.tokens[0].roles: give at least one role: ingest, read, admin",
            "line 7, column 1: auth.tokens[1].name: `a` is used by another token; names must be unique",
            "line 6, column 1: auth.tokens[1].token_sha256: a token needs token_sha256 (hex SHA-256 of the token) or token (e.g. \"${MCPWATCH_TOKEN}\")",
        ]
    );
}

#[test]
fn unknown_keys_and_syntax_errors() {
    let errs = errors("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n");
    assert_eq!(errs.len(), 1);
    assert!(
        errs[0].contains("server") && errs[0].contains("unknown field `lisen`"),
        "{errs:?}"
    );
    let errs = errors("[server\nlisten = 1");
    assert!(errs[0].starts_with("line 1, column"), "{errs:?}");
}

#[test]
fn env_expansion_names_the_missing_variable() {
    let lookup = |k: &str| (k == "SET").then(|| "v".to_string());
    assert_eq!(expand_env("a-${SET}-b", &lookup).unwrap(), "a-v-b");
    assert!(expand_env("${UNSET_ONE}", &lookup)
        .unwrap_err()
        .contains("UNSET_ONE is not set"));
}

#[test]
fn a_store_url_takes_its_password_from_the_environment() {
    let c = Config::from_toml("[store]\nurl = \"postgres://mcp:${PGPASS_T}@db:5432/mcpwatch\"\n")
        .unwrap();
    let env = |k: &str| (k == "PGPASS_T").then(|| "s3cret".to_owned());
    assert_eq!(
        c.store.expanded_url(&env).unwrap().as_deref(),
        Some("postgres://mcp:s3cret@db:5432/mcpwatch")
    );
    let none = |_: &str| None;
    let e = c.store.expanded_url(&none).unwrap_err();
    assert!(e.contains("store.url") && e.contains("PGPASS_T"), "{e}");
    assert_eq!(
        errors("[store]\nurl = \"mysql://x\"\n"),
        ["line 2, column 1: store.url: must be a PostgreSQL URL, postgres://user:${PGPASSWORD}@host:5432/database; leave it out to keep events in SQLite under data_dir"]
    );
}
