//! An export of the stream, and `replay` over it as the cluster runs it.
//!
//! `mcpwatch cluster export` writes every message of the stream, in stream order, as one JSON
//! line: its sequence, subject, publish time, `Nats-Msg-Id` and body, untouched (base64 when it
//! is not UTF-8). `mcpwatch replay --stream FILE` sends each line to the tasks whose filter
//! its subject matches (one per family and `global`), each a [`TaskDetector`] like the live
//! task's, in file order: the same decoding, redaction, scoped engines and publish-time ticks,
//! so the findings are the cluster's.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::Path;

use anyhow::Context as _;
use base64::Engine as _;
use futures_util::StreamExt;
use mcpwatch_core::Timestamp;
use mcpwatch_detect::{Alert, AlertBook, Finding, FoldPolicy};
use mcpwatch_nats::async_nats;
use mcpwatch_nats::async_nats::jetstream::consumer::pull::OrderedConfig;
use mcpwatch_nats::consume::{published_at, Received};
use mcpwatch_nats::subject::{parse_subject, Task};
use serde::{Deserialize, Serialize};

use super::detector::{DetectSpec, TaskDetector};

/// One message of the stream, as `cluster export` writes it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExportRecord {
    /// Its stream sequence.
    pub seq: u64,
    /// The subject it was published on.
    pub subject: String,
    /// When JetStream stored it, µs since the epoch.
    pub published_us: i64,
    /// Its `Nats-Msg-Id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub msg_id: Option<String>,
    /// Its relay MAC, when a node relayed it from its ingest API.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub relay_mac: Option<String>,
    /// Its body, when UTF-8.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload: Option<String>,
    /// Its body in base64, when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payload_b64: Option<String>,
}

impl ExportRecord {
    fn body(&self) -> anyhow::Result<Vec<u8>> {
        match (&self.payload, &self.payload_b64) {
            (Some(p), None) => Ok(p.as_bytes().to_vec()),
            (None, Some(b)) => base64::engine::general_purpose::STANDARD
                .decode(b)
                .context("payload_b64 is not base64"),
            _ => anyhow::bail!("a record holds exactly one of payload and payload_b64"),
        }
    }
}

/// Writes every message of `stream` up to its last sequence when the export started to `out`
/// (replaced atomically); returns how many.
pub async fn export_stream(
    js: &async_nats::jetstream::Context,
    stream: &str,
    out: &Path,
) -> anyhow::Result<u64> {
    let mut s = js
        .get_stream(stream)
        .await
        .with_context(|| format!("cannot open stream {stream}; is this the cluster's NATS?"))?;
    let last = s
        .info()
        .await
        .context("cannot read the stream's state")?
        .state
        .last_sequence;
    let tmp = out.with_extension("partial");
    let file =
        std::fs::File::create(&tmp).with_context(|| format!("cannot write {}", tmp.display()))?;
    let mut w = BufWriter::new(file);
    let mut n = 0;
    if last > 0 {
        let consumer = s
            .create_consumer(OrderedConfig {
                filter_subject: Task::Global.filter(),
                ..Default::default()
            })
            .await
            .context("cannot read the stream")?;
        let mut messages = consumer
            .messages()
            .await
            .context("cannot read the stream")?;
        while let Some(m) = messages.next().await {
            let m = m.context("reading the stream")?;
            let info = m
                .info()
                .map_err(|e| anyhow::anyhow!("a message without info: {e}"))?;
            let seq = info.stream_sequence;
            let published = published_at(info.published).as_micros();
            let r = Received::from_message(&m);
            let (payload, payload_b64) = match std::str::from_utf8(&m.payload) {
                Ok(s) => (Some(s.to_owned()), None),
                Err(_) => (
                    None,
                    Some(base64::engine::general_purpose::STANDARD.encode(&m.payload)),
                ),
            };
            let rec = ExportRecord {
                seq,
                subject: r.subject.to_owned(),
                published_us: published,
                msg_id: r.msg_id.map(str::to_owned),
                relay_mac: r.relay_mac.map(str::to_owned),
                payload,
                payload_b64,
            };
            serde_json::to_writer(&mut w, &rec)?;
            w.write_all(b"\n")?;
            n += 1;
            if seq >= last {
                break;
            }
        }
    }
    w.flush()?;
    w.into_inner()
        .map_err(|e| e.into_error())?
        .sync_all()
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, out).with_context(|| format!("cannot write {}", out.display()))?;
    Ok(n)
}

/// Reads an export; a bad line is an error naming the line.
pub fn read_export(path: &Path) -> anyhow::Result<Vec<ExportRecord>> {
    let file = std::fs::File::open(path).with_context(|| {
        format!(
            "cannot open {} (make one with `mcpwatch cluster export`)",
            path.display()
        )
    })?;
    let mut out = Vec::new();
    for (i, line) in BufReader::new(file).lines().enumerate() {
        let line = line.with_context(|| format!("cannot read {}", path.display()))?;
        if line.trim().is_empty() {
            continue;
        }
        let rec: ExportRecord = serde_json::from_str(&line).with_context(|| {
            format!(
                "{} line {}: not a record of `mcpwatch cluster export`",
                path.display(),
                i + 1
            )
        })?;
        out.push(rec);
    }
    Ok(out)
}

/// What a replay of an export found.
pub struct StreamReplay {
    /// Messages replayed.
    pub messages: u64,
    /// Messages that hold no storable event (the cluster skipped them too).
    pub skipped: u64,
    /// Every finding, in the order the tasks made them (task by task, in task order).
    pub findings: Vec<Finding>,
    /// The findings folded into alerts.
    pub alerts: Vec<Alert>,
}

/// Replays `records` through the cluster's tasks.
pub fn replay_export(
    records: &[ExportRecord],
    spec: &DetectSpec,
    policy: FoldPolicy,
) -> anyhow::Result<StreamReplay> {
    let mut tasks: BTreeMap<Task, TaskDetector> = BTreeMap::new();
    let all = Task::all();
    let mut skipped_subject = 0;
    for rec in records {
        let body = rec.body().with_context(|| format!("record {}", rec.seq))?;
        let msg = Received {
            payload: &body,
            msg_id: rec.msg_id.as_deref(),
            subject: &rec.subject,
            published: Some(Timestamp::from_micros(rec.published_us)),
            relay_mac: rec.relay_mac.as_deref(),
        };
        let Some(parts) = parse_subject(&rec.subject) else {
            skipped_subject += 1;
            continue;
        };
        for t in all.iter().filter(|t| t.covers(&parts)) {
            tasks
                .entry(*t)
                .or_insert_with(|| TaskDetector::new(*t, spec))
                .feed(&msg);
        }
    }
    let mut book = AlertBook::with_policy(policy);
    let mut findings = Vec::new();
    for d in tasks.values_mut() {
        findings.extend(d.take_findings());
    }
    // The global task gets every message with a subject of ours, so its count is the total.
    let skipped = skipped_subject + tasks.get(&Task::Global).map_or(0, |g| g.skipped);
    for f in &findings {
        book.fold(f);
    }
    Ok(StreamReplay {
        messages: records.len() as u64,
        skipped,
        findings,
        alerts: book.into_alerts(),
    })
}
