//! Latency histograms with log-spaced buckets, for percentiles from rollups.
//!
//! A bucket covers a factor of 1.04, so a percentile read from the histogram is within 2 % of
//! the true value (and is clamped to the observed min and max). Buckets are summed in SQL, so
//! percentiles over any range of hours cost one grouped scan of the rollup, not of the events.

/// Growth factor between bucket bounds.
const GROWTH: f64 = 1.04;

/// The bucket of a duration in seconds.
pub fn bucket_of(secs: f64) -> i64 {
    let micros = secs * 1e6;
    if micros.is_nan() || micros < 1.0 {
        return 0;
    }
    (micros.ln() / GROWTH.ln()).floor() as i64 + 1
}

/// A representative duration in seconds for a bucket: its geometric midpoint.
pub fn value_of(bucket: i64) -> f64 {
    if bucket <= 0 {
        return 0.0;
    }
    GROWTH.powf(bucket as f64 - 0.5) / 1e6
}

/// Encodes `(bucket, count)` pairs sorted by bucket: 2 bytes of bucket, 4 of count, each
/// little-endian.
pub fn encode(buckets: &std::collections::BTreeMap<i64, u64>) -> Vec<u8> {
    let mut out = Vec::with_capacity(buckets.len() * 6);
    for (&b, &c) in buckets {
        out.extend_from_slice(&(b.clamp(0, u16::MAX as i64) as u16).to_le_bytes());
        out.extend_from_slice(&(c.min(u32::MAX as u64) as u32).to_le_bytes());
    }
    out
}

/// Adds the pairs of an encoded histogram into `into`; a malformed tail is ignored.
pub fn decode_into(blob: &[u8], into: &mut std::collections::BTreeMap<i64, u64>) {
    for pair in blob.chunks_exact(6) {
        let b = u16::from_le_bytes([pair[0], pair[1]]) as i64;
        let c = u32::from_le_bytes([pair[2], pair[3], pair[4], pair[5]]) as u64;
        *into.entry(b).or_default() += c;
    }
}

/// Percentiles from `(bucket, count)` pairs sorted by bucket, clamped to `[min, max]`.
pub fn percentiles(buckets: &[(i64, u64)], qs: &[f64], min: f64, max: f64) -> Vec<f64> {
    let total: u64 = buckets.iter().map(|(_, c)| c).sum();
    qs.iter()
        .map(|&q| {
            if total == 0 {
                return 0.0;
            }
            let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
            let mut seen = 0;
            for &(b, c) in buckets {
                seen += c;
                if seen >= rank {
                    return value_of(b).clamp(min, max);
                }
            }
            max
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_within_two_percent() {
        let mut counts = std::collections::BTreeMap::new();
        for ms in 1..=1000 {
            *counts.entry(bucket_of(ms as f64 / 1000.0)).or_insert(0u64) += 1;
        }
        let buckets: Vec<(i64, u64)> = counts.into_iter().collect();
        let got = percentiles(&buckets, &[0.5, 0.95, 0.99], 0.001, 1.0);
        for (g, want) in got.iter().zip([0.5, 0.95, 0.99]) {
            assert!((g - want).abs() / want < 0.02, "{g} vs {want}");
        }
    }

    #[test]
    fn encoding_round_trips_and_merges() {
        let mut a = std::collections::BTreeMap::new();
        a.insert(3, 5u64);
        a.insert(400, 7);
        let mut merged = std::collections::BTreeMap::new();
        decode_into(&encode(&a), &mut merged);
        decode_into(&encode(&a), &mut merged);
        assert_eq!(merged.into_iter().collect::<Vec<_>>(), [(3, 10), (400, 14)]);
    }

    #[test]
    fn zero_and_tiny_durations_land_in_bucket_zero() {
        assert_eq!(bucket_of(0.0), 0);
        assert_eq!(bucket_of(f64::NAN), 0);
        assert_eq!(percentiles(&[(0, 3)], &[0.5], 0.0, 0.0), [0.0]);
    }
}
