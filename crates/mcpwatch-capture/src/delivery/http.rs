//! The collector's ingest API as an [`EventSink`]: one POST of a JSON array per batch.
//!
//! The last stage of capture. [`HttpSink::post`] reports what the collector said in detail
//! (which events were invalid, when to retry) so the delivery worker can decide between
//! retrying, splitting, dropping and spooling; the `EventSink` impl folds that into `SinkError`.

use std::time::Duration;

use mcpwatch_core::pace::Pacer;
use mcpwatch_core::sink::SinkFuture;
use mcpwatch_core::{Event, EventSink, SinkError};
use serde::Deserialize;

/// Default collector address.
pub const DEFAULT_COLLECTOR: &str = "http://127.0.0.1:7878";

/// Why a batch was not accepted.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum PostError {
    /// No connection, a timeout, or an answer we could not read: try again later.
    #[error("collector unreachable: {0}")]
    Unreachable(String),
    /// 400: these events (by index) are invalid; the batch was not stored.
    #[error("collector rejected the batch: {message}")]
    Rejected {
        /// Indices of the invalid events.
        bad: Vec<usize>,
        /// The collector's explanation.
        message: String,
    },
    /// 413: the batch is too big.
    #[error("collector says the batch is too large")]
    TooLarge,
    /// 429 or 503: come back after the given time.
    #[error("collector is busy; retry after {0:?}")]
    Busy(Duration),
    /// 401 or 403: the collector refused the token. Nothing is wrong with the events: keep
    /// them until a valid token is given.
    #[error("collector refused the token (HTTP {0})")]
    Unauthorized(u16),
    /// Any other answer.
    #[error("collector answered {0}: {1}")]
    Status(u16, String),
}

#[derive(Deserialize)]
struct Accepted {
    ids: Vec<String>,
}

#[derive(Deserialize)]
struct ErrorBody {
    error: ErrorDetail,
}

#[derive(Deserialize)]
struct ErrorDetail {
    message: String,
    #[serde(default)]
    details: Vec<FieldDetail>,
}

#[derive(Deserialize)]
struct FieldDetail {
    index: usize,
    #[serde(default)]
    field: String,
    #[serde(default)]
    message: String,
}

/// Posts event batches to `{collector}/api/v1/events`.
#[derive(Debug, Clone)]
pub struct HttpSink {
    client: reqwest::Client,
    url: String,
    token: Option<String>,
}

impl HttpSink {
    /// A sink for the collector at `collector` (e.g. `http://127.0.0.1:7878`).
    pub fn new(collector: &str, token: Option<String>) -> Result<Self, crate::CaptureError> {
        let client = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| {
                crate::CaptureError::Config(format!("cannot build the HTTP client: {e}"))
            })?;
        let base = collector.trim_end_matches('/');
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(crate::CaptureError::Config(format!(
                "collector URL {collector:?} must start with http:// or https:// (e.g. {DEFAULT_COLLECTOR})"
            )));
        }
        Ok(Self {
            client,
            url: format!("{base}/api/v1/events"),
            token: token.filter(|t| !t.is_empty()),
        })
    }

    /// Posts one batch and reports exactly what the collector said, with the ids it kept.
    pub async fn post(&self, events: &[Event]) -> Result<Vec<String>, PostError> {
        let bytes = self.send(events).await?;
        Ok(serde_json::from_slice::<Accepted>(&bytes)
            .map(|a| a.ids)
            .unwrap_or_default())
    }

    /// Posts one batch like [`Self::post`], for a caller that does not need the ids back: the
    /// delivery worker, which would otherwise parse one string per event it delivers.
    pub async fn deliver(&self, events: &[Event]) -> Result<(), PostError> {
        self.send(events).await.map(drop)
    }

    /// Posts one batch; on a 2xx, the collector's answer.
    async fn send(&self, events: &[Event]) -> Result<bytes::Bytes, PostError> {
        let body = encode(events);
        let mut req = self
            .client
            .post(&self.url)
            .header("content-type", "application/json")
            .body(body);
        if let Some(token) = &self.token {
            req = req.bearer_auth(token);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| PostError::Unreachable(crate::error::with_cause(&e)))?;
        let status = resp.status().as_u16();
        let retry_after = resp
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| PostError::Unreachable(crate::error::with_cause(&e)))?;
        match status {
            200..=299 => Ok(bytes),
            400 => Err(rejected(&bytes)),
            401 | 403 => Err(PostError::Unauthorized(status)),
            413 => Err(PostError::TooLarge),
            429 | 503 => Err(PostError::Busy(
                retry_after.unwrap_or(Duration::from_secs(1)),
            )),
            500..=599 => Err(PostError::Unreachable(format!("HTTP {status}"))),
            _ => Err(PostError::Status(
                status,
                String::from_utf8_lossy(&bytes).chars().take(300).collect(),
            )),
        }
    }
}

fn rejected(body: &[u8]) -> PostError {
    match serde_json::from_slice::<ErrorBody>(body) {
        Ok(b) => {
            let mut bad: Vec<usize> = b.error.details.iter().map(|d| d.index).collect();
            bad.sort_unstable();
            bad.dedup();
            let fields: Vec<String> = b
                .error
                .details
                .iter()
                .take(5)
                .map(|d| format!("event {} {}: {}", d.index, d.field, d.message))
                .collect();
            PostError::Rejected {
                bad,
                message: format!("{} [{}]", b.error.message, fields.join("; ")),
            }
        }
        Err(_) => PostError::Rejected {
            bad: Vec::new(),
            message: String::from_utf8_lossy(body).chars().take(300).collect(),
        },
    }
}

impl EventSink for HttpSink {
    fn submit(&self, events: Vec<Event>) -> SinkFuture {
        let sink = self.clone();
        Box::pin(async move {
            sink.post(&events).await.map_err(|e| match e {
                PostError::Busy(d) => SinkError::Overloaded {
                    retry_after_secs: d.as_secs().max(1),
                },
                PostError::Unreachable(_) => SinkError::Overloaded {
                    retry_after_secs: 1,
                },
                other => SinkError::Store(other.to_string()),
            })
        })
    }
}

/// The batch as a JSON array, written event by event with a [`Pacer`]: a batch of a thousand
/// events takes milliseconds to write and to drop, which the proxy's requests on this core
/// would otherwise wait behind.
pub(super) fn encode(events: &[Event]) -> Vec<u8> {
    let mut pacer = Pacer::new();
    let mut body = Vec::with_capacity(events.len() * 512 + 2);
    body.push(b'[');
    for (i, e) in events.iter().enumerate() {
        if i > 0 {
            body.push(b',');
        }
        e.write_json(&mut body);
        pacer.step();
    }
    body.push(b']');
    body
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unreachable_collector_is_reported_with_what_the_os_said() {
        // A port that was free a moment ago: nothing listens there.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let sink = HttpSink::new(&format!("http://127.0.0.1:{port}"), None).expect("sink");
        match sink.post(&[]).await {
            Err(PostError::Unreachable(why)) => {
                assert!(why.to_lowercase().contains("refused"), "{why}");
                assert!(why.contains("127.0.0.1"), "{why}");
            }
            other => panic!("expected Unreachable, got {other:?}"),
        }
    }
}
