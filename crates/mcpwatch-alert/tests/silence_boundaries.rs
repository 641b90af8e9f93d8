//! What silences and acknowledgements do to alerts already open, against a real `alerts.db`
//! with a ManualClock: a silence that ends (by time or by deletion) reopens and notifies what it
//! held; a silence created for later suppresses at its start; an acknowledgement queues
//! PagerDuty's `acknowledge` and nothing else.

#[macro_use]
mod common;

use std::time::Duration;

use common::lifecycle::{brute, deliver_all, harness, outbox, Harness, Now, CHANNELS};
use mcpwatch_alert::NewSilence;
use mcpwatch_core::Timestamp;
use mcpwatch_detect::AlertStatus;

fn silence_alice(h: &Harness, starts_at: Option<Timestamp>, duration: &str) -> String {
    h.alerting
        .add_silence(
            NewSilence {
                matchers: vec![
                    "name=brute_force_detection".into(),
                    "metadata.user_id=alice".into(),
                ],
                starts_at,
                duration: Some(duration.into()),
                comment: "pen test".into(),
                ..NewSilence::default()
            },
            "tester",
        )
        .unwrap()
        .id
}

fn status(h: &Harness, id: &str) -> AlertStatus {
    h.alerting.get(id).unwrap().alert.status
}

const FIRING: [&str; 3] = [
    "chat:firing:pending",
    "mail:firing:pending",
    "pager:firing:pending",
];

on_both_backends! {
fn a_silence_that_runs_out_reopens_and_notifies_the_alert_it_held() {
    let h = harness(CHANNELS);
    silence_alice(&h, None, "30m");
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    assert_eq!(a.alert.status, AlertStatus::Suppressed);
    h.clock.advance(Duration::from_secs(29 * 60));
    h.alerting.tick(h.clock.now()).unwrap();
    assert_eq!(status(&h, &a.alert.id), AlertStatus::Suppressed);
    assert!(outbox(&h, &a.alert.id).is_empty(), "held while in force");
    h.clock.advance(Duration::from_secs(2 * 60));
    h.alerting.tick(h.clock.now()).unwrap();
    assert_eq!(status(&h, &a.alert.id), AlertStatus::New);
    assert_eq!(
        outbox(&h, &a.alert.id),
        FIRING,
        "notified as a fresh firing"
    );
    h.alerting.tick(h.clock.now()).unwrap();
    assert_eq!(outbox(&h, &a.alert.id).len(), 3, "once, not every tick");
}
}

on_both_backends! {
fn deleting_a_silence_reopens_at_once_but_another_silence_still_holds() {
    let h = harness(CHANNELS);
    let first = silence_alice(&h, None, "2h");
    let second = silence_alice(&h, None, "2h");
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    h.alerting.expire_silence(&first).unwrap();
    assert_eq!(
        status(&h, &a.alert.id),
        AlertStatus::Suppressed,
        "the second silence still holds it"
    );
    h.alerting.expire_silence(&second).unwrap();
    assert_eq!(status(&h, &a.alert.id), AlertStatus::New);
    assert_eq!(outbox(&h, &a.alert.id), FIRING);
}
}

on_both_backends! {
fn a_notification_stopped_by_a_silence_is_sent_when_it_ends() {
    let h = harness(CHANNELS);
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    assert_eq!(outbox(&h, &a.alert.id), FIRING);
    let s = silence_alice(&h, None, "1h");
    assert_eq!(status(&h, &a.alert.id), AlertStatus::Suppressed);
    // What the delivery worker records for a row whose alert is silenced.
    let tx = h.alerting.store().begin().unwrap();
    for d in tx.due(h.clock.now(), 100).unwrap() {
        tx.record_attempt(
            d.id,
            h.clock.now(),
            mcpwatch_alert::store::Attempt::Failed("not sent: the alert was silenced"),
        )
        .unwrap();
    }
    tx.commit().unwrap();
    h.clock.advance(Duration::from_secs(60));
    h.alerting.expire_silence(&s).unwrap();
    let rows = outbox(&h, &a.alert.id);
    assert_eq!(
        rows[3..],
        FIRING,
        "nobody was told, so it is due now, not after the repeat interval: {rows:?}"
    );
}
}

on_both_backends! {
fn a_silence_created_for_later_suppresses_open_alerts_when_it_starts() {
    let h = harness(CHANNELS);
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    deliver_all(&h);
    let later = Timestamp::from_micros(h.clock.now().as_micros() + 10 * 60 * 1_000_000);
    silence_alice(&h, Some(later), "1h");
    h.alerting.tick(h.clock.now()).unwrap();
    assert_eq!(status(&h, &a.alert.id), AlertStatus::New, "not yet");
    h.clock.advance(Duration::from_secs(11 * 60));
    h.alerting.tick(h.clock.now()).unwrap();
    assert_eq!(status(&h, &a.alert.id), AlertStatus::Suppressed);
}
}

on_both_backends! {
fn acknowledging_tells_pagerduty_only_and_resolving_tells_everyone() {
    let h = harness(CHANNELS);
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    deliver_all(&h);
    h.alerting.acknowledge(&a.alert.id).unwrap();
    assert_eq!(outbox(&h, &a.alert.id)[3..], ["pager:acknowledged:pending"]);
    h.alerting.acknowledge(&a.alert.id).unwrap();
    assert_eq!(
        outbox(&h, &a.alert.id).len(),
        4,
        "acknowledging twice is one"
    );
    h.alerting.resolve(&a.alert.id).unwrap();
    assert_eq!(
        outbox(&h, &a.alert.id)[4..],
        [
            "chat:resolved:pending",
            "mail:resolved:pending",
            "pager:resolved:pending"
        ]
    );
}
}

on_both_backends! {
fn acknowledging_an_alert_nobody_was_told_of_queues_nothing() {
    let h = harness(CHANNELS);
    silence_alice(&h, None, "1h");
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    let acked = h.alerting.acknowledge(&a.alert.id).unwrap();
    assert_eq!(acked.alert.status, AlertStatus::Acknowledged);
    assert!(outbox(&h, &a.alert.id).is_empty());
}
}
