//! `mcpwatch rules check`: every error of every file with file, rule, line and column; counts
//! per file on success; exit 1 on any error.

mod common;

use std::path::PathBuf;

fn fixture(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/rules")
        .join(name)
        .display()
        .to_string()
}

struct Output {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `mcpwatch rules check` with `args`; file names are fixture names.
fn check(args: &[&str]) -> Output {
    let args: Vec<String> = args
        .iter()
        .map(|a| {
            if a.ends_with(".yaml") {
                fixture(a)
            } else {
                (*a).to_owned()
            }
        })
        .collect();
    let out = common::bin()
        .args(["rules", "check"])
        .args(&args)
        .output()
        .expect("run mcpwatch rules check");
    Output {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

#[test]
fn a_valid_file_prints_its_rule_count() {
    let out = check(&["good.yaml"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
    assert!(
        out.stdout
            .contains(&format!("{}: 2 rule(s)", fixture("good.yaml"))),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("OK: 2 rule(s) in 1 file(s)"));
}

#[test]
fn every_error_names_file_line_column_and_rule() {
    let out = check(&["good.yaml", "bad.yaml"]);
    assert_eq!(out.code, 1);
    let bad = fixture("bad.yaml");
    let expected = [
        (4, 29, "broken_expression", "expected a value"),
        (7, 27, "bad_regex", "bad regex"),
        (12, 13, "bad_window", "is not a duration"),
        (16, 16, "zero_threshold", "must be at least 1"),
        (22, 5, "unknown_field", "unknown field `colour`"),
    ];
    let lines: Vec<&str> = out.stderr.lines().collect();
    for (line, col, rule, what) in expected {
        let prefix = format!("{bad}:{line}:{col}: rule {rule}: ");
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(&prefix) && l.contains(what)),
            "no `{prefix}…{what}` in:\n{}",
            out.stderr
        );
    }
    assert!(
        out.stderr.contains("5 error(s); nothing would be loaded"),
        "{}",
        out.stderr
    );
    assert!(out.stderr.contains("run `mcpwatch rules check"));
    assert!(out.stdout.is_empty(), "nothing is OK: {}", out.stdout);
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let out = check(&["good.yaml", "does-not-exist.yaml"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr.contains(&format!(
            "{}: cannot read the file",
            fixture("does-not-exist.yaml")
        )) && out.stderr.contains("check the path"),
        "{}",
        out.stderr
    );
}

#[test]
fn a_name_taken_by_a_built_in_rule_is_an_error_unless_defaults_are_off() {
    let out = check(&["shadows_default.yaml"]);
    assert_eq!(out.code, 1);
    assert!(
        out.stderr
            .contains("rule brute_force_detection: a rule with this name is already defined"),
        "{}",
        out.stderr
    );
    let out = check(&["shadows_default.yaml", "--no-default-rules"]);
    assert_eq!(out.code, 0, "{}", out.stderr);
}

#[test]
fn no_file_is_a_usage_error() {
    let out = check(&[]);
    assert_eq!(out.code, 2);
    assert!(out.stderr.contains("FILES"), "{}", out.stderr);
}
