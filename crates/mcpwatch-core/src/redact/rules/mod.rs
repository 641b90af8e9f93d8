//! The built-in secret shapes: provider token formats (`providers.rs`) and generic credential
//! shapes (`generic.rs`).
//!
//! Data only; `scan.rs` compiles it. The provider formats cover what gitleaks' default rule
//! set knows (prefixes, lengths and alphabets, read from its documentation and rules and
//! written here anew). Each rule names the `kind` written into `[REDACTED:<kind>]`, a label for
//! findings, and lowercase keywords one of which must occur (ASCII case-insensitively) for its
//! regular expression to run. Where a rule has a group named `s`, only that group is cut out
//! (the user name of a URL, the header name stay readable); a `check` refines a match that
//! a regular expression alone would over-report.

mod generic;
mod providers;

/// A refinement applied to a match before it is redacted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Check {
    /// The match is redacted as it is.
    None,
    /// `Basic <b64>`: the base64 must decode to `user:password`.
    Basic,
    /// `Bearer <token>`: the token must not be an ordinary word.
    Bearer,
    /// A 40-character AWS secret access key in free text: mixed case and digits, not hex.
    AwsSecret,
    /// `key = value` / `key: value`: the key must name a secret (see `keys.rs`).
    Assignment,
}

/// One built-in shape.
#[derive(Debug)]
pub(crate) struct Rule {
    pub kind: &'static str,
    pub label: &'static str,
    pub keywords: &'static [&'static str],
    pub regex: &'static str,
    pub check: Check,
}

/// A rule whose matches are redacted as they are.
pub(super) const fn r(
    kind: &'static str,
    label: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
) -> Rule {
    c(kind, label, keywords, regex, Check::None)
}

/// A rule whose matches pass a check first.
pub(super) const fn c(
    kind: &'static str,
    label: &'static str,
    keywords: &'static [&'static str],
    regex: &'static str,
    check: Check,
) -> Rule {
    Rule {
        kind,
        label,
        keywords,
        regex,
        check,
    }
}

/// Every built-in rule, in order. When matches overlap, the merged span is named by the rule
/// listed first: provider formats come before the generic shapes.
pub(crate) fn all() -> impl Iterator<Item = &'static Rule> {
    providers::RULES.iter().chain(generic::RULES)
}

/// The kinds and labels of key-based redaction (`keys.rs`), so that markers and findings can
/// name them.
pub(crate) const KEY_KINDS: &[(&str, &str)] = &[
    ("password", "password"),
    ("secret", "secret"),
    ("token", "token"),
    ("api_key", "API key"),
    ("access_key", "access key"),
    ("private_key", "private key"),
    ("authorization", "authorization value"),
    ("cookie", "cookie"),
    ("credential", "credential"),
    ("connection_string", "connection string"),
    ("secret_key", "secret key"),
    ("custom_key", "value under a configured key"),
    ("custom", "configured pattern"),
];

/// Every (kind, label) pair: rules, key kinds and provider kinds.
fn labelled() -> impl Iterator<Item = (&'static str, &'static str)> {
    all()
        .map(|r| (r.kind, r.label))
        .chain(KEY_KINDS.iter().copied())
        .chain(super::keys::PROVIDERS.iter().map(|(_, k, l)| (*k, *l)))
}

/// The label of a kind, for findings ("Stripe secret key"); `None` for kinds this build does
/// not know.
pub fn label(kind: &str) -> Option<&'static str> {
    labelled().find(|(k, _)| *k == kind).map(|(_, l)| l)
}

/// Every kind the built-in rules and keys can write into a marker, once.
pub fn kinds() -> impl Iterator<Item = &'static str> {
    let mut seen: Vec<&'static str> = Vec::new();
    labelled().map(|(k, _)| k).filter(move |k| {
        if seen.contains(k) {
            false
        } else {
            seen.push(k);
            true
        }
    })
}
