//! Unit tests of the gateway's config, authentication and monitor (the proxy itself is tested
//! end to end in `crates/mcpwatch/tests/gateway_interop.rs`). `testdata/rsa_*.pem` is a
//! throwaway key pair made for these tests only (the end-to-end RS256 test uses it too).

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use jsonwebtoken::{encode, EncodingKey, Header};
use mcpwatch_core::{Event, ManualClock, Redactor, Timestamp};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::auth::{sha256, AuthFailure, Authenticator};
use super::config::GatewayConfig;
use super::monitor::{Monitor, MonitorConfig, Route, SecurityFact, StreamEnd, Tap};
use crate::classify::ClassificationConfig;
use crate::health::CaptureHealth;
use crate::session::Direction;

const RSA_PRIVATE: &str = include_str!("testdata/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("testdata/rsa_public.pem");
const SECRET: &str = "a-long-hs256-test-secret";

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn env(k: &str) -> Option<String> {
    match k {
        "JWT_SECRET" => Some(SECRET.into()),
        "BOB_KEY" => Some("bob-key-0123456789abcdef".into()),
        _ => None,
    }
}

fn gateway(toml_text: &str) -> Result<super::Built, Vec<String>> {
    let table: toml::Table = toml::from_str(toml_text).expect("valid TOML");
    let gw = table
        .get("gateway")
        .and_then(|g| g.as_table())
        .cloned()
        .unwrap_or_default();
    let cfg = GatewayConfig::from_table(&gw)
        .map_err(|e| e.iter().map(ToString::to_string).collect::<Vec<_>>())?;
    cfg.build(&env)
        .map_err(|e| e.iter().map(ToString::to_string).collect())
}

fn auth_config() -> String {
    format!(
        r#"
[gateway.upstreams]
everything = "http://127.0.0.1:3001/mcp"
[[gateway.auth.api_keys]]
user_id = "alice"
key_sha256 = "{}"
roles = ["dev"]
[[gateway.auth.api_keys]]
user_id = "bob"
key = "${{BOB_KEY}}"
[[gateway.auth.jwt]]
algorithm = "HS256"
secret = "${{JWT_SECRET}}"
issuer = "https://idp.test"
audience = "mcpwatch"
[[gateway.auth.jwt]]
algorithm = "RS256"
public_key = """{RSA_PUBLIC}"""
issuer = "https://rsa.test"
audience = "mcpwatch"
"#,
        hex(&sha256(b"alice-key-0123456789"))
    )
}

fn unix_now() -> i64 {
    use mcpwatch_core::Clock;
    mcpwatch_core::SystemClock.now().as_secs_f64() as i64
}

fn token(
    alg: jsonwebtoken::Algorithm,
    key: &EncodingKey,
    iss: &str,
    aud: &str,
    exp_offset: i64,
) -> String {
    let now = unix_now();
    let claims = json!({"sub": "carol", "roles": ["ops", "dev"], "iss": iss, "aud": aud, "exp": now + exp_offset});
    encode(&Header::new(alg), &claims, key).expect("token encodes")
}

fn check(
    auth: &Authenticator,
    authorization: Option<&str>,
    api_key: Option<&str>,
    expected: Result<(&str, &str), AuthFailure>,
) {
    let got = auth
        .authenticate(authorization, api_key)
        .map(|p| (p.user_id, p.method));
    let expected = expected.map(|(u, m)| (u.to_string(), m));
    assert_eq!(got, expected, "{authorization:?} / {api_key:?}");
}

#[test]
fn api_keys_and_jwts_map_to_principals_and_failures_say_why() {
    let built = gateway(&auth_config()).expect("valid config");
    let a = &built.auth;
    assert!(a.enabled());
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    let rs = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("test key");
    use jsonwebtoken::Algorithm::{HS256, RS256};
    check(
        a,
        Some("Bearer alice-key-0123456789"),
        None,
        Ok(("alice", "api_key")),
    );
    check(
        a,
        None,
        Some("bob-key-0123456789abcdef"),
        Ok(("bob", "api_key")),
    );
    check(
        a,
        Some("Bearer wrong-key"),
        None,
        Err(AuthFailure::Invalid("unknown API key")),
    );
    check(a, None, None, Err(AuthFailure::Missing));
    check(
        a,
        Some("Basic YWxpY2U6eA=="),
        None,
        Err(AuthFailure::Invalid(
            "unsupported Authorization scheme; use Bearer",
        )),
    );
    let good = token(HS256, &hs, "https://idp.test", "mcpwatch", 600);
    check(
        a,
        Some(&format!("Bearer {good}")),
        None,
        Ok(("carol", "jwt")),
    );
    let roles = a
        .authenticate(Some(&format!("Bearer {good}")), None)
        .map(|p| p.roles);
    assert_eq!(roles, Ok(vec!["ops".to_string(), "dev".to_string()]));
    let expired = token(HS256, &hs, "https://idp.test", "mcpwatch", -600);
    check(
        a,
        Some(&format!("Bearer {expired}")),
        None,
        Err(AuthFailure::Expired),
    );
    let wrong_aud = token(HS256, &hs, "https://idp.test", "someone-else", 600);
    check(
        a,
        Some(&format!("Bearer {wrong_aud}")),
        None,
        Err(AuthFailure::Invalid("wrong audience")),
    );
    let wrong_iss = token(HS256, &hs, "https://evil.test", "mcpwatch", 600);
    check(
        a,
        Some(&format!("Bearer {wrong_iss}")),
        None,
        Err(AuthFailure::Invalid("wrong issuer")),
    );
    let forged = token(
        HS256,
        &EncodingKey::from_secret(b"not-the-secret-at-all"),
        "https://idp.test",
        "mcpwatch",
        600,
    );
    check(
        a,
        Some(&format!("Bearer {forged}")),
        None,
        Err(AuthFailure::Invalid(
            "token not accepted by any configured issuer",
        )),
    );
    let rsa = token(RS256, &rs, "https://rsa.test", "mcpwatch", 600);
    check(
        a,
        Some(&format!("Bearer {rsa}")),
        None,
        Ok(("carol", "jwt")),
    );
}

#[test]
fn jwts_not_valid_yet_or_with_critical_extensions_are_refused() {
    let built = gateway(&auth_config()).expect("valid config");
    let a = &built.auth;
    let hs = EncodingKey::from_secret(SECRET.as_bytes());
    use jsonwebtoken::Algorithm::HS256;
    // Not valid for another hour (beyond the 5 s leeway), or just inside the leeway.
    let claims = |nbf_offset: i64| {
        let now = unix_now();
        json!({"sub": "carol", "iss": "https://idp.test", "aud": "mcpwatch", "exp": now + 7200, "nbf": now + nbf_offset})
    };
    let early = encode(&Header::new(HS256), &claims(3600), &hs).expect("token encodes");
    check(
        a,
        Some(&format!("Bearer {early}")),
        None,
        Err(AuthFailure::Invalid("token not valid yet")),
    );
    let skewed = encode(&Header::new(HS256), &claims(2), &hs).expect("token encodes");
    check(
        a,
        Some(&format!("Bearer {skewed}")),
        None,
        Ok(("carol", "jwt")),
    );
    // A critical extension the gateway does not implement: refused even though it verifies.
    let mut crit = Header::new(HS256);
    crit.crit = Some(vec!["exp-binding".into()]);
    let crit = encode(&crit, &claims(0), &hs).expect("token encodes");
    check(
        a,
        Some(&format!("Bearer {crit}")),
        None,
        Err(AuthFailure::Invalid(
            "token header lists crit extensions, which this gateway does not implement",
        )),
    );
}

#[test]
fn bad_config_reports_every_error_with_its_key_path() {
    let errors = gateway(
        r#"
[gateway]
listen = "nowhere"
bogus = 1
[gateway.upstreams]
"bad name" = "ftp://x"
[[gateway.auth.api_keys]]
user_id = "alice"
key_sha256 = "abc"
[[gateway.auth.jwt]]
algorithm = "ES256"
issuer = "i"
audience = "a"
[gateway.policy.roles.dev]
deny = ["delete_*"]
[gateway.rate_limits]
per_tool = { rate = 0.0 }
"#,
    )
    .err()
    .expect("invalid");
    let first_pass: Vec<&str> = errors
        .iter()
        .map(|e| e.split(':').next().unwrap_or_default())
        .collect();
    assert_eq!(
        first_pass,
        ["gateway.bogus", "gateway.listen"],
        "{errors:#?}"
    );

    let errors = gateway(
        r#"
[gateway.upstreams]
"bad name" = "ftp://x"
[[gateway.auth.api_keys]]
user_id = "alice"
key_sha256 = "abc"
[[gateway.auth.jwt]]
algorithm = "ES256"
issuer = "i"
audience = "a"
[[gateway.auth.jwt]]
algorithm = "HS256"
secret = "${UNSET_SECRET}"
issuer = "i"
audience = "a"
[gateway.policy.roles.dev]
deny = ["delete_*"]
[gateway.rate_limits]
per_tool = { rate = 0.0 }
"#,
    )
    .err()
    .expect("invalid");
    let paths: Vec<&str> = errors
        .iter()
        .map(|e| e.split(": ").next().unwrap_or_default())
        .collect();
    assert_eq!(
        paths,
        [
            "gateway.upstreams.bad name",
            "gateway.upstreams.bad name",
            "gateway.auth.api_keys[0].key_sha256",
            "gateway.auth.jwt[0].algorithm",
            "gateway.auth.jwt[1].secret",
            "gateway.policy.roles.dev.deny[0]",
            "gateway.rate_limits.per_tool",
        ],
        "{errors:#?}"
    );
    assert!(
        errors.iter().any(|e| e.contains("UNSET_SECRET is not set")),
        "{errors:#?}"
    );
    let none = gateway("[gateway]\n").err().expect("no upstreams");
    assert!(
        none[0].starts_with("gateway.upstreams: no upstream MCP servers"),
        "{none:?}"
    );
}

/// Feeds `taps` to a monitor whose clock never moves (so nothing can time out) and returns the
/// events it emitted for them, before the monitor is stopped.
fn monitor_events(taps: Vec<Tap>) -> Vec<Event> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async {
        let clock = Arc::new(ManualClock::new(
            Timestamp::from_unix_seconds(1_000.0).expect("ts"),
        ));
        let cfg = MonitorConfig {
            max_sessions: 8,
            request_timeout: Duration::from_secs(60),
            session_idle: Duration::from_secs(3600),
            max_body: 1 << 20,
            classification: ClassificationConfig::default(),
            redactor: Redactor::default(),
            pins_dir: None,
            queue: 64,
            health_interval: Duration::from_secs(3600),
        };
        let (events_tx, mut events) = mpsc::channel(1024);
        let (sender, monitor) =
            Monitor::new(cfg, clock, events_tx, Arc::new(CaptureHealth::default()));
        let running = tokio::spawn(monitor.run());
        for tap in taps {
            sender.send(tap);
        }
        // A marker: the monitor handles taps in order, so every event before it is in.
        sender.send(Tap::Security(SecurityFact {
            event_type: "marker",
            level: mcpwatch_core::Level::Info,
            message: "marker".into(),
            metadata: Map::new(),
            server: None,
            session: None,
        }));
        let mut got = Vec::new();
        while let Some(e) = events.recv().await {
            if e.event_type == "marker" {
                break;
            }
            got.push(e);
        }
        drop(sender);
        let _ = running.await;
        got
    })
}

/// The taps of one `tools/call` answered over SSE: the request, its stream (with a progress
/// notification, and the result when `answered`), and how the stream ended.
fn sse_call(answered: bool, how: StreamEnd) -> Vec<Tap> {
    let route = Arc::new(Route {
        server: "up".into(),
        user: "alice".into(),
    });
    let session: Arc<str> = "s1".into();
    let call = Bytes::from(
        json!({"jsonrpc": "2.0", "id": 7, "method": "tools/call", "params": {"name": "slow", "arguments": {}}})
            .to_string(),
    );
    let mut sse = String::from(
        "event: message\ndata: {\"jsonrpc\":\"2.0\",\"method\":\"notifications/progress\",\"params\":{\"progressToken\":1,\"progress\":1}}\n\n",
    );
    if answered {
        sse.push_str(
            "event: message\ndata: {\"jsonrpc\":\"2.0\",\"id\":7,\"result\":{\"content\":[]}}\n\n",
        );
    }
    vec![
        Tap::Body {
            session: session.clone(),
            route: route.clone(),
            dir: Direction::ClientToServer,
            body: call.clone(),
            traceparent: None,
        },
        Tap::Open {
            stream: 1,
            session,
            route,
            sse: true,
            request: Some(call),
        },
        Tap::Chunk {
            stream: 1,
            bytes: Bytes::from(sse),
        },
        Tap::End { stream: 1, how },
    ]
}

/// (outcome, reason) of each `execution_complete`.
fn completions(events: &[Event]) -> Vec<(String, String)> {
    events
        .iter()
        .filter(|e| e.event_type == "execution_complete")
        .map(|e| {
            let s = |k: &str| {
                e.metadata
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_string()
            };
            (s("outcome"), s("reason"))
        })
        .collect()
}

/// Checks the completions recorded for a call whose response stream ends `how`.
fn check_stream_end(answered: bool, how: StreamEnd, expected: &[(&str, &str)]) {
    let what = format!("answered: {answered}, {how:?}");
    let got = completions(&monitor_events(sse_call(answered, how)));
    let expected: Vec<(String, String)> = expected
        .iter()
        .map(|(o, r)| (o.to_string(), r.to_string()))
        .collect();
    assert_eq!(got, expected, "{what}");
}

#[test]
fn a_response_stream_that_breaks_off_ends_its_pending_calls_as_transport_errors_at_once() {
    let broke =
        "the upstream's response stream broke off: connection closed before message completed";
    check_stream_end(
        false,
        StreamEnd::Broken(broke.into()),
        &[("transport_error", broke)],
    );
    // The response came before the break: nothing is left to fail.
    check_stream_end(true, StreamEnd::Broken(broke.into()), &[("success", "")]);
    check_stream_end(true, StreamEnd::Complete, &[("success", "")]);
    // The client left: the call may still be answered on a resumed stream.
    check_stream_end(false, StreamEnd::Abandoned, &[]);
}
