//! Bad rule files give every error at once, each with file, rule, line and column, and load
//! nothing. Expected output lives next to the input (`<name>.errors`).

mod common;

use expect_test::expect_file;
use mcpwatch_detect::{check_rule_files, DetectError, RuleSet};

fn check(name: &str) {
    let path = common::fixture(&format!("rules/{name}.yaml"));
    let errors = check_rule_files(&[&path]).expect_err("the file has errors");
    let dir = common::fixture("");
    let text: String = errors
        .iter()
        .map(|e| format!("{e}\n").replace(&dir.display().to_string(), ""))
        .collect();
    expect_file![format!("fixtures/rules/{name}.errors")].assert_eq(&text);
    // Nothing is half-loaded: the whole set is refused, defaults included.
    match RuleSet::load(&[&path], true) {
        Err(DetectError::Rules(e)) => assert_eq!(e.len(), errors.len()),
        other => panic!("expected rule errors, got {other:?}"),
    }
}

#[test]
fn yaml_syntax_errors_have_positions() {
    check("bad_yaml_syntax");
}

#[test]
fn every_rule_error_is_reported_with_its_position() {
    check("bad_rules");
}

#[test]
fn good_files_check_clean() {
    let counts = check_rule_files(&[common::fixture("rules/test_rules.yaml")]).expect("valid");
    assert_eq!(counts[0].1, 3);
}

#[test]
fn duplicate_names_across_files_are_refused() {
    let f = common::fixture("rules/test_rules.yaml");
    let err = RuleSet::load(&[&f, &f], false).expect_err("duplicates");
    assert!(err.to_string().contains("already defined"), "{err}");
}
