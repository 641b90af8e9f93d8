//! mcpwatch-web: the dashboard `mcpwatch serve` shows at `/` (SPEC section 8).
//!
//! Server-rendered HTML (maud, which escapes every interpolation), a vendored htmx with its SSE
//! extension for the live pages, one stylesheet, and charts drawn as SVG on the server. Pages
//! read the store's rollups and the alert store's queries, never raw scans of the event log.
//!
//! Everything shown that came from traffic is attacker-controlled. It reaches a page only
//! through maud's escaping, inside an `hx-disable` region so htmx never reads it as attributes,
//! under a Content-Security-Policy that allows no inline script ([`security`]).
//!
//! Architecture Invariant: no handler here writes events or reads the event table beyond one
//! keyset page; state changes go through the alerting service, with the API's roles.

mod assets;
mod format;
mod pages;
pub mod security;
mod session;
mod svg;
mod view;

use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use mcpwatch_alert::Alerting;
use mcpwatch_core::auth::Authenticator;
use mcpwatch_core::clock::SharedClock;
use mcpwatch_server::Pipeline;
use mcpwatch_store::EventReader;

/// The loaded rules and detectors, as `GET /api/v1/rules` describes them.
pub type RulesSource = Arc<dyn Fn() -> Vec<serde_json::Value> + Send + Sync>;

/// What the dashboard reads and acts on.
#[derive(Clone)]
pub struct WebState {
    /// Stored events and their rollups.
    pub reader: Arc<dyn EventReader>,
    /// Live events, and the pipeline's health.
    pub pipeline: Pipeline,
    /// Alerts, silences and deliveries.
    pub alerting: Arc<Alerting>,
    /// Who may see and act (the API's tokens).
    pub auth: Arc<Authenticator>,
    /// Wall time, for relative ranges.
    pub clock: SharedClock,
    /// The loaded rules.
    pub rules: RulesSource,
    /// Keys the CSRF tokens of this process.
    pub(crate) csrf: Arc<session::CsrfKey>,
}

impl WebState {
    /// The dashboard's state; the CSRF key is fresh for this process.
    pub fn new(
        reader: Arc<dyn EventReader>,
        pipeline: Pipeline,
        alerting: Arc<Alerting>,
        auth: Arc<Authenticator>,
        clock: SharedClock,
        rules: RulesSource,
    ) -> WebState {
        WebState {
            reader,
            pipeline,
            alerting,
            auth,
            clock,
            rules,
            csrf: Arc::new(session::CsrfKey::random()),
        }
    }
}

/// The dashboard's routes, to merge into the API's router at `/`.
pub fn router(state: WebState) -> Router {
    Router::new()
        .route("/", get(pages::overview::page))
        .route("/overview/widgets", get(pages::overview::widgets))
        .route("/alerts", get(pages::alerts::list))
        .route("/alerts/{id}", get(pages::alerts::detail))
        .route("/alerts/{id}/ack", post(pages::alerts::ack))
        .route("/alerts/{id}/resolve", post(pages::alerts::resolve))
        .route(
            "/silences",
            get(pages::alerts::silences).post(pages::alerts::create_silence),
        )
        .route("/silences/{id}/expire", post(pages::alerts::expire_silence))
        .route("/events", get(pages::events::list))
        .route("/events/{id}", get(pages::events::detail))
        .route("/live", get(pages::live::page))
        .route("/live/stream", get(pages::live::stream))
        .route("/tools", get(pages::tools::list))
        .route("/users", get(pages::users::list))
        .route("/users/{user}", get(pages::users::detail))
        .route("/rules", get(pages::rules::list))
        .route("/login", get(session::login_form).post(session::login))
        .route("/logout", post(session::logout))
        .merge(assets::router())
        .layer(axum::middleware::from_fn(security::headers))
        .with_state(state)
}
