//! The `[gateway]` section of the config file, and how it builds the gateway's runtime parts.
//!
//! Parsed key by key so that every problem is reported at once, each with its key path
//! (`gateway.auth.api_keys[1].key_sha256`); `${VAR}` in secrets is read from the environment.
//!
//! ```toml
//! [gateway]
//! listen = "127.0.0.1:7880"
//! collector = "http://127.0.0.1:7878"
//! [gateway.upstreams]
//! everything = "http://127.0.0.1:3001/mcp"
//! [[gateway.auth.api_keys]]
//! user_id = "alice"
//! key_sha256 = "…64 hex digits…"   # or key = "${ALICE_KEY}"
//! roles = ["dev"]
//! [[gateway.auth.jwt]]
//! algorithm = "HS256"              # or RS256 with public_key = PEM text or a file path
//! secret = "${JWT_SECRET}"
//! issuer = "https://idp.example"
//! audience = "mcpwatch"
//! [gateway.policy.roles.dev]
//! allow = ["tool:**", "resource:**", "prompt:**"]
//! deny = ["tool:everything/trigger-*"]
//! [gateway.rate_limits]
//! per_principal = { rate = 50.0, burst = 100 }
//! per_tool = { rate = 5.0, burst = 10 }
//! ```

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use mcpwatch_core::config::ConfigError;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::auth::Authenticator;
use super::limits::{Rate, RateLimiter};
use super::policy::Policy;

/// Where the gateway listens unless told otherwise.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:7880";

/// The whole `[gateway]` section.
#[derive(Debug, Clone, Default)]
pub struct GatewayConfig {
    /// Address to listen on (default 127.0.0.1:7880).
    pub listen: Option<SocketAddr>,
    /// Collector URL; default `$MCPWATCH_COLLECTOR` or http://127.0.0.1:7878.
    pub collector: Option<String>,
    /// Where tool pins and the delivery spool live.
    pub data_dir: Option<PathBuf>,
    /// Upstream MCP servers by name, served at `/mcp/{name}`.
    pub upstreams: BTreeMap<String, String>,
    /// Who may call.
    pub auth: AuthSection,
    /// What they may call.
    pub policy: PolicySection,
    /// How often.
    pub rate_limits: RateLimitSection,
    /// Tunables.
    pub limits: LimitsSection,
}

/// `[gateway.auth]`: with neither keys nor JWT issuers, the gateway is open.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// `realm` in `WWW-Authenticate`.
    #[serde(default)]
    pub realm: Option<String>,
    /// API keys, presented as `Authorization: Bearer KEY` or `X-API-Key: KEY`.
    #[serde(default)]
    pub api_keys: Vec<ApiKeyConfig>,
    /// Accepted JWT issuers.
    #[serde(default)]
    pub jwt: Vec<JwtConfig>,
}

/// One API key, stored as a SHA-256 hash (or read from the environment).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// The principal's user id.
    pub user_id: String,
    /// Hex SHA-256 of the key (`printf %s KEY | sha256sum`).
    #[serde(default)]
    pub key_sha256: Option<String>,
    /// The key itself, normally `${ENV_VAR}`; hashed at start, never kept.
    #[serde(default)]
    pub key: Option<String>,
    /// The principal's roles.
    #[serde(default)]
    pub roles: Vec<String>,
}

/// One trusted JWT issuer.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtConfig {
    /// `HS256` or `RS256`.
    pub algorithm: String,
    /// HS256 shared secret, normally `${ENV_VAR}`.
    #[serde(default)]
    pub secret: Option<String>,
    /// RS256 public key: PEM text or the path of a PEM file.
    #[serde(default)]
    pub public_key: Option<String>,
    /// Required `iss`.
    pub issuer: String,
    /// Required `aud`.
    pub audience: String,
    /// Claim holding the user id (default `sub`).
    #[serde(default)]
    pub user_claim: Option<String>,
    /// Claim holding the roles, a list or a space-separated string (default `roles`).
    #[serde(default)]
    pub roles_claim: Option<String>,
    /// Clock skew tolerated on `exp`/`nbf`, seconds (default 5).
    #[serde(default)]
    pub leeway_secs: Option<u64>,
}

/// `[gateway.policy]`: per-role allow/deny patterns; deny wins.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicySection {
    /// For principals none of whose roles has rules: `allow` (default) or `deny`.
    #[serde(default)]
    pub default: Option<String>,
    /// Rules per role.
    #[serde(default)]
    pub roles: BTreeMap<String, RoleRules>,
}

/// Patterns such as `tool:filesystem/delete_*`, `resource:file:///etc/**`, `prompt:*/*`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoleRules {
    /// What the role may use (default: everything).
    #[serde(default)]
    pub allow: Option<Vec<String>>,
    /// What it may not, whatever else allows it.
    #[serde(default)]
    pub deny: Vec<String>,
}

/// `[gateway.rate_limits]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitSection {
    /// Requests per principal.
    #[serde(default)]
    pub per_principal: Option<RateConfig>,
    /// `tools/call` per principal and tool.
    #[serde(default)]
    pub per_tool: Option<RateConfig>,
}

/// A token bucket.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateConfig {
    /// Tokens added per second.
    pub rate: f64,
    /// Bucket size (default: max(rate, 1)).
    #[serde(default)]
    pub burst: Option<f64>,
}

/// `[gateway.limits]`: sizes and times.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    /// Largest request body accepted, bytes (default 4 MiB).
    #[serde(default = "default_max_body")]
    pub max_body_bytes: usize,
    /// Most sessions tracked at once; the least recently used ends beyond it.
    #[serde(default = "default_max_sessions")]
    pub max_sessions: usize,
    /// A request without a response after this many seconds is a `timeout`.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_secs: u64,
    /// A session without traffic for this many seconds ends.
    #[serde(default = "default_idle")]
    pub session_idle_secs: u64,
    /// A request's headers must arrive within this many seconds; an idle connection ends
    /// after it.
    #[serde(default = "default_header_timeout")]
    pub header_read_timeout_secs: u64,
    /// A request's body must arrive within this many seconds.
    #[serde(default = "default_body_timeout")]
    pub body_read_timeout_secs: u64,
    /// Open connections at most.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// Open connections from one source address at most (raise it behind a reverse proxy).
    #[serde(default = "default_per_address")]
    pub max_connections_per_address: usize,
}

fn default_max_body() -> usize {
    4 << 20
}
fn default_max_sessions() -> usize {
    10_000
}
fn default_request_timeout() -> u64 {
    60
}
fn default_idle() -> u64 {
    3600
}
fn default_header_timeout() -> u64 {
    10
}
fn default_body_timeout() -> u64 {
    30
}
fn default_max_connections() -> usize {
    4096
}
fn default_per_address() -> usize {
    256
}

impl Default for LimitsSection {
    fn default() -> Self {
        Self {
            max_body_bytes: default_max_body(),
            max_sessions: default_max_sessions(),
            request_timeout_secs: default_request_timeout(),
            session_idle_secs: default_idle(),
            header_read_timeout_secs: default_header_timeout(),
            body_read_timeout_secs: default_body_timeout(),
            max_connections: default_max_connections(),
            max_connections_per_address: default_per_address(),
        }
    }
}

impl LimitsSection {
    /// The listener's bounds.
    pub fn listener(&self) -> super::listener::ListenerLimits {
        super::listener::ListenerLimits {
            header_timeout: Duration::from_secs(self.header_read_timeout_secs.max(1)),
            max_connections: self.max_connections.max(1),
            per_address: self.max_connections_per_address.max(1),
        }
    }

    /// The request timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_secs(self.request_timeout_secs.max(1))
    }
}

/// What the config builds: the pieces the proxy consults on every request.
pub struct Built {
    /// Upstream URLs by name.
    pub upstreams: BTreeMap<String, reqwest::Url>,
    /// API keys and JWT issuers.
    pub auth: Authenticator,
    /// Allow/deny patterns.
    pub policy: Policy,
    /// Token buckets.
    pub limiter: RateLimiter,
}

impl GatewayConfig {
    /// Reads the `[gateway]` table (as `mcpwatch_core::Config::extra` holds it).
    pub fn from_table(table: &toml::Table) -> Result<Self, Vec<ConfigError>> {
        let mut cfg = GatewayConfig::default();
        let mut errors = Vec::new();
        for (key, value) in table {
            let path = format!("gateway.{key}");
            match key.as_str() {
                "listen" => cfg.listen = field(&path, value, &mut errors),
                "collector" => cfg.collector = field(&path, value, &mut errors),
                "data_dir" => cfg.data_dir = field(&path, value, &mut errors),
                "upstreams" => {
                    cfg.upstreams = field(&path, value, &mut errors).unwrap_or_default()
                }
                "auth" => cfg.auth = field(&path, value, &mut errors).unwrap_or_default(),
                "policy" => cfg.policy = field(&path, value, &mut errors).unwrap_or_default(),
                "rate_limits" => {
                    cfg.rate_limits = field(&path, value, &mut errors).unwrap_or_default()
                }
                "limits" => cfg.limits = field(&path, value, &mut errors).unwrap_or_default(),
                _ => errors.push(ConfigError::at(
                    path,
                    "unknown key; expected listen, collector, data_dir, upstreams, auth, policy, rate_limits or limits",
                )),
            }
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }

    /// Checks everything and builds the runtime parts; every error at once.
    pub fn build(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Built, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut upstreams = BTreeMap::new();
        if self.upstreams.is_empty() {
            errors.push(ConfigError::at(
                "gateway.upstreams",
                "no upstream MCP servers; add e.g. `everything = \"http://127.0.0.1:3001/mcp\"` or pass --upstream NAME=URL",
            ));
        }
        for (name, url) in &self.upstreams {
            let path = format!("gateway.upstreams.{name}");
            if name.is_empty()
                || !name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
            {
                errors.push(ConfigError::at(&path, "names may hold only letters, digits, `.`, `_` and `-` (they become /mcp/{name})"));
            }
            match reqwest::Url::parse(url) {
                Ok(u) if matches!(u.scheme(), "http" | "https") => {
                    upstreams.insert(name.clone(), u);
                }
                Ok(_) => errors.push(ConfigError::at(&path, "must be an http:// or https:// URL")),
                Err(e) => errors.push(ConfigError::at(
                    &path,
                    format!("not a URL ({e}); write e.g. http://127.0.0.1:3001/mcp"),
                )),
            }
        }
        let auth = Authenticator::build(&self.auth, env)
            .map_err(|e| errors.extend(e))
            .ok();
        let policy = Policy::build(&self.policy)
            .map_err(|e| errors.extend(e))
            .ok();
        let rate = |r: &Option<RateConfig>, path: &str, errors: &mut Vec<ConfigError>| {
            let r = (*r)?;
            let burst = r.burst.unwrap_or(r.rate.max(1.0));
            if !(r.rate.is_finite() && r.rate > 0.0 && burst.is_finite() && burst >= 1.0) {
                errors.push(ConfigError::at(
                    path,
                    "rate must be > 0 per second and burst ≥ 1",
                ));
                return None;
            }
            Some(Rate {
                per_sec: r.rate,
                burst,
            })
        };
        let per_principal = rate(
            &self.rate_limits.per_principal,
            "gateway.rate_limits.per_principal",
            &mut errors,
        );
        let per_tool = rate(
            &self.rate_limits.per_tool,
            "gateway.rate_limits.per_tool",
            &mut errors,
        );
        if self.limits.max_sessions == 0 {
            errors.push(ConfigError::at(
                "gateway.limits.max_sessions",
                "must be at least 1",
            ));
        }
        match (auth, policy) {
            (Some(auth), Some(policy)) if errors.is_empty() => Ok(Built {
                upstreams,
                auth,
                policy,
                limiter: RateLimiter::new(per_principal, per_tool),
            }),
            _ => Err(errors),
        }
    }
}

fn field<T: DeserializeOwned>(
    path: &str,
    value: &toml::Value,
    errors: &mut Vec<ConfigError>,
) -> Option<T> {
    match value.clone().try_into::<T>() {
        Ok(v) => Some(v),
        Err(e) => {
            let msg = e.to_string();
            errors.push(ConfigError::at(path, msg.trim().replace('\n', " ")));
            None
        }
    }
}
