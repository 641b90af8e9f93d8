//! Redaction tests: sensitive keys by word, secret shapes, records of what was cut, limits.
use serde_json::json;

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
        json!({"password": "[REDACTED]", "X-Api-Key": "[REDACTED]", "accessToken": "[REDACTED]", "APIKey": "[REDACTED]",
               "max_tokens": 200, "nested": {"client_secret": "[REDACTED]", "ok": "fine"}, "list": [{"db_password": "[REDACTED]"}],
               "has_token": true}),
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
        json!({"cmd": "export AWS=[REDACTED]; ls", "h": "Authorization: [REDACTED]", "gh": "[REDACTED]",
               "pem": "key: [REDACTED] end", "plain": "hello",
               "redacted": [{"field": "metadata.cmd", "kind": "aws_access_key"}, {"field": "metadata.gh", "kind": "github_token"},
                            {"field": "metadata.h", "kind": "bearer_token"}, {"field": "metadata.pem", "kind": "private_key"}]}),
    );
    let mut ev = event(
        json!({}),
        "called with token ghp_0123456789abcdefghijklmnopqrstuvwxyz",
    );
    Redactor::default().redact_event(&mut ev);
    assert_eq!(ev.message, "called with token [REDACTED]");
}

#[test]
fn configured_keys_and_patterns_and_bad_patterns() {
    let cfg = RedactionConfig {
        keys: vec!["ssn".into()],
        patterns: vec![r"\bINT-\d{6}\b".into()],
        ..Default::default()
    };
    check(
        &cfg,
        json!({"ssn": "123-45-6789", "note": "ticket INT-123456"}),
        json!({"ssn": "[REDACTED]", "note": "ticket [REDACTED]", "redacted": [{"field": "metadata.note", "kind": "custom"}]}),
    );
    let bad = RedactionConfig {
        patterns: vec!["ok".into(), "(unclosed".into()],
        keys: vec!["--".into()],
        ..Default::default()
    };
    let errs = bad.build().unwrap_err();
    let paths: Vec<&str> = errs.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(paths, ["redaction.patterns[1]", "redaction.keys[0]"]);
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
        json!([{"field": "metadata.result.text", "kind": "jwt"}, {"field": "metadata.result.items.*", "kind": "slack_token"},
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
        json!({"password": "x", "pin": "[REDACTED]", "k": "AKIAIOSFODNN7EXAMPLE"}),
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
    assert_eq!(p["token"], "[REDACTED]");
    assert_ne!(p["n"], json!(3));
    assert!(!serde_json::to_string(&ev).unwrap().contains("/etc/passwd"));
}
