//! The overview: the original's five widgets. System (host sampler, events/s, store size,
//! pipeline health), tool performance (calls, error rate, p50/p95, a sparkline per tool),
//! security events over time, the alert summary, and performance metrics (latency,
//! throughput, error rate, availability). The widgets reload themselves every 10 s.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::extract::State;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup};
use mcpwatch_alert::store::AlertFilter;
use mcpwatch_alert::AlertRecord;
use mcpwatch_core::{Event, Timestamp};
use mcpwatch_detect::{AlertStatus, Severity};
use mcpwatch_store::query::{SecuritySeries, Series};
use mcpwatch_store::{EventQuery, SecurityQuery, SeriesQuery, Summary};

use crate::format;
use crate::session::Viewer;
use crate::svg::{self, Line};
use crate::view::{self, blocking, PageError};
use crate::WebState;

/// Sparklines cover this last stretch, per tool.
const SPARK: Duration = Duration::from_secs(3600);
/// Host samples older than this are not shown as current.
const HOST_FRESH: Duration = Duration::from_secs(300);
/// Open alerts the summary counts (newest first).
const ALERT_SCAN: usize = 500;

/// Everything the widgets show, read in one blocking task.
pub(crate) struct Data {
    now: Timestamp,
    summary: Summary,
    hour: Series,
    security: Series,
    kinds: SecuritySeries,
    sparks: Vec<Vec<f64>>,
    host: BTreeMap<String, (f64, String)>,
    alerts: Vec<AlertRecord>,
    pending: usize,
    committed: u64,
    overloaded: u64,
    writer_alive: bool,
}

pub(crate) fn load(s: &WebState) -> Result<Data, String> {
    let now = s.clock.now();
    let r = &s.reader;
    let e = |e: mcpwatch_store::StoreError| e.to_string();
    let summary = r.summary(now).map_err(e)?;
    let hour = r
        .series(&SeriesQuery {
            since: now.saturating_sub(Duration::from_secs(3600)),
            until: now,
            bucket_minutes: 1,
            category: None,
            tool: None,
        })
        .map_err(e)?;
    let security = r
        .series(&SeriesQuery {
            since: now.saturating_sub(Duration::from_secs(6 * 3600)),
            until: now,
            bucket_minutes: 10,
            category: None,
            tool: None,
        })
        .map_err(e)?;
    let kinds = r
        .security_series(&SecurityQuery {
            since: now.saturating_sub(Duration::from_secs(6 * 3600)),
            until: now,
            bucket_minutes: 10,
        })
        .map_err(e)?;
    let mut sparks = Vec::new();
    for t in &summary.top_tools {
        let series = r
            .series(&SeriesQuery {
                since: now.saturating_sub(SPARK),
                until: now,
                bucket_minutes: 5,
                category: Some("tool_execution".into()),
                tool: Some(t.tool.clone()),
            })
            .map_err(e)?;
        sparks.push(series.points.iter().map(|p| p.count as f64).collect());
    }
    let samples = r
        .events(&EventQuery {
            since: Some(now.saturating_sub(HOST_FRESH)),
            category: Some("performance".into()),
            event_type: Some("system_performance".into()),
            limit: 20,
            ..EventQuery::default()
        })
        .map_err(e)?;
    let mut host = BTreeMap::new();
    for raw in samples.events {
        let Ok(ev) = serde_json::from_str::<Event>(raw.get()) else {
            continue;
        };
        let (Some(name), Some(value)) = (
            ev.metadata.get("metric_name").and_then(|v| v.as_str()),
            ev.metadata.get("value").and_then(|v| v.as_f64()),
        ) else {
            continue;
        };
        let unit = ev
            .metadata
            .get("unit")
            .and_then(|v| v.as_str())
            .unwrap_or("");
        host.entry(name.to_owned())
            .or_insert((value, unit.to_owned()));
    }
    let (alerts, _) = s
        .alerting
        .list(&AlertFilter {
            limit: ALERT_SCAN,
            ..AlertFilter::default()
        })
        .map_err(|e| e.to_string())?;
    let alerts = alerts
        .into_iter()
        .filter(|a| !matches!(a.alert.status, AlertStatus::Resolved))
        .collect();
    let h = s.pipeline.health();
    Ok(Data {
        now,
        summary,
        hour,
        security,
        kinds,
        sparks,
        host,
        alerts,
        pending: h.pending_events.load(Ordering::Relaxed),
        committed: h.committed_events.load(Ordering::Relaxed),
        overloaded: h.overloaded_batches.load(Ordering::Relaxed),
        writer_alive: h.writer_alive.load(Ordering::Relaxed),
    })
}

pub(crate) async fn page(State(s): State<WebState>, v: Viewer) -> Result<Response, PageError> {
    let st = s.clone();
    let d = blocking("the overview", move || load(&st)).await?;
    let body = html! {
        h1 { "Overview" }
        div #widgets hx-get="/overview/widgets" hx-trigger="every 10s" hx-swap="innerHTML" {
            (widgets_markup(&d))
        }
    };
    Ok(view::page("Overview", "/", &v, body).into_response())
}

/// The widgets alone, for the periodic refresh.
pub(crate) async fn widgets(State(s): State<WebState>, _v: Viewer) -> Result<Response, PageError> {
    let st = s.clone();
    let d = blocking("the overview", move || load(&st)).await?;
    Ok(Html(widgets_markup(&d).into_string()).into_response())
}

pub(crate) fn widgets_markup(d: &Data) -> Markup {
    html! {
        div.grid {
            (system(d))
            (alerts(d))
            (performance(d))
            (security(d))
        }
        (tools(d))
    }
}

fn system(d: &Data) -> Markup {
    let last_min = d.hour.points.iter().rev().nth(1).map_or(0, |p| p.count);
    let percent = |k: &str| d.host.get(k).map(|(v, _)| *v);
    html! {
        section.card #system {
            h2 { "System" }
            dl.metrics {
                @for (key, label) in [("cpu_usage", "CPU"), ("memory_usage", "Memory"), ("disk_usage", "Disk")] {
                    dt { (label) }
                    dd {
                        @match percent(key) {
                            Some(p) => { (format!("{p:.1} %")) (svg::gauge(p, label)) }
                            None => span.muted { "no sample yet" }
                        }
                    }
                }
                dt { "Network" }
                dd { @match d.host.get("network_throughput") {
                    Some((v, _)) => { (format::bytes(*v)) "/s" }
                    None => span.muted { "no sample yet" }
                } }
                dt { "Events/s" } dd { (format!("{:.1}", last_min as f64 / 60.0)) }
                dt { "Stored" } dd { (format::count(d.summary.store.events)) " events, " (format::bytes(d.summary.store.used_bytes as f64)) }
                dt { "Pipeline" } dd {
                    @if d.writer_alive { (view::badge("ok", "writing")) } @else { (view::badge("bad", "writer stopped")) }
                    " " (d.pending) " pending, " (format::count(d.committed)) " committed since start"
                    @if d.overloaded > 0 { ", " (d.overloaded) " batches refused (overload)" }
                }
            }
        }
    }
}

fn severity_class(s: Severity) -> &'static str {
    match s {
        Severity::Low => "low",
        Severity::Medium => "medium",
        Severity::High => "high",
        Severity::Critical => "critical",
    }
}

fn alerts(d: &Data) -> Markup {
    let mut by_sev: BTreeMap<Severity, usize> = BTreeMap::new();
    for a in &d.alerts {
        *by_sev.entry(a.alert.severity).or_default() += 1;
    }
    html! {
        section.card #alert-summary {
            h2 { a href="/alerts" { "Alerts" } }
            p.sevs {
                @for s in [Severity::Critical, Severity::High, Severity::Medium, Severity::Low] {
                    a class=(format!("sev {}", severity_class(s))) href=(format!("/alerts?severity={}", s.as_str())) {
                        strong { (by_sev.get(&s).copied().unwrap_or(0)) } " " (s.as_str())
                    }
                }
            }
            @if d.alerts.is_empty() {
                p.muted { "No open alerts." }
            } @else {
                (view::payload(html! {
                    ul.newest {
                        @for a in d.alerts.iter().take(6) {
                            li {
                                (view::badge(severity_class(a.alert.severity), a.alert.severity.as_str())) " "
                                a href=(format!("/alerts/{}", urlenc(&a.alert.id))) { (a.alert.name) }
                                " " span.muted { "×" (a.alert.count) ", " (format::ago(d.now, a.alert.last_seen)) }
                            }
                        }
                    }
                }))
            }
        }
    }
}

fn performance(d: &Data) -> Markup {
    let pts = &d.hour.points;
    let count: u64 = pts.iter().map(|p| p.count).sum();
    let errors: u64 = pts.iter().map(|p| p.errors).sum();
    let execs = d.summary.tool_executions_last_hour;
    let fails = d.summary.tool_failures_last_hour;
    let (mut timed, mut sum) = (0.0, 0.0);
    for p in pts {
        if let Some(t) = p.avg_time {
            timed += p.count as f64;
            sum += t * p.count as f64;
        }
    }
    let ratio = |a: u64, b: u64| {
        if b == 0 {
            f64::NAN
        } else {
            a as f64 / b as f64
        }
    };
    let start = pts.first().map(|p| format::time(p.t)).unwrap_or_default();
    html! {
        section.card #performance {
            h2 { "Performance, last hour" }
            dl.metrics {
                dt { "Throughput" } dd { (format!("{:.2}", recent_rate(pts))) " events/s over 5 min" }
                dt { "Latency (mean)" } dd { (if timed > 0.0 { format::secs(sum / timed) } else { "–".into() }) }
                dt { "Error rate" } dd { (format::pct(ratio(errors, count))) }
                dt { "Availability" } dd { (format::pct(1.0 - ratio(fails, execs))) " of " (format::count(execs)) " tool calls" }
            }
            (svg::chart(&[
                Line { class: "l1", label: "events/min", values: pts.iter().map(|p| p.count as f64).collect() },
                Line { class: "l2", label: "errors/min", values: pts.iter().map(|p| p.errors as f64).collect() },
            ], &start, "now", &|v| format!("{v:.0}")))
            (svg::chart(&[
                Line { class: "l3", label: "mean latency", values: pts.iter().map(|p| p.avg_time.unwrap_or(0.0)).collect() },
            ], &start, "now", &|v| format::secs(v)))
        }
    }
}

/// Events per second over the last five whole minutes (the current minute is still filling).
fn recent_rate(pts: &[mcpwatch_store::query::SeriesPoint]) -> f64 {
    let end = pts.len().saturating_sub(1);
    let recent = &pts[end.saturating_sub(5)..end];
    if recent.is_empty() {
        return 0.0;
    }
    recent.iter().map(|p| p.count).sum::<u64>() as f64 / (recent.len() as f64 * 60.0)
}

fn security(d: &Data) -> Markup {
    let pts = &d.security.points;
    let cat = |c: &str| -> Vec<f64> {
        pts.iter()
            .map(|p| p.by_category.get(c).copied().unwrap_or(0) as f64)
            .collect()
    };
    let refused = |kind: &str| -> Vec<f64> {
        d.kinds
            .points
            .iter()
            .map(|p| p.by_type.get(kind).map_or(0, |k| k.failures) as f64)
            .collect()
    };
    // The last hour of the six: the newest buckets whose start is within the hour.
    let hour_ago = d.now.saturating_sub(Duration::from_secs(3600));
    let refused_last_hour = |kind: &str| -> u64 {
        d.kinds
            .points
            .iter()
            .filter(|p| p.t >= hour_ago)
            .map(|p| p.by_type.get(kind).map_or(0, |k| k.failures))
            .sum()
    };
    let total = |c: &str| d.summary.last_hour_by_category.get(c).copied().unwrap_or(0);
    let start = pts.first().map(|p| format::time(p.t)).unwrap_or_default();
    html! {
        section.card #security {
            h2 { "Security events, last 6 hours" }
            p {
                "Last hour: " strong #auth-failures { (format::count(refused_last_hour("authentication"))) } " failed sign-ins, "
                strong #authz-denials { (format::count(refused_last_hour("authorization"))) } " authorization denials, "
                strong #detections { (format::count(total("security_alert"))) } " rule and threat detections, "
                strong { (format::count(total("anomaly"))) } " anomalies."
            }
            (svg::chart(&[
                Line { class: "l1", label: "failed sign-ins", values: refused("authentication") },
                Line { class: "l3", label: "authorization denials", values: refused("authorization") },
                Line { class: "l4", label: "detections", values: cat("security_alert") },
                Line { class: "l2", label: "anomalies", values: cat("anomaly") },
            ], &start, "now", &|v| format!("{v:.0}")))
            p { a href="/events?category=security&event_type=authentication&range=1h" { "Sign-ins" } " · "
                a href="/events?category=security&event_type=authorization&range=1h" { "Authorization" } " · "
                a href="/events?category=security_alert&range=24h" { "Detections" } }
        }
    }
}

fn tools(d: &Data) -> Markup {
    html! {
        section.card #tool-performance {
            h2 { a href="/tools" { "Tool performance, last 24 hours" } }
            @if d.summary.top_tools.is_empty() {
                p.muted { "No tool executions yet." }
            } @else {
                (view::payload(html! {
                    div.scroll { table {
                        thead { tr { th { "Tool" } th { "Server" } th.num { "Calls" } th.num { "Errors" } th.num { "p50" } th.num { "p95" } th { "Last hour" } } }
                        tbody {
                            @for (t, spark) in d.summary.top_tools.iter().zip(&d.sparks) {
                                tr {
                                    td { a href=(format!("/events?tool={}&range=24h", urlenc(&t.tool))) { (t.tool) } }
                                    td { (t.server) }
                                    td.num { (format::count(t.count)) }
                                    td.num { (format::pct(1.0 - t.success_rate)) }
                                    td.num { (format::secs(t.latency.p50)) }
                                    td.num { (format::secs(t.latency.p95)) }
                                    td { (svg::sparkline(spark, "calls per 5 minutes")) }
                                }
                            }
                        }
                    } }
                }))
            }
        }
    }
}

/// Percent-encodes a path segment or query value.
pub fn urlenc(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}
