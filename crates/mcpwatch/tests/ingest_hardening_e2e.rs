//! Nobody can blind the collector through ingest, through the real binary: a client cannot post
//! as detection, cannot date an event into the future, and `serve` keeps answering under a
//! bounded slowloris.

mod common;

use std::time::{Duration, Instant};

use common::{auth_event, post, Serve};
use serde_json::{json, Value};

/// Events matching `query`, polled until there are `want` of them or `within` has passed.
async fn wait_for(
    client: &reqwest::Client,
    url: &str,
    query: &[(&str, &str)],
    want: usize,
    within: Duration,
) -> Vec<Value> {
    let deadline = Instant::now() + within;
    loop {
        let page: Value = client
            .get(format!("{url}/api/v1/events"))
            .query(query)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let events = page["events"].as_array().cloned().unwrap_or_default();
        if events.len() >= want || Instant::now() > deadline {
            return events;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn failures(n: usize, source: &str) -> Value {
    Value::Array(
        (0..n)
            .map(|_| {
                let mut e = auth_event("alice", "failure");
                e["source"] = json!(source);
                e
            })
            .collect(),
    )
}

#[tokio::test]
async fn twenty_failed_logins_posted_as_detection_are_refused_and_cannot_hide() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    // The attack: 20 failed logins dressed as mcpwatch's own derived events.
    let (status, body) = post(&client, &serve.url, &failures(20, "mcpwatch:detect"))
        .await
        .unwrap();
    assert_eq!(status, 400, "{body}");
    let details = body["error"]["details"].as_array().unwrap();
    assert_eq!(details.len(), 20, "{body}");
    assert!(details.iter().all(|d| d["field"] == "source"), "{body}");
    assert!(wait_for(&client, &serve.url, &[], 1, Duration::ZERO)
        .await
        .is_empty());
    // The attacker must use a source of its own, and then detection sees it.
    let (status, _) = post(&client, &serve.url, &failures(20, "app"))
        .await
        .unwrap();
    assert_eq!(status, 202);
    let alerts = wait_for(
        &client,
        &serve.url,
        &[("category", "security_alert")],
        1,
        Duration::from_secs(15),
    )
    .await;
    assert!(
        alerts
            .iter()
            .any(|a| a["metadata"]["rule_name"] == "brute_force_detection"),
        "{alerts:?}"
    );
    serve.stop();
}

#[tokio::test]
async fn a_far_future_event_is_refused_and_open_windows_survive() {
    let dir = tempfile::tempdir().unwrap();
    let serve = Serve::start(dir.path(), &[]);
    let client = reqwest::Client::new();
    let (status, _) = post(&client, &serve.url, &failures(4, "app"))
        .await
        .unwrap();
    assert_eq!(status, 202);
    let mut future = auth_event("mallory", "success");
    future["timestamp"] = json!("9999-12-31T23:59:59Z");
    let (status, body) = post(&client, &serve.url, &future).await.unwrap();
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"]["details"][0]["field"], "timestamp", "{body}");
    // The fifth failure completes the window the refused event would have wiped.
    let (status, body) = post(&client, &serve.url, &failures(1, "app"))
        .await
        .unwrap();
    assert_eq!(status, 202);
    let alerts = wait_for(
        &client,
        &serve.url,
        &[("category", "security_alert")],
        1,
        Duration::from_secs(15),
    )
    .await;
    assert_eq!(alerts.len(), 1, "{alerts:?}");
    assert_eq!(
        alerts[0]["metadata"]["event_ids"].as_array().map(Vec::len),
        Some(5)
    );
    // Ids assigned afterwards carry the present time, not 9999.
    let id = body["ids"][0].as_str().unwrap();
    let uuid_ms = u64::from_str_radix(&id.replace('-', "")[..12], 16).unwrap();
    assert!(uuid_ms < 4_102_444_800_000, "{id} is dated after 2100");
    serve.stop();
}

/// How a held connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ended {
    /// Answered 429 or reset at once: over the per-address cap.
    Refused,
    /// Closed without an answer (the header read timeout), after this long.
    Closed(Duration),
    /// Still open at the deadline.
    Open,
}

/// Opens a connection from `from` and sends the start of a request head, never its end.
async fn half_open(from: &str, to: std::net::SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    use tokio::io::AsyncWriteExt;
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind(format!("{from}:0").parse().unwrap())?;
    let mut stream = socket.connect(to).await?;
    stream
        .write_all(b"GET /healthz HTTP/1.1\r\nhost: mcpwatch\r\nx-slow: ")
        .await?;
    Ok(stream)
}

/// Reads until the server ends the connection; says how.
async fn ending(mut stream: tokio::net::TcpStream, opened: Instant, within: Duration) -> Ended {
    use tokio::io::AsyncReadExt;
    let mut got = Vec::new();
    let read = tokio::time::timeout(within, stream.read_to_end(&mut got)).await;
    match read {
        Err(_) => Ended::Open,
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionReset => Ended::Refused,
        Ok(_) if got.starts_with(b"HTTP/1.1 429") => Ended::Refused,
        Ok(_) => Ended::Closed(opened.elapsed()),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slowloris_from_one_address_leaves_health_and_ingest_answering() {
    const FLOOD: usize = 2_000;
    const PER_ADDRESS: usize = 64;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("mcpwatch.toml");
    std::fs::write(
        &config,
        format!(
            "[server]\nheader_read_timeout = \"4s\"\nbody_read_timeout = \"2s\"\n\
             max_connections = 512\nmax_connections_per_address = {PER_ADDRESS}\n"
        ),
    )
    .unwrap();
    let serve = Serve::start(
        &dir.path().join("data"),
        &["--config", config.to_str().unwrap()],
    );
    let addr: std::net::SocketAddr = serve.url.trim_start_matches("http://").parse().unwrap();
    // The attacker: a few thousand half-sent heads from 127.0.0.2.
    let start = Instant::now();
    let mut held = Vec::new();
    for _ in 0..FLOOD {
        let stream = half_open("127.0.0.2", addr)
            .await
            .expect("connect on loopback");
        held.push(tokio::spawn(ending(
            stream,
            Instant::now(),
            Duration::from_secs(30),
        )));
    }
    // Health and ingest answer from another address while the flood is held.
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .unwrap();
    let health = client.get(format!("{}/healthz", serve.url)).send().await;
    assert_eq!(
        health.map(|r| r.status().as_u16()).ok(),
        Some(200),
        "healthz under the flood"
    );
    let (status, _) = post(&client, &serve.url, &failures(1, "app"))
        .await
        .unwrap();
    assert_eq!(status, 202, "ingest under the flood");
    let answered_within = start.elapsed();
    // A body that never completes is cut off by the body deadline with a clear answer.
    let slow_body = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"POST /api/v1/events HTTP/1.1\r\nhost: m\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n[{\"cat")
            .await
            .unwrap();
        let mut answer = vec![0; 512];
        let n = tokio::time::timeout(Duration::from_secs(15), s.read(&mut answer))
            .await
            .expect("an answer to a body that stalls")
            .unwrap();
        String::from_utf8_lossy(&answer[..n]).into_owned()
    };
    assert!(slow_body.starts_with("HTTP/1.1 408"), "{slow_body}");
    assert!(slow_body.contains("body_timeout"), "{slow_body}");
    // Everything over the per-address cap was turned away at once; the rest were closed by the
    // header timeout, not before it.
    let mut refused = 0;
    let mut timed_out = Vec::new();
    for h in held {
        match h.await.unwrap() {
            Ended::Refused => refused += 1,
            Ended::Closed(after) => timed_out.push(after),
            Ended::Open => panic!("a half-open connection outlived the header timeout"),
        }
    }
    assert_eq!(
        refused,
        FLOOD - PER_ADDRESS,
        "answered within {answered_within:?}"
    );
    assert_eq!(timed_out.len(), PER_ADDRESS);
    assert!(
        timed_out.iter().all(|d| *d >= Duration::from_millis(3_500)),
        "closed before the header timeout: {timed_out:?}"
    );
    // With the flood gone the address is welcome again.
    let again = half_open("127.0.0.2", addr).await.unwrap();
    drop(again);
    let health = client.get(format!("{}/healthz", serve.url)).send().await;
    assert_eq!(health.map(|r| r.status().as_u16()).ok(), Some(200));
    serve.stop();
}
