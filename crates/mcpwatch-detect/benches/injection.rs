//! `prompt_injection` benchmark: true-positive rate per attack family and false-positive rate
//! on the generated corpus (`tests/corpus/`), the scanning cost per KiB, and µs per event
//! through the whole engine for tool results as capture records them today (a 512-byte
//! excerpt) and at the 64 KiB bound.
//!
//! Run: `cargo bench -p mcpwatch-detect --bench injection`

#[path = "../tests/corpus/mod.rs"]
mod corpus;

use std::collections::BTreeMap;
use std::hint::black_box;
use std::time::Instant;

use mcpwatch_core::Event;
use mcpwatch_detect::threat::injection::InjectionDetector;
use mcpwatch_detect::{DetectSettings, Engine, RuleSet};
use serde_json::json;

fn rates(d: &InjectionDetector) {
    let attacks = corpus::attacks(21);
    let benign = corpus::benign(2126, attacks.len() + 200);
    let mut fam: BTreeMap<&str, (usize, usize)> = BTreeMap::new();
    for s in &attacks {
        let e = fam.entry(&s.family).or_default();
        e.0 += usize::from(d.scan(&s.text).fires());
        e.1 += 1;
    }
    println!("{:<24} {:>6} {:>9}", "family", "TPR", "caught");
    let mut caught = 0;
    for (f, (h, n)) in &fam {
        caught += h;
        println!(
            "{f:<24} {:>6.3} {:>9}",
            *h as f64 / *n as f64,
            format!("{h}/{n}")
        );
    }
    let fp = benign.iter().filter(|s| d.scan(&s.text).fires()).count();
    println!(
        "overall TPR {:.3} ({caught}/{}), FPR {:.4} ({fp}/{}) — targets TPR >= 0.9, FPR <= 0.02",
        caught as f64 / attacks.len() as f64,
        attacks.len(),
        fp as f64 / benign.len() as f64,
        benign.len()
    );
}

fn cost(d: &InjectionDetector) {
    let mut texts: Vec<String> = corpus::attacks(7).into_iter().map(|s| s.text).collect();
    texts.extend(corpus::benign(8, 600).into_iter().map(|s| s.text));
    let bytes: usize = texts.iter().map(String::len).sum();
    let rounds = 5;
    let t = Instant::now();
    for _ in 0..rounds {
        for s in &texts {
            black_box(d.scan(black_box(s)));
        }
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!(
        "corpus texts: {} texts, mean {} bytes: {:.1} µs per text, {:.1} µs per KiB",
        texts.len(),
        bytes / texts.len(),
        us / texts.len() as f64,
        us / (bytes as f64 / 1024.0)
    );
    // The scan alone, on what most tool results are: benign text, and the ingest benchmark's
    // result text (`crates/mcpwatch/benches/ingest.rs`).
    let benign: Vec<String> = corpus::benign(9, 1000)
        .into_iter()
        .map(|s| s.text)
        .collect();
    let mean = benign.iter().map(String::len).sum::<usize>() / benign.len();
    let t = Instant::now();
    for _ in 0..rounds {
        for s in &benign {
            black_box(d.scan(black_box(s)));
        }
    }
    let per = t.elapsed().as_secs_f64() * 1e6 / (rounds * benign.len()) as f64;
    let ingest = r#"fn main() { println!("hello"); }"#;
    let t = Instant::now();
    for _ in 0..1000 * rounds {
        black_box(d.scan(black_box(ingest)));
    }
    let small = t.elapsed().as_secs_f64() * 1e6 / (1000 * rounds) as f64;
    println!(
        "scan alone: benign texts (mean {mean} bytes) {per:.2} µs per text; the ingest benchmark's result text ({} B) {small:.2} µs",
        ingest.len()
    );
    let mut big = String::new();
    while big.len() < 64 * 1024 - 2048 {
        big.push_str(&texts[big.len() % texts.len()]);
        big.push('\n');
    }
    let t = Instant::now();
    for _ in 0..rounds {
        black_box(d.scan(black_box(&big)));
    }
    let us = t.elapsed().as_secs_f64() * 1e6 / rounds as f64;
    println!(
        "one {} KiB text: {us:.0} µs, {:.1} µs per KiB",
        big.len() / 1024,
        us / (big.len() as f64 / 1024.0)
    );
}

/// An `execution_complete` as the session tracker builds it: the result summary carries at
/// most 512 bytes of text (capture's `MAX_SUMMARY_TEXT`).
fn result_event(i: usize, text: &str) -> Event {
    let mut cut = text.len().min(512);
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    serde_json::from_value(json!({
        "id": format!("0193a000-0000-7000-8000-{i:012}"), "timestamp": 1_790_000_000.0 + i as f64,
        "level": "info", "category": "tool_execution", "source": "wrap:web",
        "event_type": "execution_complete", "message": "Tool fetch execution completed",
        "metadata": {"execution_id": format!("x{i}"), "tool_name": "fetch", "server": "web",
            "user_id": "alice", "session_id": "s1", "execution_time": 0.01, "success": true,
            "outcome": "success", "parameters": {"url": "https://example.com"},
            "result": {"size": text.len(), "content_types": ["text"], "text": &text[..cut],
                       "text_truncated": cut < text.len(), "structured": false}}
    }))
    .expect("valid event")
}

fn per_event() {
    let settings = DetectSettings::default();
    let texts: Vec<String> = corpus::benign(9, 1000)
        .into_iter()
        .map(|s| s.text)
        .collect();
    let events: Vec<Event> = texts
        .iter()
        .enumerate()
        .map(|(i, t)| result_event(i, t))
        .collect();
    let lorem: Vec<Event> = (0..1000)
        .map(|i| result_event(i, "file contents: lorem ipsum dolor sit amet"))
        .collect();
    for (name, evs) in [
        ("ingest bench result (42 B)", &lorem),
        ("corpus result (≤512 B)", &events),
    ] {
        let mut on = Engine::new(RuleSet::defaults(), &settings);
        let mut off_settings = settings.clone();
        off_settings.threats = false;
        let mut off = Engine::new(RuleSet::defaults(), &off_settings);
        let mut out = Vec::new();
        let t = Instant::now();
        for e in evs.iter() {
            on.process(e, &mut out);
            out.clear();
        }
        let with = t.elapsed().as_secs_f64() * 1e6 / evs.len() as f64;
        let t = Instant::now();
        for e in evs.iter() {
            off.process(e, &mut out);
            out.clear();
        }
        let without = t.elapsed().as_secs_f64() * 1e6 / evs.len() as f64;
        println!("engine per execution_complete, {name}: {with:.2} µs with threats, {without:.2} µs without");
    }
}

fn main() {
    let s = DetectSettings::default().prompt_injection;
    let d = InjectionDetector::new(s.threshold, s.allowed_hosts);
    let t = Instant::now();
    black_box(d.scan("warm up: compiles the patterns"));
    println!(
        "pattern compilation (once per process): {:.0} ms",
        t.elapsed().as_secs_f64() * 1e3
    );
    rates(&d);
    cost(&d);
    per_event();
}
