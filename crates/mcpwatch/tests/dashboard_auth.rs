//! Dashboard sign-in against the real `serve` with tokens configured: pages need a sign-in,
//! an ingest-only token sees nothing, a read token sees pages but cannot ack, an admin can,
//! and a cross-site or token-less form post is refused.

mod common;

use std::time::{Duration, Instant};

use reqwest::redirect::Policy;
use reqwest::StatusCode;
use serde_json::{json, Value};

const CONFIG: &str = r#"
[[auth.tokens]]
name = "pusher"
token = "ingest-token-123"
roles = ["ingest"]
[[auth.tokens]]
name = "viewer"
token = "read-token-456"
roles = ["read"]
[[auth.tokens]]
name = "boss"
token = "admin-token-789"
roles = ["admin"]
"#;

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(Policy::none())
        .build()
        .expect("client")
}

/// Signs in with `token`; returns the response (a redirect with the cookie, or a refusal).
async fn login(http: &reqwest::Client, url: &str, token: &str) -> reqwest::Response {
    http.post(format!("{url}/login"))
        .form(&[("token", token), ("next", "/alerts")])
        .send()
        .await
        .expect("login")
}

fn cookie_of(resp: &reqwest::Response) -> String {
    let set = resp
        .headers()
        .get("set-cookie")
        .and_then(|v| v.to_str().ok())
        .expect("a session cookie")
        .to_owned();
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    set.split(';').next().expect("name=value").to_owned()
}

async fn page(http: &reqwest::Client, url: &str, path: &str, cookie: &str) -> (StatusCode, String) {
    let r = http
        .get(format!("{url}{path}"))
        .header("cookie", cookie)
        .send()
        .await
        .expect("get");
    (r.status(), r.text().await.unwrap_or_default())
}

fn csrf_in(html: &str) -> String {
    let at = html
        .find("name=\"csrf\" value=\"")
        .expect("a CSRF field on the page")
        + 19;
    html[at..].split('"').next().expect("value").to_owned()
}

#[tokio::test]
async fn dashboard_needs_sign_in_and_acts_only_with_admin_and_csrf() {
    let dir = tempfile::tempdir().expect("dir");
    let config = dir.path().join("mcpwatch.toml");
    std::fs::write(&config, CONFIG).expect("config");
    let data = dir.path().join("data");
    let serve = common::Serve::start(&data, &["--config", config.to_str().expect("path")]);
    let url = serve.url.clone();
    let http = client();

    // Five failed logins make an alert to act on.
    let events: Vec<Value> = (0..5)
        .map(|_| common::auth_event("mallory", "failure"))
        .collect();
    let r = http
        .post(format!("{url}/api/v1/events"))
        .bearer_auth("ingest-token-123")
        .json(&json!(events))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let deadline = Instant::now() + Duration::from_secs(30);
    let alert_id = loop {
        let v: Value = http
            .get(format!("{url}/api/v1/alerts"))
            .bearer_auth("read-token-456")
            .send()
            .await
            .expect("alerts")
            .json()
            .await
            .expect("json");
        if let Some(id) = v["alerts"][0]["id"].as_str() {
            break id.to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "no alert from five failed logins"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };

    // Without a session: to the sign-in form, remembering where we were going.
    let r = http.get(format!("{url}/alerts")).send().await.expect("get");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/login?next=%2Falerts");
    let (status, _) = page(&http, &url, "/", "mcpwatch_session=6e6f7065").await;
    assert_eq!(
        status,
        StatusCode::SEE_OTHER,
        "an unknown token is not a session"
    );

    // Ingest-only: refused at sign-in, and a forged cookie with it sees nothing.
    let r = login(&http, &url, "ingest-token-123").await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(r
        .text()
        .await
        .unwrap_or_default()
        .contains("lacks the read role"));
    let forged = format!(
        "mcpwatch_session={}",
        "ingest-token-123"
            .bytes()
            .map(|b| format!("{b:02x}"))
            .collect::<String>()
    );
    for path in ["/", "/alerts", "/events", "/live/stream"] {
        let (status, _) = page(&http, &url, path, &forged).await;
        assert_eq!(status, StatusCode::FORBIDDEN, "{path} with an ingest token");
    }
    let r = login(&http, &url, "wrong").await;
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);

    // Read: sees pages, cannot ack (and is not offered the button).
    let r = login(&http, &url, "read-token-456").await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert_eq!(r.headers()["location"], "/alerts");
    let reader = cookie_of(&r);
    let (status, body) = page(&http, &url, &format!("/alerts/{alert_id}"), &reader).await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        body.contains("brute_force_detection") && !body.contains("/ack\""),
        "read sees no actions"
    );
    let csrf = csrf_in(&body);
    let r = http
        .post(format!("{url}/alerts/{alert_id}/ack"))
        .header("cookie", &reader)
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "read cannot ack");

    // Admin: a post without the CSRF token, or from another site, is refused; a real one acks.
    let admin = cookie_of(&login(&http, &url, "admin-token-789").await);
    let (_, body) = page(&http, &url, &format!("/alerts/{alert_id}"), &admin).await;
    let csrf = csrf_in(&body);
    assert_ne!(
        csrf,
        csrf_in(&page(&http, &url, "/", &reader).await.1),
        "CSRF tokens are per session"
    );
    let ack = format!("{url}/alerts/{alert_id}/ack");
    let r = http
        .post(&ack)
        .header("cookie", &admin)
        .form(&[("csrf", "")])
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "no CSRF token");
    let r = http
        .post(&ack)
        .header("cookie", &admin)
        .header("origin", "http://evil.example")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "cross-origin form post");
    let r = http
        .post(&ack)
        .header("cookie", &admin)
        .header("sec-fetch-site", "cross-site")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), StatusCode::FORBIDDEN, "cross-site form post");
    let status: Value = http
        .get(format!("{url}/api/v1/alerts/{alert_id}"))
        .bearer_auth("read-token-456")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_ne!(
        status["status"], "acknowledged",
        "nothing refused changed the alert"
    );
    let r = http
        .post(&ack)
        .header("cookie", &admin)
        .header("sec-fetch-site", "same-origin")
        .form(&[("csrf", csrf.as_str())])
        .send()
        .await
        .expect("ack");
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let status: Value = http
        .get(format!("{url}/api/v1/alerts/{alert_id}"))
        .bearer_auth("read-token-456")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    assert_eq!(status["status"], "acknowledged");

    // The sign-in never redirects off the collector.
    let r = http
        .post(format!("{url}/login"))
        .form(&[("token", "read-token-456"), ("next", "//evil.example/x")])
        .send()
        .await
        .expect("login");
    assert_eq!(r.headers()["location"], "/");
    drop(serve);
}
