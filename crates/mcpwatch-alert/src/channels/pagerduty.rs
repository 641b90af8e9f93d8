//! The PagerDuty channel: Events API v2. A firing alert is a `trigger`, an acknowledged one an
//! `acknowledge`, a resolved one a `resolve`, all with `dedup_key` = the alert fingerprint, so
//! repeats and retries land on one incident. `alerts test` sends a trigger and at once its
//! resolve, so nobody stays paged.
//!
//! PagerDuty shows text as text (no markup), so values are only made visible (no control or
//! bidi characters) and bounded: the summary to PagerDuty's 1,024 characters, the other
//! fields well within its 512 KB event limit, each with a visible truncation marker.

use futures_util::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::text::{bounded, no_escape, visible, Lines};
use super::{default_true, expand, http_url, post_json, BuildContext, Channel, Receipt, SendError};
use crate::model::{Notification, NotificationKind};

/// PagerDuty's Events API v2 endpoint.
pub const DEFAULT_URL: &str = "https://events.pagerduty.com/v2/enqueue";

/// `[channels.NAME]` with `type = "pagerduty"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PagerDutyConfig {
    /// The integration's routing key; a secret, so write `"${PAGERDUTY_ROUTING_KEY}"`.
    pub routing_key: String,
    /// The Events API endpoint (default `https://events.pagerduty.com/v2/enqueue`).
    #[serde(default)]
    pub url: Option<String>,
    /// Whether to send `resolve` when the alert resolves (default true).
    #[serde(default = "default_true")]
    pub send_resolved: bool,
}

impl PagerDutyConfig {
    /// Builds the channel, expanding `${VAR}`s.
    pub fn build(&self, ctx: &BuildContext<'_>) -> Result<PagerDuty, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let routing_key = expand(&self.routing_key, "routing_key", ctx, &mut errors);
        if routing_key.trim().is_empty() && errors.is_empty() {
            errors.push((
                "routing_key".into(),
                "is empty; set it to the integration key of a PagerDuty Events API v2 integration"
                    .into(),
            ));
        }
        let url = expand(
            self.url.as_deref().unwrap_or(DEFAULT_URL),
            "url",
            ctx,
            &mut errors,
        );
        let url = http_url(&url, "url", &mut errors);
        match url {
            Some(url) if errors.is_empty() => Ok(PagerDuty {
                http: ctx.http.clone(),
                url,
                routing_key,
                send_resolved: self.send_resolved,
            }),
            _ => Err(errors),
        }
    }
}

/// Sends Events API v2 events.
pub struct PagerDuty {
    http: reqwest::Client,
    url: reqwest::Url,
    routing_key: String,
    send_resolved: bool,
}

impl PagerDuty {
    async fn post(&self, body: &Value) -> Result<Receipt, SendError> {
        let body = serde_json::to_vec(body)
            .map_err(|e| SendError::permanent(format!("cannot encode the event: {e}")))?;
        post_json(&self.http, &self.url, HeaderMap::new(), body).await
    }
}

impl Channel for PagerDuty {
    fn kind(&self) -> &'static str {
        "pagerduty"
    }

    fn sends_resolved(&self) -> bool {
        self.send_resolved
    }

    fn sends_acknowledged(&self) -> bool {
        true
    }

    fn send<'a>(&'a self, n: &'a Notification<'a>) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let first = self.post(&payload(n, &self.routing_key, n.kind)).await?;
            if n.kind != NotificationKind::Test {
                return Ok(first);
            }
            let second = self
                .post(&payload(n, &self.routing_key, NotificationKind::Resolved))
                .await?;
            Ok(Receipt {
                response: format!("trigger: {}; resolve: {}", first.response, second.response),
            })
        })
    }
}

/// PagerDuty's limit on the summary.
const SUMMARY_MAX: usize = 1024;
/// Our bound on each other text field.
const DETAIL_MAX: usize = 8192;

/// The Events API v2 body; `as_kind` says whether it triggers, acknowledges or resolves.
pub fn payload(n: &Notification<'_>, routing_key: &str, as_kind: NotificationKind) -> Value {
    let a = &n.alert.alert;
    let dedup_key = &a.fingerprint;
    let action = match as_kind {
        NotificationKind::Resolved => Some("resolve"),
        NotificationKind::Acknowledged => Some("acknowledge"),
        NotificationKind::Firing | NotificationKind::Test => None,
    };
    if let Some(action) = action {
        return json!({"routing_key": routing_key, "event_action": action, "dedup_key": dedup_key});
    }
    let detail = |s: &str| bounded(&visible(s, Lines::Many), DETAIL_MAX, no_escape);
    let group: serde_json::Map<String, Value> = a
        .group
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                Value::String(bounded(&visible(v, Lines::One), 1024, no_escape)),
            )
        })
        .collect();
    let severity = match a.severity.as_str() {
        "critical" => "critical",
        "high" => "error",
        "medium" => "warning",
        _ => "info",
    };
    json!({
        "routing_key": routing_key,
        "event_action": "trigger",
        "dedup_key": dedup_key,
        "client": "mcpwatch",
        "client_url": n.external_url,
        "payload": {
            "summary": bounded(&super::title(n), SUMMARY_MAX, no_escape),
            "source": "mcpwatch",
            "severity": severity,
            "timestamp": a.last_seen.to_string(),
            "component": bounded(&visible(&a.name, Lines::One), 255, no_escape),
            "group": a.source.as_str(),
            "class": a.severity.as_str(),
            "custom_details": {
                "description": detail(&a.description),
                "recommended_action": detail(&a.recommended_action),
                "group": group,
                "count": a.count,
                "first_seen": a.first_seen,
                "alert_id": a.id,
                "event_ids": a.event_ids,
                "tags": n.alert.tags,
            },
        },
        "links": [{"href": n.link, "text": format!("mcpwatch alert {}", a.id)}],
    })
}
