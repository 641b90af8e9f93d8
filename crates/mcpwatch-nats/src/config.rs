//! The `[nats]` section of `serve`'s config file: which servers, and what the stream and the
//! collector's consumer should be. `--nats URL` on the command line sets `url`.
//!
//! ```toml
//! [nats]
//! url = "nats://n1:4222,nats://n2:4222,nats://n3:4222"
//! stream = "MCPWATCH_EVENTS"    # the stream's name
//! replicas = 3                  # default: 3 in a cluster, 1 on a single server
//! max_age = "7d"                # events older than this are discarded
//! max_bytes = "8GB"             # and the oldest once the stream holds this much
//! duplicate_window = "2m"       # a re-published event id is dropped within this window
//! consumer = "mcpwatch-serve"   # the durable consumer's name
//! ```

use mcpwatch_core::config::ConfigError;
use mcpwatch_core::time_fmt::{parse_duration, parse_size};

use crate::consume::ConsumerSettings;
use crate::stream::StreamSettings;

/// `[nats]`, checked.
#[derive(Debug, Clone, Default)]
pub struct NatsConfig {
    /// The servers; `None` when the section does not name any (then `serve` reads no stream).
    pub url: Option<String>,
    /// The stream.
    pub stream: StreamSettings,
    /// The consumer.
    pub consumer: ConsumerSettings,
}

const KEYS: &str = "url, stream, replicas, max_age, max_bytes, duplicate_window or consumer";

impl NatsConfig {
    /// Reads the section, reporting every problem at once.
    pub fn from_table(table: &toml::Table) -> Result<Self, Vec<ConfigError>> {
        let mut cfg = NatsConfig::default();
        let mut errors = Vec::new();
        for (key, value) in table {
            let path = format!("nats.{key}");
            let mut bad = |m: String| errors.push(ConfigError::at(path.clone(), m));
            match (key.as_str(), value) {
                ("url", toml::Value::String(s)) => match crate::parse_urls(s) {
                    Ok(_) => cfg.url = Some(s.clone()),
                    Err(e) => bad(e.to_string()),
                },
                ("stream", toml::Value::String(s)) => {
                    if valid_name(s) {
                        cfg.stream.name = s.clone();
                    } else {
                        bad("a stream name is 1 to 64 letters, digits, '-' or '_'".into());
                    }
                }
                ("consumer", toml::Value::String(s)) => {
                    if valid_name(s) {
                        cfg.consumer.durable = s.clone();
                    } else {
                        bad("a consumer name is 1 to 64 letters, digits, '-' or '_'".into());
                    }
                }
                ("replicas", toml::Value::Integer(n)) if (1..=5).contains(n) => {
                    cfg.stream.replicas = Some(*n as usize)
                }
                ("replicas", _) => bad("replicas is a number from 1 to 5".into()),
                ("max_age", toml::Value::String(s)) => match parse_duration(s) {
                    Ok(d) if !d.is_zero() => cfg.stream.max_age = d,
                    Ok(_) => bad("must be more than 0".into()),
                    Err(e) => bad(e),
                },
                ("duplicate_window", toml::Value::String(s)) => match parse_duration(s) {
                    Ok(d) if !d.is_zero() => cfg.stream.duplicate_window = d,
                    Ok(_) => bad("must be more than 0".into()),
                    Err(e) => bad(e),
                },
                ("max_bytes", toml::Value::String(s)) => match parse_size(s) {
                    Ok(n) if n > 0 => cfg.stream.max_bytes = i64::try_from(n).unwrap_or(i64::MAX),
                    Ok(_) => bad("must be more than 0".into()),
                    Err(e) => bad(e),
                },
                ("max_bytes", toml::Value::Integer(n)) if *n > 0 => cfg.stream.max_bytes = *n,
                ("url" | "stream" | "consumer", _) => bad("must be a string".into()),
                ("max_age" | "duplicate_window", _) => {
                    bad("write a duration as a string with a unit, e.g. \"2m\" or \"7d\"".into())
                }
                ("max_bytes", _) => {
                    bad("write a size such as \"8GB\", or a number of bytes".into())
                }
                _ => bad(format!("unknown key; expected {KEYS}")),
            }
        }
        if cfg.stream.duplicate_window > cfg.stream.max_age {
            errors.push(ConfigError::at(
                "nats.duplicate_window",
                "must not be longer than max_age",
            ));
        }
        if errors.is_empty() {
            Ok(cfg)
        } else {
            Err(errors)
        }
    }
}

fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(toml_text: &str) -> Result<NatsConfig, Vec<String>> {
        let table: toml::Table = toml_text.parse().expect("toml");
        NatsConfig::from_table(&table)
            .map_err(|errs| errs.iter().map(ToString::to_string).collect())
    }

    #[test]
    fn a_full_section_sets_every_setting() {
        let cfg = check(
            "url = \"nats://a:4222,nats://b:4222\"\nstream = \"EV\"\nreplicas = 3\nmax_age = \"1d\"\n\
             max_bytes = \"1GB\"\nduplicate_window = \"5m\"\nconsumer = \"c1\"",
        )
        .expect("valid");
        assert_eq!(cfg.url.as_deref(), Some("nats://a:4222,nats://b:4222"));
        assert_eq!(cfg.stream.name, "EV");
        assert_eq!(cfg.stream.replicas, Some(3));
        assert_eq!(cfg.stream.max_age, std::time::Duration::from_secs(86_400));
        assert_eq!(
            cfg.stream.duplicate_window,
            std::time::Duration::from_secs(300)
        );
        assert!(cfg.stream.max_bytes >= 1_000_000_000);
        assert_eq!(cfg.consumer.durable, "c1");
    }

    #[test]
    fn every_problem_is_reported_with_its_key() {
        let errs = check(
            "url = \"http://x\"\nstream = \"a.b\"\nreplicas = 9\nmax_age = 5\nmax_bytes = \"lots\"\nspeed = 1",
        )
        .expect_err("invalid");
        assert_eq!(errs.len(), 6, "{errs:?}");
        for key in [
            "nats.url",
            "nats.stream",
            "nats.replicas",
            "nats.max_age",
            "nats.max_bytes",
            "nats.speed",
        ] {
            assert!(errs.iter().any(|e| e.contains(key)), "{key}: {errs:?}");
        }
    }
}
