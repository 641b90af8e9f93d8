//! NATS publish benchmark: the edge's delivery to JetStream against raw async-nats publishing,
//! in one run, on the same real 3-node nats-server cluster (R3 stream, file storage).
//!
//! - raw: the events, serialised beforehand (not timed), published with `Nats-Msg-Id` through
//!   async-nats's JetStream context with the same bound of 256 unacknowledged publishes, until
//!   every acknowledgement is in: what the client library and the cluster can do.
//! - edge: the same kind of events into the delivery worker's channel (`DeliveryConfig` with
//!   `nats` set, as `wrap --nats` builds it), timed until the worker has counted every one
//!   delivered: serialisation, subjects, batching, publishing and acknowledgements.
//!
//! Events are what the session tracker emits for `tools/call` round trips (fresh ids each
//! round, so the duplicate window drops nothing). Rounds alternate raw and edge; medians shown.
//!
//! Run: `flock /work/bench.lock cargo bench -p mcpwatch-capture --bench nats_publish`
//! (`MCPWATCH_BENCH_EVENTS`, default 20,000 per round).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mcpwatch_capture::delivery::DeliveryConfig;
use mcpwatch_capture::health::CaptureHealth;
use mcpwatch_capture::pins::PinStore;
use mcpwatch_capture::session::{Direction, SessionConfig, SessionTracker};
use mcpwatch_core::{Event, SystemClock};
use mcpwatch_nats::async_nats;
use mcpwatch_nats::testing::TempNatsCluster;
use mcpwatch_nats::{ensure_stream, StreamSettings};

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const IN_FLIGHT: usize = 256;

fn main() {
    let n: usize = std::env::var("MCPWATCH_BENCH_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let cluster = TempNatsCluster::start();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    let urls = cluster.urls();
    rt.block_on(async {
        let client = mcpwatch_nats::connect(&urls, "bench", true).await.expect("connect");
        let js = async_nats::jetstream::new(client);
        let settings = StreamSettings {
            max_bytes: 1024 * 1024 * 1024,
            ..StreamSettings::default()
        };
        ensure_stream(&js, &settings).await.expect("stream");
        let rounds = 3;
        let (mut raw, mut edge, mut edge_big) = (Vec::new(), Vec::new(), Vec::new());
        for _ in 0..rounds {
            raw.push(raw_round(&urls, events(n)).await);
            edge.push(edge_round(&urls, events(n), None).await);
            edge_big.push(edge_round(&urls, events(n), Some(2_000)).await);
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2]
        };
        let (r, e, b) = (median(&mut raw), median(&mut edge), median(&mut edge_big));
        println!("\nNATS publish benchmark: {n} events per round, median of {rounds} rounds, 3-node cluster, R3 file stream\n");
        println!("{:<58}{:>12}", "", "events/s");
        println!("{:<58}{:>12.0}", "raw async-nats JetStream publish (pre-serialised)", r);
        println!("{:<58}{:>12.0}", "edge delivery worker to JetStream (wrap --nats)", e);
        println!("{:<58}{:>12.0}", "  the same with batches of 2,000 instead of 500", b);
        println!("\nedge / raw = {:.2}; with batches of 2,000: {:.2}", e / r, b / r);
    });
}

/// `n` events from `tools/call` round trips through a session tracker (about two per call).
fn events(n: usize) -> Vec<Event> {
    let cfg = SessionConfig {
        server: "bench".into(),
        source: "wrap:bench".into(),
        user_id: "bench-user".into(),
        request_timeout: Duration::from_secs(60),
        max_pending: 10_000,
        classification: Default::default(),
        redactor: Default::default(),
    };
    let mut tracker = SessionTracker::new(cfg, Arc::new(SystemClock), PinStore::new(None));
    let mut out = Vec::with_capacity(n + 4);
    let mut i = 0;
    while out.len() < n {
        let req = format!(
            r#"{{"jsonrpc":"2.0","id":{i},"method":"tools/call","params":{{"name":"read_file","arguments":{{"path":"/srv/data/report-{i}.txt"}}}}}}"#
        );
        let resp = format!(
            r#"{{"jsonrpc":"2.0","id":{i},"result":{{"content":[{{"type":"text","text":"Quarterly figures, page {i}: revenue up 4 %, costs flat."}}],"isError":false}}}}"#
        );
        tracker.on_frame(Direction::ClientToServer, req.as_bytes(), &mut out);
        tracker.on_frame(Direction::ServerToClient, resp.as_bytes(), &mut out);
        i += 1;
    }
    out.truncate(n);
    out
}

async fn raw_round(urls: &str, events: Vec<Event>) -> f64 {
    let client = mcpwatch_nats::connect(urls, "bench-raw", true)
        .await
        .expect("connect");
    let js = async_nats::jetstream::ContextBuilder::new()
        .timeout(Duration::from_secs(10))
        .build(client);
    let bodies: Vec<(String, bytes::Bytes)> = events
        .iter()
        .map(|e| {
            (
                e.id.clone(),
                serde_json::to_vec(e).expect("serialises").into(),
            )
        })
        .collect();
    let start = Instant::now();
    let mut acks = VecDeque::with_capacity(IN_FLIGHT);
    for (id, body) in bodies {
        if acks.len() >= IN_FLIGHT {
            let ack: async_nats::jetstream::context::PublishAckFuture =
                acks.pop_front().expect("an ack");
            ack.await.expect("acknowledged");
        }
        let msg = async_nats::jetstream::message::PublishMessage::build()
            .payload(body)
            .message_id(id);
        acks.push_back(
            js.send_publish("mcpw.ev.v1._._._", msg)
                .await
                .expect("published"),
        );
    }
    while let Some(ack) = acks.pop_front() {
        ack.await.expect("acknowledged");
    }
    events.len() as f64 / start.elapsed().as_secs_f64()
}

/// `batch`: the worker's `batch_max` instead of the default (each batch ends with a wait for
/// its last acknowledgements, which bigger batches pay less often).
async fn edge_round(urls: &str, events: Vec<Event>, batch: Option<usize>) -> f64 {
    let n = events.len() as u64;
    let mut cfg = DeliveryConfig::new("http://127.0.0.1:9");
    if let Some(b) = batch {
        cfg.batch_max = b;
    }
    cfg.nats = Some(urls.to_owned());
    cfg.queue = events.len() + 1;
    let health = Arc::new(CaptureHealth::default());
    let (tx, worker) = cfg.build(health.clone()).expect("delivery");
    let worker = tokio::spawn(worker.run());
    let start = Instant::now();
    for e in events {
        tx.send(e).await.expect("the worker runs");
    }
    while CaptureHealth::get(&health.delivered_events) < n {
        assert_eq!(
            CaptureHealth::get(&health.spooled_events),
            0,
            "NATS refused events"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    let rate = n as f64 / start.elapsed().as_secs_f64();
    drop(tx);
    worker.await.expect("worker");
    rate
}
