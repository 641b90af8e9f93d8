//! Ingest refuses what would blind detection or grow without bound, through the real router:
//! reserved sources, timestamps ahead of the clock, oversized names and batches.

use super::*;

/// The `(field, message)` of each problem a 400 lists.
fn problems(r: &Reply) -> Vec<(String, String)> {
    r.body["error"]["details"]
        .as_array()
        .map(|d| {
            d.iter()
                .map(|e| {
                    let s = |k: &str| e[k].as_str().unwrap_or_default().to_owned();
                    (s("field"), s("message"))
                })
                .collect()
        })
        .unwrap_or_default()
}

#[tokio::test]
async fn a_client_cannot_post_as_detection() {
    let api = api();
    let mut spoofed = auth_failure("alice");
    spoofed["source"] = json!("mcpwatch:detect");
    let r = api
        .check(
            json!([spoofed]),
            StatusCode::BAD_REQUEST,
            Some("invalid_events"),
        )
        .await;
    let p = problems(&r);
    assert_eq!(p[0].0, "source", "{p:?}");
    assert!(p[0].1.contains("reserved"), "{p:?}");
    let r = api.get("/api/v1/events").await;
    assert_eq!(r.body["events"].as_array().map(Vec::len), Some(0));
}

#[tokio::test]
async fn a_timestamp_ahead_of_the_clock_gets_400_naming_the_field() {
    let api = api();
    for ts in [
        json!("9999-12-31T23:59:59Z"),
        json!(NOW as f64 / 1e6 + 301.0),
    ] {
        let mut ev = auth_failure("alice");
        ev["timestamp"] = ts;
        let r = api
            .check(ev, StatusCode::BAD_REQUEST, Some("invalid_events"))
            .await;
        let p = problems(&r);
        assert_eq!(p[0].0, "timestamp", "{p:?}");
        assert!(p[0].1.contains("ahead of the collector's clock"), "{p:?}");
    }
    let mut ev = auth_failure("alice");
    ev["timestamp"] = json!(NOW as f64 / 1e6 + 299.0);
    api.check(ev, StatusCode::ACCEPTED, None).await;
}

#[tokio::test]
async fn oversized_names_get_400_naming_the_field_and_the_limit() {
    let api = api();
    let mb = "x".repeat(1_000);
    let mut meta_key = auth_failure("alice");
    meta_key["metadata"][mb.as_str()] = json!(1);
    let cases = [
        (
            json!({"category": mb, "event_type": "x"}),
            "category",
            "limit of 64",
        ),
        (
            json!({"category": "c", "event_type": mb}),
            "event_type",
            "limit of 64",
        ),
        (meta_key, "metadata.xxxx", "limit of 128"),
    ];
    for (body, field, limit) in cases {
        let r = api
            .check(body, StatusCode::BAD_REQUEST, Some("invalid_events"))
            .await;
        let p = problems(&r);
        assert!(p[0].0.starts_with(field), "{p:?}");
        assert!(p[0].1.contains(limit), "{p:?}");
    }
}

#[tokio::test]
async fn a_batch_over_the_event_limit_gets_413() {
    let api = api();
    let small = json!({"category": "c", "event_type": "x"});
    let body = json!(vec![small.clone(); 1001]);
    assert!(
        body.to_string().len() < 64 * 1024,
        "a size problem in events, not bytes"
    );
    let r = api
        .check(body, StatusCode::PAYLOAD_TOO_LARGE, Some("too_many_events"))
        .await;
    let m = r.body["error"]["message"].as_str().unwrap_or_default();
    assert!(
        m.contains("1001 events") && m.contains("limit of 1000"),
        "{m}"
    );
    api.check(json!(vec![small; 1000]), StatusCode::ACCEPTED, None)
        .await;
}

#[tokio::test]
async fn a_client_cannot_post_as_another_token() {
    let tok = |name: &str, token: &str| TokenConfig {
        name: name.into(),
        token: Some(token.into()),
        token_sha256: None,
        roles: vec![Role::Ingest, Role::Read],
        rate_limit: None,
    };
    let api = api_with(
        vec![tok("alice", "alice-secret"), tok("bob", "bob-secret")],
        64 * 1024,
    );
    let post = |body: Value| {
        Request::post("/api/v1/events")
            .header("content-type", "application/json")
            .header("authorization", "Bearer alice-secret")
            .body(Body::from(body.to_string()))
            .unwrap()
    };
    let own = |source: Option<&str>| {
        let mut ev = auth_failure("carol");
        match source {
            Some(s) => ev["source"] = json!(s),
            None => drop(ev.as_object_mut().map(|m| m.remove("source"))),
        }
        ev
    };
    for spoof in ["api:bob", "API:bob", " api:bob"] {
        let r = api.send(post(json!([own(None), own(Some(spoof))]))).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{spoof}: {}", r.body);
        let p = problems(&r);
        assert_eq!(p.len(), 1, "{p:?}");
        assert_eq!(p[0].0, "source", "{p:?}");
        assert_eq!(r.body["error"]["details"][0]["index"], 1);
        assert!(p[0].1.contains("other than the one that sent it"), "{p:?}");
    }
    // Its own source, written out or filled in, and sources of its own naming pass.
    for source in [None, Some("api:alice"), Some("app:billing")] {
        let r = api.send(post(own(source))).await;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{source:?}: {}", r.body);
    }
    let get = Request::get("/api/v1/events")
        .header("authorization", "Bearer alice-secret")
        .body(Body::empty())
        .unwrap();
    let r = api.send(get).await;
    let sources: Vec<&str> = r.body["events"]
        .as_array()
        .map(|e| e.iter().filter_map(|e| e["source"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        sources.len(),
        3,
        "nothing of the refused batches was stored: {sources:?}"
    );
    assert!(!sources.iter().any(|s| s.contains("bob")), "{sources:?}");
}
