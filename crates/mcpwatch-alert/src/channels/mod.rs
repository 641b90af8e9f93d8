//! Channels: where notifications go. An open set behind the [`Channel`] trait, one file per
//! kind: [`webhook`] (Alertmanager-compatible JSON, HMAC-signed), [`slack`] (incoming webhook
//! blocks), [`pagerduty`] (Events API v2) and [`email`] (SMTP).
//!
//! Each kind's config struct builds its channel (`WebhookConfig::build`); rendering is a pure
//! function of the [`Notification`] so payloads are snapshot-tested without a network.
//!
//! Architecture Invariant: text from traffic reaches a receiver only through [`text`]: made
//! visible (no control or bidi characters), escaped for the receiver's syntax and bounded to
//! its field limits with a visible truncation marker, so no value can make a receiver ping,
//! link, misrender or refuse an alert.
//!
//! Architecture Invariant: a channel never logs or returns its secrets (URLs with tokens,
//! routing keys, SMTP passwords); transport errors are stripped of the URL.

pub mod email;
pub mod pagerduty;
pub mod slack;
pub mod text;
pub mod webhook;

use std::time::Duration;

use futures_util::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde::Deserialize;

use crate::model::Notification;

/// What a receiver answered to a notification it accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// What it answered, e.g. `202 {"status":"success",…}` or `250 2.0.0 OK`.
    pub response: String,
}

/// Why a notification was not accepted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SendError {
    /// What happened, without secrets.
    pub message: String,
    /// Whether trying again later may help (outage, 5xx, 429) or not (401, 404, bad payload).
    pub retryable: bool,
}

impl SendError {
    /// A failure worth retrying.
    pub fn transient(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: true,
        }
    }

    /// A failure that retrying will not fix.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            retryable: false,
        }
    }
}

/// A place notifications go.
pub trait Channel: Send + Sync + 'static {
    /// `webhook`, `slack`, `pagerduty`, `email`: the default routing goes by kind.
    fn kind(&self) -> &'static str;
    /// Whether it is told when an alert resolves.
    fn sends_resolved(&self) -> bool;
    /// Whether it is told when someone acknowledges an alert (PagerDuty's `acknowledge`).
    fn sends_acknowledged(&self) -> bool {
        false
    }
    /// Sends one notification.
    fn send<'a>(&'a self, n: &'a Notification<'a>) -> BoxFuture<'a, Result<Receipt, SendError>>;
}

/// `send_resolved` for every channel kind.
pub(crate) fn default_true() -> bool {
    true
}

/// What building a channel needs.
pub struct BuildContext<'a> {
    /// The shared HTTP client (rustls, with the delivery timeout).
    pub http: reqwest::Client,
    /// How long one attempt may take.
    pub timeout: Duration,
    /// Reads `${VAR}`s.
    pub env: &'a dyn Fn(&str) -> Option<String>,
}

/// The channel kinds a config may name.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum ChannelConfig {
    /// Alertmanager-compatible webhook.
    Webhook(webhook::WebhookConfig),
    /// Slack incoming webhook.
    Slack(slack::SlackConfig),
    /// PagerDuty Events API v2.
    Pagerduty(pagerduty::PagerDutyConfig),
    /// SMTP.
    Email(email::EmailConfig),
}

impl ChannelConfig {
    /// Builds the channel; errors carry paths relative to the channel (`webhook_url`).
    pub fn build(&self, ctx: &BuildContext<'_>) -> Result<Box<dyn Channel>, Vec<(String, String)>> {
        match self {
            ChannelConfig::Webhook(c) => c.build(ctx).map(|c| Box::new(c) as Box<dyn Channel>),
            ChannelConfig::Slack(c) => c.build(ctx).map(|c| Box::new(c) as Box<dyn Channel>),
            ChannelConfig::Pagerduty(c) => c.build(ctx).map(|c| Box::new(c) as Box<dyn Channel>),
            ChannelConfig::Email(c) => c.build(ctx).map(|c| Box::new(c) as Box<dyn Channel>),
        }
    }
}

/// Expands `${VAR}` in a config value, recording an error under `field`.
pub(crate) fn expand(
    value: &str,
    field: &str,
    ctx: &BuildContext<'_>,
    errors: &mut Vec<(String, String)>,
) -> String {
    match mcpwatch_core::config::expand_env(value, ctx.env) {
        Ok(v) => v,
        Err(m) => {
            errors.push((field.to_owned(), m));
            String::new()
        }
    }
}

/// Checks that `url` is an absolute http(s) URL, recording an error under `field`.
pub(crate) fn http_url(
    value: &str,
    field: &str,
    errors: &mut Vec<(String, String)>,
) -> Option<reqwest::Url> {
    if value.is_empty() {
        errors.push((
            field.to_owned(),
            "is empty; give the receiver's http(s) URL".into(),
        ));
        return None;
    }
    match reqwest::Url::parse(value) {
        Ok(u) if matches!(u.scheme(), "http" | "https") => Some(u),
        Ok(u) => {
            errors.push((
                field.to_owned(),
                format!("must be an http or https URL, not {}:", u.scheme()),
            ));
            None
        }
        Err(e) => {
            // The value may hold a secret: say what is wrong, not what it is.
            errors.push((field.to_owned(), format!("is not a valid URL ({e})")));
            None
        }
    }
}

/// Posts a JSON body and classifies the answer: 2xx accepted; 408, 429 and 5xx retried; other
/// 4xx refused for good.
pub(crate) async fn post_json(
    http: &reqwest::Client,
    url: &reqwest::Url,
    headers: HeaderMap,
    body: Vec<u8>,
) -> Result<Receipt, SendError> {
    let resp = http
        .post(url.clone())
        .headers(headers)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body)
        .send()
        .await
        .map_err(|e| {
            SendError::transient(format!("cannot reach the receiver: {}", e.without_url()))
        })?;
    let status = resp.status();
    let text = resp.text().await.unwrap_or_default();
    let response = format!("{} {}", status.as_u16(), truncate(text.trim(), 512));
    if status.is_success() {
        return Ok(Receipt { response });
    }
    let retryable = status.is_server_error() || matches!(status.as_u16(), 408 | 429);
    let message = format!("the receiver answered {response}");
    Err(SendError { message, retryable })
}

/// At most `max` bytes of `s`, cut on a character boundary, with `…` when cut.
pub(crate) fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_owned();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

/// `key=value, …` for an alert's group: who or what it is about, on one visible line.
pub(crate) fn who(n: &Notification<'_>) -> String {
    let g = &n.alert.alert.group;
    if g.is_empty() {
        return "(no group)".to_owned();
    }
    let joined = g
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ");
    text::visible(&joined, text::Lines::One)
}

/// What the notification says about the alert: `firing`, `resolved`, ….
pub(crate) fn state(n: &Notification<'_>) -> &'static str {
    match n.kind {
        crate::model::NotificationKind::Firing => "firing",
        crate::model::NotificationKind::Resolved => "resolved",
        crate::model::NotificationKind::Acknowledged => "acknowledged",
        crate::model::NotificationKind::Test => "test notification",
    }
}

/// A one-line title: `[HIGH] brute_force_detection firing (6x) for metadata.user_id=alice`;
/// visible but neither escaped nor bounded (each channel does both for its receiver).
pub(crate) fn title(n: &Notification<'_>) -> String {
    let a = &n.alert.alert;
    text::visible(
        &format!(
            "[{}] {} {} ({}x) for {}",
            a.severity.as_str().to_uppercase(),
            a.name,
            state(n),
            a.count,
            who(n)
        ),
        text::Lines::One,
    )
}
