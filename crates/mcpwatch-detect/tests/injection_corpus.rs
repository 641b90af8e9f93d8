//! Rates of `prompt_injection` on the generated corpus (`tests/corpus/`): true-positive rate per
//! attack family and overall, false-positive rate on a benign set larger than the attack set.
//! Targets (issue 21): TPR ≥ 0.9 with FPR ≤ 0.02.

mod corpus;

use std::collections::BTreeMap;

use mcpwatch_detect::threat::injection::InjectionDetector;
use mcpwatch_detect::DetectSettings;

fn detector() -> InjectionDetector {
    let s = DetectSettings::default().prompt_injection;
    InjectionDetector::new(s.threshold, s.allowed_hosts)
}

#[test]
fn corpus_tpr_is_at_least_0_9_and_fpr_at_most_0_02() {
    let d = detector();
    let attacks = corpus::attacks(21);
    let benign = corpus::benign(2126, attacks.len() + 200);
    assert!(benign.len() > attacks.len());
    let mut by_family: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    let mut missed = Vec::new();
    for s in &attacks {
        let fired = d.scan(&s.text).fires();
        let e = by_family.entry(&s.family).or_default();
        e.0 += usize::from(fired);
        e.1 += 1;
        if !fired {
            missed.push(s);
        }
    }
    let mut false_pos = Vec::new();
    for s in &benign {
        let v = d.scan(&s.text);
        if v.fires() {
            false_pos.push((s, v));
        }
    }
    for (f, (hit, n)) in &by_family {
        println!("{f:<24} TPR {:.2} ({hit}/{n})", *hit as f64 / *n as f64);
    }
    let caught = attacks.len() - missed.len();
    let tpr = caught as f64 / attacks.len() as f64;
    let fpr = false_pos.len() as f64 / benign.len() as f64;
    println!(
        "overall TPR {tpr:.3} ({caught}/{}), FPR {fpr:.4} ({}/{})",
        attacks.len(),
        false_pos.len(),
        benign.len()
    );
    for s in missed.iter().take(40) {
        println!("MISSED [{}] {:?}", s.family, s.text);
    }
    for (s, v) in false_pos.iter().take(20) {
        println!(
            "FALSE POSITIVE {:?}\n  {:?}",
            s.text,
            v.signals
                .iter()
                .map(|s| (s.label, &s.matched, s.weight))
                .collect::<Vec<_>>()
        );
    }
    assert!(tpr >= 0.9, "TPR {tpr:.3} below 0.9");
    assert!(fpr <= 0.02, "FPR {fpr:.4} above 0.02");
    for (f, (hit, n)) in &by_family {
        assert!(*hit as f64 / *n as f64 >= 0.75, "family {f}: {hit}/{n}");
    }
}

#[test]
fn no_hard_negative_fires_on_its_own() {
    let d = detector();
    let fired: Vec<_> = corpus::hard_negatives()
        .filter_map(|t| {
            let v = d.scan(t);
            v.fires().then(|| {
                format!(
                    "{t:?}: {:?}",
                    v.signals
                        .iter()
                        .map(|s| (s.label, &s.matched))
                        .collect::<Vec<_>>()
                )
            })
        })
        .collect();
    assert!(fired.is_empty(), "{fired:#?}");
}
