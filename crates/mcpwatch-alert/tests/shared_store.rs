//! What only a store shared by several collectors must do, on a real PostgreSQL with two
//! `PgAlertStore`s (two nodes) on one database: a finding both nodes fold at once makes one
//! alert; the same finding seen twice folds once; an outbox row is handed to one node until its
//! claim expires, then to another, and a node whose claim was taken over cannot record over the
//! new holder.

#[macro_use]
mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::lifecycle::{brute, CHANNELS};
use mcpwatch_alert::postgres::PgAlertStore;
use mcpwatch_alert::store::{AlertFilter, AlertStore, Attempt};
use mcpwatch_alert::Alerting;
use mcpwatch_core::config::Config;
use mcpwatch_core::{ManualClock, Timestamp};
use mcpwatch_detect::AlertStatus;
use mcpwatch_store::testing::TempPostgres;

const T0: i64 = 1_767_225_600_000_000;

fn node(url: &str, name: &str, claim_for: Duration) -> Arc<PgAlertStore> {
    Arc::new(PgAlertStore::open(url, name, claim_for).unwrap())
}

fn alerting(store: Arc<PgAlertStore>, clock: &ManualClock) -> Arc<Alerting> {
    let config = Config::from_toml(CHANNELS).unwrap();
    let settings = mcpwatch_alert::build(&config, &|_| None).unwrap();
    Alerting::with_store(store, settings, Arc::new(clock.clone()))
}

fn all(a: &Alerting) -> Vec<mcpwatch_alert::AlertRecord> {
    a.list(&AlertFilter {
        limit: 1000,
        ..AlertFilter::default()
    })
    .unwrap()
    .0
}

/// Two nodes on a fresh database, on one manual clock.
fn two_nodes() -> (TempPostgres, Arc<Alerting>, Arc<Alerting>) {
    let pg = TempPostgres::start();
    let url = pg.create_database("alerts");
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let a = alerting(node(&url, "a", Duration::from_secs(30)), &clock);
    let b = alerting(node(&url, "b", Duration::from_secs(30)), &clock);
    (pg, a, b)
}

#[test]
fn findings_of_two_nodes_at_once_fold_into_one_alert_per_fingerprint_and_notify_once() {
    let (_pg, a, b) = two_nodes();
    // 20 users, each fired on both nodes at the same moment with events of each node's own.
    std::thread::scope(|s| {
        for (n, al) in [("a", &a), ("b", &b)] {
            s.spawn(move || {
                for u in 0..20 {
                    al.on_finding(&brute(&format!("user{u}"), &format!("{n}-e{u}")))
                        .unwrap();
                }
            });
        }
    });
    let alerts = all(&a);
    assert_eq!(alerts.len(), 20, "one alert per fingerprint");
    for r in &alerts {
        assert_eq!(r.alert.count, 2, "both nodes' findings folded: {r:?}");
        let rows = b.get(&r.alert.id).unwrap().deliveries.unwrap();
        assert_eq!(
            rows.len(),
            3,
            "one firing row per channel (mail, chat, pager), not one per node: {rows:?}"
        );
    }
}

#[test]
fn the_same_finding_seen_by_two_nodes_folds_once() {
    let (_pg, a, b) = two_nodes();
    let first = a.on_finding(&brute("alice", "e1")).unwrap();
    let again = b.on_finding(&brute("alice", "e1")).unwrap();
    assert_eq!(again.alert.id, first.alert.id);
    assert_eq!(
        again.alert.count, 1,
        "the same finding is not counted twice"
    );
    let next = b.on_finding(&brute("alice", "e2")).unwrap();
    assert_eq!(
        (next.alert.id.as_str(), next.alert.count),
        (first.alert.id.as_str(), 2)
    );
}

#[test]
fn an_outbox_row_is_one_nodes_until_its_claim_expires() {
    let pg = TempPostgres::start();
    let url = pg.create_database("alerts");
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let (sa, sb) = (
        node(&url, "a", Duration::from_secs(1)),
        node(&url, "b", Duration::from_secs(1)),
    );
    let a = alerting(sa.clone(), &clock);
    let rec = a.on_finding(&brute("alice", "e1")).unwrap();
    let now = Timestamp::from_micros(T0);

    let claim = |s: &PgAlertStore| {
        let tx = s.begin().unwrap();
        let rows = tx.due(now, 100).unwrap();
        tx.commit().unwrap();
        rows
    };
    let by_a = claim(&sa);
    assert_eq!(by_a.len(), 3, "{by_a:?}");
    assert!(claim(&sb).is_empty(), "rows node a claimed are not b's");
    assert!(claim(&sa).is_empty(), "nor a's again while it sends them");

    // Node a dies without recording; its claims expire on the database's clock.
    let deadline = Instant::now() + Duration::from_secs(20);
    let by_b = loop {
        let rows = claim(&sb);
        if !rows.is_empty() || Instant::now() > deadline {
            break rows;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(
        by_b.iter().map(|d| d.id).collect::<Vec<_>>(),
        by_a.iter().map(|d| d.id).collect::<Vec<_>>(),
        "after the claim expired node b takes the same rows"
    );
    // A late answer on node a no longer counts: the row is b's.
    let tx = sa.begin().unwrap();
    tx.record_attempt(by_a[0].id, now, Attempt::Failed("late"))
        .unwrap();
    tx.commit().unwrap();
    let tx = sb.begin().unwrap();
    for d in &by_b {
        tx.record_attempt(d.id, now, Attempt::Delivered("200 ok"))
            .unwrap();
    }
    tx.commit().unwrap();
    let done = a.get(&rec.alert.id).unwrap();
    for d in done.deliveries.unwrap() {
        assert_eq!(d.status.as_str(), "delivered", "{d:?}");
        assert_eq!(
            d.attempts, 1,
            "only the holder's attempt is recorded: {d:?}"
        );
    }
    assert!(claim(&sa).is_empty() && claim(&sb).is_empty());
    assert_eq!(
        done.alert.status,
        AlertStatus::New,
        "mark_sent is the worker's"
    );
}

#[test]
fn a_read_sees_one_snapshot_while_a_delivery_commits_beside_it() {
    let pg = TempPostgres::start();
    let url = pg.create_database("alerts");
    let clock = ManualClock::new(Timestamp::from_micros(T0));
    let store = node(&url, "a", Duration::from_secs(30));
    let a = alerting(store.clone(), &clock);
    let rec = a.on_finding(&brute("alice", "e1")).unwrap();
    let now = Timestamp::from_micros(T0);
    let filter = AlertFilter {
        limit: 10,
        ..AlertFilter::default()
    };
    let status = |(alerts, _): &(Vec<mcpwatch_alert::AlertRecord>, Option<i64>)| {
        let r = &alerts[0];
        let delivered = r
            .channels
            .values()
            .filter(|c| c.status.as_str() == "delivered")
            .count();
        (r.alert.status, delivered)
    };
    let read = store.read().unwrap();
    let before = read.list(&filter).unwrap();
    assert_eq!(status(&before), (AlertStatus::New, 0));
    // A worker delivers every row and marks the alert sent, in one transaction, between two
    // statements of the read (a page's alerts, then its deliveries, are two statements).
    let tx = store.begin().unwrap();
    for d in tx.due(now, 100).unwrap() {
        tx.record_attempt(d.id, now, Attempt::Delivered("200 ok"))
            .unwrap();
    }
    tx.mark_sent(&rec.alert.id).unwrap();
    tx.commit().unwrap();
    assert_eq!(
        status(&read.list(&filter).unwrap()),
        (AlertStatus::New, 0),
        "the read still sees the state it started with, alerts and deliveries alike"
    );
    drop(read);
    assert_eq!(status(&a.list(&filter).unwrap()), (AlertStatus::Sent, 3));
    // Locking reads belong in `begin`, not in a read.
    assert!(store.read().unwrap().get(&rec.alert.id, false).is_err());
}

#[test]
fn a_wrong_database_is_one_clear_error() {
    let pg = TempPostgres::start();
    let err = PgAlertStore::open(&pg.url("nosuch"), "a", Duration::from_secs(5))
        .err()
        .expect("no such database")
        .to_string();
    assert!(err.contains("does not exist"), "{err}");
    assert!(!err.contains(TempPostgres::PASSWORD), "{err}");
}
