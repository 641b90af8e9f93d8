//! Connecting to NATS: the URL list users write, checked before anything is tried, and a client
//! that keeps reconnecting on its own.
//!
//! `--nats` and `[sink] nats` take one URL or several separated by commas
//! (`nats://a:4222,nats://b:4222`); the servers of a cluster also announce each other, so one
//! reachable URL is enough to find the rest. A server that is down when an edge starts is not
//! an error: the client keeps trying in the background while the delivery spool keeps the
//! events, as it does for an HTTP collector that is away.

use std::time::Duration;

use async_nats::{ConnectOptions, ServerAddr};

use crate::NatsError;

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

/// The servers of a `--nats` value, each checked: a scheme of `nats://` or `tls://`, a host,
/// and nothing that cannot be a server address.
pub fn parse_urls(value: &str) -> Result<Vec<ServerAddr>, NatsError> {
    let mut out = Vec::new();
    for url in value.split(',').map(str::trim) {
        if url.is_empty() {
            continue;
        }
        let lower = url.to_ascii_lowercase();
        if !(lower.starts_with("nats://") || lower.starts_with("tls://")) {
            return Err(NatsError::Url(format!(
                "{url:?}: a NATS URL starts with nats:// or tls:// (e.g. nats://127.0.0.1:4222)"
            )));
        }
        let addr: ServerAddr = url.parse().map_err(|e| {
            NatsError::Url(format!("{url:?}: {e}; write e.g. nats://127.0.0.1:4222"))
        })?;
        if addr.host().is_empty() {
            return Err(NatsError::Url(format!("{url:?}: the URL names no host")));
        }
        out.push(addr);
    }
    if out.is_empty() {
        return Err(NatsError::Url(format!(
            "{value:?} names no server; write e.g. nats://127.0.0.1:4222 (several separated by commas)"
        )));
    }
    Ok(out)
}

/// A client for `urls` named `name` (as the server's monitoring shows it). With `wait`, the
/// first connection must succeed (a collector that cannot reach its stream should say so at
/// start); without, the client connects in the background and reconnects forever.
pub async fn connect(urls: &str, name: &str, wait: bool) -> Result<async_nats::Client, NatsError> {
    let addrs = parse_urls(urls)?;
    let shown = shown(&addrs);
    let mut opts = ConnectOptions::new()
        .name(name)
        .connection_timeout(CONNECT_TIMEOUT)
        .max_reconnects(None)
        .reconnect_delay_callback(|attempt| {
            Duration::from_millis((100u64 << attempt.min(5) as u32).min(2_000))
        })
        .event_callback(move |event| {
            let shown = shown.clone();
            async move {
                match event {
                    async_nats::Event::Disconnected => {
                        tracing::warn!("mcpwatch: disconnected from NATS at {shown}; reconnecting")
                    }
                    async_nats::Event::Connected => {
                        tracing::info!("mcpwatch: connected to NATS at {shown}")
                    }
                    other => tracing::debug!("mcpwatch: NATS at {shown}: {other}"),
                }
            }
        });
    if !wait {
        opts = opts.retry_on_initial_connect();
    }
    opts.connect(addrs.clone())
        .await
        .map_err(|e| NatsError::Unreachable(format!("{}: {e}", self::shown(&addrs))))
}

/// The servers as a user wrote them, for messages.
pub fn shown(addrs: &[ServerAddr]) -> String {
    addrs
        .iter()
        .map(|a| format!("{}:{}", a.host(), a.port()))
        .collect::<Vec<_>>()
        .join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_are_checked_before_connecting() {
        for (bad, says) in [
            ("", "names no server"),
            (" , ", "names no server"),
            ("http://127.0.0.1:4222", "starts with nats://"),
            ("127.0.0.1:4222", "starts with nats://"),
            ("nats://127.0.0.1:4222,http://x", "starts with nats://"),
            ("nats://127.0.0.1:notaport", "nats://127.0.0.1:notaport"),
        ] {
            let err = parse_urls(bad).expect_err(bad).to_string();
            assert!(err.contains(says), "{bad:?}: {err}");
        }
        let ok = parse_urls("nats://a:4222, nats://b:5222").expect("two servers");
        assert_eq!(shown(&ok), "a:4222,b:5222");
    }
}
