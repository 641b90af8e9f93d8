//! The Slack channel: an incoming webhook with readable blocks: severity, what happened, who,
//! the recommended action and a link to the alert. Text from events is escaped for Slack's
//! mrkdwn so an attacker-chosen user name cannot inject links or mentions.

use futures_util::future::BoxFuture;
use reqwest::header::HeaderMap;
use serde::Deserialize;
use serde_json::{json, Value};

use super::{
    default_true, expand, http_url, post_json, truncate, who, BuildContext, Channel, Receipt,
    SendError,
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

/// Escapes `&`, `<` and `>` as Slack's mrkdwn requires.
fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// The message for one notification.
pub fn payload(n: &Notification<'_>) -> Value {
    let a = &n.alert.alert;
    let emoji = match (n.kind, a.severity.as_str()) {
        (NotificationKind::Resolved, _) => ":white_check_mark:",
        (NotificationKind::Test, _) => ":test_tube:",
        (_, "critical") => ":rotating_light:",
        (_, "high") => ":red_circle:",
        (_, "medium") => ":large_orange_circle:",
        _ => ":large_blue_circle:",
    };
    let title = super::title(n);
    let field = |k: &str, v: &str| json!({"type": "mrkdwn", "text": format!("*{k}*\n{}", esc(v))});
    let blocks = json!([
        {"type": "header", "text": {"type": "plain_text", "text": truncate(&format!("{emoji} {title}"), 140), "emoji": true}},
        {"type": "section", "fields": [
            field("Severity", &a.severity.as_str().to_uppercase()),
            field("Status", n.kind.as_str()),
            field("Who", &who(n)),
            field("Count", &a.count.to_string()),
            field("Source", a.source.as_str()),
            field("Last seen", &a.last_seen.to_string()),
        ]},
        {"type": "section", "text": {"type": "mrkdwn", "text": format!("*What happened*\n{}", esc(&truncate(&a.description, 2000)))}},
        {"type": "section", "text": {"type": "mrkdwn", "text": format!("*Recommended action*\n{}", esc(&truncate(&a.recommended_action, 2000)))}},
        {"type": "context", "elements": [
            {"type": "mrkdwn", "text": format!("<{}|Open alert {}> · fingerprint `{}`", n.link, esc(&a.id), esc(&a.fingerprint))}
        ]},
    ]);
    json!({"text": title, "blocks": blocks})
}
