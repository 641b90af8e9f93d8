//! The email channel: SMTP through lettre with rustls. The URL says how to connect:
//! `smtps://user:pass@host:465` (implicit TLS), `smtp+starttls://user:pass@host:587`
//! (STARTTLS, required), or `smtp://host:25` (plain, for a local relay only). The subject is
//! one readable line; the body says what happened, who, what to do and where to look.
//!
//! Text from traffic never breaks the message: the subject is one visible line (no CR/LF, no
//! control or bidi characters) bounded to 200 characters, which lettre folds and encodes per
//! RFC 2047 when it is not ASCII; the body is plain text (no HTML part, so nothing to inject
//! markup into) that lettre encodes as quoted-printable or base64, so every line stays within
//! SMTP's limits however long a value is. Recipients and sender come only from the config.

use std::time::Duration;

use futures_util::future::BoxFuture;
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::transport::smtp::client::{Certificate, Tls, TlsParameters};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde::Deserialize;

use super::text::{bounded, no_escape, visible, Lines};
use super::{default_true, expand, who, BuildContext, Channel, Receipt, SendError};
use crate::model::{Notification, NotificationKind};

/// `[channels.NAME]` with `type = "email"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmailConfig {
    /// The SMTP server: `smtps://user:pass@host:465` (implicit TLS),
    /// `smtp+starttls://user:pass@host:587` (STARTTLS) or `smtp://host:25` (plain, local relay).
    /// Put the password in the environment: `"smtps://alerts:${SMTP_PASSWORD}@mail.example.com"`.
    pub url: String,
    /// The sender, e.g. `"mcpwatch <mcpwatch@example.com>"`.
    pub from: String,
    /// Recipients; at least one.
    pub to: Vec<String>,
    /// A PEM file of the CA (or CAs) that signed the server's certificate, trusted besides the
    /// public roots, for a relay with a private CA. Only for `smtps://` and `smtp+starttls://`.
    #[serde(default)]
    pub ca_file: Option<String>,
    /// Whether to mail when the alert resolves (default true).
    #[serde(default = "default_true")]
    pub send_resolved: bool,
}

/// How the connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    Implicit,
    StartTls,
    Plain,
}

impl EmailConfig {
    /// Builds the channel, expanding `${VAR}`s and checking the URL and addresses.
    pub fn build(&self, ctx: &BuildContext<'_>) -> Result<Email, Vec<(String, String)>> {
        let mut errors = Vec::new();
        let url = expand(&self.url, "url", ctx, &mut errors);
        let plain = url.starts_with("smtp://");
        if plain && self.ca_file.is_some() {
            errors.push(("ca_file".into(), "is set but smtp:// does not use TLS; write smtps:// or smtp+starttls://, or drop ca_file".into()));
        }
        let ca = self
            .ca_file
            .as_deref()
            .filter(|_| !plain)
            .map(|f| expand(f, "ca_file", ctx, &mut errors))
            .and_then(|path| read_ca(&path, &mut errors));
        let transport = if errors.is_empty() {
            match transport(&url, ctx.timeout, ca.as_ref()) {
                Ok(t) => Some(t),
                Err(m) => {
                    errors.push(("url".into(), m));
                    None
                }
            }
        } else {
            None
        };
        let from = expand(&self.from, "from", ctx, &mut errors);
        let from = mailbox(&from, "from", &mut errors);
        if self.to.is_empty() {
            errors.push(("to".into(), "give at least one recipient address".into()));
        }
        let to: Vec<Mailbox> = self
            .to
            .iter()
            .enumerate()
            .filter_map(|(i, t)| {
                let field = format!("to[{i}]");
                let t = expand(t, &field, ctx, &mut errors);
                mailbox(&t, &field, &mut errors)
            })
            .collect();
        match (transport, from) {
            (Some(transport), Some(from)) if errors.is_empty() => Ok(Email {
                transport,
                from,
                to,
                send_resolved: self.send_resolved,
            }),
            _ => Err(errors),
        }
    }
}

/// Reads and parses the `ca_file`, recording what is wrong under `ca_file`.
fn read_ca(path: &str, errors: &mut Vec<(String, String)>) -> Option<Certificate> {
    let mut bad = |m: String| {
        errors.push(("ca_file".into(), m));
        None
    };
    let pem = match std::fs::read(path) {
        Ok(p) => p,
        Err(e) => return bad(format!("cannot read `{path}`: {e}; give the path of the PEM file of the CA that signed the SMTP server's certificate")),
    };
    if !pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") {
        return bad(format!(
            "`{path}` holds no PEM certificate (-----BEGIN CERTIFICATE-----); give the CA certificate in PEM form"
        ));
    }
    match Certificate::from_pem(&pem) {
        Ok(c) => Some(c),
        Err(e) => bad(format!(
            "`{path}` is not a valid PEM certificate file ({e})"
        )),
    }
}

fn mailbox(s: &str, field: &str, errors: &mut Vec<(String, String)>) -> Option<Mailbox> {
    match s.parse::<Mailbox>() {
        Ok(m) => Some(m),
        Err(e) => {
            errors.push((
                field.to_owned(),
                format!("`{s}` is not an email address ({e}); write `name@example.com` or `Name <name@example.com>`"),
            ));
            None
        }
    }
}

/// Builds the SMTP transport from the URL; the message never repeats the URL (it may hold a
/// password).
fn transport(
    raw: &str,
    timeout: Duration,
    ca: Option<&Certificate>,
) -> Result<AsyncSmtpTransport<Tokio1Executor>, String> {
    const HOW: &str = "write smtps://user:pass@host:465 (TLS), smtp+starttls://user:pass@host:587 (STARTTLS) or smtp://host:25 (plain, local relay)";
    let url = url::Url::parse(raw).map_err(|e| format!("is not a valid SMTP URL ({e}); {HOW}"))?;
    let security = match url.scheme() {
        "smtps" => Security::Implicit,
        "smtp+starttls" => Security::StartTls,
        "smtp" => Security::Plain,
        other => return Err(format!("unknown SMTP scheme `{other}`; {HOW}")),
    };
    let host = url
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("has no host; {HOW}"))?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if url.path() != "" && url.path() != "/" || url.query().is_some() {
        return Err(format!("must not have a path or query; {HOW}"));
    }
    let builder = AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host);
    let builder = if security == Security::Plain {
        builder
    } else {
        let mut params = TlsParameters::builder(host.to_owned());
        if let Some(ca) = ca {
            params = params.add_root_certificate(ca.clone());
        }
        let params = params
            .build_rustls()
            .map_err(|e| format!("cannot set up TLS for the SMTP host: {e}"))?;
        builder.tls(match security {
            Security::Implicit => Tls::Wrapper(params),
            _ => Tls::Required(params),
        })
    };
    let port = url.port().unwrap_or(match security {
        Security::Implicit => 465,
        Security::StartTls => 587,
        Security::Plain => 25,
    });
    let mut builder = builder.port(port).timeout(Some(timeout));
    if !url.username().is_empty() {
        let decode = |s: &str| {
            url::form_urlencoded::parse(format!("x={s}").as_bytes())
                .next()
                .map(|(_, v)| v.into_owned())
                .unwrap_or_default()
        };
        let user = decode(url.username());
        let pass = decode(url.password().unwrap_or(""));
        builder = builder.credentials(Credentials::new(user, pass));
    }
    Ok(builder.build())
}

/// Sends mail over SMTP.
pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    send_resolved: bool,
}

impl Channel for Email {
    fn kind(&self) -> &'static str {
        "email"
    }

    fn sends_resolved(&self) -> bool {
        self.send_resolved
    }

    fn send<'a>(&'a self, n: &'a Notification<'a>) -> BoxFuture<'a, Result<Receipt, SendError>> {
        Box::pin(async move {
            let (subject, body) = render(n);
            let mut builder = Message::builder().from(self.from.clone()).subject(subject);
            for to in &self.to {
                builder = builder.to(to.clone());
            }
            let message = builder
                .header(ContentType::TEXT_PLAIN)
                .body(body)
                .map_err(|e| SendError::permanent(format!("cannot build the message: {e}")))?;
            match self.transport.send(message).await {
                Ok(r) => Ok(Receipt {
                    response: format!("{} {}", r.code(), r.message().collect::<Vec<_>>().join(" ")),
                }),
                Err(e) if e.is_permanent() => Err(SendError::permanent(format!(
                    "the SMTP server refused the message: {e}"
                ))),
                Err(e) => Err(SendError::transient(describe(&e))),
            }
        })
    }
}

/// A transport error with its causes, saying what to do about a certificate the channel does
/// not trust.
fn describe(e: &lettre::transport::smtp::Error) -> String {
    let mut chain = e.to_string();
    let mut source = std::error::Error::source(e);
    while let Some(s) = source {
        chain.push_str(&format!(": {s}"));
        source = s.source();
    }
    if e.is_tls() || chain.contains("certificate") {
        return format!(
            "TLS with the SMTP server failed ({chain}); the server's certificate must be valid for the host in the URL and signed by a public CA or by the CA in ca_file"
        );
    }
    format!("SMTP delivery failed: {chain}")
}

/// Longest subject, in characters (RFC 5322 recommends 78 per line; lettre folds it).
const SUBJECT_MAX: usize = 200;
/// Longest value in the body.
const VALUE_MAX: usize = 16 * 1024;

/// The subject and the plain-text body.
pub fn render(n: &Notification<'_>) -> (String, String) {
    let a = &n.alert.alert;
    let subject = bounded(
        &format!("[mcpwatch] {}", super::title(n)),
        SUBJECT_MAX,
        no_escape,
    );
    let state = match n.kind {
        NotificationKind::Firing => "is firing",
        NotificationKind::Resolved => "has resolved",
        NotificationKind::Acknowledged => "was acknowledged",
        NotificationKind::Test => "is a test notification (no action needed)",
    };
    let line = |s: &str| bounded(&visible(s, Lines::One), VALUE_MAX, no_escape);
    let text = |s: &str| bounded(&visible(s, Lines::Many), VALUE_MAX, no_escape);
    let mut body = format!(
        "The {} alert {} {state}.\n\n\
         What happened: {}\n\
         Who: {}\n\
         Recommended action: {}\n\n\
         Severity: {}\nSource: {}\nCount: {}\nFirst seen: {}\nLast seen: {}\n",
        a.severity,
        line(&a.name),
        text(&a.description),
        line(&who(n)),
        text(&a.recommended_action),
        a.severity,
        a.source.as_str(),
        a.count,
        a.first_seen,
        a.last_seen,
    );
    if !n.alert.tags.is_empty() {
        body.push_str(&format!("Tags: {}\n", line(&n.alert.tags.join(", "))));
    }
    body.push_str(&format!(
        "Fingerprint: {}\nAlert: {}\n\nAcknowledge: mcpwatch alerts ack {}\n",
        a.fingerprint, n.link, a.id
    ));
    (subject, body)
}
