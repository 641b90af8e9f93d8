//! `mcpwatch alerts`: list, acknowledge, resolve and silence alerts, and test channels, on a
//! running collector through its API (`/api/v1/alerts`, `/silences`, `/channels`).

use std::process::ExitCode;

use anyhow::{bail, Context};
use mcpwatch_core::paths::{default_collector, process_env};
use serde_json::{json, Value};

use crate::term::sanitize;

/// `mcpwatch alerts …` options.
#[derive(clap::Args)]
pub struct AlertsArgs {
    #[command(subcommand)]
    command: AlertsCommand,
    /// Collector URL [default: $MCPWATCH_COLLECTOR or http://127.0.0.1:7878]. Token: $MCPWATCH_TOKEN.
    #[arg(long, global = true)]
    collector: Option<String>,
}

#[derive(clap::Subcommand)]
enum AlertsCommand {
    /// List alerts, newest first.
    List {
        /// Only this status: new, sent, acknowledged, resolved, suppressed.
        #[arg(long)]
        status: Option<String>,
        /// Only this severity: low, medium, high, critical.
        #[arg(long)]
        severity: Option<String>,
        /// Only alerts of this rule, detector or signature.
        #[arg(long)]
        name: Option<String>,
        /// At most this many.
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Print each alert as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// Show one alert with its deliveries per channel.
    Show {
        /// The alert id.
        id: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Acknowledge an alert: it stays open but is not notified again.
    Ack {
        /// The alert id.
        id: String,
    },
    /// Resolve an alert; channels that support it are told.
    Resolve {
        /// The alert id.
        id: String,
    },
    /// Silence alerts matching all matchers for a while: `--matcher name=brute_force_detection --for 2h --comment "pen test"`.
    Silence {
        /// `label=value`, `label!=value`, `label=~regex` or `label!~regex`; labels are name,
        /// severity, source, tag, and group keys such as metadata.user_id. Repeatable.
        #[arg(long = "matcher", short = 'm', required = true)]
        matchers: Vec<String>,
        /// How long, e.g. 30m, 2h, 1d.
        #[arg(long = "for", default_value = "2h")]
        duration: String,
        /// Why (required, kept with the silence).
        #[arg(long)]
        comment: String,
    },
    /// List silences still in force (or all with --all).
    Silences {
        /// Include ended silences.
        #[arg(long)]
        all: bool,
        /// Print each silence as one JSON line.
        #[arg(long)]
        json: bool,
    },
    /// End a silence now.
    Unsilence {
        /// The silence id.
        id: String,
    },
    /// Send a test notification through a channel and print what the receiver answered.
    Test {
        /// The channel's name in the config ([channels.NAME]).
        #[arg(long)]
        channel: String,
    },
}

pub async fn run(args: AlertsArgs) -> anyhow::Result<ExitCode> {
    let base = args
        .collector
        .clone()
        .unwrap_or_else(|| default_collector(&process_env));
    let api = Api::new(base.trim_end_matches('/'))?;
    match args.command {
        AlertsCommand::List {
            status,
            severity,
            name,
            limit,
            json,
        } => {
            let mut query: Vec<(&str, String)> =
                [("status", status), ("severity", severity), ("name", name)]
                    .into_iter()
                    .filter_map(|(k, v)| v.map(|v| (k, v)))
                    .collect();
            query.push(("limit", limit.clamp(1, 1000).to_string()));
            let page = api
                .call(reqwest::Method::GET, "/api/v1/alerts", &query, None)
                .await?;
            let alerts = page["alerts"].as_array().cloned().unwrap_or_default();
            if json {
                alerts.iter().for_each(|a| println!("{a}"));
            } else if alerts.is_empty() {
                println!("no alerts");
            } else {
                alerts.iter().for_each(|a| println!("{}", alert_line(a)));
            }
        }
        AlertsCommand::Show { id, json } => {
            let a = api
                .call(
                    reqwest::Method::GET,
                    &format!("/api/v1/alerts/{}", seg(&id)),
                    &[],
                    None,
                )
                .await?;
            if json {
                println!("{a}");
            } else {
                print_alert(&a);
            }
        }
        AlertsCommand::Ack { id } => {
            let a = api
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/alerts/{}/ack", seg(&id)),
                    &[],
                    None,
                )
                .await?;
            println!("acknowledged: {}", alert_line(&a));
        }
        AlertsCommand::Resolve { id } => {
            let a = api
                .call(
                    reqwest::Method::POST,
                    &format!("/api/v1/alerts/{}/resolve", seg(&id)),
                    &[],
                    None,
                )
                .await?;
            println!("resolved: {}", alert_line(&a));
        }
        AlertsCommand::Silence {
            matchers,
            duration,
            comment,
        } => {
            let body = json!({"matchers": matchers, "duration": duration, "comment": comment});
            let s = api
                .call(reqwest::Method::POST, "/api/v1/silences", &[], Some(body))
                .await?;
            println!("silenced: {}", silence_line(&s));
            println!(
                "end it early with `mcpwatch alerts unsilence {}`",
                sanitize(s["id"].as_str().unwrap_or(""))
            );
        }
        AlertsCommand::Silences { all, json } => {
            let query = [("all", all.to_string())];
            let page = api
                .call(reqwest::Method::GET, "/api/v1/silences", &query, None)
                .await?;
            let silences = page["silences"].as_array().cloned().unwrap_or_default();
            if json {
                silences.iter().for_each(|s| println!("{s}"));
            } else if silences.is_empty() {
                println!("no silences");
            } else {
                silences
                    .iter()
                    .for_each(|s| println!("{}", silence_line(s)));
            }
        }
        AlertsCommand::Unsilence { id } => {
            let s = api
                .call(
                    reqwest::Method::DELETE,
                    &format!("/api/v1/silences/{}", seg(&id)),
                    &[],
                    None,
                )
                .await?;
            println!("ended: {}", silence_line(&s));
        }
        AlertsCommand::Test { channel } => {
            let path = format!("/api/v1/channels/{}/test", seg(&channel));
            let r = api.call(reqwest::Method::POST, &path, &[], None).await?;
            let name = sanitize(&channel);
            if r["ok"].as_bool() == Some(true) {
                println!(
                    "{name}: delivered; the receiver answered: {}",
                    sanitize(r["response"].as_str().unwrap_or(""))
                );
            } else {
                eprintln!(
                    "{name}: not delivered: {}\n(check the channel's URL and credentials in the config; retryable: {})",
                    sanitize(r["error"].as_str().unwrap_or("unknown error")),
                    r["retryable"]
                );
                return Ok(ExitCode::from(1));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Percent-encodes an id for a path segment.
fn seg(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

fn text<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

fn group_text(a: &Value) -> String {
    a["group"]
        .as_object()
        .map(|g| {
            g.iter()
                .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or("")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn deliveries_text(a: &Value) -> String {
    a["channels"]
        .as_object()
        .map(|c| {
            c.iter()
                .map(|(name, d)| format!("{name}:{}", d["status"].as_str().unwrap_or("?")))
                .collect::<Vec<_>>()
                .join(",")
        })
        .unwrap_or_default()
}

fn alert_line(a: &Value) -> String {
    sanitize(&format!(
        "{} {:<8} {:<12} x{:<4} {} {} [{}] {}",
        text(a, "id"),
        text(a, "severity"),
        text(a, "status"),
        a["count"].as_u64().unwrap_or(0),
        text(a, "last_seen"),
        text(a, "name"),
        group_text(a),
        deliveries_text(a),
    ))
}

fn print_alert(a: &Value) {
    println!("{}", alert_line(a));
    for k in [
        "description",
        "recommended_action",
        "fingerprint",
        "first_seen",
        "source",
    ] {
        println!("  {k}: {}", sanitize(text(a, k)));
    }
    for d in a["deliveries"].as_array().into_iter().flatten() {
        let err = d["last_error"]
            .as_str()
            .map(|e| format!(" error: {e}"))
            .unwrap_or_default();
        println!(
            "  delivery {} {} {} attempts={}{}",
            sanitize(text(d, "channel")),
            sanitize(text(d, "kind")),
            sanitize(text(d, "status")),
            d["attempts"],
            sanitize(&err)
        );
    }
}

fn silence_line(s: &Value) -> String {
    let matchers: Vec<&str> = s["matchers"]
        .as_array()
        .map(|m| m.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    sanitize(&format!(
        "{} {} → {} [{}] by {}: {}",
        text(s, "id"),
        text(s, "starts_at"),
        text(s, "ends_at"),
        matchers.join(", "),
        text(s, "created_by"),
        text(s, "comment"),
    ))
}

struct Api {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Api {
    fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(60))
            .build()?;
        Ok(Self {
            base: base.to_owned(),
            http,
            token: process_env("MCPWATCH_TOKEN"),
        })
    }

    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<Value>,
    ) -> anyhow::Result<Value> {
        let admin = method != reqwest::Method::GET;
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.with_context(|| {
            format!("cannot reach the collector at {}: is `mcpwatch serve` running? (set --collector or MCPWATCH_COLLECTOR)", self.base)
        })?;
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(body);
        }
        let msg = sanitize(body["error"]["message"].as_str().unwrap_or("no details"));
        let hint = match (status.as_u16(), admin) {
            (401 | 403, true) => " (set MCPWATCH_TOKEN to a token with the admin role)",
            (401 | 403, false) => " (set MCPWATCH_TOKEN to a token with the read role)",
            _ => "",
        };
        bail!("the collector answered {status}: {msg}{hint}")
    }
}
