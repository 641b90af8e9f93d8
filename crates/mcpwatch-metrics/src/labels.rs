//! Label sets, and the bound that keeps label values from growing without limit.
//!
//! Every label whose values come from traffic (server, tool, user, method, error code, …) goes
//! through a [`LabelBound`]: the first `cap` distinct values keep their name, later ones are
//! reported as [`OVERFLOW`], and how many values were refused is itself a metric.
//!
//! Architecture Invariant: the number of series is bounded by configuration, never by traffic,
//! and no label value is longer than [`MAX_LABEL_BYTES`] (ingest bounds names already; this is
//! the second line, for values that reach a label some other way).

use std::collections::HashSet;

use prometheus_client::encoding::{EncodeLabel, EncodeLabelSet, LabelSetEncoder};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

/// The label value for everything past a bound.
pub const OVERFLOW: &str = "other";

/// The longest label value kept; longer ones are reported as [`OVERFLOW`].
pub const MAX_LABEL_BYTES: usize = 128;

/// Admits at most `cap` distinct values of one label.
#[derive(Debug)]
pub struct LabelBound {
    seen: HashSet<String>,
    cap: usize,
    refused: Counter,
    values: Gauge,
}

impl LabelBound {
    /// A bound of `cap` values reporting through `refused` and `values`.
    pub fn new(cap: usize, refused: Counter, values: Gauge) -> Self {
        Self {
            seen: HashSet::new(),
            cap,
            refused,
            values,
        }
    }

    /// `v` if it has its own label value, else [`OVERFLOW`].
    pub fn admit<'a>(&mut self, v: &'a str) -> &'a str {
        if v.len() > MAX_LABEL_BYTES {
            self.refused.inc();
            return OVERFLOW;
        }
        if self.seen.contains(v) {
            return v;
        }
        if self.seen.len() >= self.cap {
            self.refused.inc();
            return OVERFLOW;
        }
        self.seen.insert(v.to_owned());
        self.values.set(self.seen.len() as i64);
        v
    }
}

/// A label set of string pairs that leaves out empty values, so an absent attribute (no tool
/// on `initialize`, no `error_type` on success) is absent from the series, as in OTel.
#[derive(Debug, Clone, Hash, PartialEq, Eq)]
pub struct Labels<const N: usize>(pub [(&'static str, String); N]);

impl<const N: usize> EncodeLabelSet for Labels<N> {
    fn encode(&self, encoder: &mut LabelSetEncoder<'_>) -> Result<(), std::fmt::Error> {
        for (k, v) in &self.0 {
            if v.is_empty() {
                continue;
            }
            (*k, v.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

/// Builds a [`Labels`] from keys and borrowed values.
pub fn labels<const N: usize>(pairs: [(&'static str, &str); N]) -> Labels<N> {
    Labels(pairs.map(|(k, v)| {
        let v = if v.len() > MAX_LABEL_BYTES {
            OVERFLOW
        } else {
            v
        };
        (k, v.to_owned())
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_value_never_becomes_a_label() {
        let long = "x".repeat(1_000_000);
        let refused = Counter::default();
        let mut bound = LabelBound::new(10, refused.clone(), Gauge::default());
        assert_eq!(bound.admit(&long), OVERFLOW);
        assert_eq!(refused.get(), 1);
        assert_eq!(bound.admit("fs"), "fs");
        let set = labels([("server", long.as_str()), ("tool", "read")]);
        assert_eq!(set.0[0].1, OVERFLOW);
        assert_eq!(set.0[1].1, "read");
    }
}
