//! The alert lifecycle against a real `alerts.db`: folding, routing into the outbox, repeat
//! interval, severity escalation, silences, acknowledgement, resolution and the quiet period.
//! The clock is a ManualClock; nothing here touches the network.

#[macro_use]
mod common;

use std::time::Duration;

use common::lifecycle::{brute, deliver_all, finding, harness, outbox, Now, CHANNELS};
use mcpwatch_alert::store::AlertFilter;
use mcpwatch_alert::{AlertRecord, NewSilence};
use mcpwatch_core::config::Config;
use mcpwatch_core::{Event, Timestamp};
use mcpwatch_detect::{AlertStatus, Severity};

on_both_backends! {
fn a_high_alert_goes_to_email_slack_and_pagerduty_but_not_the_webhook() {
    let h = harness(CHANNELS);
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    assert_eq!(a.alert.status, AlertStatus::New);
    assert_eq!(
        outbox(&h, &a.alert.id),
        [
            "chat:firing:pending",
            "mail:firing:pending",
            "pager:firing:pending"
        ]
    );
    let c = h
        .alerting
        .on_finding(&finding(
            "privilege_escalation",
            Severity::Critical,
            "bob",
            "e2",
        ))
        .unwrap();
    assert_eq!(outbox(&h, &c.alert.id).len(), 4, "critical goes everywhere");
    let l = h
        .alerting
        .on_finding(&finding("odd", Severity::Low, "carol", "e3"))
        .unwrap();
    assert_eq!(outbox(&h, &l.alert.id), ["mail:firing:pending"]);
}
}

on_both_backends! {
fn repeats_fold_into_the_open_alert_and_notify_again_only_after_the_repeat_interval() {
    let h = harness(&format!("[alerting]\nrepeat_interval = \"1h\"\n{CHANNELS}"));
    let first = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    deliver_all(&h);
    h.clock.advance(Duration::from_secs(600));
    let again = h.alerting.on_finding(&brute("alice", "e2")).unwrap();
    assert_eq!(again.alert.id, first.alert.id);
    assert_eq!(again.alert.count, 2);
    assert_eq!(again.alert.event_ids, ["e1", "e2"]);
    assert_eq!(outbox(&h, &first.alert.id).len(), 3, "no repeat before 1h");
    h.clock.advance(Duration::from_secs(3000));
    h.alerting.on_finding(&brute("alice", "e3")).unwrap();
    let rows = outbox(&h, &first.alert.id);
    assert_eq!(rows.len(), 6, "{rows:?}");
    assert_eq!(
        rows[3..],
        [
            "chat:firing:pending",
            "mail:firing:pending",
            "pager:firing:pending"
        ]
    );
    let other = h.alerting.on_finding(&brute("bob", "e4")).unwrap();
    assert_ne!(
        other.alert.id, first.alert.id,
        "another group is another alert"
    );
}
}

on_both_backends! {
fn a_rise_in_severity_notifies_at_once() {
    let h = harness(CHANNELS);
    let a = h
        .alerting
        .on_finding(&finding("x", Severity::Low, "alice", "e1"))
        .unwrap();
    deliver_all(&h);
    let b = h
        .alerting
        .on_finding(&finding("x", Severity::Critical, "alice", "e2"))
        .unwrap();
    assert_eq!(b.alert.severity, Severity::Critical);
    assert_eq!(outbox(&h, &a.alert.id).len(), 1 + 4);
}
}

on_both_backends! {
fn silenced_alerts_are_suppressed_and_not_sent_until_the_silence_ends() {
    let h = harness(CHANNELS);
    let s = h
        .alerting
        .add_silence(
            NewSilence {
                matchers: vec![
                    "name=brute_force_detection".into(),
                    "metadata.user_id=alice".into(),
                ],
                duration: Some("2h".into()),
                comment: "pen test".into(),
                ..NewSilence::default()
            },
            "tester",
        )
        .unwrap();
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    assert_eq!(a.alert.status, AlertStatus::Suppressed);
    assert!(outbox(&h, &a.alert.id).is_empty());
    let b = h.alerting.on_finding(&brute("bob", "e2")).unwrap();
    assert_eq!(b.alert.status, AlertStatus::New, "bob is not silenced");
    h.alerting.expire_silence(&s.id).unwrap();
    let a = h.alerting.on_finding(&brute("alice", "e3")).unwrap();
    assert_eq!(a.alert.status, AlertStatus::New);
    assert_eq!(outbox(&h, &a.alert.id).len(), 3);
}
}

on_both_backends! {
fn a_new_silence_suppresses_open_alerts_it_matches() {
    let h = harness(CHANNELS);
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    h.alerting
        .add_silence(
            NewSilence {
                matchers: vec!["severity=~high|critical".into()],
                duration: Some("1h".into()),
                comment: "maintenance".into(),
                ..NewSilence::default()
            },
            "tester",
        )
        .unwrap();
    assert_eq!(
        h.alerting.get(&a.alert.id).unwrap().alert.status,
        AlertStatus::Suppressed
    );
}
}

on_both_backends! {
fn bad_silences_say_what_to_fix() {
    let h = harness(CHANNELS);
    for (req, want) in [
        (
            NewSilence {
                duration: Some("1h".into()),
                comment: "c".into(),
                ..NewSilence::default()
            },
            "at least one matcher",
        ),
        (
            NewSilence {
                matchers: vec!["name".into()],
                duration: Some("1h".into()),
                comment: "c".into(),
                ..NewSilence::default()
            },
            "no operator",
        ),
        (
            NewSilence {
                matchers: vec!["name=x".into()],
                duration: Some("1h".into()),
                ..NewSilence::default()
            },
            "comment",
        ),
        (
            NewSilence {
                matchers: vec!["name=x".into()],
                comment: "c".into(),
                ..NewSilence::default()
            },
            "ends_at or duration",
        ),
        (
            NewSilence {
                matchers: vec!["name=x".into()],
                duration: Some("soon".into()),
                comment: "c".into(),
                ..NewSilence::default()
            },
            "soon",
        ),
    ] {
        let err = h.alerting.add_silence(req, "t").unwrap_err().to_string();
        assert!(err.contains(want), "{err}");
    }
}
}

on_both_backends! {
fn acknowledged_alerts_keep_counting_but_are_not_notified_again() {
    let h = harness(&format!("[alerting]\nrepeat_interval = \"1m\"\n{CHANNELS}"));
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    deliver_all(&h);
    let acked = h.alerting.acknowledge(&a.alert.id).unwrap();
    assert_eq!(acked.alert.status, AlertStatus::Acknowledged);
    assert!(acked.acknowledged_at.is_some());
    h.clock.advance(Duration::from_secs(3600));
    let b = h.alerting.on_finding(&brute("alice", "e2")).unwrap();
    assert_eq!(
        (b.alert.status, b.alert.count),
        (AlertStatus::Acknowledged, 2)
    );
    assert_eq!(
        outbox(&h, &a.alert.id)[3..],
        ["pager:acknowledged:pending"],
        "no firing after the acknowledge"
    );
}
}

on_both_backends! {
fn resolving_queues_resolved_notifications_and_the_next_firing_opens_a_new_alert() {
    let h = harness(CHANNELS);
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    deliver_all(&h);
    let r = h.alerting.resolve(&a.alert.id).unwrap();
    assert_eq!(r.alert.status, AlertStatus::Resolved);
    assert_eq!(
        outbox(&h, &a.alert.id)[3..],
        [
            "chat:resolved:pending",
            "mail:resolved:pending",
            "pager:resolved:pending"
        ]
    );
    let again = h.alerting.resolve(&a.alert.id).unwrap();
    assert_eq!(
        outbox(&h, &again.alert.id).len(),
        6,
        "resolving twice queues nothing more"
    );
    let err = h.alerting.acknowledge(&a.alert.id).unwrap_err().to_string();
    assert!(err.contains("already resolved"), "{err}");
    let b = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    assert_ne!(b.alert.id, a.alert.id);
    assert_eq!(b.alert.count, 1);
}
}

on_both_backends! {
fn alerts_resolve_after_the_quiet_period() {
    let h = harness(&format!("[alerting]\nresolve_after = \"30m\"\n{CHANNELS}"));
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    h.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(h.alerting.tick(h.clock.now()).unwrap(), 0);
    h.alerting.on_finding(&brute("alice", "e2")).unwrap();
    h.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(
        h.alerting.tick(h.clock.now()).unwrap(),
        0,
        "the second firing restarted the quiet period"
    );
    h.clock.advance(Duration::from_secs(2 * 60));
    assert_eq!(h.alerting.tick(h.clock.now()).unwrap(), 1);
    let r: AlertRecord = h.alerting.get(&a.alert.id).unwrap();
    assert_eq!(r.alert.status, AlertStatus::Resolved);
}
}

on_both_backends! {
fn without_channels_alerts_are_kept_and_nothing_is_queued() {
    let h = harness("");
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    assert_eq!(a.alert.status, AlertStatus::New);
    assert!(outbox(&h, &a.alert.id).is_empty());
}
}

on_both_backends! {
fn explicit_routes_replace_the_severity_mapping() {
    let h = harness(&format!(
        "{CHANNELS}\n[[routes]]\nname = [\"brute_*\"]\ntags = [\"authentication\"]\nchannels = [\"hook\"]\n"
    ));
    let a = h.alerting.on_finding(&brute("alice", "e1")).unwrap();
    assert_eq!(outbox(&h, &a.alert.id), ["hook:firing:pending"]);
    let b = h
        .alerting
        .on_finding(&finding("other", Severity::Critical, "bob", "e2"))
        .unwrap();
    assert!(outbox(&h, &b.alert.id).is_empty());
}
}

on_both_backends! {
fn lists_filter_and_page_with_a_cursor() {
    let h = harness("");
    for (i, user) in ["a", "b", "c", "d", "e"].iter().enumerate() {
        h.alerting
            .on_finding(&brute(user, &format!("e{i}")))
            .unwrap();
    }
    h.alerting
        .on_finding(&finding("odd", Severity::Low, "z", "e9"))
        .unwrap();
    let mut filter = AlertFilter {
        limit: 2,
        severity: Some(Severity::High),
        ..AlertFilter::default()
    };
    let mut seen = Vec::new();
    loop {
        let (page, next) = h.alerting.list(&filter).unwrap();
        seen.extend(
            page.iter()
                .map(|a| a.alert.group["metadata.user_id"].clone()),
        );
        match next {
            Some(c) => filter.before_seq = Some(c),
            None => break,
        }
    }
    assert_eq!(
        seen,
        ["e", "d", "c", "b", "a"],
        "newest first, every page once"
    );
}
}

/// The detection fixtures, stretched in time (×60) so that alerts go quiet in between.
fn stretched_fixture_events() -> Vec<Event> {
    let dir = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../mcpwatch-detect/tests/fixtures"
    );
    let mut events = Vec::new();
    for f in [
        "rules/threshold_boundary.jsonl",
        "rules/window_edge.jsonl",
        "rules/distinct.jsonl",
        "rules/suppress_multi_group.jsonl",
        "rules/privilege_escalation.jsonl",
        "replay/mixed.jsonl",
    ] {
        let path = std::path::Path::new(dir).join(f);
        events.extend(mcpwatch_detect::load_events_jsonl(&path).expect("fixture loads"));
    }
    events.sort_by_key(|e| e.timestamp);
    let t0 = events[0].timestamp.as_micros();
    for e in &mut events {
        e.timestamp = Timestamp::from_micros(t0 + (e.timestamp.as_micros() - t0) * 60);
    }
    events
}

on_both_backends! {
fn replay_and_live_agree_on_firing_and_resolution() {
    let toml = "[alerting]\nresolve_after = \"30m\"\n";
    let h = harness(toml);
    let policy = mcpwatch_alert::config::fold_policy(&Config::from_toml(toml).unwrap()).unwrap();
    assert_eq!(policy, h.alerting.settings().fold_policy());
    let events = stretched_fixture_events();
    let settings = mcpwatch_detect::DetectSettings::default();
    let rules = mcpwatch_detect::RuleSet::defaults();
    let (replayed, _) =
        mcpwatch_detect::replay_with(events.clone(), rules.clone(), &settings, policy);

    // Live: events arrive at their own time; the periodic tick runs only now and then, so
    // some quiet alerts are resolved by the next firing rather than by a tick.
    let mut engine = mcpwatch_detect::Engine::new(rules, &settings);
    let mut out = Vec::new();
    for (i, e) in events.iter().enumerate() {
        h.clock.set(e.timestamp);
        if i % 7 == 0 {
            h.alerting.tick(e.timestamp).unwrap();
        }
        engine.process(e, &mut out);
        for f in out.drain(..) {
            h.alerting.on_finding(&f).unwrap();
        }
    }
    h.alerting.tick(h.clock.now()).unwrap();
    let filter = AlertFilter {
        limit: 10_000,
        ..AlertFilter::default()
    };
    let mut live: Vec<_> = h
        .alerting
        .list(&filter)
        .unwrap()
        .0
        .into_iter()
        .map(|r| r.alert)
        .collect();
    live.sort_by(|a, b| a.id.cmp(&b.id));
    let mut replayed = replayed;
    replayed.sort_by(|a, b| a.id.cmp(&b.id));
    let view = |a: &mcpwatch_detect::Alert| {
        (
            a.id.clone(),
            a.name.clone(),
            a.count,
            a.status == AlertStatus::Resolved,
            a.event_ids.clone(),
        )
    };
    let resolved = replayed
        .iter()
        .filter(|a| a.status == AlertStatus::Resolved)
        .count();
    assert!(
        resolved > 0 && resolved < replayed.len(),
        "the stream must resolve some alerts and leave others open ({resolved} of {})",
        replayed.len()
    );
    assert_eq!(
        live.iter().map(view).collect::<Vec<_>>(),
        replayed.iter().map(view).collect::<Vec<_>>()
    );
}
}
