//! Cluster mode's leases and fencing (issue #14), on a real PostgreSQL with several nodes (each
//! its own `PgAlertStore`, pool and `Alerting`) on one database: every task is taken by one
//! node; an expired task goes to another with the next epoch and the checkpoint the first one
//! committed; a node that lost its task writes nothing; a takeover waits for a fenced
//! transaction in flight; a finding the new owner replays folds once.

#[macro_use]
mod common;

use std::sync::mpsc;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use common::lifecycle::{brute, CHANNELS};
use common::T0;
use mcpwatch_alert::postgres::cluster::{Checkpoint, Claimed, Fence, PgCluster, TaskRow};
use mcpwatch_alert::postgres::PgAlertStore;
use mcpwatch_alert::store::{AlertFilter, AlertStore, SqliteAlertStore};
use mcpwatch_alert::{AlertError, Alerting};
use mcpwatch_core::config::Config;
use mcpwatch_core::{ManualClock, Timestamp};
use mcpwatch_detect::alert::fingerprint;
use mcpwatch_store::postgres::Db;
use mcpwatch_store::testing::TempPostgres;

/// One node: its store (own pool), its alerting and its leases.
struct Node {
    name: String,
    store: Arc<PgAlertStore>,
    alerting: Arc<Alerting>,
    cluster: PgCluster,
}

struct Setup {
    pg: TempPostgres,
    url: String,
    clock: ManualClock,
}

impl Setup {
    fn new() -> Self {
        let pg = TempPostgres::start();
        let url = pg.create_database("alerts");
        let clock = ManualClock::new(Timestamp::from_micros(T0));
        Self { pg, url, clock }
    }

    fn node(&self, name: &str) -> Node {
        let store = Arc::new(PgAlertStore::open(&self.url, name, Duration::from_secs(30)).unwrap());
        let config = Config::from_toml(CHANNELS).unwrap();
        let settings = mcpwatch_alert::build(&config, &|_| None).unwrap();
        let alerting = Alerting::with_store(store.clone(), settings, Arc::new(self.clock.clone()));
        Node {
            name: name.to_owned(),
            cluster: store.cluster(),
            store,
            alerting,
        }
    }

    /// One number from the alert database, through a connection of its own.
    fn count(&self, sql: &'static str) -> i64 {
        let db = Db::connect(&self.url).unwrap();
        db.run(move |c| async move { Ok(c.query_one(sql, &[]).await?.get::<_, i64>(0)) })
            .unwrap()
    }

    /// Sessions of the test database server waiting for a lock.
    fn lock_waiters(&self) -> usize {
        self.pg
            .sql("SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'")
            .trim()
            .parse()
            .unwrap()
    }
}

/// Waits until `cond` holds, for at most 20 s.
fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn task(c: &PgCluster, name: &str) -> TaskRow {
    c.status()
        .unwrap()
        .1
        .into_iter()
        .find(|t| t.task == name)
        .unwrap_or_else(|| panic!("no task {name}"))
}

fn all_tasks() -> Vec<String> {
    let mut out = vec!["global".to_owned()];
    for family in ["user", "server", "ip"] {
        out.extend((0..16).map(|p| format!("{family}/{p}")));
        out.push(format!("{family}/_"));
    }
    out
}

fn cp(position: u64, pending: Option<u64>, snapshot: Option<&[u8]>) -> Checkpoint {
    Checkpoint {
        position,
        pending,
        snapshot: snapshot.map(<[u8]>::to_vec),
    }
}

fn acquire(n: &Node, t: &str, ttl: Duration) -> Option<Claimed> {
    n.cluster.try_acquire(t, &n.name, ttl).unwrap()
}

fn alerts(n: &Node) -> Vec<mcpwatch_alert::AlertRecord> {
    n.alerting
        .list(&AlertFilter {
            limit: 1000,
            ..AlertFilter::default()
        })
        .unwrap()
        .0
}

fn expect_fenced(r: Result<impl std::fmt::Debug, AlertError>, task: &str) -> String {
    match r {
        Err(AlertError::Fenced { task: t, message }) => {
            assert_eq!(t, task);
            assert!(message.contains("stands down"), "{message}");
            message
        }
        other => panic!("expected Fenced for {task}, got {other:?}"),
    }
}

#[test]
fn two_nodes_racing_for_52_tasks_take_each_once_at_epoch_1() {
    let s = Setup::new();
    let (a, b) = (s.node("a"), s.node("b"));
    let tasks = all_tasks();
    assert_eq!(tasks.len(), 52);
    a.cluster.ensure_tasks(&tasks).unwrap();
    b.cluster.ensure_tasks(&tasks).unwrap();
    let start = Barrier::new(2);
    let race = |n: &Node| {
        start.wait();
        tasks
            .iter()
            .filter_map(|t| acquire(n, t, Duration::from_secs(60)))
            .collect::<Vec<_>>()
    };
    let (won_a, won_b) = std::thread::scope(|sc| {
        let ha = sc.spawn(|| race(&a));
        let hb = sc.spawn(|| race(&b));
        (ha.join().unwrap(), hb.join().unwrap())
    });
    assert_eq!(
        won_a.len() + won_b.len(),
        52,
        "each task taken exactly once"
    );
    for c in won_a.iter().chain(&won_b) {
        assert_eq!(c.fence.epoch, 1, "{c:?}");
        assert_eq!((c.position, c.snapshot.is_none()), (0, true), "{c:?}");
    }
    let (_, rows) = a.cluster.status().unwrap();
    assert_eq!(rows.len(), 52);
    let order: Vec<&str> = rows.iter().map(|r| r.task.as_str()).collect();
    assert_eq!(
        (order[0], order[1], order[2], order[17], order[18]),
        ("global", "ip/0", "ip/1", "ip/_", "server/0"),
        "by family, then partition as a number: {order:?}"
    );
    assert_eq!(order[11], "ip/10");
    for c in won_a.iter().chain(&won_b) {
        let row = rows.iter().find(|r| r.task == c.fence.task).unwrap();
        assert_eq!(
            row.owner.as_deref(),
            Some(c.fence.owner.as_str()),
            "{row:?}"
        );
        // The other node cannot take it; its holder renews it at the same epoch.
        let other = if c.fence.owner == "a" { &b } else { &a };
        let holder = if c.fence.owner == "a" { &a } else { &b };
        assert_eq!(acquire(other, &c.fence.task, Duration::from_secs(60)), None);
        let again = acquire(holder, &c.fence.task, Duration::from_secs(60)).unwrap();
        assert_eq!(again.fence, c.fence);
    }
    let err = a
        .cluster
        .try_acquire("user/99", "a", Duration::from_secs(1))
        .unwrap_err()
        .to_string();
    assert!(err.contains("no cluster task user/99"), "{err}");
}

#[test]
fn an_expired_task_goes_to_the_other_node_with_the_next_epoch_and_the_checkpoint() {
    let s = Setup::new();
    let (a, b) = (s.node("a"), s.node("b"));
    a.cluster.ensure_tasks(&["user/3".to_owned()]).unwrap();
    let first = acquire(&a, "user/3", Duration::from_secs(1)).unwrap();
    let folded = a
        .alerting
        .on_findings_fenced(
            &[brute("alice", "e1")],
            &first.fence,
            &cp(10, Some(5), Some(b"state@10")),
        )
        .unwrap();
    assert_eq!(folded.len(), 1);
    // A later checkpoint without a snapshot keeps the snapshot and its position.
    a.cluster
        .checkpoint(&first.fence, &cp(12, Some(3), None))
        .unwrap();
    let row = task(&a.cluster, "user/3");
    assert_eq!(
        (
            row.position,
            row.pending,
            row.snapshot_position,
            row.snapshot_bytes
        ),
        (12, Some(3), 10, 8),
        "{row:?}"
    );
    assert_eq!(
        acquire(&b, "user/3", Duration::from_secs(30)),
        None,
        "a holds it"
    );

    let mut taken = None;
    wait_until("a's lease expired and b took user/3", || {
        taken = acquire(&b, "user/3", Duration::from_secs(30));
        taken.is_some()
    });
    let taken = taken.unwrap();
    assert_eq!(
        taken,
        Claimed {
            fence: Fence {
                task: "user/3".into(),
                owner: "b".into(),
                epoch: 2
            },
            position: 12,
            snapshot: Some((10, b"state@10".to_vec())),
        }
    );
    assert_eq!(acquire(&a, "user/3", Duration::from_secs(30)), None);
}

#[test]
fn a_stale_fence_writes_nothing_at_all() {
    let s = Setup::new();
    let (a, b) = (s.node("a"), s.node("b"));
    a.cluster.ensure_tasks(&["user/3".to_owned()]).unwrap();
    let old = acquire(&a, "user/3", Duration::from_secs(1)).unwrap().fence;
    a.alerting
        .on_findings_fenced(
            &[brute("alice", "e1")],
            &old,
            &cp(10, Some(0), Some(b"s10")),
        )
        .unwrap();
    wait_until("b took user/3", || {
        acquire(&b, "user/3", Duration::from_secs(30)).is_some()
    });
    let before = (
        s.count("SELECT count(*) FROM alerts"),
        s.count("SELECT count(*) FROM alert_findings"),
        s.count("SELECT count(*) FROM deliveries"),
    );
    assert_eq!(
        before,
        (1, 1, 3),
        "alice's alert, its finding, three channels"
    );

    // Node a wakes up and writes as if it still held user/3: a new alert, a finding folded
    // into alice's, and a checkpoint.
    let r = a.alerting.on_findings_fenced(
        &[brute("bob", "e9"), brute("alice", "e2")],
        &old,
        &cp(99, Some(1), Some(b"stale")),
    );
    let message = expect_fenced(r, "user/3");
    assert!(
        message.contains("owner b") && message.contains("epoch 2"),
        "{message}"
    );
    expect_fenced(a.cluster.checkpoint(&old, &cp(99, None, None)), "user/3");
    let after = (
        s.count("SELECT count(*) FROM alerts"),
        s.count("SELECT count(*) FROM alert_findings"),
        s.count("SELECT count(*) FROM deliveries"),
    );
    assert_eq!(after, before, "no alert, no finding, no outbox row");
    let alice = alerts(&a);
    assert_eq!(alice.len(), 1);
    assert_eq!(alice[0].alert.count, 1, "{alice:?}");
    let row = task(&a.cluster, "user/3");
    assert_eq!(
        (
            row.owner.as_deref(),
            row.epoch,
            row.position,
            row.pending,
            row.snapshot_position,
            row.snapshot_bytes
        ),
        (Some("b"), 2, 10, Some(0), 10, 3),
        "the checkpoint is the old owner's last committed one: {row:?}"
    );
    assert!(
        a.cluster
            .heartbeat("a", "", Duration::from_secs(30))
            .unwrap()
            .is_empty(),
        "node a holds nothing"
    );
}

#[test]
fn a_heartbeat_renews_what_the_node_holds_and_omits_an_expired_task() {
    let s = Setup::new();
    let (a, b) = (s.node("a"), s.node("b"));
    let names = ["user/1".to_owned(), "user/2".to_owned()];
    a.cluster.ensure_tasks(&names).unwrap();
    let short = acquire(&a, "user/1", Duration::from_millis(500))
        .unwrap()
        .fence;
    let long = acquire(&a, "user/2", Duration::from_secs(3)).unwrap().fence;
    wait_until("user/1's lease expired", || {
        task(&a.cluster, "user/1").expires_in_ms.unwrap() < 0
    });
    let held = a
        .cluster
        .heartbeat("a", "10.0.0.1:8080 v1", Duration::from_secs(60))
        .unwrap();
    assert_eq!(
        held,
        vec![long.clone()],
        "only the task whose lease is current"
    );
    let (t1, t2) = (task(&a.cluster, "user/1"), task(&a.cluster, "user/2"));
    assert!(
        t2.expires_in_ms.unwrap() > 50_000,
        "renewed for 60 s: {t2:?}"
    );
    assert!(t1.expires_in_ms.unwrap() < 0, "not renewed: {t1:?}");
    assert_eq!((t1.epoch, t2.epoch), (1, 1), "a renewal keeps the epoch");
    let message = expect_fenced(
        a.alerting
            .on_findings_fenced(&[brute("alice", "e1")], &short, &cp(1, None, None)),
        "user/1",
    );
    assert!(message.contains("expired"), "{message}");
    a.alerting
        .on_findings_fenced(&[brute("bob", "e1")], &long, &cp(1, None, None))
        .unwrap();
    assert_eq!(
        acquire(&b, "user/1", Duration::from_secs(30))
            .unwrap()
            .fence
            .epoch,
        2
    );
    assert_eq!(acquire(&b, "user/2", Duration::from_secs(30)), None);

    // A node whose heartbeat lapses is no longer live, but status still shows it.
    b.cluster
        .heartbeat("b", "b's", Duration::from_millis(300))
        .unwrap();
    wait_until("b's heartbeat expired", || {
        a.cluster
            .live_nodes()
            .unwrap()
            .iter()
            .all(|n| n.node != "b")
    });
    let live: Vec<String> = a
        .cluster
        .live_nodes()
        .unwrap()
        .into_iter()
        .map(|n| n.node)
        .collect();
    assert_eq!(live, ["a"]);
    let (nodes, _) = a.cluster.status().unwrap();
    let shown: Vec<(&str, &str, bool)> = nodes
        .iter()
        .map(|n| (n.node.as_str(), n.info.as_str(), n.alive))
        .collect();
    assert_eq!(
        shown,
        [("a", "10.0.0.1:8080 v1", true), ("b", "b's", false)]
    );
    assert!(
        nodes[1].expires_in_ms < 0 && nodes[0].expires_in_ms > 50_000,
        "{nodes:?}"
    );
}

#[test]
fn an_in_flight_fenced_transaction_holds_off_a_takeover_until_it_commits() {
    let s = Setup::new();
    let (a, b, c) = (s.node("a"), s.node("b"), s.node("c"));
    a.cluster.ensure_tasks(&["user/5".to_owned()]).unwrap();
    let fence = acquire(&a, "user/5", Duration::from_secs(2)).unwrap().fence;
    let carol = brute("carol", "e1");

    // Another transaction holds carol's fingerprint, so a's fold stops after its fence check,
    // with the lease row locked.
    let blocker = c.store.begin().unwrap();
    blocker
        .lock_fingerprint(&fingerprint(carol.source, &carol.name, &carol.group))
        .unwrap();
    let (fold_tx, fold_rx) = mpsc::channel();
    let (take_tx, take_rx) = mpsc::channel();
    std::thread::scope(|sc| {
        let (a, b, fence, carol) = (&a, &b, &fence, &carol);
        sc.spawn(move || {
            let r = a.alerting.on_findings_fenced(
                std::slice::from_ref(carol),
                fence,
                &cp(7, Some(0), Some(b"at7")),
            );
            fold_tx.send(r).unwrap();
        });
        wait_until("a's fold waits for the fingerprint", || {
            s.lock_waiters() == 1
        });
        wait_until("a's lease expired", || {
            task(&a.cluster, "user/5").expires_in_ms.unwrap() < 0
        });
        sc.spawn(move || {
            take_tx
                .send(
                    b.cluster
                        .try_acquire("user/5", "b", Duration::from_secs(30)),
                )
                .unwrap();
        });
        wait_until("b's takeover waits for the lease row", || {
            s.lock_waiters() == 2
        });
        assert!(
            take_rx.try_recv().is_err() && fold_rx.try_recv().is_err(),
            "both wait"
        );
        drop(blocker);
        let folded = fold_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap()
            .expect("a's fold, fenced before its lease expired, commits");
        assert_eq!(folded.len(), 1);
        let taken = take_rx
            .recv_timeout(Duration::from_secs(20))
            .unwrap()
            .unwrap()
            .expect("b takes the task once a's fold committed");
        assert_eq!(
            (taken.fence.epoch, taken.position, taken.snapshot),
            (2, 7, Some((7, b"at7".to_vec()))),
            "b starts from a's committed checkpoint"
        );
    });
    expect_fenced(
        a.alerting
            .on_findings_fenced(&[brute("carol", "e2")], &fence, &cp(8, None, None)),
        "user/5",
    );
    let carols = alerts(&a);
    assert_eq!(
        (carols.len(), carols[0].alert.count),
        (1, 1),
        "only the fold that held the lease: {carols:?}"
    );
}

#[test]
fn a_node_stopped_inside_a_fenced_transaction_does_not_hold_the_task() {
    let s = Setup::new();
    let (a, b) = (s.node("a"), s.node("b"));
    a.cluster.ensure_tasks(&["user/6".to_owned()]).unwrap();
    let fence = acquire(&a, "user/6", Duration::from_secs(1)).unwrap().fence;
    a.cluster
        .checkpoint(&fence, &cp(3, None, Some(b"at3")))
        .unwrap();
    // Node a opens its fenced transaction and stops sending (as under SIGSTOP), the row locked.
    let stopped = a.store.begin().unwrap();
    stopped.fence(&fence).unwrap();
    let started = Instant::now();
    let (took, taken) = mpsc::channel();
    let cluster = b.cluster.clone();
    std::thread::spawn(move || loop {
        // Blocks on the locked row until the database ends the stopped session.
        match cluster.try_acquire("user/6", "b", Duration::from_secs(30)) {
            Ok(None) => std::thread::sleep(Duration::from_millis(20)),
            other => break took.send(other).unwrap(),
        }
    });
    let taken = taken
        .recv_timeout(Duration::from_secs(20))
        .expect("b takes user/6 from the stopped node within 20 s")
        .unwrap()
        .unwrap();
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_secs(4),
        "the takeover waited for the stopped transaction to be ended: {waited:?}"
    );
    assert_eq!(
        (taken.fence.epoch, taken.position, taken.snapshot),
        (2, 3, Some((3, b"at3".to_vec())))
    );
    // Node a wakes up: its transaction is gone, and nothing it writes lands.
    let late = stopped
        .write_checkpoint(&fence, &cp(50, None, None))
        .and_then(|()| stopped.commit());
    assert!(late.is_err(), "{late:?}");
    let row = task(&b.cluster, "user/6");
    assert_eq!(
        (row.owner.as_deref(), row.position),
        (Some("b"), 3),
        "{row:?}"
    );
}

#[test]
fn a_finding_folded_by_the_old_owner_and_replayed_by_the_new_one_counts_once() {
    let s = Setup::new();
    let (a, b) = (s.node("a"), s.node("b"));
    a.cluster.ensure_tasks(&["user/7".to_owned()]).unwrap();
    let first = acquire(&a, "user/7", Duration::from_secs(30)).unwrap();
    let by_a = a
        .alerting
        .on_findings_fenced(
            &[brute("dave", "e1")],
            &first.fence,
            &cp(5, None, Some(b"s")),
        )
        .unwrap();
    a.cluster.release(&first.fence).unwrap();
    let second = acquire(&b, "user/7", Duration::from_secs(30)).unwrap();
    assert_eq!((second.fence.epoch, second.position), (2, 5));
    let outbox = s.count("SELECT count(*) FROM deliveries");
    // b replays from the snapshot: the same finding again, then a new one.
    let replayed = b
        .alerting
        .on_findings_fenced(&[brute("dave", "e1")], &second.fence, &cp(5, None, None))
        .unwrap();
    assert_eq!(replayed[0].alert.id, by_a[0].alert.id);
    assert_eq!(replayed[0].alert.count, 1, "not counted twice");
    assert_eq!(s.count("SELECT count(*) FROM alert_findings"), 1);
    assert_eq!(
        s.count("SELECT count(*) FROM deliveries"),
        outbox,
        "not notified twice"
    );
    let next = b
        .alerting
        .on_findings_fenced(&[brute("dave", "e2")], &second.fence, &cp(6, None, None))
        .unwrap();
    assert_eq!(
        (next[0].alert.id.as_str(), next[0].alert.count),
        (by_a[0].alert.id.as_str(), 2)
    );
    assert_eq!(alerts(&b).len(), 1);
}

#[test]
fn two_tasks_folding_the_same_fingerprints_in_opposite_orders_never_deadlock() {
    let s = Setup::new();
    let (a, b) = (s.node("a"), s.node("b"));
    a.cluster
        .ensure_tasks(&["user/1".to_owned(), "global".to_owned()])
        .unwrap();
    let fa = acquire(&a, "user/1", Duration::from_secs(60))
        .unwrap()
        .fence;
    let fb = acquire(&b, "global", Duration::from_secs(60))
        .unwrap()
        .fence;
    let start = Barrier::new(2);
    std::thread::scope(|sc| {
        for (n, fence, users) in [(&a, &fa, ["alice", "bob"]), (&b, &fb, ["bob", "alice"])] {
            let start = &start;
            sc.spawn(move || {
                start.wait();
                for i in 0..40u64 {
                    let batch: Vec<_> = users
                        .iter()
                        .map(|u| brute(u, &format!("{}-{u}-{i}", n.name)))
                        .collect();
                    n.alerting
                        .on_findings_fenced(&batch, fence, &cp(i + 1, None, None))
                        .unwrap_or_else(|e| panic!("{}: {e}", n.name));
                }
            });
        }
    });
    let counts: Vec<u64> = alerts(&a).iter().map(|r| r.alert.count).collect();
    assert_eq!(counts, [160 / 2, 160 / 2], "every finding folded once");
}

#[test]
fn release_and_forget_node_give_tasks_up_at_once_and_status_shows_it_all() {
    let s = Setup::new();
    let (a, b) = (s.node("a"), s.node("b"));
    let names: Vec<String> = ["user/1", "user/2", "user/3"].map(String::from).into();
    a.cluster.ensure_tasks(&names).unwrap();
    a.cluster
        .heartbeat("a", "node a", Duration::from_secs(60))
        .unwrap();
    b.cluster
        .heartbeat("b", "node b", Duration::from_secs(60))
        .unwrap();
    let fences: Vec<Fence> = names
        .iter()
        .map(|t| acquire(&a, t, Duration::from_secs(60)).unwrap().fence)
        .collect();
    a.cluster
        .checkpoint(&fences[1], &cp(40, Some(2), Some(b"snap")))
        .unwrap();

    let (nodes, tasks) = a.cluster.status().unwrap();
    assert_eq!(
        nodes
            .iter()
            .map(|n| (n.node.as_str(), n.info.as_str(), n.alive))
            .collect::<Vec<_>>(),
        [("a", "node a", true), ("b", "node b", true)]
    );
    let row = |t: &TaskRow| {
        (
            t.task.clone(),
            t.owner.clone(),
            t.epoch,
            t.position,
            t.pending,
            t.snapshot_position,
            t.snapshot_bytes,
        )
    };
    assert_eq!(
        tasks.iter().map(row).collect::<Vec<_>>(),
        [
            ("user/1".into(), Some("a".into()), 1, 0, None, 0, 0),
            ("user/2".into(), Some("a".into()), 1, 40, Some(2), 40, 4),
            ("user/3".into(), Some("a".into()), 1, 0, None, 0, 0),
        ]
    );
    assert!(
        tasks[1].updated_at.is_some() && tasks[0].updated_at.is_none(),
        "{tasks:?}"
    );
    assert!(
        tasks.iter().all(|t| t.expires_in_ms.unwrap() > 50_000),
        "{tasks:?}"
    );

    // Released: anybody's at once, at the next epoch.
    a.cluster.release(&fences[0]).unwrap();
    let t1 = task(&a.cluster, "user/1");
    assert_eq!((t1.owner, t1.expires_in_ms), (None, None));
    let b1 = acquire(&b, "user/1", Duration::from_secs(60))
        .unwrap()
        .fence;
    assert_eq!(b1.epoch, 2);
    // A stale release changes nothing.
    a.cluster.release(&fences[0]).unwrap();
    assert_eq!(task(&a.cluster, "user/1").owner.as_deref(), Some("b"));

    // Node a shuts down cleanly: its tasks are free, its row gone, b's task stays b's.
    a.cluster.forget_node("a").unwrap();
    let (nodes, tasks) = a.cluster.status().unwrap();
    assert_eq!(
        nodes.iter().map(|n| n.node.as_str()).collect::<Vec<_>>(),
        ["b"]
    );
    assert_eq!(
        tasks.iter().map(|t| t.owner.as_deref()).collect::<Vec<_>>(),
        [Some("b"), None, None]
    );
    let message = expect_fenced(
        a.cluster.checkpoint(&fences[2], &cp(1, None, None)),
        "user/3",
    );
    assert!(message.contains("released"), "{message}");
    let b2 = acquire(&b, "user/2", Duration::from_secs(60)).unwrap();
    assert_eq!(
        (b2.fence.epoch, b2.position, b2.snapshot),
        (2, 40, Some((40, b"snap".to_vec())))
    );
}

#[test]
fn bad_names_and_leases_are_refused_with_clear_errors() {
    let s = Setup::new();
    let a = s.node("a");
    let long = "x".repeat(65);
    let err = a.cluster.ensure_tasks(&[long]).unwrap_err().to_string();
    assert!(err.contains("task name must be 1 to 64 bytes"), "{err}");
    let err = a
        .cluster
        .heartbeat("a", "", Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert!(err.contains("lease must last"), "{err}");
    let err = a
        .alerting
        .on_findings_fenced(
            &[],
            &Fence {
                task: "user/1".into(),
                owner: "a".into(),
                epoch: 1,
            },
            &cp(1, None, None),
        )
        .unwrap_err();
    let message = expect_fenced(Err::<(), _>(err), "user/1");
    assert!(message.contains("does not exist"), "{message}");
}

#[test]
fn cluster_mode_on_alerts_db_is_one_clear_error() {
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn AlertStore> = Arc::new(SqliteAlertStore::open(dir.path()).unwrap());
    let config = Config::from_toml(CHANNELS).unwrap();
    let settings = mcpwatch_alert::build(&config, &|_| None).unwrap();
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let alerting = Alerting::with_store(store, settings, Arc::new(clock));
    let fence = Fence {
        task: "user/1".into(),
        owner: "a".into(),
        epoch: 1,
    };
    let err = alerting
        .on_findings_fenced(&[brute("alice", "e1")], &fence, &cp(1, None, None))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("cluster mode needs the PostgreSQL store (serve --store postgres://"),
        "{err}"
    );
    assert!(alerting
        .list(&AlertFilter {
            limit: 10,
            ..AlertFilter::default()
        })
        .unwrap()
        .0
        .is_empty());
}
