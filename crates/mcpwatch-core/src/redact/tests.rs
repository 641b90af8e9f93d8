//! Redaction tests: sensitive keys by word, secret shapes, records of what was cut, limits.
use serde_json::json;

use super::words::{word_spans, words, MAX_KEY_WORDS};
use super::*;
use crate::event::{Level, Timestamp};

fn event(metadata: Value, message: &str) -> Event {
    Event {
        id: "1".into(),
        timestamp: Timestamp::from_micros(0),
        level: Level::Info,
        category: "tool_execution".into(),
        source: "test".into(),
        event_type: "execution_start".into(),
        message: message.into(),
        metadata: metadata.as_object().cloned().unwrap_or_default(),
        tags: vec![],
    }
}

fn check(cfg: &RedactionConfig, metadata: Value, expected: Value) {
    let mut ev = event(metadata, "");
    cfg.build().unwrap().redact_event(&mut ev);
    assert_eq!(Value::Object(ev.metadata), expected);
}

#[test]
fn sensitive_keys_by_word_not_by_substring() {
    let d = RedactionConfig::default();
    check(
        &d,
        json!({"password": "hunter2", "X-Api-Key": "k", "accessToken": "t", "APIKey": "k2", "max_tokens": 200,
               "nested": {"client_secret": "s", "ok": "fine"}, "list": [{"db_password": 1234}], "has_token": true}),
        json!({"password": "[REDACTED:password]", "X-Api-Key": "[REDACTED:api_key]", "accessToken": "[REDACTED:token]",
               "APIKey": "[REDACTED:api_key]", "max_tokens": 200, "nested": {"client_secret": "[REDACTED:secret]", "ok": "fine"},
               "list": [{"db_password": "[REDACTED:password]"}], "has_token": true,
               "redacted": [{"field": "metadata.APIKey", "kind": "api_key"}, {"field": "metadata.X-Api-Key", "kind": "api_key"},
                            {"field": "metadata.accessToken", "kind": "token"}, {"field": "metadata.list.*.db_password", "kind": "password"},
                            {"field": "metadata.nested.client_secret", "kind": "secret"}, {"field": "metadata.password", "kind": "password"}]}),
    );
}

#[test]
fn secret_shapes_inside_strings() {
    let d = RedactionConfig::default();
    let pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY-----";
    check(
        &d,
        json!({"cmd": "export AWS=AKIAIOSFODNN7EXAMPLE; ls", "h": "Authorization: Bearer abcdefghijklmnop",
               "gh": "ghp_0123456789abcdefghijklmnopqrstuvwxyz", "pem": format!("key: {pem} end"), "plain": "hello"}),
        json!({"cmd": "export AWS=[REDACTED:aws_access_key]; ls", "h": "Authorization: [REDACTED:authorization_header]",
               "gh": "[REDACTED:github_pat]", "pem": "key: [REDACTED:private_key] end", "plain": "hello",
               "redacted": [{"field": "metadata.cmd", "kind": "aws_access_key"}, {"field": "metadata.gh", "kind": "github_pat"},
                            {"field": "metadata.h", "kind": "authorization_header"}, {"field": "metadata.pem", "kind": "private_key"}]}),
    );
    let mut ev = event(
        json!({}),
        "called with token ghp_0123456789abcdefghijklmnopqrstuvwxyz",
    );
    Redactor::default().redact_event(&mut ev);
    assert_eq!(ev.message, "called with token [REDACTED:github_pat]");
}

#[test]
fn configured_keys_and_patterns_and_bad_patterns() {
    let cfg = RedactionConfig {
        keys: vec!["ssn".into()],
        patterns: vec![PatternConfig::Regex(r"\bINT-\d{6}\b".into())],
        ..Default::default()
    };
    check(
        &cfg,
        json!({"ssn": "123-45-6789", "note": "ticket INT-123456"}),
        json!({"ssn": "[REDACTED:custom_key]", "note": "ticket [REDACTED:custom]",
               "redacted": [{"field": "metadata.note", "kind": "custom"}, {"field": "metadata.ssn", "kind": "custom_key"}]}),
    );
    let bad = RedactionConfig {
        patterns: vec![
            PatternConfig::Regex("ok".into()),
            PatternConfig::Regex("(unclosed".into()),
            PatternConfig::Regex("a*".into()),
            PatternConfig::Named {
                kind: "Bad Kind".into(),
                regex: "x".into(),
                keywords: vec![],
            },
        ],
        keys: vec!["--".into()],
        ..Default::default()
    };
    let errs = bad.build().unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "redaction.patterns[1]",
            "redaction.patterns[2]",
            "redaction.patterns[3].kind",
            "redaction.keys[0]"
        ]
    );
    assert!(
        errs[0].message.contains("unclosed group"),
        "{}",
        errs[0].message
    );
    assert!(
        !errs[0].message.contains('\n'),
        "one line: {}",
        errs[0].message
    );
}

#[test]
fn secrets_cut_from_results_are_recorded_by_field_and_kind_and_merged() {
    let r = Redactor::default();
    let mut ev = event(
        json!({"result": {"text": "aws: AKIAIOSFODNN7EXAMPLE", "items": ["xoxb-1234567890-abcdef"]},
               "redacted": [{"field": "metadata.result.text", "kind": "jwt"}]}),
        "",
    );
    r.redact_event(&mut ev);
    assert_eq!(
        ev.metadata["redacted"],
        json!([{"field": "metadata.result.text", "kind": "jwt"}, {"field": "metadata.result.items.*", "kind": "slack_bot_token"},
               {"field": "metadata.result.text", "kind": "aws_access_key"}])
    );
    // Redacting again (the collector after wrap) records nothing twice.
    let before = ev.metadata["redacted"].clone();
    r.redact_event(&mut ev);
    assert_eq!(ev.metadata["redacted"], before);
    // The record is bounded whatever the input.
    let many: Vec<String> = (0..100)
        .map(|i| format!("AKIAIOSFODNN7EXAMP{i:02}"))
        .collect();
    let mut ev = event(json!({"list": many}), "");
    r.redact_event(&mut ev);
    assert_eq!(
        ev.metadata["redacted"].as_array().unwrap().len(),
        1,
        "same field and kind once"
    );
    let keys: serde_json::Map<String, Value> = (0..100)
        .map(|i| (format!("k{i}"), json!("AKIAIOSFODNN7EXAMPLE")))
        .collect();
    let mut ev = event(Value::Object(keys), "");
    r.redact_event(&mut ev);
    assert_eq!(ev.metadata["redacted"].as_array().unwrap().len(), 16);
}

#[test]
fn word_spans_agree_with_words() {
    for key in [
        "X-Api-Key",
        "apiKey",
        "APIKey",
        "db_password",
        "max_tokens",
        "a1B2",
        "__",
        "ÄpiKey",
        "a-b-c-d-e-f-g-h-i-j-k-l-m-n-o-p-q-r",
    ] {
        let mut spans = [(0, 0); MAX_KEY_WORDS];
        let n = word_spans(key, &mut spans);
        let got: Vec<String> = spans[..n]
            .iter()
            .map(|&(a, b)| key[a..b].to_lowercase())
            .collect();
        let want = words(key);
        if want.len() <= MAX_KEY_WORDS {
            assert_eq!(got, want, "{key}");
        } else {
            assert_eq!(n, MAX_KEY_WORDS, "{key}");
        }
    }
}

#[test]
fn replacing_the_defaults_keeps_only_configured_rules() {
    let cfg = RedactionConfig {
        replace_defaults: true,
        keys: vec!["pin".into()],
        ..Default::default()
    };
    check(
        &cfg,
        json!({"password": "x", "pin": "1234", "k": "AKIAIOSFODNN7EXAMPLE"}),
        json!({"password": "x", "pin": "[REDACTED:custom_key]", "k": "AKIAIOSFODNN7EXAMPLE",
               "redacted": [{"field": "metadata.pin", "kind": "custom_key"}]}),
    );
}

#[test]
fn long_values_are_truncated_with_a_marker_on_a_char_boundary() {
    let cfg = RedactionConfig {
        max_value_bytes: 64,
        ..Default::default()
    };
    let mut ev = event(json!({"text": "é".repeat(100)}), "");
    cfg.build().unwrap().redact_event(&mut ev);
    let text = ev.metadata["text"].as_str().unwrap();
    assert!(text.starts_with(&"é".repeat(32)));
    assert!(text.ends_with("…[truncated 136 bytes]"), "{text}");
}

#[test]
fn privacy_mode_keeps_parameter_keys_and_hashes_values() {
    let cfg = RedactionConfig {
        privacy_mode: true,
        ..Default::default()
    };
    let mut ev = event(
        json!({"parameters": {"path": "/etc/passwd", "token": "t", "n": 3}}),
        "",
    );
    cfg.build().unwrap().redact_event(&mut ev);
    let p = &ev.metadata["parameters"];
    assert!(p["path"].as_str().unwrap().starts_with("sha256:"));
    assert_eq!(p["token"], "[REDACTED:token]");
    assert_ne!(p["n"], json!(3));
    assert!(!serde_json::to_string(&ev).unwrap().contains("/etc/passwd"));
}

/// The `.env` fixture the end-to-end test reads through `server-filesystem`, and its secrets.
pub(crate) const DOTENV: &str = include_str!("fixtures/secrets.env");
const DOTENV_SECRETS: &str = include_str!("fixtures/secrets.expect");

fn dotenv_secrets() -> Vec<&'static str> {
    DOTENV_SECRETS
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .collect()
}

#[test]
fn a_dotenv_file_returned_as_a_tool_result_keeps_no_secret_value() {
    let mut ev = event(
        json!({"result": {"text": DOTENV}, "parameters": {"path": "/srv/app/.env"}}),
        "",
    );
    Redactor::default().redact_event(&mut ev);
    let stored = serde_json::to_string(&ev).unwrap();
    for secret in dotenv_secrets() {
        assert!(!stored.contains(secret), "{secret} survived in {stored}");
    }
    let text = ev.metadata["result"]["text"].as_str().unwrap();
    for keep in [
        "APP_NAME=inventory",
        "PORT=8080",
        "FEATURE_FLAGS=search,export",
        "@db.internal:5432/inventory",
    ] {
        assert!(text.contains(keep), "{keep} should stay readable in {text}");
    }
    let kinds: Vec<&str> = ev.metadata["redacted"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e["kind"].as_str())
        .collect();
    assert!(
        kinds.contains(&"stripe_secret_key") && kinds.contains(&"url_credentials"),
        "{kinds:?}"
    );
}

#[test]
fn secrets_used_as_keys_are_renamed_at_any_depth() {
    let token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
    let mut ev = event(
        json!({token: 1, "nested": {"AKIAIOSFODNN7EXAMPLE": "x", "[REDACTED:github_pat]": 2}, "plain": {"ok": 1}}),
        "",
    );
    Redactor::default().redact_event(&mut ev);
    let stored = serde_json::to_string(&ev).unwrap();
    assert!(
        !stored.contains(token) && !stored.contains("AKIAIOSFODNN7EXAMPLE"),
        "{stored}"
    );
    assert_eq!(ev.metadata["[REDACTED:github_pat]"], 1);
    assert_eq!(ev.metadata["nested"]["[REDACTED:aws_access_key]"], "x");
    assert_eq!(
        ev.metadata["nested"]["[REDACTED:github_pat]"], 2,
        "an existing key is kept"
    );
    assert_eq!(ev.metadata["plain"], json!({"ok": 1}));
    assert!(ev.metadata["redacted"]
        .as_array()
        .unwrap()
        .contains(&json!({"field": "metadata.nested.(key)", "kind": "aws_access_key"})));
}

#[test]
fn redacting_again_changes_nothing_and_reports_the_markers_it_finds() {
    let r = Redactor::default();
    // The edge redacts a result excerpt before truncating it, without an event to record in…
    let mut text = format!(
        "key {} and DB_PASSWORD=hunter22",
        "sk_live_0123456789abcdefghijklmn"
    );
    r.redact_string(&mut text);
    assert_eq!(
        text,
        "key [REDACTED:stripe_secret_key] and DB_PASSWORD=[REDACTED:password]"
    );
    // …and the event built from it records both kinds, as does the collector redacting again.
    let mut ev = event(json!({"result": {"text": text.clone()}}), "");
    r.redact_event(&mut ev);
    let once = ev.clone();
    r.redact_event(&mut ev);
    assert_eq!(ev, once);
    assert_eq!(ev.metadata["result"]["text"], text);
    assert_eq!(
        ev.metadata["redacted"],
        json!([{"field": "metadata.result.text", "kind": "stripe_secret_key"},
               {"field": "metadata.result.text", "kind": "password"}])
    );
}

#[test]
fn truncation_comes_after_redaction_and_never_splits_a_marker() {
    let cfg = RedactionConfig {
        max_value_bytes: 64,
        ..Default::default()
    };
    let r = cfg.build().unwrap();
    // A token straddling the limit is cut out whole, not truncated into an unrecognisable stub.
    let token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
    let mut s = format!("{} {token} and more text after it", "x".repeat(49));
    r.redact_string(&mut s);
    assert!(!s.contains("ghp_0123"), "{s}");
    assert!(s.contains("[REDACTED:github_pat]"), "{s}");
    let mut m = format!("{}[REDACTED:github_pat] tail", "y".repeat(60));
    truncate(&mut m, 64);
    assert!(
        m.starts_with(&format!("{}[REDACTED:github_pat]", "y".repeat(60))),
        "{m}"
    );
}

#[test]
fn configured_patterns_name_their_kind_and_run_behind_their_keywords() {
    let cfg: RedactionConfig = toml::from_str(
        r#"
        patterns = ["\\bINT-\\d{6}\\b", { kind = "acme_token", regex = "acme_(?P<s>[a-z0-9]{12})", keywords = ["ACME_"] }]
        "#,
    )
    .unwrap();
    let r = cfg.build().unwrap();
    let mut s = "ticket INT-123456 uses acme_abcdef123456".to_string();
    r.redact_string(&mut s);
    assert_eq!(
        s,
        "ticket [REDACTED:custom] uses acme_[REDACTED:acme_token]"
    );
}
