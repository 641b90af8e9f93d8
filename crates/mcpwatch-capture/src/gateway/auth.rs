//! Authentication: API keys (kept as SHA-256 hashes, compared in constant time) and JWT bearer
//! tokens (HS256/RS256; issuer, audience, expiry and not-before checked, the last two with the
//! configured leeway; a token whose header lists `crit` extensions is refused, since this
//! gateway implements none, RFC 7515 §4.1.11), each mapped to a [`Principal`].
//!
//! A presented credential is never stored or logged: only its hash is compared, and failures
//! carry a reason, never the token.

use jsonwebtoken::{errors::ErrorKind, Algorithm, DecodingKey, Validation};
use mcpwatch_core::config::{expand_env, ConfigError};
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::config::AuthSection;

/// Who is calling, as far as policy and events are concerned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// `metadata.user_id` of everything this caller does.
    pub user_id: String,
    /// Roles that policy rules name.
    pub roles: Vec<String>,
    /// How it was established: `api_key`, `jwt` or `none` (auth disabled).
    pub method: &'static str,
}

/// Why a request was not authenticated; the reason is safe to show and to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential presented.
    Missing,
    /// An expired JWT.
    Expired,
    /// Unknown key, bad signature, wrong issuer or audience, malformed token.
    Invalid(&'static str),
}

impl AuthFailure {
    /// A short reason for events and the 401 body.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthFailure::Missing => {
                "no credential: send Authorization: Bearer <token> or X-API-Key"
            }
            AuthFailure::Expired => "token expired",
            AuthFailure::Invalid(r) => r,
        }
    }

    /// The RFC 6750 `error` code.
    pub fn code(&self) -> &'static str {
        match self {
            AuthFailure::Missing => "invalid_request",
            _ => "invalid_token",
        }
    }
}

struct ApiKey {
    hash: [u8; 32],
    principal: Principal,
}

struct JwtIssuer {
    key: DecodingKey,
    validation: Validation,
    user_claim: String,
    roles_claim: String,
}

/// Checks credentials.
pub struct Authenticator {
    keys: Vec<ApiKey>,
    jwt: Vec<JwtIssuer>,
    /// `realm` in `WWW-Authenticate`.
    pub realm: String,
}

impl Authenticator {
    /// Builds from `[gateway.auth]`; every error at once.
    pub fn build(
        cfg: &AuthSection,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut keys = Vec::new();
        for (i, k) in cfg.api_keys.iter().enumerate() {
            let path = format!("gateway.auth.api_keys[{i}]");
            if k.user_id.is_empty() {
                errors.push(ConfigError::at(format!("{path}.user_id"), "is empty"));
            }
            let hash = match (&k.key_sha256, &k.key) {
                (Some(hex), None) => decode_hex(hex).ok_or_else(|| {
                    ConfigError::at(
                        format!("{path}.key_sha256"),
                        "must be 64 hex digits (printf %s KEY | sha256sum)",
                    )
                }),
                (None, Some(raw)) => match expand_env(raw, env) {
                    Ok(v) if v.len() >= 16 => Ok(sha256(v.as_bytes())),
                    Ok(_) => Err(ConfigError::at(
                        format!("{path}.key"),
                        "is shorter than 16 characters; use a long random key",
                    )),
                    Err(m) => Err(ConfigError::at(format!("{path}.key"), m)),
                },
                _ => Err(ConfigError::at(
                    &path,
                    "needs exactly one of key_sha256 or key",
                )),
            };
            match hash {
                Ok(hash) => keys.push(ApiKey {
                    hash,
                    principal: Principal {
                        user_id: k.user_id.clone(),
                        roles: k.roles.clone(),
                        method: "api_key",
                    },
                }),
                Err(e) => errors.push(e),
            }
        }
        let mut jwt = Vec::new();
        for (i, j) in cfg.jwt.iter().enumerate() {
            let path = format!("gateway.auth.jwt[{i}]");
            let key = match j.algorithm.as_str() {
                "HS256" => match j.secret.as_deref().map(|s| expand_env(s, env)) {
                    Some(Ok(s)) if s.len() >= 16 => {
                        Ok((Algorithm::HS256, DecodingKey::from_secret(s.as_bytes())))
                    }
                    Some(Ok(_)) => Err(ConfigError::at(
                        format!("{path}.secret"),
                        "is shorter than 16 characters",
                    )),
                    Some(Err(m)) => Err(ConfigError::at(format!("{path}.secret"), m)),
                    None => Err(ConfigError::at(
                        format!("{path}.secret"),
                        "HS256 needs secret (e.g. \"${JWT_SECRET}\")",
                    )),
                },
                "RS256" => match j.public_key.as_deref().map(read_pem) {
                    Some(Ok(pem)) => DecodingKey::from_rsa_pem(pem.as_bytes())
                        .map(|k| (Algorithm::RS256, k))
                        .map_err(|e| {
                            ConfigError::at(
                                format!("{path}.public_key"),
                                format!("not an RSA public key in PEM: {e}"),
                            )
                        }),
                    Some(Err(m)) => Err(ConfigError::at(format!("{path}.public_key"), m)),
                    None => Err(ConfigError::at(
                        format!("{path}.public_key"),
                        "RS256 needs public_key (PEM text or a file path)",
                    )),
                },
                other => Err(ConfigError::at(
                    format!("{path}.algorithm"),
                    format!("unsupported {other:?}; use HS256 or RS256"),
                )),
            };
            if j.issuer.is_empty() || j.audience.is_empty() {
                errors.push(ConfigError::at(
                    &path,
                    "issuer and audience must not be empty",
                ));
            }
            match key {
                Ok((alg, key)) => {
                    let mut validation = Validation::new(alg);
                    validation.set_issuer(&[&j.issuer]);
                    validation.set_audience(&[&j.audience]);
                    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                    validation.leeway = j.leeway_secs.unwrap_or(5);
                    validation.validate_nbf = true;
                    jwt.push(JwtIssuer {
                        key,
                        validation,
                        user_claim: j.user_claim.clone().unwrap_or_else(|| "sub".into()),
                        roles_claim: j.roles_claim.clone().unwrap_or_else(|| "roles".into()),
                    });
                }
                Err(e) => errors.push(e),
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        Ok(Self {
            keys,
            jwt,
            realm: cfg.realm.clone().unwrap_or_else(|| "mcpwatch".into()),
        })
    }

    /// Whether any credential is configured; if not, everyone is let in as `anonymous`.
    pub fn enabled(&self) -> bool {
        !self.keys.is_empty() || !self.jwt.is_empty()
    }

    /// Checks the `Authorization` and `X-API-Key` header values.
    pub fn authenticate(
        &self,
        authorization: Option<&str>,
        api_key: Option<&str>,
    ) -> Result<Principal, AuthFailure> {
        let bearer = authorization.and_then(|h| {
            let (scheme, rest) = h.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        });
        let presented = match (bearer, api_key.map(str::trim)) {
            (Some(t), _) if !t.is_empty() => t,
            (_, Some(k)) if !k.is_empty() => k,
            _ if authorization.is_some() => {
                return Err(AuthFailure::Invalid(
                    "unsupported Authorization scheme; use Bearer",
                ))
            }
            _ => return Err(AuthFailure::Missing),
        };
        if presented.matches('.').count() == 2 && !self.jwt.is_empty() {
            return self.verify_jwt(presented);
        }
        let hash = sha256(presented.as_bytes());
        // Compare against every key, each in constant time, so timing says nothing.
        let mut found = None;
        for k in &self.keys {
            if constant_time_eq(&k.hash, &hash) {
                found = Some(&k.principal);
            }
        }
        found
            .cloned()
            .ok_or(AuthFailure::Invalid("unknown API key"))
    }

    fn verify_jwt(&self, token: &str) -> Result<Principal, AuthFailure> {
        if let Ok(header) = jsonwebtoken::decode_header(token) {
            if header.crit.is_some() {
                return Err(AuthFailure::Invalid(
                    "token header lists crit extensions, which this gateway does not implement",
                ));
            }
        }
        let mut failure = AuthFailure::Invalid("token not accepted by any configured issuer");
        for issuer in &self.jwt {
            match jsonwebtoken::decode::<Value>(token, &issuer.key, &issuer.validation) {
                Ok(data) => return principal_from_claims(&data.claims, issuer),
                Err(e) => {
                    let this = match e.kind() {
                        ErrorKind::ExpiredSignature => AuthFailure::Expired,
                        ErrorKind::InvalidIssuer => AuthFailure::Invalid("wrong issuer"),
                        ErrorKind::InvalidAudience => AuthFailure::Invalid("wrong audience"),
                        ErrorKind::ImmatureSignature => AuthFailure::Invalid("token not valid yet"),
                        ErrorKind::MissingRequiredClaim(_) => {
                            AuthFailure::Invalid("token lacks exp, iss or aud")
                        }
                        _ => continue,
                    };
                    // Keep the most telling reason: a token that verified but failed a check.
                    failure = this;
                }
            }
        }
        Err(failure)
    }
}

fn principal_from_claims(claims: &Value, issuer: &JwtIssuer) -> Result<Principal, AuthFailure> {
    let user_id = claims
        .get(&issuer.user_claim)
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(AuthFailure::Invalid("token lacks the user claim"))?;
    let roles = match claims.get(&issuer.roles_claim) {
        Some(Value::Array(a)) => a
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_string)
            .collect(),
        Some(Value::String(s)) => s.split_whitespace().map(str::to_string).collect(),
        _ => Vec::new(),
    };
    Ok(Principal {
        user_id: user_id.to_string(),
        roles,
        method: "jwt",
    })
}

fn read_pem(value: &str) -> Result<String, String> {
    if value.contains("-----BEGIN") {
        return Ok(value.to_string());
    }
    std::fs::read_to_string(value).map_err(|e| {
        format!("cannot read PEM file {value}: {e}; give the PEM text or a readable path")
    })
}

/// SHA-256 of a key, as stored in `key_sha256`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn constant_time_eq(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn decode_hex(s: &str) -> Option<[u8; 32]> {
    let s = s.trim();
    if s.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, chunk) in s.as_bytes().chunks(2).enumerate() {
        let hex = std::str::from_utf8(chunk).ok()?;
        out[i] = u8::from_str_radix(hex, 16).ok()?;
    }
    Some(out)
}
