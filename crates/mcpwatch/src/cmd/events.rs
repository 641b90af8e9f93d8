//! `mcpwatch events`: query or tail events from a running collector.

use std::io::Write;
use std::process::ExitCode;

use anyhow::{bail, Context};
use futures_util::StreamExt;
use mcpwatch_core::paths::{default_collector, process_env};
use serde_json::Value;

use crate::term::sanitize;

/// `mcpwatch events` options.
#[derive(clap::Args)]
pub struct EventsArgs {
    /// Events since a duration ago (`1h`), an RFC 3339 time, or Unix seconds.
    #[arg(long, default_value = "1h")]
    since: String,
    /// Events before this time.
    #[arg(long)]
    until: Option<String>,
    /// Only this category (tool_execution, security, performance, anomaly, security_alert, session, system).
    #[arg(long)]
    category: Option<String>,
    /// Only this level (debug, info, warning, error, critical).
    #[arg(long)]
    level: Option<String>,
    /// Only this event type (e.g. execution_complete).
    #[arg(long)]
    event_type: Option<String>,
    /// Only this server.
    #[arg(long)]
    server: Option<String>,
    /// Only this tool.
    #[arg(long)]
    tool: Option<String>,
    /// Only this user.
    #[arg(long)]
    user: Option<String>,
    /// Only this session.
    #[arg(long)]
    session: Option<String>,
    /// Only this outcome (success, tool_error, rpc_error, denied, cancelled, timeout, transport_error).
    #[arg(long)]
    outcome: Option<String>,
    /// Only events whose message contains this text.
    #[arg(long, short)]
    q: Option<String>,
    /// At most this many past events.
    #[arg(long, default_value_t = 100)]
    limit: usize,
    /// Keep running and print new events as they are committed.
    #[arg(long, short)]
    follow: bool,
    /// Print each event as one JSON line.
    #[arg(long)]
    json: bool,
    /// Collector URL [default: $MCPWATCH_COLLECTOR or http://127.0.0.1:7878]. Token: $MCPWATCH_TOKEN.
    #[arg(long)]
    collector: Option<String>,
}

impl EventsArgs {
    fn filters(&self) -> Vec<(&'static str, String)> {
        let mut f = vec![("since", self.since.clone())];
        let opts = [
            ("until", &self.until),
            ("category", &self.category),
            ("level", &self.level),
            ("event_type", &self.event_type),
            ("server", &self.server),
            ("tool", &self.tool),
            ("user", &self.user),
            ("session", &self.session),
            ("outcome", &self.outcome),
            ("q", &self.q),
        ];
        f.extend(
            opts.into_iter()
                .filter_map(|(k, v)| v.clone().map(|v| (k, v))),
        );
        f
    }
}

pub async fn run(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let base = args
        .collector
        .clone()
        .unwrap_or_else(|| default_collector(&process_env));
    let base = base.trim_end_matches('/').to_owned();
    let client = Client::new(&base)?;
    let mut past: Vec<Value> = Vec::new();
    let mut cursor: Option<String> = None;
    while past.len() < args.limit {
        let mut query = args.filters();
        query.push(("limit", (args.limit - past.len()).min(1000).to_string()));
        if let Some(c) = &cursor {
            query.push(("cursor", c.clone()));
        }
        let page = client.get_json("/api/v1/events", &query).await?;
        past.extend(page["events"].as_array().cloned().unwrap_or_default());
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    let mut out = std::io::stdout().lock();
    let seen: std::collections::HashSet<String> = past
        .iter()
        .filter_map(|e| e["id"].as_str().map(str::to_owned))
        .collect();
    for e in past.iter().rev() {
        print_event(&mut out, e, args.json)?;
    }
    out.flush()?;
    drop(out);
    if args.follow {
        let query: Vec<(&str, String)> = args
            .filters()
            .into_iter()
            .filter(|(k, _)| *k != "until")
            .collect();
        client.follow(&query, &seen, args.json).await?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_event(out: &mut impl Write, e: &Value, json: bool) -> std::io::Result<()> {
    if json {
        return writeln!(out, "{e}");
    }
    let s = |k: &str| e[k].as_str().unwrap_or("");
    let meta = &e["metadata"];
    let mut detail = String::new();
    for key in ["server", "tool_name", "user_id", "outcome"] {
        if let Some(v) = meta[key].as_str() {
            detail.push_str(&format!(" {key}={v}"));
        }
    }
    writeln!(
        out,
        "{} {:<8} {}/{} [{}]{} {}",
        sanitize(s("timestamp")),
        sanitize(s("level")),
        sanitize(s("category")),
        sanitize(s("event_type")),
        sanitize(s("source")),
        sanitize(&detail),
        sanitize(s("message"))
    )
}

struct Client {
    base: String,
    http: reqwest::Client,
    token: Option<String>,
}

impl Client {
    fn new(base: &str) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(std::time::Duration::from_secs(5))
            .build()?;
        Ok(Self {
            base: base.to_owned(),
            http,
            token: process_env("MCPWATCH_TOKEN"),
        })
    }

    fn request(&self, path: &str, query: &[(&str, String)]) -> reqwest::RequestBuilder {
        let mut req = self.http.get(format!("{}{path}", self.base)).query(query);
        if let Some(t) = &self.token {
            req = req.bearer_auth(t);
        }
        req
    }

    async fn send(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> anyhow::Result<reqwest::Response> {
        let resp = self.request(path, query).send().await.with_context(|| {
            format!("cannot reach the collector at {}: is `mcpwatch serve` running? (set --collector or MCPWATCH_COLLECTOR)", self.base)
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let msg = body["error"]["message"].as_str().unwrap_or("no details");
        let hint = match status.as_u16() {
            401 | 403 => " (set MCPWATCH_TOKEN to a token with the read role)",
            _ => "",
        };
        bail!("the collector answered {status}: {msg}{hint}")
    }

    async fn get_json(&self, path: &str, query: &[(&str, String)]) -> anyhow::Result<Value> {
        Ok(self.send(path, query).await?.json().await?)
    }

    /// Prints events from the SSE stream until it ends or the user interrupts.
    async fn follow(
        &self,
        query: &[(&str, String)],
        seen: &std::collections::HashSet<String>,
        json: bool,
    ) -> anyhow::Result<()> {
        let resp = self.send("/api/v1/events/stream", query).await?;
        let mut body = resp.bytes_stream();
        let mut buf: Vec<u8> = Vec::new();
        let mut event_name = String::new();
        let mut data = String::new();
        while let Some(chunk) = body.next().await {
            buf.extend_from_slice(&chunk.context("the collector closed the stream")?);
            while let Some(nl) = buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = buf.drain(..=nl).collect();
                let line = String::from_utf8_lossy(&line);
                let line = line.trim_end_matches(['\n', '\r']);
                if line.is_empty() {
                    self.dispatch(&event_name, &data, seen, json)?;
                    event_name.clear();
                    data.clear();
                } else if let Some(v) = line.strip_prefix("event:") {
                    event_name = v.trim().to_owned();
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.strip_prefix(' ').unwrap_or(v));
                }
            }
            if buf.len() > 64 * 1024 * 1024 {
                bail!("the collector sent an event larger than 64 MiB; stopping");
            }
        }
        Ok(())
    }

    fn dispatch(
        &self,
        name: &str,
        data: &str,
        seen: &std::collections::HashSet<String>,
        json: bool,
    ) -> anyhow::Result<()> {
        let mut out = std::io::stdout().lock();
        match name {
            "event" => {
                let e: Value = serde_json::from_str(data)
                    .context("the collector sent an event that is not JSON")?;
                if e["id"].as_str().is_some_and(|id| seen.contains(id)) {
                    return Ok(());
                }
                print_event(&mut out, &e, json)?;
            }
            "lagged" => {
                eprintln!("warning: the terminal fell behind and missed some events ({data})")
            }
            _ => {}
        }
        out.flush()?;
        Ok(())
    }
}
