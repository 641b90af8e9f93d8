//! Delivery tests against a small scripted HTTP collector on loopback.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use mcpwatch_core::{Event, Level, Timestamp};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::DeliveryConfig;
use crate::health::CaptureHealth;

/// How the mock collector answers.
#[derive(Clone, Copy)]
enum Mode {
    Accept,
    /// 400 naming event `0001` (at index 1) as invalid.
    RejectSecond,
    Busy,
}

#[derive(Clone)]
struct Mock {
    mode: Arc<Mutex<Mode>>,
    received: Arc<Mutex<Vec<String>>>,
    auth: Arc<Mutex<Vec<String>>>,
    /// The number of events in each accepted batch, in arrival order.
    sizes: Arc<Mutex<Vec<usize>>>,
}

impl Mock {
    async fn start(listener: TcpListener, mode: Mode) -> Mock {
        let mock = Mock {
            mode: Arc::new(Mutex::new(mode)),
            received: Arc::default(),
            auth: Arc::default(),
            sizes: Arc::default(),
        };
        let m = mock.clone();
        tokio::spawn(async move {
            while let Ok((conn, _)) = listener.accept().await {
                tokio::spawn(m.clone().serve(conn));
            }
        });
        mock
    }

    fn ids(&self) -> Vec<String> {
        self.received.lock().map(|v| v.clone()).unwrap_or_default()
    }

    async fn serve(self, mut conn: TcpStream) {
        let mut buf = Vec::new();
        loop {
            let Some(head_end) = find(&buf, b"\r\n\r\n") else {
                let mut chunk = [0u8; 8192];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
                continue;
            };
            let head = String::from_utf8_lossy(&buf[..head_end]).to_lowercase();
            let len: usize = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse().ok())
                .unwrap_or(0);
            if let Some(a) = head.lines().find_map(|l| l.strip_prefix("authorization:")) {
                if let Ok(mut v) = self.auth.lock() {
                    v.push(a.trim().to_string());
                }
            }
            while buf.len() < head_end + 4 + len {
                let mut chunk = [0u8; 65536];
                match conn.read(&mut chunk).await {
                    Ok(0) | Err(_) => return,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
            let body: Vec<u8> = buf.drain(..head_end + 4 + len).skip(head_end + 4).collect();
            let events: Vec<Event> = serde_json::from_slice(&body).unwrap_or_default();
            let mode = self.mode.lock().map(|m| *m).unwrap_or(Mode::Accept);
            let (status, reply) = match mode {
                Mode::Busy => ("503 Service Unavailable\r\nretry-after: 0", "{}".to_string()),
                Mode::RejectSecond if events.get(1).is_some_and(|e| e.id == "0001") => (
                    "400 Bad Request",
                    r#"{"error":{"code":"invalid_event","message":"invalid","details":[{"index":1,"field":"metadata.user_id","message":"required"}]}}"#.to_string(),
                ),
                _ => {
                    let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
                    if let Ok(mut r) = self.received.lock() {
                        r.extend(ids.iter().cloned());
                    }
                    if let Ok(mut z) = self.sizes.lock() {
                        z.push(ids.len());
                    }
                    ("202 Accepted", serde_json::json!({"accepted": ids.len(), "ids": ids}).to_string())
                }
            };
            let resp = format!(
                "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{reply}",
                reply.len()
            );
            if conn.write_all(resp.as_bytes()).await.is_err() {
                return;
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn ev(i: usize) -> Event {
    Event {
        id: format!("{i:04}"),
        timestamp: Timestamp::from_micros(1_790_000_000_000_000),
        level: Level::Info,
        category: "system".into(),
        source: "wrap:t".into(),
        event_type: "x".into(),
        message: String::new(),
        metadata: Default::default(),
        tags: vec![],
    }
}

#[test]
fn a_paced_batch_is_the_same_json_array_as_one_written_at_once() {
    let events: Vec<Event> = (0..200)
        .map(|i| {
            let mut e = ev(i);
            e.message = format!("call {i} \"quoted\" \u{1F600}");
            e.metadata.insert(
                "arguments".into(),
                serde_json::json!({"path": format!("/tmp/{i}"), "n": i}),
            );
            e
        })
        .collect();
    assert_eq!(
        super::http::encode(&events),
        serde_json::to_vec(&events).unwrap()
    );
    assert_eq!(super::http::encode(&[]), b"[]");
}

fn config(addr: std::net::SocketAddr, spool: Option<&std::path::Path>) -> DeliveryConfig {
    let mut c = DeliveryConfig::new(format!("http://{addr}"));
    c.spool_dir = spool.map(|p| p.to_path_buf());
    c.linger = Duration::from_millis(5);
    c.batch_max = 7;
    c.token = Some("s3cret".into());
    c
}

async fn wait_for(mock: &Mock, n: usize) -> Vec<String> {
    for _ in 0..400 {
        let ids = mock.ids();
        if ids.len() >= n {
            return ids;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    mock.ids()
}

/// A worker without a spool, delivering to a mock collector that accepts everything.
async fn accepting_worker() -> (
    Mock,
    Arc<CaptureHealth>,
    tokio::sync::mpsc::Sender<Event>,
    super::DeliveryWorker,
) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let mock = Mock::start(listener, Mode::Accept).await;
    let health = Arc::new(CaptureHealth::default());
    let (tx, worker) = config(addr, None).build(health.clone()).expect("builds");
    (mock, health, tx, worker)
}

#[tokio::test]
async fn batches_arrive_in_order_with_the_token() {
    let (mock, health, tx, worker) = accepting_worker().await;
    let done = tokio::spawn(worker.run());
    for i in 0..30 {
        tx.send(ev(i)).await.expect("worker running");
    }
    drop(tx);
    done.await.expect("worker ends");
    let want: Vec<String> = (0..30).map(|i| format!("{i:04}")).collect();
    assert_eq!(mock.ids(), want);
    assert_eq!(CaptureHealth::get(&health.delivered_events), 30);
    let auth = mock.auth.lock().map(|a| a.clone()).unwrap_or_default();
    assert!(auth.iter().all(|a| a == "bearer s3cret"), "{auth:?}");
}

#[tokio::test]
async fn batches_hold_at_most_batch_max_and_a_lone_event_leaves_after_the_linger() {
    let (mock, health, tx, worker) = accepting_worker().await;
    // Queued before the worker runs: its first look finds 30 waiting.
    for i in 0..30 {
        tx.send(ev(i)).await.expect("queue has room");
    }
    let done = tokio::spawn(worker.run());
    assert_eq!(wait_for(&mock, 30).await.len(), 30);
    let sizes = mock.sizes.lock().map(|z| z.clone()).unwrap_or_default();
    assert!(
        sizes.iter().all(|n| (1..=7).contains(n)),
        "batch sizes {sizes:?}, batch_max 7"
    );
    assert_eq!(sizes.iter().sum::<usize>(), 30, "{sizes:?}");
    // One more with the sender kept open: only the linger timer can send it.
    tx.send(ev(30)).await.expect("worker running");
    assert_eq!(
        wait_for(&mock, 31).await.len(),
        31,
        "the lone event was not delivered"
    );
    drop(tx);
    done.await.expect("worker ends");
    assert_eq!(CaptureHealth::get(&health.delivered_events), 31);
}

#[tokio::test]
async fn collector_down_then_up_loses_nothing() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("has an address");
    drop(listener); // nobody listens: the collector is down
    let health = Arc::new(CaptureHealth::default());
    let (tx, worker) = config(addr, Some(dir.path()))
        .build(health.clone())
        .expect("builds");
    let done = tokio::spawn(worker.run());
    for i in 0..20 {
        tx.send(ev(i)).await.expect("worker running");
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(CaptureHealth::get(&health.spooled_events) >= 20);
    let mock = Mock::start(
        TcpListener::bind(addr).await.expect("rebinds"),
        Mode::Accept,
    )
    .await;
    for i in 20..25 {
        tx.send(ev(i)).await.expect("worker running");
    }
    let mut got = wait_for(&mock, 25).await;
    got.dedup();
    let want: Vec<String> = (0..25).map(|i| format!("{i:04}")).collect();
    assert_eq!(got, want, "oldest first, nothing lost");
    drop(tx);
    done.await.expect("worker ends");
    assert_eq!(CaptureHealth::get(&health.spool_overflow_events), 0);
}

#[tokio::test]
async fn spool_overflow_is_counted() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("has an address");
    drop(listener);
    let health = Arc::new(CaptureHealth::default());
    let mut cfg = config(addr, Some(dir.path()));
    cfg.spool_max_bytes = 1_000;
    cfg.shutdown_grace = Duration::from_millis(200);
    let (tx, worker) = cfg.build(health.clone()).expect("builds");
    let done = tokio::spawn(worker.run());
    for i in 0..50 {
        tx.send(ev(i)).await.expect("worker running");
    }
    drop(tx);
    done.await.expect("worker ends");
    let spooled = CaptureHealth::get(&health.spooled_events);
    let lost = CaptureHealth::get(&health.spool_overflow_events);
    assert!(lost > 0 && spooled > 0, "spooled {spooled}, lost {lost}");
    assert_eq!(spooled + lost, 50);
}

#[tokio::test]
async fn invalid_events_are_dropped_not_retried_forever() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let mock = Mock::start(listener, Mode::RejectSecond).await;
    let health = Arc::new(CaptureHealth::default());
    let mut cfg = config(addr, None);
    cfg.linger = Duration::from_millis(200);
    let (tx, worker) = cfg.build(health.clone()).expect("builds");
    let done = tokio::spawn(worker.run());
    for i in 0..3 {
        tx.send(ev(i)).await.expect("worker running");
    }
    drop(tx);
    done.await.expect("worker ends");
    assert_eq!(mock.ids(), vec!["0000".to_string(), "0002".to_string()]);
    assert_eq!(CaptureHealth::get(&health.rejected_events), 1);
}

#[tokio::test]
async fn busy_collector_is_retried_after_it_recovers() {
    let dir = tempfile::tempdir().expect("a temp dir");
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let mock = Mock::start(listener, Mode::Busy).await;
    let health = Arc::new(CaptureHealth::default());
    let (tx, worker) = config(addr, Some(dir.path()))
        .build(health.clone())
        .expect("builds");
    let done = tokio::spawn(worker.run());
    for i in 0..5 {
        tx.send(ev(i)).await.expect("worker running");
    }
    tokio::time::sleep(Duration::from_millis(100)).await;
    if let Ok(mut m) = mock.mode.lock() {
        *m = Mode::Accept;
    }
    let got = wait_for(&mock, 5).await;
    assert_eq!(got.len(), 5, "{got:?}");
    drop(tx);
    done.await.expect("worker ends");
}

/// A spool segment left by a process that is gone (no pid is that high).
fn orphaned_segment(dir: &std::path::Path, events: &[Event]) -> std::path::PathBuf {
    std::fs::create_dir_all(dir).expect("creates the folder");
    let path = dir.join(format!("{:020}-{}.ndjson", 1, i32::MAX));
    let text: String = events
        .iter()
        .map(|e| serde_json::to_string(e).expect("serialises") + "\n")
        .collect();
    std::fs::write(&path, text).expect("writes");
    path
}

#[tokio::test]
async fn orphaned_spools_of_other_servers_follow_the_own_events() {
    let root = tempfile::tempdir().expect("a temp dir");
    let renamed: Vec<Event> = (100..112).map(ev).collect();
    orphaned_segment(&root.path().join("old-name"), &renamed);
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
    let addr = listener.local_addr().expect("has an address");
    let mock = Mock::start(listener, Mode::Accept).await;
    let health = Arc::new(CaptureHealth::default());
    let mut cfg = config(addr, Some(&root.path().join("mine")));
    cfg.orphans = Some(root.path().to_path_buf());
    let (tx, worker) = cfg.build(health.clone()).expect("builds");
    let done = tokio::spawn(worker.run());
    tx.send(ev(1)).await.expect("worker running");
    let got = wait_for(&mock, 13).await;
    assert_eq!(got[0], "0001", "the own event first: {got:?}");
    let want: Vec<String> = (100..112).map(|i| format!("{i:04}")).collect();
    assert_eq!(got[1..], want[..], "then the orphan, oldest first, once");
    drop(tx);
    done.await.expect("worker ends");
    let left = std::fs::read_dir(root.path().join("old-name"))
        .expect("the folder stays")
        .filter(|e| {
            e.as_ref()
                .is_ok_and(|e| e.path().extension().is_some_and(|x| x == "ndjson"))
        })
        .count();
    assert_eq!(
        left, 0,
        "delivered segments are removed (the owner lock files stay)"
    );
}

#[tokio::test]
async fn orphaned_spools_are_not_taken_over_while_the_collector_is_down() {
    let root = tempfile::tempdir().expect("a temp dir");
    let orphan = orphaned_segment(&root.path().join("old-name"), &[ev(100)]);
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("binds");
    let addr = listener.local_addr().expect("has an address");
    drop(listener);
    let health = Arc::new(CaptureHealth::default());
    let mut cfg = config(addr, Some(&root.path().join("mine")));
    cfg.orphans = Some(root.path().to_path_buf());
    cfg.shutdown_grace = Duration::from_millis(200);
    let (tx, worker) = cfg.build(health.clone()).expect("builds");
    let done = tokio::spawn(worker.run());
    tx.send(ev(1)).await.expect("worker running");
    tokio::time::sleep(Duration::from_millis(300)).await;
    drop(tx);
    done.await.expect("worker ends");
    assert!(
        orphan.exists(),
        "left for `mcpwatch spool` and the next wrap, under its old owner"
    );
}
