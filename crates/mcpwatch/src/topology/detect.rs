//! The detection stage: runs the rule engine, anomaly detectors, threat signatures and
//! thresholds on every committed event, emits what they derive (rule triggers, anomalies,
//! threats) back into the pipeline and hands each finding to the finding observers.
//! Also serves `GET /api/v1/rules` and `POST /api/v1/rules/reload`.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context as _;
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use mcpwatch_core::auth::Authenticator;
use mcpwatch_core::config::{Config, Role};
use mcpwatch_core::pace::Pacer;
use mcpwatch_core::{Event, Timestamp};
use mcpwatch_detect::{DetectConfig, DetectError, DetectSettings, Engine, Finding, RuleSet};
use mcpwatch_metrics::DetectorHealth; // metrics: detector health on /metrics
use mcpwatch_server::http::ApiError;
use mcpwatch_server::{Pipeline, Stage};
use mcpwatch_store::PreparedEvent;
use serde::Deserialize;
use serde_json::json;

use super::{Context, FindingObserver, RouteFactory};

/// `[rules]` in the config file.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub(super) struct RulesSection {
    /// Rule files (YAML), loaded after the built-in rules (unless `detection.default_rules = false`).
    pub(super) files: Vec<PathBuf>,
}

/// Where the rules come from, and the slot a reload drops new rules into.
#[derive(Clone)]
pub struct RulesHandle {
    files: Vec<PathBuf>,
    with_defaults: bool,
    pending: Arc<Mutex<Option<RuleSet>>>,
    current: Arc<Mutex<Vec<serde_json::Value>>>,
    /// metrics: the engine's health, published on every tick for `/metrics`.
    pub detector_health: Arc<DetectorHealth>,
}

impl RulesHandle {
    /// The loaded rules, as `GET /api/v1/rules` and the dashboard describe them.
    pub fn describe(&self) -> Vec<serde_json::Value> {
        self.current
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// Loads the rule files again. A bad file is rejected whole and the running rules stay.
    pub fn reload(&self) -> Result<usize, String> {
        let rules = RuleSet::load(&self.files, self.with_defaults).map_err(describe)?;
        let n = rules.rules().len();
        *self.current.lock().unwrap_or_else(|p| p.into_inner()) = describe_rules(&rules);
        *self.pending.lock().unwrap_or_else(|p| p.into_inner()) = Some(rules);
        Ok(n)
    }
}

fn describe(e: DetectError) -> String {
    match e {
        DetectError::Rules(errors) => errors
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("\n"),
        other => other.to_string(),
    }
}

fn describe_rules(rules: &RuleSet) -> Vec<serde_json::Value> {
    rules
        .rules()
        .iter()
        .map(|r| {
            json!({
                "name": r.name, "description": r.description, "when": r.when_text, "severity": r.severity.as_str(),
                "threshold": r.threshold, "window_seconds": r.window_us as f64 / 1e6, "tags": r.tags, "file": r.file,
                "recommended_action": r.recommended_action,
            })
        })
        .collect()
}

/// Runs detection on the stage thread.
pub struct DetectStage {
    engine: Engine,
    observers: Vec<Box<dyn FindingObserver>>,
    pending_rules: Arc<Mutex<Option<RuleSet>>>,
    findings: Vec<Finding>,
    health: Arc<DetectorHealth>, // metrics: published on tick
}

/// The detection settings (`[detection]`) and rule files (`[rules] files`) a config asks for:
/// what `serve` runs and what `replay` reuses, so both read the config the same way.
pub fn detection_from_config(config: &Config) -> anyhow::Result<(DetectSettings, Vec<PathBuf>)> {
    let detection: DetectConfig = match config.extra.get("detection") {
        Some(v) => v
            .clone()
            .try_into()
            .context("invalid [detection] (run `mcpwatch config check`)")?,
        None => DetectConfig::default(),
    };
    let settings = detection.build().map_err(|errs| {
        anyhow::anyhow!(
            "invalid [detection]:\n{}",
            errs.iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("\n")
        )
    })?;
    let section: RulesSection = match config.extra.get("rules") {
        Some(v) => v
            .clone()
            .try_into()
            .context("invalid [rules] (run `mcpwatch config check`)")?,
        None => RulesSection::default(),
    };
    Ok((settings, section.files))
}

pub(super) fn build(
    ctx: &Context,
    observers: Vec<Box<dyn FindingObserver>>,
    routes: &mut Vec<RouteFactory>,
) -> anyhow::Result<(DetectStage, RulesHandle)> {
    let (settings, files) = detection_from_config(&ctx.config)?;
    let handle = RulesHandle {
        files,
        with_defaults: settings.default_rules,
        pending: Arc::default(),
        current: Arc::default(),
        detector_health: Arc::default(), // metrics
    };
    let rules = RuleSet::load(&handle.files, handle.with_defaults).map_err(|e| {
        anyhow::anyhow!(
            "cannot load rules:\n{}\n(check them with `mcpwatch rules check FILE…`)",
            describe(e)
        )
    })?;
    *handle.current.lock().unwrap_or_else(|p| p.into_inner()) = describe_rules(&rules);
    let stage = DetectStage {
        engine: Engine::new(rules, &settings),
        observers,
        pending_rules: handle.pending.clone(),
        findings: Vec::new(),
        health: handle.detector_health.clone(), // metrics
    };
    let (auth, for_routes) = (ctx.auth.clone(), handle.clone());
    routes.push(Box::new(move |_: &Pipeline| rules_routes(auth, for_routes)));
    Ok((stage, handle))
}

impl DetectStage {
    fn take_reload(&mut self) {
        let reloaded = self
            .pending_rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(rules) = reloaded {
            tracing::info!(
                rules = rules.rules().len(),
                "rules reloaded; unchanged rules keep their state"
            );
            self.engine.reload_rules(rules);
        }
    }

    fn deliver(&mut self, emit: &mut Vec<Event>) {
        for f in self.findings.drain(..) {
            for o in &mut self.observers {
                o.on_finding(&f);
            }
            emit.push(f.event);
        }
    }
}

impl Stage for DetectStage {
    fn name(&self) -> &'static str {
        "detect"
    }

    fn on_commit(&mut self, batch: &[PreparedEvent], emit: &mut Vec<Event>) {
        self.take_reload();
        // A batch of a thousand events is milliseconds of detection: short bursts, so what
        // shares this core with the collector does not wait for it (see `mcpwatch_core::pace`).
        let mut pacer = Pacer::new();
        for p in batch {
            self.engine.process(&p.event, &mut self.findings);
            pacer.step();
        }
        self.deliver(emit);
    }

    fn on_tick(&mut self, now: Timestamp, emit: &mut Vec<Event>) {
        self.take_reload();
        self.engine.advance_to(now, &mut self.findings);
        self.deliver(emit);
        // metrics: publish the engine's health for /metrics.
        let h = self.engine.health();
        self.health.set(
            h.tracked_keys as u64,
            h.state_bytes as u64,
            h.expired_keys,
            h.evicted_keys,
        );
        for o in &mut self.observers {
            o.on_tick(now);
        }
    }
}

#[derive(Clone)]
struct RulesState {
    auth: Arc<Authenticator>,
    rules: RulesHandle,
}

fn rules_routes(auth: Arc<Authenticator>, rules: RulesHandle) -> Router {
    Router::new()
        .route("/api/v1/rules", get(list_rules))
        .route("/api/v1/rules/reload", post(reload_rules))
        .with_state(RulesState { auth, rules })
}

fn authorize(s: &RulesState, headers: &HeaderMap, role: Role) -> Result<(), ApiError> {
    let authz = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    s.auth
        .check(authz, role)
        .map(|_| ())
        .map_err(ApiError::from)
}

async fn list_rules(State(s): State<RulesState>, headers: HeaderMap) -> Result<Response, ApiError> {
    authorize(&s, &headers, Role::Read)?;
    let rules = s.rules.describe();
    Ok(Json(json!({"rules": rules, "next_cursor": null})).into_response())
}

async fn reload_rules(
    State(s): State<RulesState>,
    headers: HeaderMap,
) -> Result<Response, ApiError> {
    authorize(&s, &headers, Role::Admin)?;
    let handle = s.rules.clone();
    let result = tokio::task::spawn_blocking(move || handle.reload())
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))?;
    match result {
        Ok(n) => Ok(Json(json!({"reloaded": n})).into_response()),
        Err(m) => Err(ApiError::bad_request(format!(
            "the rules were not reloaded; the running rules stay:\n{m}"
        ))),
    }
}
