//! The Slack channel: an incoming webhook with readable blocks: severity, what happened, who,
//! the recommended action and a link to the alert.
//!
//! Text from traffic (the title, who, the description and action) only goes into
//! `plain_text` objects with emoji shortcodes off, so `*bold*` or `:white_check_mark:` stay
//! literal; `&`, `<` and `>` are escaped everywhere, so no value can write a link or a mention
//! (`<!channel>`, `<@U123>`, `<https://x|y>`: Slack's only syntax for them). `mrkdwn` objects
//! hold only mcpwatch's own labels and link. Every field is bounded to Slack's limits (header
//! 150, field 2,000, section text 3,000 characters) with a visible truncation marker.

use futures_util::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::text::{bounded, slack_escape, visible, Lines};
use super::{
    default_true, expand, http_url, post_json, who, BuildContext, Channel, Receipt, SendError,
};
use crate::model::{Notification, NotificationKind};

/// `[channels.NAME]` with `type = "slack"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SlackConfig {
    /// The incoming-webhook URL; it is a secret, so write `"${SLACK_WEBHOOK_URL}"`.
    pub webhook_url: String,
    /// Whether to post when the alert resolves (default true).
    #[serde(default = "default_true")]
    pub send_resolved: bool,
}

impl SlackConfig {
    /// Builds the channel, expanding `${VAR}`s.
    pub fn build(&self, ctx: &BuildContext<'_>) -> Result<Slack, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let url = expand(&self.webhook_url, "webhook_url", ctx, &mut errors);
        if !errors.is_empty() {
            return Err(errors);
        }
        match http_url(&url, "webhook_url", &mut errors) {
            Some(url) => Ok(Slack {
                http: ctx.http.clone(),
                url,
                send_resolved: self.send_resolved,
            }),
            None => Err(errors),
        }
    }
}

/// Posts to a Slack incoming webhook.
pub struct Slack {
    http: reqwest::Client,
    url: reqwest::Url,
    send_resolved: bool,
}

impl Channel for Slack {
    fn kind(&self) -> &'static str {
        "slack"
    }

    fn sends_resolved(&self) -> bool {
        self.send_resolved
    }

    fn send<'a>(&'a self, n: &'a Notification<'a>) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let body = serde_json::to_vec(&payload(n))
                .map_err(|e| SendError::permanent(format!("cannot encode the payload: {e}")))?;
            post_json(&self.http, &self.url, HeaderMap::new(), body).await
        })
    }
}

/// Slack's limits on one header, one section field and one section text.
const HEADER_MAX: usize = 150;
const FIELD_MAX: usize = 2000;
const TEXT_MAX: usize = 3000;

/// A `plain_text` object: `label` (ours) then `value` (from traffic), escaped and bounded.
fn plain(label: &str, value: &str, max: usize) -> Value {
    let text = bounded(&format!("{label}\n{value}"), max, slack_escape);
    json!({"type": "plain_text", "text": text, "emoji": false})
}

/// The message for one notification.
pub fn payload(n: &Notification<'_>) -> Value {
    let a = &n.alert.alert;
    // Unicode emoji, not shortcodes: the header renders no shortcodes, so none come from traffic.
    let emoji = match (n.kind, a.severity.as_str()) {
        (NotificationKind::Resolved, _) => "\u{2705}",
        (NotificationKind::Acknowledged, _) => "\u{1F440}",
        (NotificationKind::Test, _) => "\u{1F9EA}",
        (_, "critical") => "\u{1F6A8}",
        (_, "high") => "\u{1F534}",
        (_, "medium") => "\u{1F7E0}",
        _ => "\u{1F535}",
    };
    let title = super::title(n);
    let ours = |k: &str, v: &str| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", bounded(v, 200, slack_escape))});
    let header = bounded(&format!("{emoji} {title}"), HEADER_MAX, slack_escape);
    let blocks = json!([
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": false}},
        {"type": "section", "fields": [
            ours("Severity", &a.severity.as_str().to_uppercase()),
            ours("Status", n.kind.as_str()),
            plain("Who", &who(n), FIELD_MAX),
            ours("Count", &a.count.to_string()),
            ours("Source", a.source.as_str()),
            ours("Last seen", &a.last_seen.to_string()),
        ]},
        {"type": "section", "text": plain("What happened", &visible(&a.description, Lines::Many), TEXT_MAX)},
        {"type": "section", "text": plain("Recommended action", &visible(&a.recommended_action, Lines::Many), TEXT_MAX)},
        {"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!(
                "<{}|Open alert {}> · fingerprint `{}`",
                bounded(&n.link, 1000, slack_escape),
                bounded(&a.id, 200, slack_escape),
                bounded(&a.fingerprint, 200, slack_escape),
            )}
        ]},
    ]);
    // The fallback `text` (notifications, old clients) is escaped too, with mrkdwn off so
    // `*bold*` from traffic stays literal there as well.
    json!({"text": bounded(&title, TEXT_MAX, slack_escape), "mrkdwn": false, "blocks": blocks})
}
