//! Authentication of each request: the credential checked by [`Authenticator`], an
//! `authentication` event for every attempt (brute-force detection counts them), and repeated
//! failures from one source address slowed down.
//!
//! The first [`FREE_FAILURES`] failures from an address cost nothing; each one after that
//! shuts the address out for twice as long as the last (1 s, 2 s, 4 s, … up to
//! [`MAX_BLOCK_SECS`]), and while it is shut out its requests get 429 with `Retry-After`
//! without their credential being looked at, so guessing gains nothing. A success, or
//! [`FORGET_AFTER_SECS`] without a failure, clears the count. The table is bounded.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Mutex;

use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use mcpwatch_core::{Level, Timestamp};
use serde_json::{json, Map};

use super::auth::{AuthFailure, Principal};
use super::monitor::{SecurityFact, Tap};
use super::proxy::Shared;

/// Failures from one address before it is slowed down.
pub const FREE_FAILURES: u32 = 10;
/// The longest an address is shut out after one failure.
pub const MAX_BLOCK_SECS: u64 = 60;
/// Quiet time after which an address's failures are forgotten.
pub const FORGET_AFTER_SECS: i64 = 900;
/// Addresses tracked at most.
const MAX_ADDRESSES: usize = 100_000;

struct Failures {
    count: u32,
    last: Timestamp,
    blocked_until: Timestamp,
}

/// Failed authentications per source address.
#[derive(Default)]
pub struct FailureThrottle {
    map: Mutex<HashMap<IpAddr, Failures>>,
}

impl FailureThrottle {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Failures>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Seconds until `ip` may try again, if it is shut out now.
    pub fn blocked(&self, ip: IpAddr, now: Timestamp) -> Option<u64> {
        let map = self.lock();
        let f = map.get(&ip)?;
        let left = f.blocked_until.as_micros() - now.as_micros();
        (left > 0).then(|| (left as u64).div_ceil(1_000_000).max(1))
    }

    /// A failure from `ip`.
    pub fn failed(&self, ip: IpAddr, now: Timestamp) {
        let mut map = self.lock();
        if map.len() >= MAX_ADDRESSES && !map.contains_key(&ip) {
            let stale = now.as_micros() - FORGET_AFTER_SECS * 1_000_000;
            map.retain(|_, f| f.last.as_micros() > stale);
            if map.len() >= MAX_ADDRESSES {
                if let Some(k) = map.keys().next().copied() {
                    map.remove(&k);
                }
            }
        }
        let f = map.entry(ip).or_insert(Failures {
            count: 0,
            last: now,
            blocked_until: now,
        });
        if now.as_micros() - f.last.as_micros() > FORGET_AFTER_SECS * 1_000_000 {
            f.count = 0;
        }
        f.count = f.count.saturating_add(1);
        f.last = now;
        if f.count > FREE_FAILURES {
            let secs = 1u64
                .checked_shl(f.count - FREE_FAILURES - 1)
                .unwrap_or(u64::MAX)
                .min(MAX_BLOCK_SECS);
            f.blocked_until = Timestamp::from_micros(now.as_micros() + secs as i64 * 1_000_000);
        }
    }

    /// A success from `ip`: its failures are forgotten.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut map = self.lock();
        if !map.is_empty() {
            map.remove(&ip);
        }
    }
}

/// Authenticates a request, with its event; the 401 (or 429 for an address shut out) if it
/// fails.
pub(super) fn authenticate(
    gw: &Shared,
    headers: &HeaderMap,
    peer: SocketAddr,
    server: &std::sync::Arc<str>,
) -> Result<Principal, Box<Response>> {
    if !gw.auth.enabled() {
        return Ok(Principal {
            user_id: "anonymous".into(),
            roles: Vec::new(),
            method: "none",
        });
    }
    let now = gw.clock.now();
    let text = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
    let throttled = gw.failures.blocked(peer.ip(), now);
    let result = match throttled {
        Some(_) => Err(AuthFailure::Invalid(
            "too many failed attempts from this address; wait for Retry-After",
        )),
        None => gw
            .auth
            .authenticate(text("authorization"), text("x-api-key")),
    };
    match &result {
        Ok(_) => gw.failures.succeeded(peer.ip()),
        Err(_) if throttled.is_none() => gw.failures.failed(peer.ip(), now),
        Err(_) => {}
    }
    let mut meta = Map::new();
    meta.insert("ip_address".into(), json!(peer.ip().to_string()));
    meta.insert("user_agent".into(), json!(text("user-agent").unwrap_or("")));
    let (level, message) = match &result {
        Ok(p) => {
            meta.insert("user_id".into(), json!(p.user_id));
            meta.insert("result".into(), json!("success"));
            meta.insert("method".into(), json!(p.method));
            (
                Level::Info,
                format!("{} authenticated by {}", p.user_id, p.method),
            )
        }
        Err(f) => {
            meta.insert("user_id".into(), json!("unknown"));
            meta.insert("result".into(), json!("failure"));
            meta.insert("reason".into(), json!(f.reason()));
            (
                Level::Warning,
                format!("Authentication failed from {}: {}", peer.ip(), f.reason()),
            )
        }
    };
    gw.taps.send(Tap::Security(SecurityFact {
        event_type: "authentication",
        level,
        message,
        metadata: meta,
        server: Some(server.clone()),
        session: None,
    }));
    result.map_err(|f| {
        if let Some(retry) = throttled {
            let msg = format!("unauthorized: {}", f.reason());
            return Box::new(
                (
                    StatusCode::TOO_MANY_REQUESTS,
                    [(header::RETRY_AFTER, HeaderValue::from(retry))],
                    axum::Json(json!({"error": msg})),
                )
                    .into_response(),
            );
        }
        let challenge = format!(
            "Bearer realm=\"{}\", error=\"{}\", error_description=\"{}\"",
            gw.auth.realm,
            f.code(),
            f.reason()
        );
        let mut resp = (
            StatusCode::UNAUTHORIZED,
            axum::Json(json!({"error": format!("unauthorized: {}", f.reason())})),
        )
            .into_response();
        if let Ok(v) = HeaderValue::from_str(&challenge) {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, v);
        }
        Box::new(resp)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_past_the_free_ones_shut_an_address_out_for_longer_each_time() {
        let t = FailureThrottle::default();
        let ip: IpAddr = [192, 0, 2, 1].into();
        let other: IpAddr = [192, 0, 2, 2].into();
        let at = |s: i64| Timestamp::from_micros(1_000_000_000 + s * 1_000_000);
        for _ in 0..FREE_FAILURES {
            t.failed(ip, at(0));
            assert_eq!(t.blocked(ip, at(0)), None);
        }
        t.failed(ip, at(0));
        assert_eq!(t.blocked(ip, at(0)), Some(1));
        assert_eq!(t.blocked(other, at(0)), None, "per address");
        assert_eq!(t.blocked(ip, at(1)), None);
        t.failed(ip, at(1));
        assert_eq!(t.blocked(ip, at(1)), Some(2));
        for _ in 0..40 {
            t.failed(ip, at(1));
        }
        assert_eq!(t.blocked(ip, at(1)), Some(MAX_BLOCK_SECS), "capped");
        t.succeeded(ip);
        assert_eq!(t.blocked(ip, at(1)), None);
        // Quiet long enough, and the count starts over.
        for _ in 0..FREE_FAILURES {
            t.failed(other, at(0));
        }
        t.failed(other, at(FORGET_AFTER_SECS + 1));
        assert_eq!(t.blocked(other, at(FORGET_AFTER_SECS + 1)), None);
    }
}
