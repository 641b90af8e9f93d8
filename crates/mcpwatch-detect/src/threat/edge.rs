//! Threat scans at the edge, on the full text, before capture cuts it.
//!
//! A stored event keeps 512 bytes of a result, 4 KiB of a string and the shape of arguments
//! over 16 KiB, so a payload padded past the cut would never reach the signatures. Capture
//! therefore runs these scanners ([`EdgeScanner`]) on the text as it arrives, up to
//! [`EDGE_SCAN_BYTES`] per string, and when something is found puts a small `edge_scan` value
//! on the event (or on the listed tool): `{"bound": 65536, "threats": [{"threat_type",
//! "hits": [{"label", "evidence"}], "score"?}]}`, at most a few hits of at most 80 characters
//! each, redacted with the event. The [`ThreatScanner`](super::ThreatScanner) uses a carried
//! threat when its own scan of the stored text finds nothing of that kind; a carried
//! `prompt_injection` fires when its score reaches the collector's configured threshold (the
//! edge reports from half the default threshold, so a collector that is stricter still sees
//! it). The edge uses the default settings (no allow-listed hosts).
//!
//! A client that writes events itself could add `edge_scan` too, but it can already send the
//! text: a forged value raises an alert, it cannot hide one.

use std::borrow::Cow;
use std::sync::OnceLock;

use serde_json::{json, Map, Value};

use super::injection::{InjectionDetector, Verdict};
use super::signatures::{is_invisible, snippet, Hit, Signatures};
use super::{verdict_hits, walk_strings, MAX_SCAN, MAX_STRINGS};

/// Bytes of one string the edge scans (the same bound as detection's own scans).
pub const EDGE_SCAN_BYTES: usize = MAX_SCAN;
/// Hits carried per threat.
const MAX_CARRIED_HITS: usize = 8;
/// Share of the default `prompt_injection` threshold from which the edge reports a text.
const EDGE_INJECTION_FLOOR: f32 = 0.5;

/// The scanners capture runs on full text. Compiled once per process ([`EdgeScanner::shared`]).
pub struct EdgeScanner {
    sigs: Signatures,
    injection: InjectionDetector,
}

impl std::fmt::Debug for EdgeScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EdgeScanner").finish_non_exhaustive()
    }
}

impl EdgeScanner {
    /// The process's scanner.
    pub fn shared() -> &'static EdgeScanner {
        static SCANNER: OnceLock<EdgeScanner> = OnceLock::new();
        SCANNER.get_or_init(|| {
            let d = crate::config::InjectionSettings::default();
            EdgeScanner {
                sigs: Signatures::new(),
                injection: InjectionDetector::new(d.threshold * EDGE_INJECTION_FLOOR, Vec::new()),
            }
        })
    }

    /// `path_traversal` and `command_injection` in tool arguments as sent.
    pub fn parameters(&self, arguments: &Value) -> Option<Value> {
        let (pt, ci) = parameter_hits(&self.sigs, arguments);
        carry([
            threat("path_traversal", &pt, None),
            threat("command_injection", &ci, None),
        ])
    }

    /// `prompt_injection` in text handed to the model: a tool result, resource contents, a
    /// prompt.
    pub fn text(&self, text: &str) -> Option<Value> {
        let verdict = self.injection.scan(clip_to(text));
        carry([injection_threat(&verdict)])
    }

    /// `tool_poisoning` in a tool description.
    pub fn description(&self, description: &str) -> Option<Value> {
        let (hits, _) = description_hits(&self.sigs, &self.injection, description);
        carry([threat("tool_poisoning", &hits, None)])
    }
}

/// Path traversal and command injection hits in the strings of `params`.
pub(super) fn parameter_hits(sigs: &Signatures, params: &Value) -> (Vec<Hit>, Vec<Hit>) {
    let (mut pt, mut ci) = (Vec::new(), Vec::new());
    let mut budget = MAX_STRINGS;
    walk_strings(params, &mut budget, &mut |s| {
        sigs.path_traversal.scan(s, &mut pt);
        sigs.command_injection.scan(s, &mut ci);
    });
    (pt, ci)
}

/// Tool poisoning hits in a description: the poisoning signatures, invisible characters and,
/// when the injection detector fires, its signals (the verdict is returned too).
pub(super) fn description_hits(
    sigs: &Signatures,
    injection: &InjectionDetector,
    desc: &str,
) -> (Vec<Hit>, Verdict) {
    let desc = clip_to(desc);
    let mut hits = Vec::new();
    sigs.poisoning.scan(desc, &mut hits);
    if let Some(c) = desc.chars().find(|c| is_invisible(*c)) {
        let count = desc.chars().filter(|c| is_invisible(*c)).count();
        hits.push(Hit {
            label: "invisible characters".into(),
            evidence: format!(
                "{count} invisible characters, first {}",
                snippet(&c.to_string())
            ),
        });
    }
    let verdict = injection.scan(desc);
    if verdict.fires() {
        hits.extend(verdict_hits(&verdict));
    }
    (hits, verdict)
}

fn injection_threat(v: &Verdict) -> Option<Value> {
    if !v.fires() {
        return None;
    }
    let score = (v.score * 100.0).round() / 100.0;
    threat("prompt_injection", &verdict_hits(v), Some(score))
}

fn threat(name: &str, hits: &[Hit], score: Option<f32>) -> Option<Value> {
    if hits.is_empty() {
        return None;
    }
    let hits: Vec<Value> = hits
        .iter()
        .take(MAX_CARRIED_HITS)
        .map(|h| json!({"label": h.label, "evidence": h.evidence}))
        .collect();
    let mut m = Map::new();
    m.insert("threat_type".into(), json!(name));
    m.insert("hits".into(), Value::Array(hits));
    if let Some(score) = score {
        m.insert("score".into(), json!(score));
    }
    Some(Value::Object(m))
}

fn carry<const N: usize>(threats: [Option<Value>; N]) -> Option<Value> {
    let threats: Vec<Value> = threats.into_iter().flatten().collect();
    if threats.is_empty() {
        return None;
    }
    Some(json!({"bound": EDGE_SCAN_BYTES, "threats": threats}))
}

fn clip_to(s: &str) -> &str {
    super::clip(s)
}

/// A threat capture carried in `edge_scan`: its hits, and its score if it has one.
pub(super) struct Carried {
    pub hits: Vec<Hit>,
    pub score: Option<f32>,
}

/// The carried threat `name` in an `edge_scan` value, if there is one.
pub(super) fn carried(edge: Option<&Value>, name: &str) -> Option<Carried> {
    let threats = edge?.get("threats")?.as_array()?;
    let t = threats
        .iter()
        .find(|t| t.get("threat_type").and_then(Value::as_str) == Some(name))?;
    let hits: Vec<Hit> = t
        .get("hits")?
        .as_array()?
        .iter()
        .take(MAX_CARRIED_HITS)
        .map(|h| Hit {
            label: Cow::Owned(snippet(
                h.get("label").and_then(Value::as_str).unwrap_or("carried"),
            )),
            evidence: snippet(h.get("evidence").and_then(Value::as_str).unwrap_or("")),
        })
        .collect();
    if hits.is_empty() {
        return None;
    }
    let score = t.get("score").and_then(Value::as_f64).map(|s| s as f32);
    Some(Carried { hits, score })
}
