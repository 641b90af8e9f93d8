//! The webhook channel: an Alertmanager-compatible JSON payload (version 4), so anything that
//! takes Alertmanager webhooks takes mcpwatch's.
//!
//! Its readers are programs, so values keep their exact text (JSON-escaped, so nothing breaks
//! out of a string) and are only bounded: labels to 1,024 and annotations to 8,192 UTF-16
//! units, with a visible truncation marker; the `summary` is the visible one-line title.
//!
//! Signature: with `secret` set, every request carries
//! `X-Mcpwatch-Timestamp: <unix seconds>` and
//! `X-Mcpwatch-Signature: sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
//! A receiver recomputes the HMAC over the timestamp, a dot and the raw body, compares in
//! constant time, and rejects timestamps more than a few minutes old (replays).
//!
//! Every request carries `X-Mcpwatch-Notification-Id`: the same for every attempt at one
//! notification, from whichever collector sends it. Delivery is at least once (a collector that
//! dies between sending and recording sends again, or another one does), so a receiver that must
//! not act twice drops ids it has seen.

use std::collections::BTreeMap;

use futures_util::future::BoxFuture;
use hmac::{Hmac, Mac};
use reqwest::header::{HeaderMap, HeaderValue};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::Sha256;

use super::text::{bounded, no_escape};
use super::{default_true, expand, http_url, post_json, BuildContext, Channel, Receipt, SendError};
use crate::matcher::label_name;
use crate::model::{Notification, NotificationKind};

/// The header with the signing time.
pub const TIMESTAMP_HEADER: &str = "x-mcpwatch-timestamp";
/// The header with the signature.
pub const SIGNATURE_HEADER: &str = "x-mcpwatch-signature";
/// The header with the notification's id, for receivers that drop re-sends.
pub const NOTIFICATION_ID_HEADER: &str = "x-mcpwatch-notification-id";

/// `[channels.NAME]` with `type = "webhook"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST, e.g. `"https://hooks.example.com/mcpwatch"` or `"${ALERT_WEBHOOK_URL}"`.
    pub url: String,
    /// Shared secret for the HMAC-SHA256 signature header, usually `"${ALERT_WEBHOOK_SECRET}"`.
    /// Without it requests are not signed.
    #[serde(default)]
    pub secret: Option<String>,
    /// Whether to send a `resolved` payload when the alert resolves (default true).
    #[serde(default = "default_true")]
    pub send_resolved: bool,
}

impl WebhookConfig {
    /// Builds the channel, expanding `${VAR}`s.
    pub fn build(&self, ctx: &BuildContext<'_>) -> Result<Webhook, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let url = expand(&self.url, "url", ctx, &mut errors);
        let url = if errors.is_empty() {
            http_url(&url, "url", &mut errors)
        } else {
            None
        };
        let secret = self
            .secret
            .as_deref()
            .map(|s| expand(s, "secret", ctx, &mut errors));
        if secret.as_deref() == Some("") && errors.is_empty() {
            errors.push(("secret".into(), "is empty; set it or leave it out".into()));
        }
        match url {
            Some(url) if errors.is_empty() => Ok(Webhook {
                http: ctx.http.clone(),
                url,
                secret,
                send_resolved: self.send_resolved,
            }),
            _ => Err(errors),
        }
    }
}

/// Posts Alertmanager-compatible JSON.
pub struct Webhook {
    http: reqwest::Client,
    url: reqwest::Url,
    secret: Option<String>,
    send_resolved: bool,
}

impl Channel for Webhook {
    fn kind(&self) -> &'static str {
        "webhook"
    }

    fn sends_resolved(&self) -> bool {
        self.send_resolved
    }

    fn send<'a>(&'a self, n: &'a Notification<'a>) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&payload(n))
                .map_err(|e| SendError::permanent(format!("cannot encode the payload: {e}")))?;
            let mut headers = HeaderMap::new();
            headers.insert(NOTIFICATION_ID_HEADER, header_value(&n.id)?);
            if let Some(secret) = &self.secret {
                let ts = (n.now.as_micros() / 1_000_000).to_string();
                let sig = sign(secret.as_bytes(), &ts, &body);
                headers.insert(TIMESTAMP_HEADER, header_value(&ts)?);
                headers.insert(SIGNATURE_HEADER, header_value(&sig)?);
            }
            post_json(&self.http, &self.url, headers, body).await
        })
    }
}

fn header_value(s: &str) -> Result<HeaderValue, SendError> {
    HeaderValue::from_str(s).map_err(|e| SendError::permanent(format!("bad header value: {e}")))
}

/// `sha256=<hex HMAC-SHA256(secret, "<timestamp>.<body>")>`.
pub fn sign(secret: &[u8], timestamp: &str, body: &[u8]) -> String {
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let mut mac = match Hmac::<Sha256>::new_from_slice(secret) {
        Ok(m) => m,
        Err(_) => return String::new(),
    };
    mac.update(timestamp.as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// The Alertmanager webhook payload (version 4) for one alert.
pub fn payload(n: &Notification<'_>) -> Value {
    let a = &n.alert.alert;
    let status = match n.kind {
        NotificationKind::Resolved => "resolved",
        NotificationKind::Firing | NotificationKind::Acknowledged | NotificationKind::Test => {
            "firing"
        }
    };
    let label = |s: &str| bounded(s, 1024, no_escape);
    let annotation = |s: &str| bounded(s, 8192, no_escape);
    let mut labels = BTreeMap::new();
    labels.insert("alertname".to_owned(), label(&a.name));
    labels.insert("severity".to_owned(), a.severity.as_str().to_owned());
    labels.insert("source".to_owned(), a.source.as_str().to_owned());
    for (k, v) in &a.group {
        labels.insert(label_name(k), label(v));
    }
    let mut annotations = BTreeMap::new();
    annotations.insert("summary".to_owned(), label(&super::title(n)));
    annotations.insert("description".to_owned(), annotation(&a.description));
    annotations.insert(
        "recommended_action".to_owned(),
        annotation(&a.recommended_action),
    );
    annotations.insert("count".to_owned(), a.count.to_string());
    if !n.alert.tags.is_empty() {
        annotations.insert("tags".to_owned(), annotation(&n.alert.tags.join(",")));
    }
    let ends_at = match (n.kind, n.alert.resolved_at) {
        (NotificationKind::Resolved, Some(t)) => t.to_string(),
        _ => "0001-01-01T00:00:00Z".to_owned(),
    };
    let alert = json!({
        "status": status,
        "labels": labels,
        "annotations": annotations,
        "startsAt": a.first_seen.to_string(),
        "endsAt": ends_at,
        "generatorURL": n.link,
        "fingerprint": a.fingerprint,
    });
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{fingerprint=\"{}\"}}", a.fingerprint),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": n.channel,
        "groupLabels": {"alertname": label(&a.name)},
        "commonLabels": labels,
        "commonAnnotations": annotations,
        "externalURL": n.external_url,
        "alerts": [alert],
    })
}
