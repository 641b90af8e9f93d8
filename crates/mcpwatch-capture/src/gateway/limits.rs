//! Rate limits: token buckets per principal (one token per JSON-RPC message, so a batch costs
//! what its messages cost; one per GET or DELETE) and per principal and target (every method
//! that names a tool, a prompt or a resource; see `batch::Target` for the buckets), timed by
//! the injected clock. The bucket map is bounded: when full, buckets
//! that have refilled (and so carry no state worth keeping) are dropped first.

use std::collections::HashMap;
use std::sync::Mutex;

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::Timestamp;

/// A bucket's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    /// Tokens per second.
    pub per_sec: f64,
    /// Most tokens held.
    pub burst: f64,
}

/// Which limit a request ran into.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limited {
    /// `principal` or `tool`.
    pub scope: &'static str,
    /// Seconds until a token is back (for `Retry-After`).
    pub retry_after: u64,
}

struct Bucket {
    tokens: f64,
    last: Timestamp,
}

/// Most buckets kept at once.
const MAX_BUCKETS: usize = 100_000;

/// Token buckets for both scopes.
pub struct RateLimiter {
    per_principal: Option<Rate>,
    per_tool: Option<Rate>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl RateLimiter {
    /// Limits as configured; `None` means unlimited.
    pub fn new(per_principal: Option<Rate>, per_tool: Option<Rate>) -> Self {
        Self {
            per_principal,
            per_tool,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Whether any limit is configured.
    pub fn enabled(&self) -> bool {
        self.per_principal.is_some() || self.per_tool.is_some()
    }

    /// Takes a token for a request by `user`.
    pub fn request(&self, clock: &SharedClock, user: &str) -> Result<(), Limited> {
        self.messages(clock, user, 1)
    }

    /// Takes `n` tokens (one per JSON-RPC message of a body) for `user`, all or none.
    pub fn messages(&self, clock: &SharedClock, user: &str, n: usize) -> Result<(), Limited> {
        let Some(rate) = self.per_principal else {
            return Ok(());
        };
        self.take(
            clock.now(),
            format!("p\0{user}"),
            rate,
            "principal",
            n as f64,
        )
    }

    /// The per-principal burst: the most messages one body can carry, if limited.
    pub fn principal_burst(&self) -> Option<f64> {
        self.per_principal.map(|r| r.burst)
    }

    /// Takes a token for `user` using `target` (a bucket name, see `batch::Target`).
    pub fn per_target(&self, clock: &SharedClock, user: &str, target: &str) -> Result<(), Limited> {
        let Some(rate) = self.per_tool else {
            return Ok(());
        };
        self.take(
            clock.now(),
            format!("t\0{user}\0{target}"),
            rate,
            "tool",
            1.0,
        )
    }

    fn take(
        &self,
        now: Timestamp,
        key: String,
        rate: Rate,
        scope: &'static str,
        n: f64,
    ) -> Result<(), Limited> {
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(&key) {
            buckets.retain(|_, b| refilled(b, now, rate) < rate.burst);
            if buckets.len() >= MAX_BUCKETS {
                // Every bucket is in use; forgetting one is fairer than refusing everyone.
                if let Some(k) = buckets.keys().next().cloned() {
                    buckets.remove(&k);
                }
            }
        }
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: rate.burst,
            last: now,
        });
        b.tokens = refilled(b, now, rate);
        b.last = now;
        if b.tokens >= n {
            b.tokens -= n;
            return Ok(());
        }
        // More than the burst never fits: say when a full bucket is back.
        let needed = n.min(rate.burst);
        let retry_after = ((needed - b.tokens) / rate.per_sec).ceil().max(1.0) as u64;
        Err(Limited { scope, retry_after })
    }
}

fn refilled(b: &Bucket, now: Timestamp, rate: Rate) -> f64 {
    let secs = (now.as_micros() - b.last.as_micros()).max(0) as f64 / 1e6;
    (b.tokens + secs * rate.per_sec).min(rate.burst)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use mcpwatch_core::ManualClock;

    use super::*;

    #[test]
    fn buckets_empty_refill_and_say_when_to_retry() {
        let manual = Arc::new(ManualClock::new(
            Timestamp::from_unix_seconds(1_000.0).expect("ts"),
        ));
        let clock: SharedClock = manual.clone();
        let rate = Rate {
            per_sec: 0.5,
            burst: 2.0,
        };
        let l = RateLimiter::new(
            Some(rate),
            Some(Rate {
                per_sec: 1.0,
                burst: 1.0,
            }),
        );
        assert_eq!(l.request(&clock, "alice"), Ok(()));
        assert_eq!(l.request(&clock, "alice"), Ok(()));
        assert_eq!(
            l.request(&clock, "alice"),
            Err(Limited {
                scope: "principal",
                retry_after: 2
            })
        );
        assert_eq!(
            l.request(&clock, "bob"),
            Ok(()),
            "buckets are per principal"
        );
        manual.advance(Duration::from_secs(4));
        assert_eq!(
            l.messages(&clock, "alice", 3),
            Err(Limited {
                scope: "principal",
                retry_after: 1
            }),
            "a body takes a token per message, all or none"
        );
        assert_eq!(l.messages(&clock, "alice", 2), Ok(()));
        manual.advance(Duration::from_secs(2));
        assert_eq!(l.request(&clock, "alice"), Ok(()));
        assert_eq!(l.per_target(&clock, "alice", "fs/read"), Ok(()));
        assert_eq!(
            l.per_target(&clock, "alice", "fs/read"),
            Err(Limited {
                scope: "tool",
                retry_after: 1
            })
        );
        assert_eq!(
            l.per_target(&clock, "alice", "fs/write"),
            Ok(()),
            "and per tool"
        );
    }
}
