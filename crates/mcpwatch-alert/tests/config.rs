//! `[alerting]`, `[channels.NAME]` and `[[routes]]`: good configs build, bad ones report every
//! problem at once with its key path (and, through core's config, its line).

use expect_test::{expect, Expect};
use mcpwatch_core::config::Config;

/// The one place that builds: prints every error, or `OK` with the channels and routes.
fn check(toml: &str, env: &[(&str, &str)], want: Expect) {
    let config = Config::from_toml(toml).expect("core accepts the sections");
    let lookup = |k: &str| {
        env.iter()
            .find(|(n, _)| *n == k)
            .map(|(_, v)| v.to_string())
    };
    let got = match mcpwatch_alert::build(&config, &lookup) {
        Ok(s) => {
            let channels: Vec<String> = s
                .channels
                .iter()
                .map(|(n, c)| format!("{n}={}", c.kind()))
                .collect();
            format!(
                "OK channels: {}; repeat {:?}; resolve {:?}; url {}",
                channels.join(", "),
                s.repeat_interval,
                s.resolve_after,
                s.external_url
            )
        }
        Err(errors) => errors.iter().map(|e| format!("{e}\n")).collect::<String>(),
    };
    want.assert_eq(&got);
}

#[test]
fn no_alerting_sections_build_the_defaults() {
    check(
        "",
        &[],
        expect!["OK channels: ; repeat 14400s; resolve Some(3600s); url http://127.0.0.1:7878"],
    );
}

#[test]
fn a_full_config_builds_with_secrets_from_the_environment() {
    check(
        r#"
[alerting]
repeat_interval = "30m"
resolve_after = "0s"
external_url = "https://mcpwatch.example.com/"

[alerting.delivery]
max_attempts = 5
initial_backoff = "1s"
max_backoff = "1m"

[channels.ops]
type = "slack"
webhook_url = "${SLACK_WEBHOOK_URL}"

[channels.oncall]
type = "pagerduty"
routing_key = "${PD_KEY}"

[channels.mail]
type = "email"
url = "smtps://alerts:${SMTP_PASSWORD}@mail.example.com"
from = "mcpwatch <mcpwatch@example.com>"
to = ["secops@example.com"]

[channels.siem]
type = "webhook"
url = "https://siem.example.com/in"
secret = "${HOOK_SECRET}"

[[routes]]
severity = ["high", "critical"]
channels = ["oncall", "ops"]
"#,
        &[
            ("SLACK_WEBHOOK_URL", "https://hooks.slack.com/services/T/B/X"),
            ("PD_KEY", "r0ut1ng"),
            ("SMTP_PASSWORD", "pw"),
            ("HOOK_SECRET", "s3cret"),
        ],
        expect!["OK channels: mail=email, oncall=pagerduty, ops=slack, siem=webhook; repeat 1800s; resolve None; url https://mcpwatch.example.com"],
    );
}

#[test]
fn every_problem_is_reported_at_once_with_its_path() {
    check(
        r#"
[alerting]
repeat_interval = "often"
colour = "red"

[alerting.delivery]
max_attempts = 0

[channels.ops]
type = "slack"

[channels.oncall]
type = "pagerduty"
routing_key = "${PD_KEY}"

[channels.mail]
type = "email"
url = "smtp//mail.example.com"
from = "mcpwatch"
to = []

[channels.odd]
type = "carrier-pigeon"

[channels.hook]
type = "webhook"
url = "ftp://example.com"

[[routes]]
severity = ["high"]
channels = ["oncall", "sms"]
"#,
        &[],
        expect![[r#"
            alerting.colour: unknown field `colour`, expected one of `repeat_interval`, `resolve_after`, `external_url`, `max_event_ids`, `retention`, `delivery`
            alerting.repeat_interval: not a duration (expected number at 0); write it like 30s, 5m, 1h or 30d
            alerting.delivery.max_attempts: must be between 1 and 1000
            channels.hook.url: must be an http or https URL, not ftp:
            channels.mail.url: is not a valid SMTP URL (relative URL without a base); write smtps://user:pass@host:465 (TLS), smtp+starttls://user:pass@host:587 (STARTTLS) or smtp://host:25 (plain, local relay)
            channels.mail.from: `mcpwatch` is not an email address (Invalid input); write `name@example.com` or `Name <name@example.com>`
            channels.mail.to: give at least one recipient address
            channels.odd.type: unknown variant `carrier-pigeon`, expected one of `webhook`, `slack`, `pagerduty`, `email`
            channels.oncall.routing_key: environment variable PD_KEY is not set; export it or write the value
            channels.ops: missing field `webhook_url`
            routes[0].channels[1]: unknown channel `sms`; configured channels: hook, mail, odd, oncall, ops
        "#]],
    );
}

#[test]
fn unknown_fields_in_a_channel_are_errors() {
    check(
        "[channels.ops]\ntype = \"slack\"\nwebhook_url = \"https://hooks.slack.com/x\"\nchannel = \"#sec\"\n",
        &[],
        expect![[r#"
            channels.ops.channel: unknown field `channel`, expected `webhook_url` or `send_resolved`
        "#]],
    );
}

#[test]
fn check_uses_the_process_environment() {
    let config = Config::from_toml(
        "[channels.ops]\ntype = \"slack\"\nwebhook_url = \"${MCPWATCH_TEST_SURELY_UNSET_VAR}\"\n",
    )
    .unwrap();
    let errors = mcpwatch_alert::check(&config);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert_eq!(errors[0].path, "channels.ops.webhook_url");
    assert!(errors[0].message.contains("MCPWATCH_TEST_SURELY_UNSET_VAR"));
}
