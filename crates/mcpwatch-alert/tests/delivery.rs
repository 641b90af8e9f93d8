//! The delivery worker against local receivers: retries until a receiver comes back (with a
//! stable dedup key), gives up after `max_attempts` or at once on a refusal, marks alerts
//! `sent`, and picks up what was pending before a restart.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::backend::StoreHome;
use common::Receiver;
use mcpwatch_alert::model::DeliveryStatus;
use mcpwatch_alert::{AlertRecord, Alerting};
use mcpwatch_core::config::Config;
use mcpwatch_core::{Event, Level, SystemClock, Timestamp};
use mcpwatch_detect::{AlertStatus, Finding, FindingSource, Severity};

fn open(home: &StoreHome, channels: &str, max_attempts: u32) -> Arc<Alerting> {
    let toml = format!(
        "[alerting.delivery]\nmax_attempts = {max_attempts}\ninitial_backoff = \"50ms\"\nmax_backoff = \"200ms\"\ntimeout = \"2s\"\n{channels}"
    );
    let config = Config::from_toml(&toml).expect("valid config");
    let settings = mcpwatch_alert::build(&config, &|_| None).expect("valid alerting config");
    Alerting::with_store(home.open(), settings, Arc::new(SystemClock))
}

fn pagerduty(url: &str) -> String {
    format!("[channels.oncall]\ntype = \"pagerduty\"\nrouting_key = \"k\"\nurl = \"{url}\"\n")
}

fn brute(user: &str) -> Finding {
    let group: BTreeMap<String, String> = [("metadata.user_id".to_owned(), user.to_owned())].into();
    Finding {
        source: FindingSource::Rule,
        name: "brute_force_detection".into(),
        severity: Severity::High,
        description: "5 failed authentications".into(),
        recommended_action: "Lock the account".into(),
        group,
        event_ids: vec![format!("{user}-e1")],
        at: Timestamp::from_micros(1_767_225_600_000_000),
        event: Event {
            id: format!("derived-{user}"),
            timestamp: Timestamp::from_micros(1_767_225_600_000_000),
            level: Level::Error,
            category: "security_alert".into(),
            source: "mcpwatch:detect".into(),
            event_type: "rule_trigger".into(),
            message: String::new(),
            metadata: Default::default(),
            tags: vec![],
        },
    }
}

/// Polls the alert until `done` holds (or 10 s pass).
async fn wait_alert(
    a: &Arc<Alerting>,
    id: &str,
    done: impl Fn(&AlertRecord) -> bool,
) -> AlertRecord {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let rec = a.get(id).unwrap();
        if done(&rec) || tokio::time::Instant::now() > deadline {
            return rec;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn oncall(r: &AlertRecord) -> Option<DeliveryStatus> {
    r.channels.get("oncall").map(|c| c.status)
}

on_both_backends! {
async fn a_receiver_that_is_down_gets_the_alert_once_it_is_up_with_a_stable_dedup_key() {
    let home = StoreHome::new();
    let rx = Receiver::start(503).await;
    let a = open(&home, &pagerduty(&rx.url("/v2/enqueue")), 50);
    let worker = tokio::spawn(a.clone().run_delivery());
    let alert = a.on_finding(&brute("alice")).unwrap();
    let failing = rx.wait_for(3, Duration::from_secs(10)).await;
    assert!(failing.len() >= 3, "the worker retries: {}", failing.len());
    let mid = a.get(&alert.alert.id).unwrap();
    assert_eq!(
        mid.alert.status,
        AlertStatus::New,
        "not sent while the receiver is down"
    );
    let d = &mid.channels["oncall"];
    assert_eq!(d.status, DeliveryStatus::Pending);
    assert!(
        d.last_error.as_deref().unwrap_or("").contains("503"),
        "{d:?}"
    );
    rx.set_status(202);
    let done = wait_alert(&a, &alert.alert.id, |r| {
        oncall(r) == Some(DeliveryStatus::Delivered)
    })
    .await;
    assert_eq!(oncall(&done), Some(DeliveryStatus::Delivered));
    assert_eq!(done.alert.status, AlertStatus::Sent);
    tokio::time::sleep(Duration::from_millis(400)).await;
    let all = rx.received();
    let keys: std::collections::HashSet<String> = all
        .iter()
        .map(|r| r.json()["dedup_key"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(keys.len(), 1, "every attempt carries the same dedup key");
    assert_eq!(keys.into_iter().next().unwrap(), alert.alert.fingerprint);
    let accepted = all.len() - failing.len();
    assert!(accepted >= 1);
    let delivered = done.deliveries.unwrap();
    assert_eq!(delivered.len(), 1, "one outbox row, retried in place");
    assert_eq!(delivered[0].attempts as usize, all.len());
    worker.abort();
}
}

on_both_backends! {
async fn deliveries_pending_before_a_restart_are_delivered_after_it() {
    let home = StoreHome::new();
    let rx = Receiver::start(202).await;
    let id = {
        // The first collector queues but never runs its worker (as if killed right after).
        let a = open(&home, &pagerduty(&rx.url("/v2/enqueue")), 5);
        a.on_finding(&brute("alice")).unwrap().alert.id
    };
    assert!(rx.received().is_empty());
    let a = open(&home, &pagerduty(&rx.url("/v2/enqueue")), 5);
    let worker = tokio::spawn(a.clone().run_delivery());
    let done = wait_alert(&a, &id, |r| oncall(r) == Some(DeliveryStatus::Delivered)).await;
    assert_eq!(oncall(&done), Some(DeliveryStatus::Delivered));
    assert_eq!(rx.received().len(), 1);
    worker.abort();
}
}

on_both_backends! {
async fn the_worker_gives_up_after_max_attempts_and_at_once_on_a_refusal() {
    let home = StoreHome::new();
    let busy = Receiver::start(503).await;
    let refusing = Receiver::start(400).await;
    let channels = format!(
        "{}[channels.sec]\ntype = \"slack\"\nwebhook_url = \"{}\"\n[[routes]]\nchannels = [\"oncall\", \"sec\"]\n",
        pagerduty(&busy.url("/v2/enqueue")),
        refusing.url("/slack")
    );
    let a = open(&home, &channels, 3);
    let worker = tokio::spawn(a.clone().run_delivery());
    let alert = a.on_finding(&brute("alice")).unwrap();
    let done = wait_alert(&a, &alert.alert.id, |r| {
        r.channels
            .values()
            .all(|c| c.status == DeliveryStatus::Failed)
    })
    .await;
    let pd = &done.channels["oncall"];
    assert_eq!(
        (pd.status, pd.attempts),
        (DeliveryStatus::Failed, 3),
        "{pd:?}"
    );
    assert!(
        pd.last_error
            .as_deref()
            .unwrap()
            .starts_with("gave up after 3 attempts"),
        "{pd:?}"
    );
    let slack = &done.channels["sec"];
    assert_eq!(
        (slack.status, slack.attempts),
        (DeliveryStatus::Failed, 1),
        "{slack:?}"
    );
    assert!(
        slack.last_error.as_deref().unwrap().contains("400"),
        "{slack:?}"
    );
    assert_eq!(busy.received().len(), 3);
    assert_eq!(refusing.received().len(), 1);
    assert_eq!(done.alert.status, AlertStatus::New, "never sent");
    worker.abort();
}
}

on_both_backends! {
async fn a_resolve_follows_its_trigger_and_never_overtakes_it() {
    let home = StoreHome::new();
    let rx = Receiver::start(503).await;
    let a = open(&home, &pagerduty(&rx.url("/v2/enqueue")), 50);
    let worker = tokio::spawn(a.clone().run_delivery());
    let alert = a.on_finding(&brute("alice")).unwrap();
    rx.wait_for(1, Duration::from_secs(10)).await;
    a.resolve(&alert.alert.id).unwrap();
    rx.set_status(202);
    let done = wait_alert(&a, &alert.alert.id, |r| {
        r.deliveries.as_ref().is_some_and(|d| {
            d.len() == 2 && d.iter().all(|d| d.status == DeliveryStatus::Delivered)
        })
    })
    .await;
    assert_eq!(done.deliveries.unwrap().len(), 2);
    let accepted: Vec<String> = rx
        .received()
        .iter()
        .rev()
        .take(2)
        .map(|r| r.json()["event_action"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(
        accepted,
        ["resolve", "trigger"],
        "newest first: the trigger went before the resolve"
    );
    worker.abort();
}
}
