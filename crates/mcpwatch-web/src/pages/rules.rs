//! Rules: the loaded rules and detectors, each with its recent firings from the alert store.

use std::collections::BTreeMap;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use maud::html;
use mcpwatch_alert::store::AlertFilter;
use mcpwatch_alert::AlertRecord;
use serde_json::Value;

use super::overview::urlenc;
use crate::format;
use crate::session::Viewer;
use crate::view::{self, PageError};
use crate::WebState;

/// Alerts read to find each rule's recent firings.
const SCAN: usize = 500;
/// Firings shown per rule.
const PER_RULE: usize = 3;

pub(crate) async fn list(State(s): State<WebState>, v: Viewer) -> Result<Response, PageError> {
    let rules = (s.rules)();
    let a = s.alerting.clone();
    let alerts = view::blocking("the alert store", move || {
        a.list(&AlertFilter {
            limit: SCAN,
            ..AlertFilter::default()
        })
        .map(|(l, _)| l)
    })
    .await?;
    let mut by_name: BTreeMap<&str, Vec<&AlertRecord>> = BTreeMap::new();
    for al in &alerts {
        by_name.entry(al.alert.name.as_str()).or_default().push(al);
    }
    let now = s.clock.now();
    let rule_names: Vec<&str> = rules
        .iter()
        .filter_map(|r| r.get("name").and_then(Value::as_str))
        .collect();
    let text = |r: &Value, k: &str| {
        r.get(k)
            .map(|v| match v {
                Value::String(s) => s.clone(),
                Value::Null => String::new(),
                o => o.to_string(),
            })
            .unwrap_or_default()
    };
    let body = html! {
        h1 { "Rules" }
        p { (rules.len()) " rules loaded. Anomaly detectors, threat signatures and thresholds are listed below by the alerts they raised." }
        (view::payload(html! {
            div.scroll { table {
                thead { tr { th { "Rule" } th { "Severity" } th { "When" } th.num { "Threshold" } th.num { "Window" } th { "Recent firings" } } }
                tbody { @for r in &rules {
                    @let name = text(r, "name");
                    tr {
                        td { strong { (name) } br; span.muted { (text(r, "description")) } }
                        td { (text(r, "severity")) }
                        td { code { (text(r, "when")) } }
                        td.num { (text(r, "threshold")) }
                        td.num { (text(r, "window_seconds")) " s" }
                        td { @match by_name.get(name.as_str()) {
                            Some(list) => { @for al in list.iter().take(PER_RULE) {
                                a href=(format!("/alerts/{}", urlenc(&al.alert.id))) { (format::ago(now, al.alert.last_seen)) } " "
                            } }
                            None => span.muted { "none recently" }
                        } }
                    }
                } }
            } }
            h2 { "Detectors, signatures and thresholds" }
            ul { @for (name, list) in &by_name {
                @if !rule_names.contains(name) {
                    li { a href=(format!("/alerts?name={}", urlenc(name))) { (name) } " — " (list.len()) " alerts, last "
                         (list.first().map(|a| format::ago(now, a.alert.last_seen)).unwrap_or_default()) " (" (list.first().map(|a| a.alert.source.as_str()).unwrap_or("")) ")" }
                }
            } }
        }))
    };
    Ok(view::page("Rules", "/rules", &v, body).into_response())
}
