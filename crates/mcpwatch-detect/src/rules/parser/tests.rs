//! Tests of the `when` language: what compiles, what it means, and what errors say.

use mcpwatch_core::Event;
use serde_json::json;

use super::compile;

fn event() -> Event {
    serde_json::from_value(json!({
        "id": "e1", "timestamp": "2026-01-01T00:00:00Z", "level": "warning",
        "category": "security", "source": "api", "event_type": "authorization",
        "message": "Denied access to /admin/users",
        "metadata": {"user_id": "alice", "resource": "/admin/users", "result": "denied",
                     "attempts": 3, "ok": false, "nested": {"depth": 2.5},
                     "roles": ["dev", "ops"], "nothing": null},
        "tags": ["auth", "denied"]
    }))
    .expect("fixture event is valid")
}

fn check(expr: &str, expected: bool) {
    let pred = compile(expr).unwrap_or_else(|e| panic!("{expr}: {e:?}"));
    assert_eq!(pred.eval(&event()), expected, "{expr}");
}

#[test]
fn comparisons_and_logic() {
    check(
        r#"category == "security" && event_type == "authorization""#,
        true,
    );
    check(
        r#"category == "security" && event_type == "authentication""#,
        false,
    );
    check(r#"category == "x" || level == "warning""#, true);
    check(r#"!(metadata.result == "allowed")"#, true);
    check("metadata.attempts >= 3 && metadata.attempts < 4", true);
    check("metadata.attempts > 3", false);
    check("metadata.nested.depth <= 2.5", true);
    check(r#"metadata.attempts == "3""#, false);
    check(r#"metadata.missing != "x""#, true);
    check(r#"metadata.missing == "x""#, false);
    check("metadata.missing == null && metadata.nothing == null", true);
    check("metadata.ok == false && !metadata.ok", true);
    check(r#"level > "info""#, true);
}

#[test]
fn string_and_list_operators() {
    check(r#"metadata.resource contains "admin""#, true);
    check(
        r#"metadata.resource startswith "/admin" && message endswith "users""#,
        true,
    );
    check(r#"metadata.user_id in ["bob", "alice"]"#, true);
    check(r#"metadata.user_id in ["bob"]"#, false);
    check(r#"tags contains "denied" && "auth" in tags"#, true);
    check(r#"metadata.roles contains "ops""#, true);
    check(r#"metadata.roles contains "root""#, false);
    check(r#"message matches "(?i)DENIED\s+access""#, true);
    check(r#"metadata.attempts matches "3""#, false);
    check(
        "exists(metadata.user_id) && !exists(metadata.nothing) && !exists(metadata.x)",
        true,
    );
}

fn check_err(expr: &str, offset: usize, needle: &str) {
    let err = compile(expr).expect_err(expr);
    assert_eq!(err.offset, offset, "{expr}: {}", err.message);
    assert!(err.message.contains(needle), "{expr}: {}", err.message);
}

#[test]
fn errors_point_at_the_problem() {
    check_err(r#"category = "x""#, 9, "write `==`");
    check_err(r#"categroy == "x""#, 0, "unknown field `categroy`");
    check_err(r#"category == "x" &&"#, 18, "expected a condition");
    check_err(r#"category == security"#, 12, "quote strings");
    check_err(r#"(category == "x""#, 16, "`)`");
    check_err(r#"message matches "a(b""#, 16, "bad regex");
    check_err(r#"metadata.x in "a""#, 14, "needs a list");
    check_err(r#"metadata.x > [1]"#, 13, "compare with a number");
    check_err(
        r#"category == "x" event_type == "y""#,
        16,
        "join conditions",
    );
    check_err(r#"message == "open"#, 11, "not closed");
}
