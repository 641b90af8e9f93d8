//! Who is looking: the sign-in form, the session cookie, roles and CSRF tokens.
//!
//! With no tokens configured (allowed on loopback only) the dashboard is open, as the API is.
//! With tokens, a person signs in with one; the cookie holds it (hex-encoded) `HttpOnly` and
//! `SameSite=Strict`, and every request checks it like an API call: the `read` role sees pages,
//! `admin` may act, `ingest` alone sees nothing. Every state-changing form carries a CSRF token,
//! an HMAC of the session under a key this process drew at start, and a request that a browser
//! marks as cross-site is refused before anything else.

use axum::extract::{FromRequestParts, Query, State};
use axum::http::request::Parts;
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use maud::html;
use mcpwatch_core::auth::Denial;
use mcpwatch_core::config::Role;
use serde::Deserialize;
use sha2::{Digest, Sha256};

use crate::view::{self, PageError};
use crate::WebState;

/// The session cookie's name.
pub const COOKIE: &str = "mcpwatch_session";
/// Longest token accepted from the form (the cookie holds twice this in hex).
const MAX_TOKEN: usize = 512;

/// The per-process secret behind CSRF tokens.
pub struct CsrfKey([u8; 32]);

impl CsrfKey {
    /// A key from the operating system's random source.
    pub fn random() -> CsrfKey {
        let mut k = [0u8; 32];
        if getrandom::fill(&mut k).is_err() {
            // No OS randomness: fall back to the time-ordered id generator's randomness.
            let id = mcpwatch_core::ids::IdGenerator::new()
                .next(mcpwatch_core::Timestamp::from_micros(0));
            k = Sha256::digest(id.as_bytes()).into();
        }
        CsrfKey(k)
    }
}

/// The person looking at a page.
#[derive(Debug, Clone)]
pub struct Viewer {
    /// The token's name; `None` when the dashboard is open.
    pub name: Option<String>,
    /// Whether they may ack, resolve and silence.
    pub admin: bool,
    /// The CSRF token their forms carry.
    pub csrf: String,
}

impl Viewer {
    /// Refuses with 403 unless the viewer has the admin role.
    pub fn require_admin(&self) -> Result<(), PageError> {
        if self.admin {
            return Ok(());
        }
        Err(PageError::new(
            StatusCode::FORBIDDEN,
            "this token lacks the admin role; sign in with an admin token to act on alerts",
        ))
    }
}

fn csrf_for(key: &CsrfKey, session: &str) -> String {
    let mut h = Sha256::new();
    h.update(key.0);
    h.update(b"|csrf|");
    h.update(session.as_bytes());
    hex(&h.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    if !s.len().is_multiple_of(2) || s.len() > 2 * MAX_TOKEN {
        return None;
    }
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect();
    String::from_utf8(bytes?).ok()
}

/// The token in the session cookie, if any.
fn session_token(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|c| c.trim().split_once('='))
        .find(|(k, _)| *k == COOKIE)
        .and_then(|(_, v)| unhex(v))
}

/// Refuses requests a browser marks as coming from another site, and those whose `Origin`
/// is not this collector.
pub fn same_origin(headers: &HeaderMap) -> Result<(), PageError> {
    let refuse = || {
        PageError::new(
            StatusCode::FORBIDDEN,
            "cross-site request refused; use the dashboard's own forms",
        )
    };
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if site != "same-origin" && site != "none" {
            return Err(refuse());
        }
    }
    if let Some(origin) = headers.get(header::ORIGIN).and_then(|v| v.to_str().ok()) {
        let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
        let origin_host = origin.split_once("://").map(|(_, h)| h);
        if origin_host.is_none() || origin_host != host {
            return Err(refuse());
        }
    }
    Ok(())
}

/// Checks a state-changing request: same origin and a CSRF token that matches the session.
pub fn check_csrf(headers: &HeaderMap, v: &Viewer, sent: &str) -> Result<(), PageError> {
    same_origin(headers)?;
    let ok = sent.len() == v.csrf.len()
        && sent
            .bytes()
            .zip(v.csrf.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if ok {
        return Ok(());
    }
    Err(PageError::new(
        StatusCode::FORBIDDEN,
        "the form's CSRF token is missing or stale; reload the page and try again",
    ))
}

impl FromRequestParts<WebState> for Viewer {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, s: &WebState) -> Result<Viewer, Response> {
        let token = session_token(&parts.headers);
        let csrf = csrf_for(&s.csrf, token.as_deref().unwrap_or(""));
        if !s.auth.enabled() {
            return Ok(Viewer {
                name: None,
                admin: true,
                csrf,
            });
        }
        let Some(token) = token else {
            return Err(to_login(parts));
        };
        match s.auth.check(Some(&format!("Bearer {token}")), Role::Read) {
            Ok(p) => Ok(Viewer {
                admin: p.as_ref().is_some_and(|p| p.can(Role::Admin)),
                name: p.map(|p| p.name),
                csrf,
            }),
            Err(Denial::Unauthenticated) => Err(to_login(parts)),
            Err(Denial::Forbidden(_)) => Err(PageError::new(
                StatusCode::FORBIDDEN,
                "this token cannot see the dashboard (it lacks the read role); sign in with a read or admin token",
            )
            .into_response()),
            Err(Denial::RateLimited(secs)) => Err(PageError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("this token is over its request rate; retry in {secs}s"),
            )
            .into_response()),
        }
    }
}

fn to_login(parts: &Parts) -> Response {
    let next = parts
        .uri
        .path_and_query()
        .map_or("/", |p| p.as_str())
        .to_owned();
    let q = serde_urlencoded_pair("next", &next);
    Redirect::to(&format!("/login?{q}")).into_response()
}

fn serde_urlencoded_pair(k: &str, v: &str) -> String {
    let enc: String = v
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect();
    format!("{k}={enc}")
}

/// Only paths on this collector are followed after sign-in (no `//host`, no scheme).
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(n) if n.starts_with('/') && !n.starts_with("//") && !n.contains('\\') => n,
        _ => "/",
    }
}

#[derive(Deserialize)]
pub(crate) struct LoginQuery {
    next: Option<String>,
}

pub(crate) async fn login_form(State(s): State<WebState>, Query(q): Query<LoginQuery>) -> Response {
    render_login(&s, q.next.as_deref(), None, StatusCode::OK)
}

fn render_login(
    s: &WebState,
    next: Option<&str>,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let body = html! {
        section.login {
            h1 { "Sign in" }
            @if !s.auth.enabled() {
                p { "No tokens are configured: the dashboard is open. " a href="/" { "Go to the overview" } }
            } @else {
                p { "Paste an API token with the read or admin role (from " code { "[[auth.tokens]]" } ")." }
                @if let Some(e) = error { p.error role="alert" { (e) } }
                form method="post" action="/login" {
                    input type="hidden" name="next" value=(safe_next(next));
                    label { "Token " input type="password" name="token" autocomplete="current-password" required; }
                    button type="submit" { "Sign in" }
                }
            }
        }
    };
    (status, view::bare("Sign in", body)).into_response()
}

#[derive(Deserialize)]
pub(crate) struct LoginForm {
    token: String,
    next: Option<String>,
}

pub(crate) async fn login(
    State(s): State<WebState>,
    headers: HeaderMap,
    Form(f): Form<LoginForm>,
) -> Response {
    if let Err(e) = same_origin(&headers) {
        return e.into_response();
    }
    let token = f.token.trim();
    if token.is_empty() || token.len() > MAX_TOKEN {
        return render_login(
            &s,
            f.next.as_deref(),
            Some("unknown token"),
            StatusCode::UNAUTHORIZED,
        );
    }
    match s.auth.check(Some(&format!("Bearer {token}")), Role::Read) {
        Ok(_) => {
            let cookie = format!(
                "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
                hex(token.as_bytes())
            );
            let mut resp = Redirect::to(safe_next(f.next.as_deref())).into_response();
            if let Ok(v) = HeaderValue::from_str(&cookie) {
                resp.headers_mut().insert(header::SET_COOKIE, v);
            }
            resp
        }
        Err(Denial::Forbidden(_)) => render_login(
            &s,
            f.next.as_deref(),
            Some("this token cannot see the dashboard: it lacks the read role"),
            StatusCode::FORBIDDEN,
        ),
        Err(Denial::RateLimited(secs)) => render_login(
            &s,
            f.next.as_deref(),
            Some(&format!(
                "this token is over its request rate; retry in {secs}s"
            )),
            StatusCode::TOO_MANY_REQUESTS,
        ),
        Err(Denial::Unauthenticated) => render_login(
            &s,
            f.next.as_deref(),
            Some("unknown token"),
            StatusCode::UNAUTHORIZED,
        ),
    }
}

#[derive(Deserialize)]
pub(crate) struct CsrfForm {
    #[serde(default)]
    csrf: String,
}

pub(crate) async fn logout(
    v: Viewer,
    headers: HeaderMap,
    Form(f): Form<CsrfForm>,
) -> Result<Response, PageError> {
    check_csrf(&headers, &v, &f.csrf)?;
    let mut resp = Redirect::to("/login").into_response();
    resp.headers_mut().insert(
        header::SET_COOKIE,
        HeaderValue::from_static("mcpwatch_session=; HttpOnly; SameSite=Strict; Path=/; Max-Age=0"),
    );
    Ok(resp)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_round_trips_and_refuses_junk() {
        assert_eq!(unhex(&hex(b"tok;en =x")).as_deref(), Some("tok;en =x"));
        assert_eq!(unhex("zz"), None);
        assert_eq!(unhex("abc"), None);
    }

    #[test]
    fn next_stays_on_this_collector() {
        assert_eq!(safe_next(Some("/alerts?x=1")), "/alerts?x=1");
        for bad in [
            "//evil.example",
            "https://evil.example",
            "/\\evil",
            "alerts",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
    }
}
