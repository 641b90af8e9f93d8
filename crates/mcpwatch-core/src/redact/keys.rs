//! Which key names name a secret, and whether the value found under one looks like a secret.
//!
//! Keys are compared by words (`X-Api-Key`, `apiKey` and `API_KEY` are all `api key`), never by
//! substring, so `max_tokens` and `monkey` stay readable. A key is *strong* when its words
//! name a secret outright (`password`, `client_secret`, `GITHUB_TOKEN`): its value is redacted
//! whatever it is, unless it is a placeholder (`null`, `${VAR}`, `<your-token>`). It is *weak*
//! when it only might (`ENCRYPTION_KEY`, `twitter_consumer`, keys naming a provider): then only
//! a high-entropy value is redacted. The same classification serves JSON/YAML fields at any
//! depth (walked by `mod.rs`) and `KEY=value` / `key: value` text (the assignment rule).

use aho_corasick::{AhoCorasick, AhoCorasickBuilder};

use super::words::{word_spans, MAX_KEY_WORDS};

/// Word sequences of strong keys, longest first, with the kind they are redacted as.
const STRONG: &[(&[&str], &str)] = &[
    (&["secret", "access", "key"], "secret_key"),
    (&["connection", "string"], "connection_string"),
    (&["conn", "str"], "connection_string"),
    (&["api", "key"], "api_key"),
    (&["access", "key"], "access_key"),
    (&["private", "key"], "private_key"),
    (&["secret", "key"], "secret_key"),
    (&["password"], "password"),
    (&["passwd"], "password"),
    (&["pass"], "password"),
    (&["passphrase"], "password"),
    (&["apikey"], "api_key"),
    (&["secret"], "secret"),
    (&["token"], "token"),
    (&["jwt"], "token"),
    (&["authorization"], "authorization"),
    (&["cookie"], "cookie"),
    (&["credential"], "credential"),
    (&["credentials"], "credential"),
];

/// Last words that make a strong key describe a secret rather than hold it (`token_count`,
/// `password_length`, `secret_name`, `authorization_url`).
#[rustfmt::skip]
const DESCRIPTIVE_SUFFIXES: &[&str] = &[
    "count", "counts", "usage", "limit", "limits", "type", "types", "rate", "length", "len",
    "size", "expiry", "expires", "expiration", "ttl", "at", "url", "uri", "endpoint", "name",
    "names", "path", "file", "policy", "required", "enabled", "set", "present", "ref", "hint",
    "format", "field", "header", "param", "env", "var", "source", "provider", "method", "mode",
    "version", "kind", "issuer", "audience", "scope", "scopes", "location", "lifetime",
    "duration", "age", "id", "ids", "label", "description", "strength", "reset", "changed",
];

/// Words before `key` that make it an ordinary key (`primary_key`, `object_key`), not a weak one.
#[rustfmt::skip]
const ORDINARY_KEY_QUALIFIERS: &[&str] = &[
    "primary", "foreign", "partition", "sort", "cache", "object", "idempotency", "dedup", "group",
    "hash", "map", "lookup", "row", "range", "shard", "public", "pub", "registry", "hot",
    "translation", "i18n", "s3", "file", "bucket", "prefix", "unique", "composite", "cursor",
    "page", "next", "sequence", "message", "event", "ssh", "gpg", "license", "sort", "index",
    "table", "column", "field", "dict", "json", "yaml", "config", "env", "metadata",
];

macro_rules! providers {
    ($($p:ident),* $(,)?) => {
        /// Providers whose name in a key makes it weak: a high-entropy value after it is one of
        /// their credentials (gitleaks' keyword-in-context rules).
        pub(crate) const PROVIDERS: &[(&str, &str, &str)] = &[
            $((stringify!($p), concat!(stringify!($p), "_credential"), concat!(stringify!($p), " credential"))),*
        ];
    };
}

providers!(
    adafruit,
    adobe,
    airtable,
    algolia,
    alibaba,
    asana,
    atlassian,
    jira,
    confluence,
    beamer,
    bitbucket,
    bittrex,
    meraki,
    cloudflare,
    codecov,
    cohere,
    coinbase,
    confluent,
    contentful,
    datadog,
    discord,
    droneci,
    dropbox,
    etsy,
    facebook,
    fastly,
    finicity,
    finnhub,
    flickr,
    freshbooks,
    gitter,
    gocardless,
    heroku,
    hubspot,
    intercom,
    jfrog,
    artifactory,
    kraken,
    kucoin,
    launchdarkly,
    linkedin,
    looker,
    mailchimp,
    mailgun,
    mapbox,
    mattermost,
    messagebird,
    netlify,
    newrelic,
    nytimes,
    okta,
    plaid,
    rapidapi,
    sendbird,
    sentry,
    snyk,
    sonar,
    squarespace,
    sumologic,
    telegram,
    travis,
    twitch,
    twitter,
    typeform,
    yandex,
    zendesk,
    stripe,
    twilio,
    sendgrid,
    pagerduty,
    circleci,
    vercel,
    openai,
    anthropic,
    supabase,
    pinecone,
    mistral,
    replicate,
    huggingface,
);

/// What a key says about the value under it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum KeyClass<'a> {
    /// Nothing: look at the value's shape only.
    Plain,
    /// Redact the value whatever it is (as this kind).
    Strong(&'a str),
    /// Redact the value when it has high entropy (as this kind).
    Weak(&'a str),
}

/// The compiled key vocabulary: built-in words plus the configured keys.
#[derive(Debug, Clone)]
pub(crate) struct Keys {
    /// Strong word sequences with their kind (built-in ones unless replaced, then configured).
    strong: Vec<(Vec<String>, &'static str)>,
    /// Whether the weak classes (`*_KEY`, providers) apply (not when defaults are replaced).
    weak: bool,
    /// Every word a classified key can contain, ASCII case-insensitive: a key containing
    /// none of them is plain, which settles most keys without splitting them.
    first_words: AhoCorasick,
}

impl Keys {
    /// The vocabulary; `custom` are the configured keys (already split into words).
    pub(crate) fn new(defaults: bool, custom: Vec<Vec<String>>) -> Result<Self, String> {
        let mut strong: Vec<(Vec<String>, &'static str)> = Vec::new();
        if defaults {
            strong.extend(
                STRONG
                    .iter()
                    .map(|(w, k)| (w.iter().map(|s| (*s).to_owned()).collect(), *k)),
            );
        }
        strong.extend(custom.into_iter().map(|w| (w, "custom_key")));
        let mut firsts: Vec<String> = strong
            .iter()
            .filter_map(|(w, _)| w.first().cloned())
            .collect();
        if defaults {
            firsts.push("key".into());
            firsts.extend(PROVIDERS.iter().map(|(p, _, _)| (*p).to_owned()));
        }
        let first_words = AhoCorasickBuilder::new()
            .ascii_case_insensitive(true)
            .build(&firsts)
            .map_err(|e| e.to_string())?;
        Ok(Self {
            strong,
            weak: defaults,
            first_words,
        })
    }

    /// Words that, found in a text, may start a secret-named key (the assignment rule's
    /// keywords).
    pub(crate) fn keywords(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .strong
            .iter()
            .filter_map(|(w, _)| w.first().map(|s| s.to_ascii_lowercase()))
            .collect();
        if self.weak {
            out.push("key".into());
            out.extend(PROVIDERS.iter().map(|(p, _, _)| (*p).to_owned()));
        }
        out.sort();
        out.dedup();
        out
    }

    /// How a key classifies its value.
    pub(crate) fn classify(&self, key: &str) -> KeyClass<'static> {
        if key.len() > 128 || !self.first_words.is_match(key) {
            return KeyClass::Plain;
        }
        let mut spans = [(0usize, 0usize); MAX_KEY_WORDS];
        let n = word_spans(key, &mut spans);
        let kw = &spans[..n];
        let word = |i: usize| &key[kw[i].0..kw[i].1];
        let provider = if self.weak {
            (0..n).find_map(|i| {
                PROVIDERS
                    .iter()
                    .find(|(p, _, _)| word(i).eq_ignore_ascii_case(p))
                    .map(|(_, kind, _)| *kind)
            })
        } else {
            None
        };
        let strong = self.strong.iter().find(|(needle, _)| {
            kw.windows(needle.len()).any(|w| {
                w.iter()
                    .zip(needle)
                    .all(|(&(a, b), word)| key[a..b].eq_ignore_ascii_case(word))
            })
        });
        let descriptive = n > 1
            && DESCRIPTIVE_SUFFIXES
                .iter()
                .any(|d| word(n - 1).eq_ignore_ascii_case(d));
        if descriptive {
            return KeyClass::Plain;
        }
        if let Some((_, kind)) = strong {
            return KeyClass::Strong(provider.unwrap_or(kind));
        }
        if let Some(kind) = provider {
            return KeyClass::Weak(kind);
        }
        let last_is_key = self.weak && n > 0 && word(n - 1).eq_ignore_ascii_case("key");
        let ordinary = (0..n.saturating_sub(1)).any(|i| {
            ORDINARY_KEY_QUALIFIERS
                .iter()
                .any(|q| word(i).eq_ignore_ascii_case(q))
        });
        if last_is_key && !ordinary {
            return KeyClass::Weak("secret_key");
        }
        KeyClass::Plain
    }
}

/// Whether a value is a stand-in for a secret rather than one (`null`, `${TOKEN}`, `<token>`,
/// `***`, an earlier redaction or a privacy-mode hash).
pub(crate) fn is_placeholder(v: &str) -> bool {
    let t = v.trim();
    if t.is_empty() || t.starts_with("[REDACTED") || t.starts_with("sha256:") {
        return true;
    }
    let lower = t.to_ascii_lowercase();
    if matches!(
        lower.as_str(),
        "null"
            | "none"
            | "nil"
            | "true"
            | "false"
            | "undefined"
            | "n/a"
            | "na"
            | "required"
            | "optional"
            | "string"
            | "str"
            | "redacted"
            | "hidden"
            | "empty"
            | "unset"
    ) {
        return true;
    }
    let b = t.as_bytes();
    (t.starts_with("${") || t.starts_with("$(") || t.starts_with("{{") || t.starts_with("%("))
        || (b[0] == b'$' && b.len() > 1 && (b[1].is_ascii_alphabetic() || b[1] == b'_'))
        || (t.starts_with('<') && t.ends_with('>'))
        || b.iter()
            .all(|&c| matches!(c, b'*' | b'x' | b'X' | b'.' | b'#' | b'-' | b'?'))
}

/// Whether an unquoted value is code (`self.token`, `os.environ.get`), not a literal.
pub(crate) fn is_code_reference(v: &str) -> bool {
    v.contains('.')
        && v.split('.').all(|p| {
            p.chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && p.chars().all(|c| c.is_ascii_alphanumeric() || c == '_')
        })
}

/// Whether an unquoted word after `key:` is more likely a secret than prose or a type
/// (`hunter2`, `aB3kL9` yes; `required`, `String`, `the` no).
pub(crate) fn looks_secret(v: &str) -> bool {
    if v.len() < 4 || is_code_reference(v) {
        return false;
    }
    let digit = v.bytes().any(|c| c.is_ascii_digit());
    let symbol = v
        .bytes()
        .any(|c| !c.is_ascii_alphanumeric() && !matches!(c, b'_' | b'-' | b'.'));
    let inner_upper = v.bytes().skip(1).any(|c| c.is_ascii_uppercase())
        && v.bytes().any(|c| c.is_ascii_lowercase());
    digit || symbol || inner_upper || v.len() >= 16
}

/// Whether a value is random enough to be a credential: long, one token of a key alphabet,
/// letters and digits, not a UUID, and at least 3 bits of entropy per character.
pub(crate) fn high_entropy(v: &str) -> bool {
    let b = v.as_bytes();
    if !(16..=1024).contains(&b.len())
        || !b
            .iter()
            .all(|c| c.is_ascii_alphanumeric() || b"+/=_.~-".contains(c))
        || !b.iter().any(u8::is_ascii_alphabetic)
        || !b.iter().any(u8::is_ascii_digit)
        || is_uuid(v)
    {
        return false;
    }
    entropy(b) >= 3.0
}

fn is_uuid(v: &str) -> bool {
    let b = v.as_bytes();
    b.len() == 36
        && b.iter().enumerate().all(|(i, c)| match i {
            8 | 13 | 18 | 23 => *c == b'-',
            _ => c.is_ascii_hexdigit(),
        })
}

/// Shannon entropy in bits per byte.
fn entropy(b: &[u8]) -> f64 {
    let mut counts = [0u32; 256];
    for &c in b {
        counts[c as usize] += 1;
    }
    let n = b.len() as f64;
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}
