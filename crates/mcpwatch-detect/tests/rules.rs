//! Data-driven tests of the rule engine: each fixture stream sits next to the findings it must
//! produce (`<name>.expected`, a snapshot; refresh with `UPDATE_EXPECT=1` after checking the
//! diff by eye).

mod common;

use std::fmt::Write;

use expect_test::expect_file;
use mcpwatch_detect::{RuleEngine, RuleSet};

fn rules(which: &str) -> RuleSet {
    let (with_defaults, file) = match which.strip_prefix("defaults") {
        Some(rest) => (true, rest.strip_prefix('+')),
        None => (false, Some(which)),
    };
    let paths: Vec<_> = file
        .map(|f| common::fixture(&format!("rules/{f}")))
        .into_iter()
        .collect();
    RuleSet::load(&paths, with_defaults).unwrap_or_else(|e| panic!("{e}"))
}

/// Runs fixture `name` through `rule_source` and compares with `name.expected`.
fn check(name: &str, rule_source: &str) {
    let mut engine = RuleEngine::new(rules(rule_source), 10_000);
    let mut out = Vec::new();
    for e in common::events(&format!("rules/{name}.jsonl")) {
        engine.process(&e, &mut out);
    }
    let mut text = common::render(&out);
    for (rule, s) in engine.stats().filter(|(_, s)| s.matched > 0) {
        let _ = writeln!(
            text,
            "stats {rule}: matched={} fired={} suppressed={} late_dropped={} ungrouped={}",
            s.matched, s.fired, s.suppressed, s.late_dropped, s.ungrouped
        );
    }
    expect_file![format!("fixtures/rules/{name}.expected")].assert_eq(&text);
}

#[test]
fn exactly_the_threshold_fires_and_one_below_does_not() {
    check("threshold_boundary", "defaults");
}

#[test]
fn window_edge_is_inclusive() {
    check("window_edge", "defaults");
}

#[test]
fn out_of_order_events_count_inside_the_window_and_older_ones_are_dropped() {
    check("out_of_order", "defaults");
}

#[test]
fn distinct_counts_values_not_events() {
    check("distinct", "test_rules.yaml");
}

#[test]
fn suppression_and_multi_field_group_by() {
    check("suppress_multi_group", "test_rules.yaml");
}

#[test]
fn rules_without_threshold_fire_on_every_match() {
    check("privilege_escalation", "defaults+test_rules.yaml");
}

#[test]
fn reload_keeps_the_state_of_unchanged_rules_only() {
    let events = common::events("rules/threshold_boundary.jsonl");
    let (first, rest) = events.split_at(3); // alice has 2 failures after these
    let fired_after_reload = |new_rules: RuleSet| {
        let mut engine = RuleEngine::new(RuleSet::defaults(), 1000);
        let mut out = Vec::new();
        first.iter().for_each(|e| engine.process(e, &mut out));
        engine.reload(new_rules);
        rest.iter().for_each(|e| engine.process(e, &mut out));
        out.iter().map(|f| f.name.clone()).collect::<Vec<_>>()
    };
    assert_eq!(
        fired_after_reload(RuleSet::defaults()),
        ["brute_force_detection"]
    );
    let changed =
        mcpwatch_detect::rules::DEFAULT_RULES_YAML.replace("threshold: 5", "threshold: 4");
    let changed = RuleSet::from_yaml(&changed, "changed.yaml").expect("valid");
    assert!(
        fired_after_reload(changed).is_empty(),
        "a changed rule starts from an empty window: 3 of its 4 events are after the reload"
    );
}
