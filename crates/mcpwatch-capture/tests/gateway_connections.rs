//! The gateway under a bounded slowloris: connections that send half a request header, or a
//! body that never finishes, are closed after their timeout; one address cannot hold more
//! than its share of connections; and a caller from elsewhere is served all along.

mod common;

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use mcpwatch_capture::gateway::config::LimitsSection;
use mcpwatch_capture::gateway::GatewayConfig;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};

use common::{collector, listen, start_gateway};

/// A connection to `to` from the loopback address `from`.
async fn connect(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from((from, 0)))
        .expect("bind a loopback address");
    socket.connect(to).await.expect("connect")
}

/// Reads until the peer closes (or 10 s pass); what was read and whether it closed.
async fn read_to_close(s: &mut TcpStream) -> (String, bool) {
    let mut got = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut got))
        .await
        .is_ok();
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

const PING: &str = r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#;

fn post(body_len: usize) -> String {
    format!("POST /mcp/echo HTTP/1.1\r\nhost: gw\r\ncontent-type: application/json\r\ncontent-length: {body_len}\r\n\r\n")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_and_surplus_connections_are_closed_and_others_are_served() {
    let up = listen(axum::Router::new().route(
        "/mcp",
        axum::routing::post(|| async {
            (
                [("content-type", "application/json")],
                r#"{"jsonrpc":"2.0","id":1,"result":{}}"#,
            )
        }),
    ))
    .await;
    let (collector, _seen) = collector().await;
    let mut cfg = GatewayConfig::default();
    cfg.upstreams
        .insert("echo".into(), format!("http://{up}/mcp"));
    let limits = LimitsSection {
        header_read_timeout_secs: 1,
        body_read_timeout_secs: 1,
        max_connections: 64,
        max_connections_per_address: 8,
        ..LimitsSection::default()
    };
    let gw = start_gateway(cfg.build(&|_| None).expect("config"), collector, limits).await;

    // An attacker at 127.0.0.1 holds its 8 connections with half-sent headers.
    let mut held = Vec::new();
    for _ in 0..8 {
        let mut s = connect([127, 0, 0, 1], gw).await;
        s.write_all(b"POST /mcp/echo HTTP/1.1\r\nhost: gw\r\nx-slow: ")
            .await
            .expect("write");
        held.push(s);
    }
    // A ninth from the same address is turned away at once.
    let started = Instant::now();
    let mut ninth = connect([127, 0, 0, 1], gw).await;
    let (answer, closed) = read_to_close(&mut ninth).await;
    assert!(closed && answer.starts_with("HTTP/1.1 503"), "{answer:?}");
    assert!(
        answer.contains("too many connections from your address"),
        "{answer}"
    );
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "refused without waiting"
    );

    // Meanwhile a caller elsewhere is served.
    let mut other = connect([127, 0, 0, 2], gw).await;
    other
        .write_all(format!("{}{PING}", post(PING.len())).as_bytes())
        .await
        .expect("write");
    let mut buf = vec![0; 4096];
    let n = tokio::time::timeout(Duration::from_secs(10), other.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    let head = String::from_utf8_lossy(&buf[..n]);
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // The half-sent headers time out and their connections are closed.
    for s in &mut held {
        let (_, closed) = read_to_close(s).await;
        assert!(closed, "a connection with half-sent headers stayed open");
    }
    // Which gives the address its connections back.
    let mut again = connect([127, 0, 0, 1], gw).await;
    again
        .write_all(format!("{}{PING}", post(PING.len())).as_bytes())
        .await
        .expect("write");
    let n = tokio::time::timeout(Duration::from_secs(10), again.read(&mut buf))
        .await
        .expect("an answer in time")
        .expect("read");
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));

    // A body that never finishes gets 408 and the connection is closed.
    let mut slow = connect([127, 0, 0, 3], gw).await;
    slow.write_all(format!("{}{{\"jsonrpc\"", post(PING.len())).as_bytes())
        .await
        .expect("write");
    let (answer, closed) = read_to_close(&mut slow).await;
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer:?}");
    assert!(answer.contains("did not arrive within 1 s"), "{answer}");
    assert!(closed, "the connection of a slow body stayed open");
}
