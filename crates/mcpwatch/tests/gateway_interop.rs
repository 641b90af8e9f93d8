//! End-to-end tests of `mcpwatch gateway` against real peers and a real collector.
//!
//! `@modelcontextprotocol/server-everything` runs in its Streamable HTTP mode; the official MCP
//! Python SDK drives it once directly and once through the gateway (responses must be
//! identical, events must arrive with the right outcomes). Raw HTTP checks cover what an SDK
//! hides: 401s with `WWW-Authenticate` (API keys, HS256 and RS256 tokens), 429s with
//! `Retry-After` (per principal and per tool), 404 and 502 errors, and JSON-RPC batches the
//! gateway answers in part. `peers/sdk_server.mjs`, on the official TypeScript SDK, adds JSON
//! answers to batches and an upstream that dies mid-call. Peers come from
//! `scripts/install-peers`; a missing peer fails the test with that instruction.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use common::detect::{await_listener, everything, free_port, gateway, gateway_on, Proc};
use common::peer;
use common::Serve;

/// `tests/peers/sdk_server.mjs` on the TypeScript SDK, answering with `json` bodies or `sse`
/// streams; returns the process and its MCP URL.
fn sdk_server(mode: &str) -> (Proc, String) {
    let sdk = peer("node/node_modules/@modelcontextprotocol/sdk");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/sdk_server.mjs");
    let port = free_port();
    let child = Command::new("node")
        .arg(script)
        .arg(sdk)
        .arg(port.to_string())
        .arg(mode)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("node runs (install Node.js and run scripts/install-peers)");
    let proc = Proc(child);
    await_listener("sdk_server.mjs", port);
    (proc, format!("http://127.0.0.1:{port}/mcp"))
}

/// Runs the Python SDK client; returns its JSON lines.
fn run_client(scenario: &str, url: &str, token: Option<&str>) -> Vec<Value> {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/peers/http_client.py");
    let mut cmd = Command::new(peer("venv/bin/python"));
    cmd.arg(script)
        .arg(scenario)
        .arg(url)
        .stdin(Stdio::null())
        .stderr(Stdio::inherit());
    if let Some(t) = token {
        cmd.env("MCP_TOKEN", t);
    }
    let out = cmd.output().expect("the Python client runs");
    assert!(
        out.status.success(),
        "client {scenario} failed ({}) against {url}",
        out.status
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("the client prints JSON lines"))
        .collect()
}

/// Events of one type, polled until `done` holds or 30 s pass.
fn wait_events(collector: &str, event_type: &str, done: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let client = Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let got = client.events(collector, event_type);
        if done(&got) || Instant::now() > deadline {
            return got;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A tiny blocking HTTP/1.1 client over std, enough for the API and the gateway's answers.
mod http {
    use std::io::{Read, Write};
    use std::net::TcpStream;
    use std::time::Duration;

    use serde_json::Value;

    /// An HTTP answer: status, lower-cased headers, body.
    pub struct Answer {
        pub status: u16,
        pub headers: Vec<(String, String)>,
        pub body: String,
    }

    impl Answer {
        pub fn header(&self, name: &str) -> Option<&str> {
            self.headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        }

        pub fn json(&self) -> Value {
            serde_json::from_str(&self.body).unwrap_or(Value::Null)
        }
    }

    pub struct Client;

    impl Client {
        pub fn new() -> Self {
            Client
        }

        pub fn events(&self, collector: &str, event_type: &str) -> Vec<Value> {
            let url = format!("{collector}/api/v1/events?event_type={event_type}&limit=1000");
            let a = self.send("GET", &url, &[], "");
            a.json()["events"].as_array().cloned().unwrap_or_default()
        }

        pub fn send(
            &self,
            method: &str,
            url: &str,
            headers: &[(&str, &str)],
            body: &str,
        ) -> Answer {
            let rest = url.strip_prefix("http://").expect("an http URL");
            let (host, path) = rest
                .split_once('/')
                .map_or((rest, "/".to_string()), |(h, p)| (h, format!("/{p}")));
            let mut s = TcpStream::connect(host).expect("connect");
            s.set_read_timeout(Some(Duration::from_secs(20)))
                .expect("timeout");
            let mut req = format!("{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: {}\r\n", body.len());
            for (k, v) in headers {
                req.push_str(&format!("{k}: {v}\r\n"));
            }
            req.push_str("\r\n");
            req.push_str(body);
            s.write_all(req.as_bytes()).expect("send");
            let mut raw = Vec::new();
            let _ = s.read_to_end(&mut raw);
            let text = String::from_utf8_lossy(&raw).into_owned();
            let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
            let mut lines = head.lines();
            let status = lines
                .next()
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|s| s.parse().ok())
                .unwrap_or(0);
            let headers: Vec<(String, String)> = lines
                .filter_map(|l| l.split_once(':'))
                .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
                .collect();
            let chunked = headers
                .iter()
                .any(|(k, v)| k == "transfer-encoding" && v.contains("chunked"));
            let body = if chunked {
                dechunk(body)
            } else {
                body.to_string()
            };
            Answer {
                status,
                headers,
                body,
            }
        }
    }

    fn dechunk(mut s: &str) -> String {
        let mut out = String::new();
        while let Some((size, rest)) = s.split_once("\r\n") {
            let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
            if n == 0 || rest.len() < n {
                break;
            }
            out.push_str(&rest[..n]);
            s = rest[n..].strip_prefix("\r\n").unwrap_or(&rest[n..]);
        }
        out
    }
}

use http::{Answer, Client};

const MCP_HEADERS: [(&str, &str); 2] = [
    ("Content-Type", "application/json"),
    ("Accept", "application/json, text/event-stream"),
];

fn initialize_body() -> String {
    json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1"}}}).to_string()
}

/// Initializes a session at `mcp` with a raw POST; returns its `Mcp-Session-Id`.
fn initialized(mcp: &str) -> String {
    let init = post(mcp, &[], &initialize_body());
    assert_eq!(init.status, 200, "{}", init.body);
    init.header("mcp-session-id")
        .expect("the upstream's session id passes through")
        .to_string()
}

fn post(url: &str, extra: &[(&str, &str)], body: &str) -> Answer {
    let mut headers: Vec<(&str, &str)> = MCP_HEADERS.to_vec();
    headers.extend_from_slice(extra);
    Client::new().send("POST", url, &headers, body)
}

fn by_tool(events: &[Value]) -> Vec<(String, String, String)> {
    let mut v: Vec<(String, String, String)> = events
        .iter()
        .map(|e| {
            let m = &e["metadata"];
            let s = |k: &str| m[k].as_str().unwrap_or_default().to_string();
            (s("tool_name"), s("outcome"), s("user_id"))
        })
        .collect();
    v.sort();
    v
}

/// A JWT signed with PyJWT: `alg` HS256 with a secret, or RS256 with a PEM private key (or
/// `fresh-rsa`: a key generated on the spot, which no gateway trusts).
fn jwt(alg: &str, key: &str, claims: Value) -> String {
    const SIGN: &str = "import jwt, json, sys
alg, key, claims = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
if key == 'fresh-rsa':
    from cryptography.hazmat.primitives.asymmetric import rsa
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
print(jwt.encode(claims, key, algorithm=alg))";
    let out = Command::new(peer("venv/bin/python"))
        .args(["-c", SIGN, alg, key])
        .arg(claims.to_string())
        .output()
        .expect("python (PyJWT comes with the MCP SDK) runs");
    assert!(
        out.status.success(),
        "PyJWT failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn unix_now() -> i64 {
    use mcpwatch_core::Clock;
    mcpwatch_core::SystemClock.now().as_secs_f64() as i64
}

#[test]
fn server_everything_direct_and_through_gateway_are_identical_and_recorded() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    let config = format!("[gateway.upstreams]\neverything = \"{upstream}\"\n");
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[]);

    let direct = run_client("everything", &upstream, None);
    let through = run_client("everything", &format!("{gw}/mcp/everything"), None);
    assert_eq!(direct, through, "responses through the gateway differ");
    assert!(direct.len() >= 7, "the scenario ran: {direct:?}");

    let done = wait_events(&serve.url, "execution_complete", |e| e.len() >= 3);
    assert_eq!(
        by_tool(&done),
        [
            ("echo".into(), "success".into(), "anonymous".into()),
            ("get-sum".into(), "success".into(), "anonymous".into()),
            (
                "no-such-tool".into(),
                "tool_error".into(),
                "anonymous".into()
            ),
        ]
    );
    assert!(done
        .iter()
        .all(|e| e["source"] == "gateway:everything" && e["metadata"]["server"] == "everything"));
    let started = wait_events(&serve.url, "session_start", |e| !e.is_empty());
    assert_eq!(started.len(), 1, "one session: {started:?}");
    let reads = wait_events(&serve.url, "data_access", |e| !e.is_empty());
    assert_eq!(
        reads[0]["metadata"]["uri"],
        "demo://resource/static/document/architecture.md"
    );
    let perf = wait_events(&serve.url, "request_performance", |e| e.len() >= 7);
    assert!(
        perf.len() >= 7,
        "a request_performance per request: {}",
        perf.len()
    );
    let ended = wait_events(&serve.url, "session_end", |e| !e.is_empty());
    assert_eq!(ended.len(), 1, "the client's DELETE ends the session");
}

#[test]
fn missing_wrong_and_expired_tokens_get_401_and_failure_events() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    let secret = "jwt-secret-for-the-gateway-test";
    let config = format!(
        r#"
[gateway.upstreams]
everything = "{upstream}"
[[gateway.auth.api_keys]]
user_id = "alice"
key = "${{ALICE_KEY}}"
roles = ["dev"]
[[gateway.auth.jwt]]
algorithm = "HS256"
secret = "${{JWT_SECRET}}"
issuer = "https://idp.test"
audience = "mcpwatch"
"#
    );
    let env = [
        ("ALICE_KEY", "alice-key-0123456789abcdef"),
        ("JWT_SECRET", secret),
    ];
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &env);
    let mcp = format!("{gw}/mcp/everything");

    let claims = |exp: i64| json!({"sub": "carol", "roles": ["dev"], "iss": "https://idp.test", "aud": "mcpwatch", "exp": exp});
    let expired = jwt("HS256", secret, claims(unix_now() - 600));
    // (what, headers sent, the RFC 6750 error code expected)
    let cases = [
        ("missing", Vec::<(&str, String)>::new(), "invalid_request"),
        (
            "wrong",
            vec![("Authorization", "Bearer not-a-key".into())],
            "invalid_token",
        ),
        (
            "expired",
            vec![("Authorization", format!("Bearer {expired}"))],
            "invalid_token",
        ),
    ];
    for (what, headers, code) in &cases {
        let mut h: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        h.push(("User-Agent", "gateway-test/1"));
        let a = post(&mcp, &h, &initialize_body());
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        let challenge = a.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"mcpwatch\"") && challenge.contains(code),
            "{what}: {challenge}"
        );
    }
    assert!(post(&mcp, &[], &initialize_body())
        .header("www-authenticate")
        .is_some());

    let good = jwt("HS256", secret, claims(unix_now() + 600));
    let through = run_client("everything", &mcp, Some(&good));
    assert_eq!(through[0]["value"]["server"], "mcp-servers/everything");
    let by_key = run_client("everything", &mcp, Some("alice-key-0123456789abcdef"));
    assert_eq!(through, by_key);

    // A session belongs to whoever opened it: carol cannot ride on alice's.
    let alice = [("Authorization", "Bearer alice-key-0123456789abcdef")];
    let opened = post(&mcp, &alice, &initialize_body());
    let session = opened
        .header("mcp-session-id")
        .expect("a session id")
        .to_string();
    let carol = format!("Bearer {good}");
    let foreign = [
        ("Authorization", carol.as_str()),
        ("Mcp-Session-Id", session.as_str()),
    ];
    let ride = post(
        &mcp,
        &foreign,
        &json!({"jsonrpc": "2.0", "id": 2, "method": "tools/list"}).to_string(),
    );
    assert_eq!(ride.status, 403, "{}", ride.body);
    let own = [alice[0], ("Mcp-Session-Id", session.as_str())];
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    assert_eq!(post(&mcp, &own, &note).status, 202);
    let authz = wait_events(&serve.url, "authorization", |e| !e.is_empty());
    assert_eq!(authz[0]["metadata"]["resource"], "session:everything");
    assert_eq!(authz[0]["metadata"]["user_id"], "carol");

    let auth = wait_events(&serve.url, "authentication", |e| {
        e.iter()
            .filter(|e| e["metadata"]["result"] == "failure")
            .count()
            >= 4
            && e.iter().any(|e| e["metadata"]["user_id"] == "carol")
            && e.iter().any(|e| e["metadata"]["user_id"] == "alice")
    });
    let failures: Vec<&Value> = auth
        .iter()
        .filter(|e| e["metadata"]["result"] == "failure")
        .collect();
    assert_eq!(failures.len(), 4, "{failures:#?}");
    let reasons: Vec<&str> = failures
        .iter()
        .map(|e| e["metadata"]["reason"].as_str().unwrap_or_default())
        .collect();
    assert!(
        reasons.contains(&"token expired") && reasons.contains(&"unknown API key"),
        "{reasons:?}"
    );
    for e in &failures {
        assert_eq!(e["metadata"]["ip_address"], "127.0.0.1");
        assert_eq!(e["category"], "security");
    }
    assert!(failures
        .iter()
        .any(|e| e["metadata"]["user_agent"] == "gateway-test/1"));
    assert!(auth
        .iter()
        .any(|e| e["metadata"]["result"] == "success" && e["metadata"]["user_id"] == "carol"));
    assert!(
        !serde_json::to_string(&auth)
            .unwrap_or_default()
            .contains("alice-key-0123456789abcdef"),
        "a key reached the store"
    );

    let done = wait_events(&serve.url, "execution_complete", |e| e.len() >= 6);
    let users: std::collections::BTreeSet<String> =
        by_tool(&done).into_iter().map(|(_, _, u)| u).collect();
    assert_eq!(
        users,
        ["alice".to_string(), "carol".to_string()].into(),
        "the principal is each session's user"
    );
}

#[test]
fn a_policy_denial_is_a_jsonrpc_error_an_event_and_hides_the_tool() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    let config = format!(
        r#"
[gateway.upstreams]
everything = "{upstream}"
[[gateway.auth.api_keys]]
user_id = "alice"
key = "${{ALICE_KEY}}"
roles = ["dev"]
[gateway.policy.roles.dev]
allow = ["tool:**", "resource:**", "prompt:**"]
deny = ["tool:everything/get-sum"]
"#
    );
    let key = "alice-key-0123456789abcdef";
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[("ALICE_KEY", key)]);
    let lines = run_client("denied", &format!("{gw}/mcp/everything"), Some(key));
    let step = |name: &str| {
        lines
            .iter()
            .find(|l| l["step"] == name)
            .cloned()
            .unwrap_or(Value::Null)
    };
    let listed = step("tools");
    let tools: Vec<&str> = listed["value"]
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    assert!(
        tools.contains(&"echo") && !tools.contains(&"get-sum"),
        "get-sum is hidden: {tools:?}"
    );
    assert_eq!(
        step("denied")["value"]["error"]["code"],
        -32001,
        "{lines:#?}"
    );
    let allowed = &step("allowed")["value"]["content"][0]["text"];
    assert_eq!(allowed, "Echo: still allowed");

    let authz = wait_events(&serve.url, "authorization", |e| !e.is_empty());
    assert_eq!(authz.len(), 1, "{authz:#?}");
    let m = &authz[0]["metadata"];
    assert_eq!(
        (&m["result"], &m["resource"], &m["action"], &m["user_id"]),
        (
            &json!("denied"),
            &json!("tool:everything/get-sum"),
            &json!("call"),
            &json!("alice")
        )
    );
    let done = wait_events(&serve.url, "execution_complete", |e| e.len() >= 2);
    assert_eq!(
        by_tool(&done),
        [
            ("echo".into(), "success".into(), "alice".into()),
            ("get-sum".into(), "denied".into(), "alice".into())
        ]
    );
    let denied = done
        .iter()
        .find(|e| e["metadata"]["tool_name"] == "get-sum")
        .cloned()
        .unwrap_or(Value::Null);
    assert_eq!(denied["metadata"]["success"], false);
}

#[test]
fn rate_limits_unknown_and_unreachable_upstreams_get_clear_answers() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    let closed = free_port();
    let config = format!(
        r#"
[gateway.upstreams]
everything = "{upstream}"
down = "http://127.0.0.1:{closed}/mcp"
[gateway.rate_limits]
per_tool = {{ rate = 0.01, burst = 1 }}
"#
    );
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[]);
    let mcp = format!("{gw}/mcp/everything");

    let session = initialized(&mcp);
    let s = [
        ("Mcp-Session-Id", session.as_str()),
        ("MCP-Protocol-Version", "2025-06-18"),
    ];
    let note = post(
        &mcp,
        &s,
        &json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string(),
    );
    assert_eq!(note.status, 202, "{}", note.body);
    let call = |id: u64| {
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": {"name": "echo", "arguments": {"message": "hi"}}}).to_string()
    };
    let first = post(&mcp, &s, &call(2));
    assert_eq!(first.status, 200, "{}", first.body);
    assert!(first.body.contains("Echo: hi"), "{}", first.body);
    let second = post(&mcp, &s, &call(3));
    assert_eq!(second.status, 429, "{}", second.body);
    let retry: u64 = second
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(retry >= 1);
    assert_eq!(second.json()["id"], 3);
    assert_eq!(second.json()["error"]["code"], -32003);
    let limited = wait_events(&serve.url, "rate_limited", |e| !e.is_empty());
    assert_eq!(limited[0]["metadata"]["tool"], "everything/echo");
    assert_eq!(limited[0]["metadata"]["scope"], "tool");

    let unknown = post(&format!("{gw}/mcp/nope"), &[], &initialize_body());
    assert_eq!(unknown.status, 404);
    assert!(
        unknown.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("/mcp/{down,everything}"),
        "{}",
        unknown.body
    );
    let down = post(&format!("{gw}/mcp/down"), &[], &initialize_body());
    assert_eq!(down.status, 502, "{}", down.body);
    assert_eq!(down.json()["id"], 1);
    assert_eq!(down.json()["error"]["code"], -32002);
    assert!(
        down.json()["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("upstream down is unreachable"),
        "{}",
        down.body
    );
    let failed = wait_events(&serve.url, "request_performance", |e| {
        e.iter().any(|e| e["metadata"]["server"] == "down")
    });
    let failed: Vec<&Value> = failed
        .iter()
        .filter(|e| e["metadata"]["server"] == "down")
        .collect();
    assert_eq!(failed.len(), 1, "{failed:#?}");
    assert_eq!(failed[0]["metadata"]["outcome"], "transport_error");
    assert_eq!(failed[0]["metadata"]["method"], "initialize");
    let batch = json!([
        request(2, "ping", json!({})),
        request(3, "tools/list", json!({}))
    ]);
    let down = post(&format!("{gw}/mcp/down"), &[], &batch.to_string());
    assert_eq!(down.status, 502, "{}", down.body);
    let answers: Vec<(u64, i64)> = down
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    let id = m["id"].as_u64().unwrap_or(0);
                    (id, m["error"]["code"].as_i64().unwrap_or(0))
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(answers, [(2, -32002), (3, -32002)], "{}", down.body);
    let deleted = Client::new().send("DELETE", &mcp, &s, "");
    assert_eq!(deleted.status, 200, "{}", deleted.body);
}

#[test]
fn sse_progress_of_a_long_running_tool_arrives_incrementally() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    let config = format!("[gateway.upstreams]\neverything = \"{upstream}\"\n");
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[]);
    let lines = run_client("longrun", &format!("{gw}/mcp/everything"), None);
    let times = |step: &str| -> Vec<f64> {
        lines
            .iter()
            .filter(|l| l["step"] == step)
            .filter_map(|l| l["t"].as_f64())
            .collect()
    };
    let progress = times("progress");
    let result = times("result");
    assert_eq!(progress.len(), 3, "{lines:#?}");
    assert_eq!(result.len(), 1, "{lines:#?}");
    // Steps are a second apart upstream: buffered, they would all arrive with the result.
    assert!(
        result[0] - progress[0] >= 1.5,
        "progress came late: {progress:?} vs {}",
        result[0]
    );
    assert!(
        progress.windows(2).all(|w| w[1] - w[0] >= 0.5),
        "progress bunched up: {progress:?}"
    );
    let done = wait_events(&serve.url, "execution_complete", |e| !e.is_empty());
    assert_eq!(
        by_tool(&done),
        [(
            "trigger-long-running-operation".into(),
            "success".into(),
            "anonymous".into()
        )]
    );
}

/// Opens a session through the gateway with `initialize` and `notifications/initialized`;
/// returns the headers later requests carry.
fn open_session(mcp: &str, auth: &[(&str, &str)], version: &str) -> Vec<(String, String)> {
    let init = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": version, "capabilities": {}, "clientInfo": {"name": "raw-test", "version": "1"}}});
    let opened = post(mcp, auth, &init.to_string());
    assert_eq!(opened.status, 200, "{}", opened.body);
    let session = opened
        .header("mcp-session-id")
        .expect("a session id")
        .to_string();
    let mut headers: Vec<(String, String)> = auth
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    headers.push(("Mcp-Session-Id".into(), session));
    headers.push(("MCP-Protocol-Version".into(), version.into()));
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let note = json!({"jsonrpc": "2.0", "method": "notifications/initialized"}).to_string();
    assert_eq!(post(mcp, &h, &note).status, 202);
    headers
}

#[test]
fn an_upstream_that_dies_mid_call_is_a_transport_error_at_once_not_a_timeout() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_up, upstream) = sdk_server("sse");
    let config = format!(
        "[gateway.upstreams]\nsdk = \"{upstream}\"\n[gateway.limits]\nrequest_timeout_secs = 600\n"
    );
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[]);
    let mcp = format!("{gw}/mcp/sdk");
    let headers = open_session(&mcp, &[], "2025-06-18");
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let crash = json!({"jsonrpc": "2.0", "id": 2, "method": "tools/call", "params": {"name": "crash", "arguments": {}, "_meta": {"progressToken": "p"}}});
    let started = Instant::now();
    let broken = post(&mcp, &h, &crash.to_string());
    assert_eq!(broken.status, 200, "{}", broken.body);
    assert!(
        broken.body.contains("notifications/progress") && !broken.body.contains("\"id\":2"),
        "the stream carried progress, then broke off: {}",
        broken.body
    );
    let done = wait_events(&serve.url, "execution_complete", |e| !e.is_empty());
    assert_eq!(
        by_tool(&done),
        [("crash".into(), "transport_error".into(), "anonymous".into())]
    );
    let reason = done[0]["metadata"]["reason"].as_str().unwrap_or_default();
    assert!(
        reason.starts_with("the upstream's response stream broke off"),
        "{reason}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "recorded when the stream broke, not after the 600 s request timeout"
    );
}

/// Every JSON-RPC message in an SSE body, in order (a batched event gives each of its own).
fn sse_messages(body: &str) -> Vec<Value> {
    body.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .flat_map(|v| match v {
            Value::Array(items) => items,
            one => vec![one],
        })
        .collect()
}

/// The message answering request `id`.
fn answer_to(messages: &[Value], id: u64) -> Value {
    messages
        .iter()
        .find(|m| m["id"] == id && m.get("method").is_none())
        .cloned()
        .unwrap_or(Value::Null)
}

fn names(list: &Value, field: &str) -> Vec<String> {
    list.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|i| i[field].as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

fn call(id: Option<u64>, tool: &str, arguments: Value) -> Value {
    let mut m = json!({"jsonrpc": "2.0", "method": "tools/call", "params": {"name": tool, "arguments": arguments}});
    if let Some(id) = id {
        m["id"] = json!(id);
    }
    m
}

fn request(id: u64, method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params})
}

#[test]
fn a_batch_with_refused_calls_forwards_the_rest_and_streams_one_merged_answer() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    let config = format!(
        r#"
[gateway.upstreams]
everything = "{upstream}"
[[gateway.auth.api_keys]]
user_id = "alice"
key = "${{ALICE_KEY}}"
roles = ["dev"]
[gateway.policy.roles.dev]
allow = ["tool:**", "resource:**", "prompt:**"]
deny = ["tool:everything/get-sum", "prompt:everything/args-prompt", "resource:demo://resource/static/document/architecture.md"]
[gateway.rate_limits]
per_tool = {{ rate = 0.01, burst = 1 }}
"#
    );
    let key = "alice-key-0123456789abcdef";
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[("ALICE_KEY", key)]);
    let mcp = format!("{gw}/mcp/everything");
    let bearer = format!("Bearer {key}");
    // Batches are a protocol 2025-03-26 feature.
    let headers = open_session(&mcp, &[("Authorization", &bearer)], "2025-03-26");
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let batch = json!([
        call(Some(2), "echo", json!({"message": "one"})),
        call(Some(3), "get-sum", json!({"a": 1, "b": 2})),
        call(Some(4), "echo", json!({"message": "two"})),
        request(5, "tools/list", json!({})),
        call(None, "get-sum", json!({"a": 3, "b": 4})),
        request(6, "prompts/list", json!({})),
        request(7, "resources/list", json!({})),
    ]);
    let a = post(&mcp, &h, &batch.to_string());
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.header("content-type")
            .unwrap_or_default()
            .starts_with("text/event-stream"),
        "{:?}",
        a.headers
    );
    let messages = sse_messages(&a.body);
    let ids: Vec<u64> = messages.iter().filter_map(|m| m["id"].as_u64()).collect();
    assert_eq!(
        &ids[..2],
        [3, 4],
        "the gateway's answers come first: {messages:#?}"
    );
    let mut sorted = ids.clone();
    sorted.sort();
    assert_eq!(
        sorted,
        [2, 3, 4, 5, 6, 7],
        "one answer per request, none for the notification: {messages:#?}"
    );
    assert_eq!(
        answer_to(&messages, 2)["result"]["content"][0]["text"],
        "Echo: one"
    );
    assert_eq!(answer_to(&messages, 3)["error"]["code"], -32001);
    assert_eq!(answer_to(&messages, 4)["error"]["code"], -32003);
    let tools = names(&answer_to(&messages, 5)["result"]["tools"], "name");
    assert!(
        tools.contains(&"echo".to_string()) && !tools.contains(&"get-sum".to_string()),
        "{tools:?}"
    );
    let prompts = names(&answer_to(&messages, 6)["result"]["prompts"], "name");
    assert!(
        prompts.contains(&"simple-prompt".to_string())
            && !prompts.contains(&"args-prompt".to_string()),
        "{prompts:?}"
    );
    let resources = names(&answer_to(&messages, 7)["result"]["resources"], "uri");
    assert!(
        !resources.is_empty() && !resources.iter().any(|u| u.ends_with("/architecture.md")),
        "{resources:?}"
    );

    // Lists alone in a batch are filtered too, each by its own request.
    let lists = json!([
        request(8, "tools/list", json!({})),
        request(9, "prompts/list", json!({}))
    ]);
    let a = post(&mcp, &h, &lists.to_string());
    let messages = sse_messages(&a.body);
    let tools = names(&answer_to(&messages, 8)["result"]["tools"], "name");
    assert!(
        tools.contains(&"echo".to_string()) && !tools.contains(&"get-sum".to_string()),
        "{tools:?}"
    );
    let prompts = names(&answer_to(&messages, 9)["result"]["prompts"], "name");
    assert!(
        prompts.contains(&"simple-prompt".to_string())
            && !prompts.contains(&"args-prompt".to_string()),
        "{prompts:?}"
    );

    let authz = wait_events(&serve.url, "authorization", |e| e.len() >= 2);
    assert_eq!(authz.len(), 2, "one per denied message: {authz:#?}");
    assert!(authz.iter().all(|e| e["metadata"]["result"] == "denied"
        && e["metadata"]["resource"] == "tool:everything/get-sum"));
    let limited = wait_events(&serve.url, "rate_limited", |e| !e.is_empty());
    assert_eq!(limited.len(), 1, "{limited:#?}");
    assert_eq!(limited[0]["metadata"]["tool"], "everything/echo");
    let done = wait_events(&serve.url, "execution_complete", |e| e.len() >= 2);
    assert_eq!(
        by_tool(&done),
        [
            ("echo".into(), "success".into(), "alice".into()),
            ("get-sum".into(), "denied".into(), "alice".into()),
        ]
    );
}

#[test]
fn json_batch_answers_merge_the_gateways_errors_and_a_refused_batch_stays_home() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_up, upstream) = sdk_server("json");
    let config = format!(
        r#"
[gateway.upstreams]
sdk = "{upstream}"
[gateway.policy]
default = "deny"
[gateway.policy.roles.anyone]
deny = ["tool:sdk/secret", "resource:note://private"]
[[gateway.auth.api_keys]]
user_id = "bob"
key = "${{BOB_KEY}}"
roles = ["anyone"]
"#
    );
    let key = "bob-key-0123456789abcdef";
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[("BOB_KEY", key)]);
    let mcp = format!("{gw}/mcp/sdk");
    let bearer = format!("Bearer {key}");
    let headers = open_session(&mcp, &[("Authorization", &bearer)], "2025-03-26");
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();

    let batch = json!([
        call(Some(2), "secret", json!({})),
        call(Some(3), "add", json!({"a": 1, "b": 2})),
        request(4, "tools/list", json!({})),
        request(5, "resources/list", json!({})),
    ]);
    let a = post(&mcp, &h, &batch.to_string());
    assert_eq!(a.status, 200, "{}", a.body);
    assert!(
        a.header("content-type")
            .unwrap_or_default()
            .starts_with("application/json"),
        "{:?}",
        a.headers
    );
    let answers = a.json().as_array().cloned().unwrap_or_default();
    let mut ids: Vec<u64> = answers.iter().filter_map(|m| m["id"].as_u64()).collect();
    ids.sort();
    assert_eq!(ids, [2, 3, 4, 5], "{}", a.body);
    assert_eq!(answer_to(&answers, 2)["error"]["code"], -32001);
    assert_eq!(answer_to(&answers, 3)["result"]["content"][0]["text"], "3");
    assert_eq!(
        names(&answer_to(&answers, 4)["result"]["tools"], "name"),
        ["echo", "add", "crash"]
    );
    assert_eq!(
        names(&answer_to(&answers, 5)["result"]["resources"], "uri"),
        ["note://public"]
    );

    let lists = json!([
        request(10, "resources/list", json!({})),
        request(11, "tools/list", json!({}))
    ]);
    let a = post(&mcp, &h, &lists.to_string());
    let answers = a.json().as_array().cloned().unwrap_or_default();
    assert_eq!(
        names(&answer_to(&answers, 10)["result"]["resources"], "uri"),
        ["note://public"]
    );
    assert_eq!(
        names(&answer_to(&answers, 11)["result"]["tools"], "name"),
        ["echo", "add", "crash"]
    );

    // Everything refused: answered by the gateway, nothing goes upstream.
    let refused = json!([
        call(Some(6), "secret", json!({})),
        request(7, "resources/read", json!({"uri": "note://private"})),
    ]);
    let a = post(&mcp, &h, &refused.to_string());
    assert_eq!(a.status, 200, "{}", a.body);
    let codes: Vec<(u64, i64)> = a
        .json()
        .as_array()
        .map(|a| {
            a.iter()
                .map(|m| {
                    (
                        m["id"].as_u64().unwrap_or(0),
                        m["error"]["code"].as_i64().unwrap_or(0),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(codes, [(6, -32001), (7, -32001)]);

    // The rest is a notification the upstream accepts with 202: the gateway's error is the answer.
    let with_note = json!([
        call(Some(8), "secret", json!({})),
        {"jsonrpc": "2.0", "method": "notifications/roots/list_changed"},
    ]);
    let a = post(&mcp, &h, &with_note.to_string());
    assert_eq!(a.status, 200, "{}", a.body);
    assert_eq!(a.json()[0]["id"], 8, "{}", a.body);
    assert_eq!(a.json().as_array().map(Vec::len), Some(1), "{}", a.body);

    let authz = wait_events(&serve.url, "authorization", |e| e.len() >= 4);
    let resources: std::collections::BTreeSet<String> = authz
        .iter()
        .filter(|e| e["metadata"]["result"] == "denied")
        .filter_map(|e| e["metadata"]["resource"].as_str().map(str::to_string))
        .collect();
    assert_eq!(authz.len(), 4, "{authz:#?}");
    assert_eq!(
        resources,
        [
            "resource:note://private".to_string(),
            "tool:sdk/secret".to_string()
        ]
        .into()
    );
    let done = wait_events(&serve.url, "execution_complete", |e| e.len() >= 4);
    assert_eq!(
        by_tool(&done),
        [
            ("add".into(), "success".into(), "bob".into()),
            ("secret".into(), "denied".into(), "bob".into()),
            ("secret".into(), "denied".into(), "bob".into()),
            ("secret".into(), "denied".into(), "bob".into()),
        ],
        "the secret tool never ran upstream"
    );
}

/// The throwaway RSA key pair committed for the gateway's tests only (never used elsewhere).
fn test_rsa_key(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mcpwatch-capture/src/gateway/testdata")
        .join(name)
}

#[test]
fn rs256_tokens_from_the_configured_issuer_are_accepted_and_others_get_401() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    let public = test_rsa_key("rsa_public.pem");
    let config = format!(
        r#"
[gateway.upstreams]
everything = "{upstream}"
[[gateway.auth.jwt]]
algorithm = "RS256"
public_key = "{}"
issuer = "https://rsa.idp.test"
audience = "mcpwatch"
"#,
        public.display()
    );
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[]);
    let mcp = format!("{gw}/mcp/everything");
    let private = std::fs::read_to_string(test_rsa_key("rsa_private.pem")).expect("test key");
    let claims = |iss: &str, aud: &str, exp: i64| json!({"sub": "dave", "roles": ["ops"], "iss": iss, "aud": aud, "exp": exp});
    let later = unix_now() + 600;

    let good = jwt(
        "RS256",
        &private,
        claims("https://rsa.idp.test", "mcpwatch", later),
    );
    let through = run_client("everything", &mcp, Some(&good));
    assert_eq!(through[0]["value"]["server"], "mcp-servers/everything");

    // (what, token, the reason recorded)
    let refused = [
        (
            "wrong issuer",
            jwt(
                "RS256",
                &private,
                claims("https://evil.test", "mcpwatch", later),
            ),
            "wrong issuer",
        ),
        (
            "wrong audience",
            jwt(
                "RS256",
                &private,
                claims("https://rsa.idp.test", "other", later),
            ),
            "wrong audience",
        ),
        (
            "expired",
            jwt(
                "RS256",
                &private,
                claims("https://rsa.idp.test", "mcpwatch", unix_now() - 600),
            ),
            "token expired",
        ),
        (
            "signed by another key",
            jwt(
                "RS256",
                "fresh-rsa",
                claims("https://rsa.idp.test", "mcpwatch", later),
            ),
            "token not accepted by any configured issuer",
        ),
    ];
    for (what, token, _) in &refused {
        let a = post(
            &mcp,
            &[("Authorization", &format!("Bearer {token}"))],
            &initialize_body(),
        );
        assert_eq!(a.status, 401, "{what}: {}", a.body);
        let challenge = a.header("www-authenticate").unwrap_or_default();
        assert!(
            challenge.starts_with("Bearer realm=\"mcpwatch\"")
                && challenge.contains("error=\"invalid_token\""),
            "{what}: {challenge}"
        );
    }

    let auth = wait_events(&serve.url, "authentication", |e| {
        e.iter()
            .filter(|e| e["metadata"]["result"] == "failure")
            .count()
            >= refused.len()
    });
    let mut reasons: Vec<&str> = auth
        .iter()
        .filter(|e| e["metadata"]["result"] == "failure")
        .map(|e| e["metadata"]["reason"].as_str().unwrap_or_default())
        .collect();
    reasons.sort();
    let mut expected: Vec<&str> = refused.iter().map(|(_, _, r)| *r).collect();
    expected.sort();
    assert_eq!(reasons, expected);
    assert!(auth.iter().any(|e| e["metadata"]["result"] == "success"
        && e["metadata"]["user_id"] == "dave"
        && e["metadata"]["method"] == "jwt"));
    let done = wait_events(&serve.url, "execution_complete", |e| e.len() >= 3);
    assert!(
        !done.is_empty() && done.iter().all(|e| e["metadata"]["user_id"] == "dave"),
        "the token's subject is the user: {done:#?}"
    );
}

#[test]
fn a_principal_over_its_rate_gets_429_with_retry_after_and_others_do_not() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    let config = format!(
        r#"
[gateway.upstreams]
everything = "{upstream}"
[[gateway.auth.api_keys]]
user_id = "alice"
key = "${{ALICE_KEY}}"
[[gateway.auth.api_keys]]
user_id = "bob"
key = "${{BOB_KEY}}"
[gateway.rate_limits]
per_principal = {{ rate = 0.01, burst = 3 }}
"#
    );
    let (alice_key, bob_key) = ("alice-key-0123456789abcdef", "bob-key-0123456789abcdef");
    let env = [("ALICE_KEY", alice_key), ("BOB_KEY", bob_key)];
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &env);
    let mcp = format!("{gw}/mcp/everything");
    let alice = format!("Bearer {alice_key}");
    // initialize and notifications/initialized take two of alice's three tokens.
    let headers = open_session(&mcp, &[("Authorization", &alice)], "2025-06-18");
    let h: Vec<(&str, &str)> = headers
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let list = request(2, "tools/list", json!({})).to_string();
    let third = post(&mcp, &h, &list);
    assert_eq!(third.status, 200, "{}", third.body);
    let fourth = post(&mcp, &h, &list);
    assert_eq!(fourth.status, 429, "{}", fourth.body);
    let retry: u64 = fourth
        .header("retry-after")
        .and_then(|v| v.parse().ok())
        .expect("Retry-After");
    assert!(
        (1..=100).contains(&retry),
        "at 0.01/s a token takes up to 100 s: {retry}"
    );
    assert!(
        fourth.json()["error"]
            .as_str()
            .unwrap_or_default()
            .contains("rate limited (per principal)"),
        "{}",
        fourth.body
    );
    let bob = format!("Bearer {bob_key}");
    let other = post(&mcp, &[("Authorization", bob.as_str())], &initialize_body());
    assert_eq!(other.status, 200, "bob has his own bucket: {}", other.body);

    let limited = wait_events(&serve.url, "rate_limited", |e| !e.is_empty());
    assert_eq!(limited.len(), 1, "{limited:#?}");
    let m = &limited[0]["metadata"];
    assert_eq!(
        (&m["user_id"], &m["scope"], &m["server"]),
        (&json!("alice"), &json!("principal"), &json!("everything"))
    );
    assert_eq!(m["retry_after"], retry);
    assert_eq!(limited[0]["category"], "security");
}

/// `mcpwatch clients ARGS` on one config file, with `data` as the data dir; stdout.
fn clients(data: &Path, args: &[&str]) -> String {
    let out = common::bin()
        .arg("clients")
        .args(args)
        .env("MCPWATCH_DATA_DIR", data)
        .stdin(Stdio::null())
        .output()
        .expect("mcpwatch clients runs");
    assert!(
        out.status.success(),
        "clients {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn an_http_server_watched_with_gateway_is_called_through_it_and_recorded() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    // Claude Code's ~/.claude.json shape, with the remote server as a client lists it.
    let config = tmp.path().join(".claude.json");
    let original = format!(
        "{{\n  \"numStartups\": 3,\n  \"mcpServers\": {{\n    \"everything\": {{\n      \"type\": \"http\",\n      \"url\": \"{upstream}\"\n    }}\n  }}\n}}\n"
    );
    std::fs::write(&config, &original).expect("write");
    let cfg = config.to_str().expect("UTF-8");
    let data = tmp.path().join("data");
    let listen = format!("127.0.0.1:{}", free_port());
    let out = clients(
        &data,
        &["watch", "--config", cfg, "--gateway", &listen, "--yes"],
    );
    // The gateway runs with exactly the config `watch` told the user to give it.
    let snippet: String = out
        .lines()
        .skip_while(|l| l.trim() != "[gateway.upstreams]")
        .take_while(|l| l.starts_with("    "))
        .map(|l| format!("{}\n", l.trim()))
        .collect();
    assert_eq!(
        snippet,
        format!("[gateway.upstreams]\neverything = \"{upstream}\"\n"),
        "{out}"
    );
    let (_gw, gw) = gateway_on(&listen, &snippet, &serve.url, tmp.path(), &[]);
    assert_eq!(gw, format!("http://{listen}"));

    let file: Value =
        serde_json::from_str(&std::fs::read_to_string(&config).expect("read")).expect("JSON");
    let url = file["mcpServers"]["everything"]["url"]
        .as_str()
        .expect("a url");
    assert_eq!(url, format!("http://{listen}/mcp/everything"));
    let through = run_client("everything", url, None);
    assert!(through.len() >= 7, "the scenario ran: {through:?}");
    let done = wait_events(&serve.url, "execution_complete", |e| e.len() >= 3);
    assert_eq!(done.len(), 3, "{done:?}");
    assert!(done
        .iter()
        .all(|e| e["source"] == "gateway:everything" && e["metadata"]["server"] == "everything"));

    clients(&data, &["unwatch", "--config", cfg, "--yes"]);
    assert_eq!(std::fs::read_to_string(&config).expect("read"), original);
}

#[test]
fn requests_carrying_trace_context_are_recorded_in_the_callers_trace() {
    let tmp = tempfile::tempdir().expect("a temp dir");
    let serve = Serve::start(&tmp.path().join("collector"), &[]);
    let (_ev, upstream) = everything();
    let config = format!("[gateway.upstreams]\neverything = \"{upstream}\"\n");
    let (_gw, gw) = gateway(&config, &serve.url, tmp.path(), &[]);
    let mcp = format!("{gw}/mcp/everything");
    let session = initialized(&mcp);
    let s = [
        ("Mcp-Session-Id", session.as_str()),
        ("MCP-Protocol-Version", "2025-06-18"),
    ];
    let by_header = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let by_meta = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    let call = |id: u64, msg: &str, meta: Option<&str>| {
        let mut params = json!({"name": "echo", "arguments": {"message": msg}});
        if let Some(tp) = meta {
            params["_meta"] = json!({"traceparent": tp});
        }
        json!({"jsonrpc": "2.0", "id": id, "method": "tools/call", "params": params}).to_string()
    };
    // The header names the HTTP request's trace; a message's own _meta wins over it.
    let mut h = s.to_vec();
    h.push(("traceparent", by_header));
    for (id, msg, meta, headers) in [
        (2, "header", None, &h[..]),
        (3, "meta", Some(by_meta), &h[..]),
        (4, "bad", Some("00-not-a-trace-01"), &s[..]),
        (5, "none", None, &s[..]),
    ] {
        let a = post(&mcp, headers, &call(id, msg, meta));
        assert_eq!(a.status, 200, "{}", a.body);
        assert!(a.body.contains(&format!("Echo: {msg}")), "{}", a.body);
    }
    let done = wait_events(&serve.url, "execution_complete", |e| e.len() >= 4);
    let trace_of = |id: &str| -> Value {
        done.iter()
            .find(|e| e["metadata"]["request_id"] == id)
            .map(|e| e["metadata"]["traceparent"].clone())
            .unwrap_or_else(|| panic!("no execution_complete for {id}: {done:?}"))
    };
    assert_eq!(trace_of("2"), by_header);
    assert_eq!(trace_of("3"), by_meta);
    assert_eq!(
        trace_of("4"),
        Value::Null,
        "a malformed traceparent is not kept"
    );
    assert_eq!(trace_of("5"), Value::Null);
    let perf = wait_events(&serve.url, "request_performance", |e| {
        e.iter().any(|p| p["metadata"]["request_id"] == "3")
    });
    let p3 = perf
        .iter()
        .find(|p| p["metadata"]["request_id"] == "3")
        .expect("request 3's performance");
    assert_eq!(p3["metadata"]["traceparent"], by_meta);
}
