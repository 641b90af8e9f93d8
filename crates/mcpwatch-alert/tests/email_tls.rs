//! Email over TLS against a real TLS SMTP server on loopback (aiosmtpd with a private CA and
//! a server certificate the test makes): implicit TLS (`smtps://`) and required STARTTLS
//! (`smtp+starttls://`) deliver when `ca_file` trusts the CA; a certificate from a CA the
//! channel does not trust is refused with an error that says what to do; a bad `ca_file` is a
//! config error.

mod common;

use std::time::Duration;

use common::{record_for, SmtpSink, T0};
use mcpwatch_alert::channels::{Receipt, SendError};
use mcpwatch_alert::{Notification, NotificationKind, Settings};
use mcpwatch_core::config::Config;
use mcpwatch_core::Timestamp;

fn email(url: &str, ca_file: Option<&std::path::Path>) -> String {
    let ca = ca_file.map_or(String::new(), |p| {
        format!("ca_file = \"{}\"\n", p.display())
    });
    format!(
        "[channels.mail]\ntype = \"email\"\nurl = \"{url}\"\nfrom = \"mcpwatch@example.com\"\nto = [\"secops@example.com\"]\n{ca}"
    )
}

fn settings(toml: &str) -> Settings {
    let config = Config::from_toml(toml).expect("valid config");
    mcpwatch_alert::build(&config, &|_| None).unwrap_or_else(|e| panic!("{e:?}"))
}

async fn send(s: &Settings) -> Result<Receipt, SendError> {
    let alert = record_for("brute_force_detection");
    let n = Notification {
        kind: NotificationKind::Firing,
        alert: &alert,
        channel: "mail",
        link: "http://mcpwatch.test/api/v1/alerts/x".into(),
        external_url: "http://mcpwatch.test",
        now: Timestamp::from_micros(T0),
        id: "x/firing/1".into(),
    };
    s.channels["mail"].send(&n).await
}

/// Sends through `scheme` to a sink in `mode`, trusting `ca` (a file in the sink's cert dir).
async fn through(
    scheme: &str,
    mode: &str,
    ca: Option<&str>,
) -> (Result<Receipt, SendError>, SmtpSink) {
    let certs = tempfile::tempdir().unwrap();
    let sink = SmtpSink::start_tls(mode, certs.path());
    let url = format!("{scheme}://127.0.0.1:{}", sink.port);
    let ca = ca.map(|f| certs.path().join(f));
    let r = send(&settings(&email(&url, ca.as_deref()))).await;
    (r, sink)
}

#[tokio::test]
async fn smtps_delivers_over_implicit_tls_to_a_server_signed_by_the_ca_file() {
    let (r, sink) = through("smtps", "implicit", Some("ca.pem")).await;
    let r = r.expect("delivered over TLS");
    assert!(r.response.contains("250"), "{r:?}");
    let m = sink
        .next(Duration::from_secs(10))
        .expect("the server got it");
    assert_eq!(m["tls"], true, "{m}");
    assert!(m["subject"]
        .as_str()
        .unwrap()
        .contains("brute_force_detection"));
}

#[tokio::test]
async fn starttls_is_required_and_delivers_with_the_ca_file() {
    let (r, sink) = through("smtp+starttls", "starttls", Some("ca.pem")).await;
    r.expect("delivered after STARTTLS");
    let m = sink
        .next(Duration::from_secs(10))
        .expect("the server got it");
    assert_eq!(m["tls"], true, "the message went over TLS: {m}");
}

#[tokio::test]
async fn a_certificate_from_an_untrusted_ca_is_refused_with_a_clear_error() {
    for (scheme, mode, ca) in [
        ("smtps", "implicit", None),
        ("smtps", "implicit", Some("other-ca.pem")),
        ("smtp+starttls", "starttls", Some("other-ca.pem")),
    ] {
        let (r, sink) = through(scheme, mode, ca).await;
        let e = r.expect_err("an untrusted certificate must be refused");
        assert!(
            e.message.starts_with("TLS with the SMTP server failed")
                && e.message.contains("certificate")
                && e.message.contains("ca_file"),
            "{scheme} with {ca:?}: {}",
            e.message
        );
        assert!(
            sink.next(Duration::from_millis(200)).is_none(),
            "nothing was sent in the clear"
        );
    }
}

#[test]
fn a_bad_ca_file_is_a_config_error_that_names_the_field() {
    let dir = tempfile::tempdir().unwrap();
    let not_pem = dir.path().join("not.pem");
    std::fs::write(&not_pem, "hello").unwrap();
    for (url, ca, want) in [
        (
            "smtps://127.0.0.1:1",
            dir.path().join("missing.pem"),
            "cannot read",
        ),
        (
            "smtps://127.0.0.1:1",
            not_pem.clone(),
            "holds no PEM certificate",
        ),
        ("smtp://127.0.0.1:1", not_pem.clone(), "does not use TLS"),
    ] {
        let config = Config::from_toml(&email(url, Some(&ca))).unwrap();
        let errors = mcpwatch_alert::check(&config);
        let text: Vec<String> = errors.iter().map(ToString::to_string).collect();
        assert!(
            text.iter()
                .any(|e| e.starts_with("channels.mail.") && e.contains(want)),
            "{url} {}: {text:?}",
            ca.display()
        );
    }
}
