//! API tokens: who is calling and what they may do (SPEC section 9).
//!
//! Tokens are kept only as SHA-256 hashes and compared in constant time. Each token has roles
//! (`ingest`, `read`, `admin`) and an optional request rate. With no tokens configured the API
//! is open, which `serve` allows only on a loopback address.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use crate::config::{expand_env, AuthConfig, ConfigError, Role};
use sha2::{Digest, Sha256};

/// A caller the API recognised.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// The token's name.
    pub name: String,
    /// What it may do.
    pub roles: Vec<Role>,
}

impl Principal {
    /// Whether this principal may act in `role` (`admin` may do everything).
    pub fn can(&self, role: Role) -> bool {
        self.roles.contains(&role) || self.roles.contains(&Role::Admin)
    }
}

struct Token {
    hash: [u8; 32],
    principal: Principal,
    rate: Option<f64>,
}

/// Why a request was turned away.
#[derive(Debug, Clone, PartialEq)]
pub enum Denial {
    /// No or an unknown token: 401.
    Unauthenticated,
    /// Known token without the role: 403.
    Forbidden(&'static str),
    /// Over its rate: 429 with Retry-After seconds.
    RateLimited(u64),
}

/// Checks tokens and rates.
pub struct Authenticator {
    tokens: Vec<Token>,
    buckets: Mutex<HashMap<String, Bucket>>,
}

struct Bucket {
    tokens: f64,
    last: Instant,
}

impl Authenticator {
    /// Builds from config, reading `${VAR}` in `token` from the environment.
    pub fn build(
        cfg: &AuthConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut tokens = Vec::new();
        for (i, t) in cfg.tokens.iter().enumerate() {
            let hash = match (&t.token, &t.token_sha256) {
                (Some(raw), _) => match expand_env(raw, env) {
                    Ok(v) if v.is_empty() => {
                        errors.push(ConfigError::at(
                            format!("auth.tokens[{i}].token"),
                            "is empty",
                        ));
                        continue;
                    }
                    Ok(v) => sha256(v.as_bytes()),
                    Err(m) => {
                        errors.push(ConfigError::at(format!("auth.tokens[{i}].token"), m));
                        continue;
                    }
                },
                (None, Some(hex)) => match decode_hex(hex) {
                    Some(h) => h,
                    None => {
                        errors.push(ConfigError::at(
                            format!("auth.tokens[{i}].token_sha256"),
                            "must be 64 hex digits",
                        ));
                        continue;
                    }
                },
                (None, None) => {
                    errors.push(ConfigError::at(
                        format!("auth.tokens[{i}]"),
                        "needs token or token_sha256",
                    ));
                    continue;
                }
            };
            tokens.push(Token {
                hash,
                principal: Principal {
                    name: t.name.clone(),
                    roles: t.roles.clone(),
                },
                rate: t.rate_limit,
            });
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            tokens,
            buckets: Mutex::new(HashMap::new()),
        })
    }

    /// Whether any token is configured (if not, the API is open).
    pub fn enabled(&self) -> bool {
        !self.tokens.is_empty()
    }

    /// Checks the `Authorization` header value for `role`.
    pub fn check(
        &self,
        authorization: Option<&str>,
        role: Role,
    ) -> Result<Option<Principal>, Denial> {
        if !self.enabled() {
            return Ok(None);
        }
        let presented = authorization
            .and_then(|h| {
                h.strip_prefix("Bearer ")
                    .or_else(|| h.strip_prefix("bearer "))
            })
            .map(str::trim)
            .ok_or(Denial::Unauthenticated)?;
        let hash = sha256(presented.as_bytes());
        // Compare against every token, in constant time each, so timing says nothing.
        let mut found = None;
        for t in &self.tokens {
            if constant_time_eq(&t.hash, &hash) {
                found = Some(t);
            }
        }
        let token = found.ok_or(Denial::Unauthenticated)?;
        if !token.principal.can(role) {
            return Err(Denial::Forbidden(match role {
                Role::Ingest => "this token lacks the ingest role",
                Role::Read => "this token lacks the read role",
                Role::Admin => "this token lacks the admin role",
            }));
        }
        if let Some(rate) = token.rate {
            self.take(&token.principal.name, rate)?;
        }
        Ok(Some(token.principal.clone()))
    }

    /// Token bucket per token name: `rate` per second, bursts up to `max(rate, 1)`.
    fn take(&self, name: &str, rate: f64) -> Result<(), Denial> {
        let burst = rate.max(1.0);
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|p| p.into_inner());
        let b = buckets.entry(name.to_owned()).or_insert(Bucket {
            tokens: burst,
            last: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.last).as_secs_f64() * rate).min(burst);
        b.last = now;
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            return Ok(());
        }
        let wait = ((1.0 - b.tokens) / rate).ceil().max(1.0) as u64;
        Err(Denial::RateLimited(wait))
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    let mut diff = 0u8;
    for (x, y) in a.iter().zip(b) {
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let pair = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(pair, 16).ok()?;
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use crate::config::TokenConfig;

    use super::*;

    fn auth(tokens: Vec<TokenConfig>) -> Result<Authenticator, Vec<ConfigError>> {
        let env = |k: &str| (k == "TOK").then(|| "from-env".to_string());
        Authenticator::build(&AuthConfig { tokens }, &env)
    }

    fn token(
        name: &str,
        token: Option<&str>,
        sha: Option<&str>,
        roles: &[Role],
        rate: Option<f64>,
    ) -> TokenConfig {
        TokenConfig {
            name: name.into(),
            token: token.map(Into::into),
            token_sha256: sha.map(Into::into),
            roles: roles.to_vec(),
            rate_limit: rate,
        }
    }

    #[test]
    fn roles_are_enforced_and_admin_can_do_everything() {
        // sha256("test")
        let sha = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08";
        let a = auth(vec![
            token("ingester", Some("${TOK}"), None, &[Role::Ingest], None),
            token("root", None, Some(sha), &[Role::Admin], None),
        ])
        .unwrap();
        assert_eq!(
            a.check(Some("Bearer from-env"), Role::Ingest)
                .unwrap()
                .unwrap()
                .name,
            "ingester"
        );
        assert!(matches!(
            a.check(Some("Bearer from-env"), Role::Read),
            Err(Denial::Forbidden(_))
        ));
        assert_eq!(
            a.check(Some("Bearer test"), Role::Read)
                .unwrap()
                .unwrap()
                .name,
            "root"
        );
        assert_eq!(
            a.check(Some("Bearer nope"), Role::Read),
            Err(Denial::Unauthenticated)
        );
        assert_eq!(a.check(None, Role::Read), Err(Denial::Unauthenticated));
        assert_eq!(
            a.check(Some("Basic dGVzdA=="), Role::Read),
            Err(Denial::Unauthenticated)
        );
    }

    #[test]
    fn rate_limit_answers_with_a_wait() {
        let a = auth(vec![token(
            "slow",
            Some("t"),
            None,
            &[Role::Ingest],
            Some(2.0),
        )])
        .unwrap();
        assert!(a.check(Some("Bearer t"), Role::Ingest).is_ok());
        assert!(a.check(Some("Bearer t"), Role::Ingest).is_ok());
        assert_eq!(
            a.check(Some("Bearer t"), Role::Ingest),
            Err(Denial::RateLimited(1))
        );
    }

    #[test]
    fn unset_environment_variable_is_a_config_error() {
        let errs = auth(vec![token(
            "x",
            Some("${NOT_SET_ANYWHERE}"),
            None,
            &[Role::Read],
            None,
        )])
        .err()
        .unwrap();
        assert!(errs[0].to_string().contains("NOT_SET_ANYWHERE is not set"));
    }

    #[test]
    fn no_tokens_means_open() {
        let a = auth(vec![]).unwrap();
        assert!(!a.enabled());
        assert_eq!(a.check(None, Role::Admin), Ok(None));
    }
}
