//! Every channel against a local receiver: the payload each one sends (snapshots), the webhook
//! signature, PagerDuty's trigger/resolve pairing, how answers are classified, and email
//! through a real SMTP server.

mod common;

use std::time::Duration;

use common::{record_for, Receiver, SmtpSink, T0};
use expect_test::{expect, Expect};
use hmac::{Hmac, Mac};
use mcpwatch_alert::channels::{Receipt, SendError};
use mcpwatch_alert::{AlertRecord, Notification, NotificationKind, Settings};
use mcpwatch_core::config::Config;
use mcpwatch_core::Timestamp;

const SECRET: &str = "s3cret-for-tests";

fn settings(toml: &str) -> Settings {
    let config = Config::from_toml(toml).expect("valid config");
    let env = |k: &str| (k == "HOOK_SECRET").then(|| SECRET.to_owned());
    match mcpwatch_alert::build(&config, &env) {
        Ok(s) => s,
        Err(e) => panic!("{e:?}"),
    }
}

/// Sends one notification of `kind` for `alert` through channel `name`.
async fn send(
    s: &Settings,
    name: &str,
    kind: NotificationKind,
    alert: &AlertRecord,
) -> Result<Receipt, SendError> {
    let n = Notification {
        kind,
        alert,
        channel: name,
        link: format!("http://mcpwatch.test/api/v1/alerts/{}", alert.alert.id),
        external_url: "http://mcpwatch.test",
        now: Timestamp::from_micros(T0 + 100_000_000),
        id: format!("{}/{}/1", alert.alert.id, kind.as_str()),
    };
    s.channels[name].send(&n).await
}

fn snapshot(body: &serde_json::Value, want: Expect) {
    want.assert_eq(&serde_json::to_string_pretty(body).unwrap());
}

#[tokio::test]
async fn the_webhook_sends_alertmanager_v4_json_signed_with_hmac_sha256() {
    let rx = Receiver::start(200).await;
    let s = settings(&format!(
        "[channels.siem]\ntype = \"webhook\"\nurl = \"{}\"\nsecret = \"${{HOOK_SECRET}}\"\n",
        rx.url("/hook")
    ));
    let alert = record_for("brute_force_detection");
    let receipt = send(&s, "siem", NotificationKind::Firing, &alert)
        .await
        .unwrap();
    assert!(receipt.response.starts_with("200 "), "{receipt:?}");
    let got = rx.received();
    assert_eq!(got.len(), 1);
    let req = &got[0];
    assert_eq!(req.path, "/hook");
    let ts = req.headers["x-mcpwatch-timestamp"].to_str().unwrap();
    assert_eq!(ts, "1767225700");
    let sig = req.headers["x-mcpwatch-signature"].to_str().unwrap();
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{ts}.").as_bytes());
    mac.update(&req.body);
    let want = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    assert_eq!(sig, want, "the signature verifies over timestamp.body");
    assert_eq!(
        req.headers["x-mcpwatch-notification-id"].to_str().unwrap(),
        "0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f/firing/1",
        "receivers can drop a re-send by this id"
    );
    let mut wrong = Hmac::<sha2::Sha256>::new_from_slice(b"another secret").unwrap();
    wrong.update(format!("{ts}.").as_bytes());
    wrong.update(&req.body);
    assert_ne!(
        sig,
        format!("sha256={}", hex::encode(wrong.finalize().into_bytes()))
    );
    snapshot(
        &req.json(),
        expect![[r#"
            {
              "alerts": [
                {
                  "annotations": {
                    "count": "6",
                    "description": "6 failed authentications for <alice> & co in 5m",
                    "recommended_action": "Lock or rate-limit the account",
                    "summary": "[HIGH] brute_force_detection firing (6x) for metadata.user_id=alice",
                    "tags": "authentication,brute_force"
                  },
                  "endsAt": "0001-01-01T00:00:00Z",
                  "fingerprint": "4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f",
                  "generatorURL": "http://mcpwatch.test/api/v1/alerts/0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f",
                  "labels": {
                    "alertname": "brute_force_detection",
                    "metadata_user_id": "alice",
                    "severity": "high",
                    "source": "rule"
                  },
                  "startsAt": "2026-01-01T00:00:00.000Z",
                  "status": "firing"
                }
              ],
              "commonAnnotations": {
                "count": "6",
                "description": "6 failed authentications for <alice> & co in 5m",
                "recommended_action": "Lock or rate-limit the account",
                "summary": "[HIGH] brute_force_detection firing (6x) for metadata.user_id=alice",
                "tags": "authentication,brute_force"
              },
              "commonLabels": {
                "alertname": "brute_force_detection",
                "metadata_user_id": "alice",
                "severity": "high",
                "source": "rule"
              },
              "externalURL": "http://mcpwatch.test",
              "groupKey": "{}:{fingerprint=\"4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f\"}",
              "groupLabels": {
                "alertname": "brute_force_detection"
              },
              "receiver": "siem",
              "status": "firing",
              "truncatedAlerts": 0,
              "version": "4"
            }"#]],
    );
    let mut resolved = alert.clone();
    resolved.resolved_at = Some(Timestamp::from_micros(T0 + 3_600_000_000));
    send(&s, "siem", NotificationKind::Resolved, &resolved)
        .await
        .unwrap();
    let body = rx.received()[1].json();
    assert_eq!(body["status"], "resolved");
    assert_eq!(body["alerts"][0]["endsAt"], "2026-01-01T01:00:00.000Z");
}

#[tokio::test]
async fn slack_gets_readable_blocks_with_event_text_escaped() {
    let rx = Receiver::start(200).await;
    let s = settings(&format!(
        "[channels.sec]\ntype = \"slack\"\nwebhook_url = \"{}\"\n",
        rx.url("/services/T0/B0/XYZ")
    ));
    send(
        &s,
        "sec",
        NotificationKind::Firing,
        &record_for("brute_force_detection"),
    )
    .await
    .unwrap();
    snapshot(
        &rx.received()[0].json(),
        expect![[r#"
            {
              "blocks": [
                {
                  "text": {
                    "emoji": false,
                    "text": "🔴 [HIGH] brute_force_detection firing (6x) for metadata.user_id=alice",
                    "type": "plain_text"
                  },
                  "type": "header"
                },
                {
                  "fields": [
                    {
                      "text": "*Severity*\nHIGH",
                      "type": "mrkdwn"
                    },
                    {
                      "text": "*Status*\nfiring",
                      "type": "mrkdwn"
                    },
                    {
                      "emoji": false,
                      "text": "Who\nmetadata.user_id=alice",
                      "type": "plain_text"
                    },
                    {
                      "text": "*Count*\n6",
                      "type": "mrkdwn"
                    },
                    {
                      "text": "*Source*\nrule",
                      "type": "mrkdwn"
                    },
                    {
                      "text": "*Last seen*\n2026-01-01T00:01:30.000Z",
                      "type": "mrkdwn"
                    }
                  ],
                  "type": "section"
                },
                {
                  "text": {
                    "emoji": false,
                    "text": "What happened\n6 failed authentications for &lt;alice&gt; &amp; co in 5m",
                    "type": "plain_text"
                  },
                  "type": "section"
                },
                {
                  "text": {
                    "emoji": false,
                    "text": "Recommended action\nLock or rate-limit the account",
                    "type": "plain_text"
                  },
                  "type": "section"
                },
                {
                  "elements": [
                    {
                      "text": "<http://mcpwatch.test/api/v1/alerts/0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f|Open alert 0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f> · fingerprint `4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f`",
                      "type": "mrkdwn"
                    }
                  ],
                  "type": "context"
                }
              ],
              "mrkdwn": false,
              "text": "[HIGH] brute_force_detection firing (6x) for metadata.user_id=alice"
            }"#]],
    );
}

#[tokio::test]
async fn pagerduty_triggers_acknowledges_and_resolves_with_the_fingerprint_as_dedup_key() {
    let rx = Receiver::start(202).await;
    let s = settings(&format!(
        "[channels.oncall]\ntype = \"pagerduty\"\nrouting_key = \"R0UTING\"\nurl = \"{}\"\n",
        rx.url("/v2/enqueue")
    ));
    let alert = record_for("brute_force_detection");
    let r = send(&s, "oncall", NotificationKind::Firing, &alert)
        .await
        .unwrap();
    assert!(r.response.starts_with("202 "), "{r:?}");
    send(&s, "oncall", NotificationKind::Acknowledged, &alert)
        .await
        .unwrap();
    send(&s, "oncall", NotificationKind::Resolved, &alert)
        .await
        .unwrap();
    let got = rx.received();
    snapshot(
        &got[0].json(),
        expect![[r#"
            {
              "client": "mcpwatch",
              "client_url": "http://mcpwatch.test",
              "dedup_key": "4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f",
              "event_action": "trigger",
              "links": [
                {
                  "href": "http://mcpwatch.test/api/v1/alerts/0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f",
                  "text": "mcpwatch alert 0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f"
                }
              ],
              "payload": {
                "class": "high",
                "component": "brute_force_detection",
                "custom_details": {
                  "alert_id": "0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f",
                  "count": 6,
                  "description": "6 failed authentications for <alice> & co in 5m",
                  "event_ids": [
                    "e1",
                    "e2"
                  ],
                  "first_seen": "2026-01-01T00:00:00.000Z",
                  "group": {
                    "metadata.user_id": "alice"
                  },
                  "recommended_action": "Lock or rate-limit the account",
                  "tags": [
                    "authentication",
                    "brute_force"
                  ]
                },
                "group": "rule",
                "severity": "error",
                "source": "mcpwatch",
                "summary": "[HIGH] brute_force_detection firing (6x) for metadata.user_id=alice",
                "timestamp": "2026-01-01T00:01:30.000Z"
              },
              "routing_key": "R0UTING"
            }"#]],
    );
    snapshot(
        &got[1].json(),
        expect![[r#"
            {
              "dedup_key": "4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f",
              "event_action": "acknowledge",
              "routing_key": "R0UTING"
            }"#]],
    );
    snapshot(
        &got[2].json(),
        expect![[r#"
            {
              "dedup_key": "4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f",
              "event_action": "resolve",
              "routing_key": "R0UTING"
            }"#]],
    );
}

#[tokio::test]
async fn a_pagerduty_test_resolves_what_it_triggered() {
    let rx = Receiver::start(202).await;
    let s = settings(&format!(
        "[channels.oncall]\ntype = \"pagerduty\"\nrouting_key = \"k\"\nurl = \"{}\"\n",
        rx.url("/v2/enqueue")
    ));
    let r = send(
        &s,
        "oncall",
        NotificationKind::Test,
        &record_for("mcpwatch_test"),
    )
    .await
    .unwrap();
    assert!(
        r.response.starts_with("trigger: 202") && r.response.contains("resolve: 202"),
        "{r:?}"
    );
    let actions: Vec<String> = rx
        .received()
        .iter()
        .map(|r| format!("{}:{}", r.json()["event_action"], r.json()["dedup_key"]))
        .collect();
    assert_eq!(
        actions,
        [
            "\"trigger\":\"4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f\"",
            "\"resolve\":\"4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f\""
        ]
    );
}

#[tokio::test]
async fn answers_are_classified_and_errors_never_show_the_secret_url() {
    let rx = Receiver::start(503).await;
    let secret_path = "/services/T0/B0/SUPERSECRET";
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let s = settings(&format!(
        "[channels.up]\ntype = \"slack\"\nwebhook_url = \"{}\"\n\
         [channels.down]\ntype = \"slack\"\nwebhook_url = \"http://{dead}{secret_path}\"\n",
        rx.url(secret_path)
    ));
    let a = record_for("x");
    let mut messages = Vec::new();
    let e = send(&s, "up", NotificationKind::Firing, &a)
        .await
        .unwrap_err();
    assert!(e.retryable && e.message.contains("503"), "{e:?}");
    messages.push(e.message);
    rx.set_status(429);
    let e = send(&s, "up", NotificationKind::Firing, &a)
        .await
        .unwrap_err();
    assert!(e.retryable, "{e:?}");
    rx.set_status(404);
    let e = send(&s, "up", NotificationKind::Firing, &a)
        .await
        .unwrap_err();
    assert!(!e.retryable, "a 404 will not fix itself: {e:?}");
    messages.push(e.message);
    let e = send(&s, "down", NotificationKind::Firing, &a)
        .await
        .unwrap_err();
    assert!(e.retryable, "{e:?}");
    assert!(e.message.contains("cannot reach the receiver"), "{e:?}");
    messages.push(e.message);
    for msg in &messages {
        assert!(!msg.contains("SUPERSECRET"), "the secret leaked: {msg}");
    }
}

#[tokio::test]
async fn email_reaches_a_real_smtp_server_with_a_readable_subject_and_body() {
    let sink = SmtpSink::start();
    let s = settings(&format!(
        "[channels.mail]\ntype = \"email\"\nurl = \"smtp://127.0.0.1:{}\"\n\
         from = \"mcpwatch <mcpwatch@example.com>\"\nto = [\"secops@example.com\", \"Oncall <oncall@example.com>\"]\n",
        sink.port
    ));
    let r = send(
        &s,
        "mail",
        NotificationKind::Firing,
        &record_for("brute_force_detection"),
    )
    .await
    .unwrap();
    assert!(
        r.response.contains("250") && r.response.contains("mcpwatch-test"),
        "{r:?}"
    );
    let m = sink
        .next(Duration::from_secs(10))
        .expect("the SMTP server got the message");
    assert_eq!(m["from"], "mcpwatch@example.com");
    assert_eq!(
        m["to"],
        serde_json::json!(["secops@example.com", "oncall@example.com"])
    );
    let data = m["data"].as_str().unwrap().replace("\r\n", "\n");
    let (headers, _) = data.split_once("\n\n").unwrap();
    let unfolded = headers.replace("\n ", " ").replace("\n\t", " ");
    let subject = unfolded
        .lines()
        .find(|l| l.starts_with("Subject:"))
        .unwrap();
    assert_eq!(
        subject,
        "Subject: [mcpwatch] [HIGH] brute_force_detection firing (6x) for metadata.user_id=alice"
    );
    let body = data.split_once("\n\n").map(|(_, b)| b).unwrap_or_default();
    expect![[r#"
        The high alert brute_force_detection is firing.

        What happened: 6 failed authentications for <alice> & co in 5m
        Who: metadata.user_id=3Dalice
        Recommended action: Lock or rate-limit the account

        Severity: high
        Source: rule
        Count: 6
        First seen: 2026-01-01T00:00:00.000Z
        Last seen: 2026-01-01T00:01:30.000Z
        Tags: authentication, brute_force
        Fingerprint: 4f1c2a9be0d34c8d9f6e5a4b3c2d1e0f
        Alert: http://mcpwatch.test/api/v1/alerts/0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5=
        e6f

        Acknowledge: mcpwatch alerts ack 0b5e1f0e-6a5b-8c3d-9e2f-1a2b3c4d5e6f

    "#]]
    .assert_eq(body);
}
