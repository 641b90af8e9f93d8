//! Attacker-chosen text through all four channels, against the real receivers (a local HTTP
//! recorder for webhook, Slack and PagerDuty; aiosmtpd for email): mentions, links, markup,
//! HTML, header injections, 10,000-character values, invalid escapes and bidi overrides in the
//! user id, tool name, server name and description. Each must be delivered, with nothing raw
//! where the receiver would act on it, no extra header or recipient, every field within the
//! receiver's limits, and the alert still recognisable.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{record_for, Receiver, SmtpSink, T0};
use mcpwatch_alert::channels::text::CUT;
use mcpwatch_alert::model::DeliveryStatus;
use mcpwatch_alert::{AlertRecord, Alerting, Notification, NotificationKind, Settings};
use mcpwatch_core::config::Config;
use mcpwatch_core::{SystemClock, Timestamp};
use serde_json::Value;

/// The values an attacker would try, each one on its own.
fn hostile() -> Vec<String> {
    let mut v: Vec<String> = [
        "<!channel>",
        "<!here> <!everyone>",
        "<@U123> <#C123> <!subteam^S123>",
        "<https://evil.example/reset|Reset your password>",
        "*bold* _italic_ ~strike~ `code` > quote :white_check_mark: RESOLVED",
        "<b>bold</b><script>alert(1)</script><img src=x onerror=alert(1)> &amp; &lt;",
        "x\r\nBcc: victim@example.test\r\nSubject: pwned\r\n\r\n.\r\nMAIL FROM:<a@b>",
        "\\ud800 \\u0000 \u{0}\u{FFFD}\u{7}\u{1b}[31m \u{85}",
        "alice\u{202E}nimda\u{2066}gpj.exe\u{200F}",
        "=?utf-8?b?cHduZWQ=?= ñandú 😀 日本語",
        &"X".repeat(10_000),
        &"😀".repeat(5_000),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    v.push(format!(
        "<!channel> <https://evil.example/reset|Reset your password> &amp; \r\nBcc: victim@example.test\r\nSubject: pwned {}",
        "X".repeat(3000)
    ));
    v
}

/// A tool-poisoning alert where every piece of traffic text is `v`, shaped as the threat
/// detector writes it.
fn alert_with(v: &str) -> AlertRecord {
    let mut a = record_for("tool_poisoning");
    a.alert.group = [
        ("metadata.server".to_owned(), v.to_owned()),
        ("metadata.tool_name".to_owned(), v.to_owned()),
        ("metadata.user_id".to_owned(), v.to_owned()),
    ]
    .into();
    a.alert.description = format!(
        "tool_poisoning in the tool description of {v}/{v}: instruction override (\"{v}\")"
    );
    a
}

/// What Slack must never get raw: it would ping, link or run a command.
const SLACK_MARKERS: [&str; 5] = ["<!channel", "<!here", "<@U123", "<https://evil", "<script"];
/// What no one-line field (email subject, PagerDuty summary) may pass on: a header break, a
/// bidi override, a NUL. Bodies may keep a newline, but no other control (`no_controls`).
/// Email and PagerDuty show text as text, so `<!channel>` there is just text.
const TEXT_MARKERS: [&str; 4] = ["\nBcc", "\rBcc", "\u{202E}", "\u{0}"];

fn settings(toml: &str) -> Settings {
    let config = Config::from_toml(toml).expect("valid config");
    mcpwatch_alert::build(&config, &|_| None).unwrap_or_else(|e| panic!("{e:?}"))
}

fn notification<'a>(alert: &'a AlertRecord, channel: &'a str) -> Notification<'a> {
    Notification {
        kind: NotificationKind::Firing,
        alert,
        channel,
        link: format!("http://mcpwatch.test/api/v1/alerts/{}", alert.alert.id),
        external_url: "http://mcpwatch.test",
        now: Timestamp::from_micros(T0 + 100_000_000),
        id: format!("{}/firing/1", alert.alert.id),
    }
}

fn units(s: &str) -> usize {
    s.encode_utf16().count()
}

/// Every string in a JSON value with its path.
fn strings(v: &Value, path: String, out: &mut Vec<(String, String)>) {
    match v {
        Value::String(s) => out.push((path, s.clone())),
        Value::Array(a) => a
            .iter()
            .enumerate()
            .for_each(|(i, x)| strings(x, format!("{path}[{i}]"), out)),
        Value::Object(m) => m
            .iter()
            .for_each(|(k, x)| strings(x, format!("{path}.{k}"), out)),
        _ => {}
    }
}

fn no_controls(s: &str, multiline: bool) -> bool {
    s.chars().all(|c| {
        (multiline && c == '\n')
            || !(c.is_control() || matches!(c, '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}' | '\u{200E}' | '\u{200F}'))
    })
}

/// Only Slack's three entities, and no `<` or `>`: nothing Slack would parse as a link,
/// mention or command.
fn slack_inert(s: &str) -> bool {
    !s.contains(['<', '>'])
        && s.match_indices('&').all(|(i, _)| {
            ["&amp;", "&lt;", "&gt;"]
                .iter()
                .any(|e| s[i..].starts_with(e))
        })
}

fn check_slack(body: &Value, v: &str) {
    let mut all = Vec::new();
    strings(body, String::new(), &mut all);
    let context = ".blocks[4].elements[0].text";
    for (path, s) in &all {
        assert!(
            no_controls(s, true),
            "{path} has a control character: {s:?}"
        );
        if path != context {
            assert!(slack_inert(s), "{path} is not inert for Slack: {s:?}");
        }
    }
    let link = body
        .pointer("/blocks/4/elements/0/text")
        .unwrap()
        .as_str()
        .unwrap();
    assert!(
        link.starts_with("<http://mcpwatch.test/api/v1/alerts/") && link.matches('<').count() == 1,
        "only mcpwatch's own link: {link}"
    );
    // Traffic text only in plain_text objects, without emoji shortcodes.
    for text in text_objects(body) {
        let (kind, s) = (
            text["type"].as_str().unwrap(),
            text["text"].as_str().unwrap(),
        );
        if kind == "mrkdwn" {
            for m in [
                "evil", "U123", "channel", "bold", "script", "victim", "nimda", "XXXX", "😀",
            ] {
                assert!(!s.contains(m), "traffic text in a mrkdwn object: {s:?}");
            }
        } else {
            assert_eq!(text["emoji"], false, "{text}");
        }
    }
    let header = body
        .pointer("/blocks/0/text/text")
        .unwrap()
        .as_str()
        .unwrap();
    assert!(units(header) <= 150, "header is {} long", units(header));
    assert!(header.contains("[HIGH] tool_poisoning firing"), "{header}");
    for f in body
        .pointer("/blocks/1/fields")
        .unwrap()
        .as_array()
        .unwrap()
    {
        assert!(units(f["text"].as_str().unwrap()) <= 2000, "{f}");
    }
    for i in [2, 3] {
        let t = body["blocks"][i]["text"]["text"].as_str().unwrap();
        assert!(units(t) <= 3000, "section {i} is {} long", units(t));
    }
    assert!(units(body["text"].as_str().unwrap()) <= 3000);
    if units(v) > 2000 {
        let who = body
            .pointer("/blocks/1/fields/2/text")
            .unwrap()
            .as_str()
            .unwrap();
        assert!(who.ends_with(CUT), "a cut value says so: {who}");
    }
}

fn text_objects(body: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for b in body["blocks"].as_array().unwrap() {
        out.extend(b.get("text"));
        for key in ["fields", "elements"] {
            out.extend(b.get(key).and_then(Value::as_array).into_iter().flatten());
        }
    }
    out
}

fn check_pagerduty(body: &Value, fingerprint: &str, v: &str) {
    assert_eq!(body["dedup_key"], fingerprint);
    let summary = body["payload"]["summary"].as_str().unwrap();
    assert!(units(summary) <= 1024, "summary is {} long", units(summary));
    assert!(
        summary.starts_with("[HIGH] tool_poisoning firing"),
        "{summary}"
    );
    assert!(no_controls(summary, false), "{summary:?}");
    if units(v) > 1024 {
        assert!(summary.ends_with(CUT), "{summary}");
    }
    let mut all = Vec::new();
    strings(&body["payload"], String::new(), &mut all);
    for (path, s) in &all {
        assert!(no_controls(s, true), "{path}: {s:?}");
        assert!(units(s) <= 8192, "{path} is {} long", units(s));
    }
}

fn check_webhook(body: &Value) {
    let alert = &body["alerts"][0];
    assert_eq!(alert["status"], "firing");
    assert_eq!(alert["labels"]["alertname"], "tool_poisoning");
    for (k, v) in alert["labels"].as_object().unwrap() {
        assert!(units(v.as_str().unwrap()) <= 1024, "label {k}");
    }
    for (k, v) in alert["annotations"].as_object().unwrap() {
        assert!(units(v.as_str().unwrap()) <= 8192, "annotation {k}");
    }
    let summary = alert["annotations"]["summary"].as_str().unwrap();
    assert!(no_controls(summary, false), "{summary:?}");
}

const EMAIL_HEADERS: [&str; 8] = [
    "From",
    "To",
    "Subject",
    "Date",
    "Message-ID",
    "MIME-Version",
    "Content-Type",
    "Content-Transfer-Encoding",
];

fn check_email(m: &Value, v: &str) {
    assert_eq!(
        m["to"],
        serde_json::json!(["secops@example.com"]),
        "no extra recipient"
    );
    let headers: Vec<&str> = m["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_str().unwrap())
        .collect();
    assert_eq!(
        headers.iter().filter(|h| **h == "Subject").count(),
        1,
        "{headers:?}"
    );
    for h in &headers {
        assert!(
            EMAIL_HEADERS.contains(h),
            "an injected header `{h}`: {headers:?}"
        );
    }
    let data = m["data"].as_str().unwrap();
    for line in data.split("\r\n") {
        assert!(line.len() <= 998, "a line of {} bytes", line.len());
    }
    let subject = m["subject"].as_str().unwrap();
    assert!(
        subject.starts_with("[mcpwatch] [HIGH] tool_poisoning firing"),
        "{subject}"
    );
    assert!(
        subject.chars().count() <= 200,
        "subject is {} long",
        subject.chars().count()
    );
    assert!(no_controls(subject, false), "{subject:?}");
    let body = mail_body(m);
    assert!(
        body.contains("The high alert tool_poisoning is firing."),
        "{body}"
    );
    assert!(no_controls(&body, true), "{body:?}");
    if v.starts_with("alice") {
        assert!(
            body.contains("alice[U+202E]nimda[U+2066]"),
            "the override is shown: {body}"
        );
    }
}

/// The decoded body, with the line ends a mail reader shows.
fn mail_body(m: &Value) -> String {
    m["body"].as_str().unwrap().replace("\r\n", "\n")
}

#[tokio::test]
async fn hostile_text_is_delivered_inert_and_bounded_on_every_channel() {
    let (hook, slack, pd) = (
        Receiver::start(200).await,
        Receiver::start(200).await,
        Receiver::start(202).await,
    );
    let sink = SmtpSink::start();
    let s = settings(&format!(
        "[channels.siem]\ntype = \"webhook\"\nurl = \"{}\"\n\
         [channels.chat]\ntype = \"slack\"\nwebhook_url = \"{}\"\n\
         [channels.oncall]\ntype = \"pagerduty\"\nrouting_key = \"k\"\nurl = \"{}\"\n\
         [channels.mail]\ntype = \"email\"\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"mcpwatch@example.com\"\nto = [\"secops@example.com\"]\n",
        hook.url("/hook"),
        slack.url("/services/T/B/X"),
        pd.url("/v2/enqueue"),
        sink.port,
    ));
    for (i, v) in hostile().iter().enumerate() {
        let alert = alert_with(v);
        for name in ["siem", "chat", "oncall", "mail"] {
            let n = notification(&alert, name);
            let r = s.channels[name].send(&n).await;
            assert!(r.is_ok(), "value {i} was not delivered to {name}: {r:?}");
        }
        let body = |rx: &Receiver| rx.received()[i].json();
        let raw = |rx: &Receiver| String::from_utf8(rx.received()[i].body.clone()).unwrap();
        check_webhook(&body(&hook));
        check_slack(&body(&slack), v);
        check_pagerduty(&body(&pd), &alert.alert.fingerprint, v);
        let mail = sink
            .next(Duration::from_secs(10))
            .expect("the SMTP server accepted it");
        check_email(&mail, v);
        for m in SLACK_MARKERS {
            assert!(!raw(&slack).contains(m), "Slack got {m:?} raw");
        }
        for m in TEXT_MARKERS {
            let subject = mail["subject"].as_str().unwrap();
            assert!(!subject.contains(m), "the subject got {m:?} raw");
            let summary = body(&pd)["payload"]["summary"].as_str().unwrap().to_owned();
            assert!(!summary.contains(m), "PagerDuty got {m:?} raw");
        }
    }
}

#[tokio::test]
async fn a_relay_that_refuses_for_good_marks_the_delivery_failed_once_and_counts_it() {
    let sink = SmtpSink::start();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_toml(&format!(
        "[alerting.delivery]\nmax_attempts = 5\ninitial_backoff = \"50ms\"\nmax_backoff = \"100ms\"\n\
         [channels.mail]\ntype = \"email\"\nurl = \"smtp://127.0.0.1:{}\"\nfrom = \"mcpwatch@example.com\"\nto = [\"refuse@example.com\"]\n",
        sink.port
    ))
    .unwrap();
    let settings = mcpwatch_alert::build(&config, &|_| None).unwrap_or_else(|e| panic!("{e:?}"));
    let alerting = Alerting::open(dir.path(), settings, Arc::new(SystemClock)).unwrap();
    tokio::spawn(alerting.clone().run_delivery());
    let finding = common::lifecycle::brute("<!channel>\r\nBcc: x@example.test", "e1");
    let a = alerting.on_finding(&finding).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let rec = loop {
        let rec = alerting.get(&a.alert.id).unwrap();
        if rec
            .channels
            .get("mail")
            .is_some_and(|c| c.status != DeliveryStatus::Pending)
            || tokio::time::Instant::now() > deadline
        {
            break rec;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let mail = &rec.channels["mail"];
    assert_eq!(mail.status, DeliveryStatus::Failed, "{mail:?}");
    assert_eq!(
        mail.attempts, 1,
        "a permanent refusal is not retried: {mail:?}"
    );
    let why = mail.last_error.as_deref().unwrap_or("");
    assert!(why.contains("refused") && why.contains("550"), "{why}");
    let failed = alerting
        .health()
        .failed
        .load(std::sync::atomic::Ordering::Relaxed);
    assert_eq!(failed, 1, "counted for /metrics");
    assert!(
        sink.next(Duration::from_millis(300)).is_none(),
        "nothing was accepted"
    );
}
