//! Threat signatures (SPEC 6.3): scans tool parameters, tool results and tool descriptions for
//! attacks, and passes `security`/`tool_definition_changed` through as a threat.
//!
//! Where it reads:
//! - `metadata.parameters` of `tool_execution` events: `path_traversal`, `command_injection`;
//! - `metadata.result.text` of `execution_complete`: `secret_exposure`, and `prompt_injection`
//!   by the layered detector in [`injection`] (its evidence names layer, match and offset);
//! - `metadata.tools[].description` of `session`/`tools_listed` and the description carried by
//!   `tool_definition_changed`: `tool_poisoning` (hidden instruction blocks, invisible
//!   Unicode, instructions to read secrets, call other tools or hide things from the user),
//!   plus whatever the [`injection`] detector finds in the description;
//! - `metadata.messages[].text` and `metadata.system_prompt` of `session`/`sampling_request`
//!   (a server asking the client's model to generate): `prompt_injection` naming the server.
//!
//! The same execution's parameters arrive on both `execution_start` and `execution_complete`;
//! a small memory of recent (server, execution, signature) triples reports each once. A listed tool is
//! scanned once per definition hash.

mod edge;
mod exposure;
pub mod injection;
mod server_requests;
mod signatures;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, VecDeque};

use mcpwatch_core::{Event, Level, Timestamp};
use serde_json::{json, Map, Value};

use crate::finding::{group_json, Derived, Finding, FindingSource, Severity};
use crate::state::{stable_hash, to_value, Aged, BoundedMap, MapSnapshot};
use edge::{carried, description_hits, parameter_hits};
pub use edge::{EdgeScanner, EDGE_SCAN_BYTES};
use exposure::redacted_in_result;
use injection::{InjectionDetector, Verdict};
use signatures::{snippet, Hit, Signatures};

/// Bytes of one string that are scanned; the rest is ignored.
const MAX_SCAN: usize = 64 * 1024;
/// Strings per event that are scanned.
const MAX_STRINGS: usize = 256;
/// Recent (execution, signature) pairs remembered to report each once.
const RECENT: usize = 4096;

#[derive(serde::Serialize, serde::Deserialize)]
struct Seen(i64);

#[derive(serde::Serialize)]
struct ThreatsOut<'a> {
    recent: &'a VecDeque<u64>,
    listed: &'a BoundedMap<Seen>,
}

#[derive(serde::Deserialize)]
struct ThreatsIn {
    recent: VecDeque<u64>,
    listed: MapSnapshot<Seen>,
}

impl Aged for Seen {
    fn last_seen(&self) -> i64 {
        self.0
    }
}

/// Scans events for threat signatures.
pub struct ThreatScanner {
    sigs: Signatures,
    injection: InjectionDetector,
    recent: VecDeque<u64>,
    listed: BoundedMap<Seen>,
    /// Pass `tool_definition_changed` events through as threats.
    pub pass_through_definition_changes: bool,
}

impl std::fmt::Debug for ThreatScanner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ThreatScanner").finish_non_exhaustive()
    }
}

struct Context<'a> {
    event: &'a Event,
    group: BTreeMap<String, String>,
}

impl ThreatScanner {
    /// A scanner remembering at most `max_tools` listed tool definitions, with the default
    /// `prompt_injection` threshold.
    pub fn new(max_tools: usize) -> Self {
        let d = crate::config::InjectionSettings::default();
        Self::with_injection(
            max_tools,
            InjectionDetector::new(d.threshold, d.allowed_hosts),
        )
    }

    /// A scanner with this `prompt_injection` detector.
    pub fn with_injection(max_tools: usize, injection: InjectionDetector) -> Self {
        Self {
            sigs: Signatures::new(),
            injection,
            recent: VecDeque::with_capacity(RECENT),
            listed: BoundedMap::new(max_tools),
            pass_through_definition_changes: true,
        }
    }

    /// The recent executions and listed definitions, for a snapshot.
    pub(crate) fn save(&self) -> Value {
        to_value(&ThreatsOut {
            recent: &self.recent,
            listed: &self.listed,
        })
    }

    /// Takes the state [`ThreatScanner::save`] wrote.
    pub(crate) fn load(&mut self, state: Value) -> Result<(), serde_json::Error> {
        let mut snap: ThreatsIn = serde_json::from_value(state)?;
        let surplus = snap.recent.len().saturating_sub(RECENT);
        snap.recent.drain(..surplus);
        snap.recent
            .reserve(RECENT.saturating_sub(snap.recent.len()));
        self.recent = snap.recent;
        self.listed = BoundedMap::restore(self.listed.cap(), snap.listed);
        Ok(())
    }

    /// Tool definitions remembered.
    pub fn tracked_keys(&self) -> usize {
        self.listed.len()
    }

    /// Approximate bytes of state.
    pub fn state_bytes(&self) -> usize {
        self.listed.state_bytes() + self.recent.capacity() * 8
    }

    /// Scans one event; findings go to `out`.
    pub fn process(&mut self, event: &Event, out: &mut Vec<Finding>) {
        match (event.category.as_str(), event.event_type.as_str()) {
            ("tool_execution", et) => self.scan_execution(event, et == "execution_complete", out),
            ("session", "tools_listed") => self.scan_listing(event, out),
            ("session", "sampling_request") => self.scan_sampling(event, out),
            ("security", "tool_definition_changed") => self.definition_changed(event, out),
            ("performance", "request_performance") => self.scan_content(event, out),
            _ => {}
        }
    }

    fn scan_execution(&mut self, event: &Event, complete: bool, out: &mut Vec<Finding>) {
        let ctx = || Context {
            event,
            group: meta_group(event, &["server", "tool_name", "user_id"]),
        };
        let edge = event.metadata.get("edge_scan");
        let params = event.metadata.get("parameters");
        if params.is_some() || edge.is_some() {
            let (hits_pt, hits_ci) = parameter_hits(&self.sigs, params.unwrap_or(&Value::Null));
            for (name, hits, sev) in [
                ("path_traversal", hits_pt, Severity::High),
                ("command_injection", hits_ci, Severity::Critical),
            ] {
                // What the edge found past the cut, when the stored parameters show nothing.
                let hits = match (hits.is_empty(), carried(edge, name)) {
                    (true, Some(c)) => c.hits,
                    _ => hits,
                };
                if !hits.is_empty() && self.first_report(event, name) {
                    out.push(threat(&ctx(), name, sev, &hits, "tool parameters"));
                }
            }
        }
        let text = event
            .metadata
            .get("result")
            .and_then(|r| r.get("text"))
            .and_then(Value::as_str);
        if let (true, Some(text)) = (complete, text) {
            let text = clip(text);
            let mut hits = Vec::new();
            self.sigs.secret_exposure.scan(text, &mut hits);
            redacted_in_result(event, &mut hits);
            if !hits.is_empty() {
                out.push(threat(
                    &ctx(),
                    "secret_exposure",
                    Severity::High,
                    &hits,
                    "the tool result",
                ));
            }
            let verdict = self.injection.scan(text);
            if verdict.fires() {
                let mut f = threat(
                    &ctx(),
                    "prompt_injection",
                    verdict_severity(&verdict),
                    &verdict_hits(&verdict),
                    "the tool result",
                );
                add_verdict(&mut f, &verdict);
                out.push(f);
            } else if let Some(f) = self.carried_injection(&ctx(), "the tool result") {
                out.push(f);
            }
        } else if complete {
            // A result without text can still have had credentials cut out of it.
            let mut hits = Vec::new();
            redacted_in_result(event, &mut hits);
            if !hits.is_empty() {
                out.push(threat(
                    &ctx(),
                    "secret_exposure",
                    Severity::High,
                    &hits,
                    "the tool result",
                ));
            }
        }
    }

    /// Whether this (execution, signature) is reported for the first time.
    fn first_report(&mut self, event: &Event, name: &str) -> bool {
        let Some(exec) = event.metadata.get("execution_id").and_then(Value::as_str) else {
            return true;
        };
        // The server is part of the key so that the scanner's state partitions by server
        // (`crate::scope`); both events of one execution name the same server.
        let server = event.server().unwrap_or("");
        let h = stable_hash(&[server, exec, name]);
        if self.recent.contains(&h) {
            return false;
        }
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back(h);
        true
    }

    fn scan_listing(&mut self, event: &Event, out: &mut Vec<Finding>) {
        let server = event.server().unwrap_or("");
        let Some(tools) = event.metadata.get("tools").and_then(Value::as_array) else {
            return;
        };
        let ts = event.timestamp.as_micros();
        for tool in tools {
            let name = tool.get("name").and_then(Value::as_str).unwrap_or("");
            let desc = tool
                .get("description")
                .and_then(Value::as_str)
                .unwrap_or("");
            let hash = tool.get("hash").and_then(Value::as_str).unwrap_or("");
            let key = format!("{server}\u{1f}{name}\u{1f}{hash}");
            let fresh = !self.listed.contains(&key);
            self.listed.entry(&key, i64::MIN, || Seen(ts)).0 = ts;
            if !fresh {
                continue;
            }
            self.scan_description(event, (server, name), desc, tool.get("edge_scan"), out);
        }
    }

    /// `edge`: what capture's scan of the whole description carried, used when the stored
    /// (cut) description shows nothing.
    fn scan_description(
        &self,
        event: &Event,
        (server, tool): (&str, &str),
        desc: &str,
        edge: Option<&Value>,
        out: &mut Vec<Finding>,
    ) {
        let (mut hits, verdict) = description_hits(&self.sigs, &self.injection, desc);
        if hits.is_empty() {
            if let Some(c) = carried(edge, "tool_poisoning") {
                hits = c.hits;
            }
        }
        if hits.is_empty() {
            return;
        }
        let severity = if hits.len() >= 2 {
            Severity::Critical
        } else {
            Severity::High
        };
        let mut group = BTreeMap::new();
        group.insert("metadata.server".to_owned(), server.to_owned());
        group.insert("metadata.tool_name".to_owned(), tool.to_owned());
        let ctx = Context { event, group };
        let mut f = threat(
            &ctx,
            "tool_poisoning",
            severity,
            &hits,
            "the tool description",
        );
        if verdict.fires() {
            add_verdict(&mut f, &verdict);
        }
        out.push(f);
    }

    fn definition_changed(&mut self, event: &Event, out: &mut Vec<Finding>) {
        let server = event.server().unwrap_or("");
        let tool = event.tool().unwrap_or("");
        let desc = ["description", "new_description"]
            .iter()
            .find_map(|k| event.metadata.get(*k).and_then(Value::as_str));
        if let Some(desc) = desc {
            let edge = event.metadata.get("edge_scan");
            self.scan_description(event, (server, tool), desc, edge, out);
        }
        if !self.pass_through_definition_changes {
            return;
        }
        let severity = if event.level >= Level::Critical {
            Severity::Critical
        } else {
            Severity::High
        };
        let ctx = Context {
            event,
            group: meta_group(event, &["server", "tool_name"]),
        };
        let hit = Hit {
            label: "definition changed".into(),
            evidence: snippet(&event.message),
        };
        out.push(threat(
            &ctx,
            "tool_definition_changed",
            severity,
            &[hit],
            "the tool listing",
        ));
    }
}

impl ThreatScanner {
    /// A `prompt_injection` capture found in the full text of what `ctx`'s event records
    /// (see [`edge`]), if its score reaches this detector's threshold.
    fn carried_injection(&self, ctx: &Context<'_>, place: &str) -> Option<Finding> {
        let c = carried(ctx.event.metadata.get("edge_scan"), "prompt_injection")?;
        let score = c.score?;
        if score < self.injection.threshold {
            return None;
        }
        let severity = if score >= 2.0 * self.injection.threshold {
            Severity::Critical
        } else {
            Severity::High
        };
        let mut f = threat(ctx, "prompt_injection", severity, &c.hits, place);
        f.description = format!(
            "{} (score {score:.2}, threshold {:.2}, scanned at the edge)",
            f.description, self.injection.threshold
        );
        let m = &mut f.event.metadata;
        m.insert("description".into(), json!(f.description));
        m.insert("score".into(), json!(score));
        m.insert("threshold".into(), json!(self.injection.threshold));
        m.insert("scanned_at".into(), json!("edge"));
        Some(f)
    }

    /// Resource contents (`resources/read`) and prompts (`prompts/get`) are stored only as the
    /// request's performance; capture scanned their text and carries what it found.
    fn scan_content(&mut self, event: &Event, out: &mut Vec<Finding>) {
        if !event.metadata.contains_key("edge_scan") {
            return;
        }
        let place = match event.metadata.get("method").and_then(Value::as_str) {
            Some("resources/read") => "the resource contents",
            Some("prompts/get") => "the prompt",
            _ => "the result",
        };
        let ctx = Context {
            event,
            group: meta_group(event, &["server", "method", "user_id"]),
        };
        if let Some(f) = self.carried_injection(&ctx, place) {
            out.push(f);
        }
    }
}

fn verdict_severity(v: &Verdict) -> Severity {
    if v.score >= 2.0 * v.threshold {
        Severity::Critical
    } else {
        Severity::High
    }
}

/// The detector's signals as hits: `layer: label` and `"matched" at offset N (via)`.
fn verdict_hits(v: &Verdict) -> Vec<Hit> {
    v.signals
        .iter()
        .take(8)
        .map(|s| {
            let via = match s.via.as_str() {
                "" => String::new(),
                v => format!(" {v}"),
            };
            Hit {
                label: s.label.into(),
                evidence: format!(
                    "{}: \"{}\" at offset {}{via}",
                    s.layer.as_str(),
                    s.matched,
                    s.offset
                ),
            }
        })
        .collect()
}

/// Adds the score and every signal, by layer, to the finding's metadata.
fn add_verdict(f: &mut Finding, v: &Verdict) {
    let signals: Vec<Value> = v
        .signals
        .iter()
        .take(32)
        .map(|s| {
            json!({"layer": s.layer.as_str(), "label": s.label, "matched": s.matched,
                   "offset": s.offset, "weight": s.weight, "via": s.via.as_str()})
        })
        .collect();
    f.description = format!(
        "{} (score {:.2}, threshold {:.2}, layers: {})",
        f.description,
        v.score,
        v.threshold,
        v.layers()
            .iter()
            .map(|l| l.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let m = &mut f.event.metadata;
    m.insert("description".into(), json!(f.description));
    m.insert("score".into(), json!((v.score * 100.0).round() / 100.0));
    m.insert("threshold".into(), json!(v.threshold));
    m.insert("layers".into(), json!(v.layers()));
    m.insert("signals".into(), Value::Array(signals));
    m.insert(
        "evidence".into(),
        json!(verdict_hits(v)
            .iter()
            .map(|h| h.evidence.clone())
            .collect::<Vec<_>>()
            .join("; ")),
    );
}

fn clip(s: &str) -> &str {
    if s.len() <= MAX_SCAN {
        return s;
    }
    let mut end = MAX_SCAN;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

fn walk_strings(v: &Value, budget: &mut usize, f: &mut impl FnMut(&str)) {
    if *budget == 0 {
        return;
    }
    match v {
        Value::String(s) => {
            *budget -= 1;
            f(clip(s));
        }
        Value::Array(items) => items.iter().for_each(|i| walk_strings(i, budget, f)),
        Value::Object(map) => map.values().for_each(|i| walk_strings(i, budget, f)),
        _ => {}
    }
}

fn meta_group(event: &Event, keys: &[&str]) -> BTreeMap<String, String> {
    keys.iter()
        .filter_map(|k| {
            let v = event.metadata.get(*k)?.as_str()?;
            Some((format!("metadata.{k}"), v.to_owned()))
        })
        .collect()
}

fn action(name: &str) -> &'static str {
    match name {
        "path_traversal" => "Check which files the call reached; restrict the server's roots and deny paths outside them",
        "command_injection" => "Block the call pattern in policy, check whether the command ran on the server host, and review the session that sent it",
        "secret_exposure" => "Rotate the exposed credential now and find out how the tool could read it",
        "prompt_injection" => "Treat the session as compromised: review what the agent did after this result and remove the injected content at its source",
        "tool_poisoning" => "Disable the tool or server until the description is reviewed; pin a known-good definition",
        _ => "Review the tool definition change against the pinned version before using the server again",
    }
}

fn threat(
    ctx: &Context<'_>,
    name: &'static str,
    severity: Severity,
    hits: &[Hit],
    place: &str,
) -> Finding {
    let e = ctx.event;
    let labels: Vec<&str> = hits.iter().map(|h| h.label.as_ref()).collect();
    let subject = match (e.tool(), e.server()) {
        (Some(t), Some(s)) => format!("{s}/{t}"),
        (Some(t), None) => t.to_owned(),
        (None, Some(s)) if !ctx.group.contains_key("metadata.tool_name") => format!("server {s}"),
        _ => ctx
            .group
            .get("metadata.tool_name")
            .cloned()
            .unwrap_or_else(|| e.source.clone()),
    };
    let evidence = hits.first().map(|h| h.evidence.clone()).unwrap_or_default();
    let description = format!(
        "{name} in {place} of {subject}: {} (\"{evidence}\")",
        labels.join(", ")
    );
    let mut metadata = Map::new();
    metadata.insert("threat_type".into(), json!(name));
    metadata.insert("severity".into(), json!(severity.as_str()));
    metadata.insert("indicators".into(), json!(labels));
    metadata.insert("evidence".into(), json!(evidence));
    metadata.insert("description".into(), json!(description));
    metadata.insert("group".into(), group_json(&ctx.group));
    metadata.insert("event_ids".into(), json!([e.id]));
    for k in [
        "server",
        "tool_name",
        "user_id",
        "session_id",
        "execution_id",
    ] {
        if let Some(v) = e.metadata.get(k) {
            metadata.insert(k.into(), v.clone());
        }
    }
    Derived {
        source: FindingSource::Threat,
        name,
        category: "security",
        event_type: "threat_detected",
        severity,
        message: format!("Threat detected: {name} in {place} of {subject}"),
        metadata,
        tags: vec!["security".into(), "threat".into(), name.into()],
    }
    .into_finding(
        description,
        action(name).to_owned(),
        ctx.group.clone(),
        vec![e.id.clone()],
        Timestamp::from_micros(e.timestamp.as_micros()),
    )
}
