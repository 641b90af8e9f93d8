//! The stream, the publisher and the consumer against a real 3-node nats-server cluster
//! (`TempNatsCluster`, Debian's nats-server from scripts/install-peers).
//!
//! Events are what the ingest API takes from an application (`parse_batch` of authentication
//! events), the shape `serve` consumes from any edge.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures_util::StreamExt;
use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::sink::SinkFuture;
use mcpwatch_core::validate::{parse_batch, BodyFormat, Defaults};
use mcpwatch_core::{Event, EventSink, SinkError, SystemClock};
use mcpwatch_nats::consume::{self, ConsumerHealth, ConsumerSettings};
use mcpwatch_nats::testing::TempNatsCluster;
use mcpwatch_nats::{ensure_stream, PublishError, Publisher, StreamSettings};

fn events(n: usize, tag: &str) -> Vec<Event> {
    let body: Vec<serde_json::Value> = (0..n)
        .map(|i| {
            serde_json::json!({"category": "security", "event_type": "authentication",
                "source": "app", "metadata": {"user_id": format!("{tag}-{i}"), "result": "failure",
                "ip_address": format!("10.0.{}.{}", i % 7, i % 200)}})
        })
        .collect();
    let ids = IdGenerator::new();
    let defaults = Defaults {
        ids: &ids,
        clock: &SystemClock,
        source: "api",
        max_events: 100_000,
        max_future_skew: Duration::from_secs(300),
    };
    parse_batch(
        &serde_json::to_vec(&body).unwrap(),
        BodyFormat::Json,
        &defaults,
    )
    .expect("valid")
}

fn settings(name: &str) -> StreamSettings {
    StreamSettings {
        name: name.into(),
        max_bytes: 256 * 1024 * 1024,
        ..StreamSettings::default()
    }
}

async fn jetstream(urls: &str) -> async_nats::jetstream::Context {
    let client = mcpwatch_nats::connect(urls, "test", true)
        .await
        .expect("connect");
    async_nats::jetstream::new(client)
}

/// Every message of the stream: (subject, Nats-Msg-Id), in stream order.
async fn stream_messages(
    js: &async_nats::jetstream::Context,
    stream: &str,
) -> Vec<(String, String)> {
    let s = js.get_stream(stream).await.expect("stream");
    let consumer = s
        .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig::default())
        .await
        .expect("ordered consumer");
    let total = s.cached_info().state.messages as usize;
    let mut out = Vec::new();
    let mut msgs = consumer.messages().await.expect("messages");
    while out.len() < total {
        let m = tokio::time::timeout(Duration::from_secs(10), msgs.next())
            .await
            .expect("the stream is read to its end within 10s")
            .expect("more messages")
            .expect("a message");
        let id = m
            .headers
            .as_ref()
            .and_then(|h| h.get(async_nats::header::NATS_MESSAGE_ID))
            .map(|v| v.as_str().to_owned())
            .unwrap_or_default();
        out.push((m.subject.to_string(), id));
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_stream_gets_three_replicas_and_is_updated_in_place() {
    let cluster = TempNatsCluster::start();
    let js = jetstream(&cluster.urls()).await;
    let mut s = settings("EV_REPLICAS");
    assert_eq!(ensure_stream(&js, &s).await.expect("created"), 3);
    let info = js
        .get_stream("EV_REPLICAS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.num_replicas, 3);
    assert_eq!(
        info.config.storage,
        async_nats::jetstream::stream::StorageType::File
    );
    assert_eq!(info.config.subjects, vec!["mcpw.ev.v1.>".to_string()]);
    assert_eq!(info.config.duplicate_window, Duration::from_secs(120));
    s.max_age = Duration::from_secs(3600);
    ensure_stream(&js, &s).await.expect("updated");
    let info = js
        .get_stream("EV_REPLICAS")
        .await
        .unwrap()
        .info()
        .await
        .unwrap()
        .clone();
    assert_eq!(info.config.max_age, Duration::from_secs(3600));
    s.replicas = Some(5);
    let err = ensure_stream(&js, &s)
        .await
        .expect_err("5 replicas on 3 servers");
    assert!(err.to_string().contains("EV_REPLICAS"), "{err}");
    // A second stream cannot take the same subjects: the error names the way out.
    let err = ensure_stream(&js, &settings("EV_OTHER"))
        .await
        .expect_err("overlapping subjects");
    let said = err.to_string();
    assert!(
        said.contains("another stream already takes mcpw.ev.v1.>")
            && said.contains("[nats] stream"),
        "{said}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_republished_batch_is_stored_once_on_its_partition_subjects() {
    let cluster = TempNatsCluster::start();
    let js = jetstream(&cluster.urls()).await;
    ensure_stream(&js, &settings("EV_DEDUP"))
        .await
        .expect("stream");
    let client = mcpwatch_nats::connect(&cluster.urls(), "edge", false)
        .await
        .unwrap();
    let mut publisher = Publisher::new(client, 16);
    let batch = events(500, "dedup");
    publisher.publish(&batch).await.expect("acknowledged");
    // The acknowledgement was lost, say: the delivery worker sends the batch again.
    publisher.publish(&batch).await.expect("acknowledged again");
    // An event over the server's max_payload (1 MB) is named and not sent; the rest are.
    let mut two = events(2, "large");
    two[0].message = "x".repeat(1_100_000);
    match publisher.publish(&two).await {
        Err(PublishError::TooLarge { bad, max }) => assert_eq!((bad, max), (vec![0], 1024 * 1024)),
        other => panic!("expected TooLarge, got {other:?}"),
    }
    let mut got = stream_messages(&js, "EV_DEDUP").await;
    assert_eq!(got.pop().map(|(_, id)| id), Some(two[1].id.clone()));
    assert_eq!(got.len(), 500, "each id once");
    for (e, (subject, id)) in batch.iter().zip(&got) {
        assert_eq!(&e.id, id);
        assert_eq!(subject, &mcpwatch_nats::subject::subject_for(e));
        assert!(
            !subject.contains("dedup"),
            "keys never become tokens: {subject}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publishing_without_a_stream_or_a_server_says_why() {
    let cluster = TempNatsCluster::start();
    let client = mcpwatch_nats::connect(&cluster.urls(), "edge", false)
        .await
        .unwrap();
    let mut publisher = Publisher::new(client, 16);
    match publisher.publish(&events(3, "nostream")).await {
        Err(PublishError::NoStream { subject }) => assert!(subject.starts_with("mcpw.ev.v1.")),
        other => panic!("expected NoStream, got {other:?}"),
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("nats://127.0.0.1:{port}");
    let err = mcpwatch_nats::connect(&url, "serve", true)
        .await
        .expect_err("nothing listens");
    assert!(
        err.to_string().contains(&format!("127.0.0.1:{port}")),
        "{err}"
    );
    let client = mcpwatch_nats::connect(&url, "edge", false)
        .await
        .expect("an edge connects later");
    let mut publisher = Publisher::new(client, 16);
    match publisher.publish(&events(1, "down")).await {
        Err(PublishError::Unreachable(why)) => assert!(why.contains("not connected"), "{why}"),
        other => panic!("expected Unreachable, got {other:?}"),
    }
}

/// Records what the consumer submits; the first `busy` submissions are refused as overloaded.
struct Recorder {
    ids: Mutex<Vec<String>>,
    busy: Mutex<usize>,
}

impl EventSink for Recorder {
    fn submit(&self, events: Vec<Event>) -> SinkFuture {
        let mut busy = self.busy.lock().unwrap();
        let result = if *busy > 0 {
            *busy -= 1;
            Err(SinkError::Overloaded {
                retry_after_secs: 1,
            })
        } else {
            let ids: Vec<String> = events.iter().map(|e| e.id.clone()).collect();
            self.ids.lock().unwrap().extend(ids.iter().cloned());
            Ok(ids)
        };
        Box::pin(async move { result })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_consumer_submits_valid_events_and_terminates_the_rest() {
    let cluster = TempNatsCluster::start();
    let js = jetstream(&cluster.urls()).await;
    let stream = settings("EV_CONSUME");
    ensure_stream(&js, &stream).await.expect("stream");
    let client = mcpwatch_nats::connect(&cluster.urls(), "edge", false)
        .await
        .unwrap();
    let mut publisher = Publisher::new(client, 64);
    let good = events(300, "consume");
    publisher.publish(&good).await.expect("acknowledged");
    // Two messages no edge sends: one whose id is not its Nats-Msg-Id, one that is no event.
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "not-the-id");
    js.publish_with_headers(
        "mcpw.ev.v1._._._",
        headers,
        serde_json::to_vec(&good[0]).unwrap().into(),
    )
    .await
    .unwrap()
    .await
    .unwrap();
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "garbage");
    js.publish_with_headers("mcpw.ev.v1._._._", headers, "{not json".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let recorder = Arc::new(Recorder {
        ids: Mutex::default(),
        busy: Mutex::new(2),
    });
    let health = Arc::new(ConsumerHealth::default());
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn({
        let (js, recorder, health) = (js.clone(), recorder.clone(), health.clone());
        let clock: SharedClock = Arc::new(SystemClock);
        async move {
            consume::run(
                js,
                &stream,
                ConsumerSettings::default(),
                recorder,
                clock,
                health,
                async {
                    let _ = stop_rx.await;
                },
            )
            .await
        }
    });
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while recorder.ids.lock().unwrap().len() < 300
        || health.invalid.load(std::sync::atomic::Ordering::Relaxed) < 2
    {
        assert!(
            tokio::time::Instant::now() < deadline,
            "consumer too slow: {health:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop_tx.send(());
    task.await.unwrap().expect("the consumer stops cleanly");
    let got: HashSet<String> = recorder.ids.lock().unwrap().iter().cloned().collect();
    let want: HashSet<String> = good.iter().map(|e| e.id.clone()).collect();
    assert_eq!(got, want);
    assert!(health.overloaded.load(std::sync::atomic::Ordering::Relaxed) >= 2);
    // Everything was acknowledged (or terminated): the durable consumer has nothing pending.
    let mut c: async_nats::jetstream::consumer::PullConsumer = js
        .get_stream("EV_CONSUME")
        .await
        .unwrap()
        .get_consumer("mcpwatch-serve")
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let info = c.info().await.unwrap();
        if info.num_ack_pending == 0 && info.num_pending == 0 {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "still pending: {info:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
