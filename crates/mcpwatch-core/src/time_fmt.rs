//! Parsing and printing of times and durations as users write them.
//!
//! Timestamps are RFC 3339 or Unix seconds; durations are humantime (`5m`, `1h 30m`, `30d`);
//! sizes are bytes with an optional unit (`500MB`, `10 GiB`).

use time::format_description::well_known::Rfc3339;
use time::OffsetDateTime;

use crate::event::Timestamp;

/// Parses an RFC 3339 timestamp with any offset into UTC microseconds.
pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
    let dt = OffsetDateTime::parse(s, &Rfc3339).map_err(|e| {
        format!("not an RFC 3339 timestamp ({e}); write it like 2026-11-24T19:20:00.123Z")
    })?;
    let micros = dt.unix_timestamp_nanos() / 1_000;
    Timestamp::checked_from_micros(micros)
}

/// Formats a timestamp as RFC 3339 UTC with milliseconds, or microseconds when it has them.
pub fn format_rfc3339(ts: Timestamp) -> String {
    let micros = ts.as_micros();
    let dt = OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1_000)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    let (y, mo, d) = (dt.year(), dt.month() as u8, dt.day());
    let (h, mi, s) = (dt.hour(), dt.minute(), dt.second());
    let sub = micros.rem_euclid(1_000_000);
    if sub % 1_000 == 0 {
        format!(
            "{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{:03}Z",
            sub / 1_000
        )
    } else {
        format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{sub:06}Z")
    }
}

/// Parses a duration such as `90s`, `5m`, `1h 30m` or `30d`.
pub fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s.trim())
        .map_err(|e| format!("not a duration ({e}); write it like 30s, 5m, 1h or 30d"))
}

/// Parses a size such as `1048576`, `500MB`, `10 GiB` into bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size; write it like 500MB or 10GiB"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "kb" | "k" => 1e3,
        "mb" | "m" => 1e6,
        "gb" | "g" => 1e9,
        "tb" | "t" => 1e12,
        "kib" => 1024.0,
        "mib" => 1024.0 * 1024.0,
        "gib" => 1024.0 * 1024.0 * 1024.0,
        "tib" => 1024f64.powi(4),
        other => {
            return Err(format!(
                "unknown size unit `{other}`; use B, KB, MB, GB, TB, KiB, MiB, GiB or TiB"
            ))
        }
    };
    Ok((n * mult) as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_offsets_normalised_to_utc() {
        let ts = parse_rfc3339("2026-11-24T20:20:00.123+01:00").unwrap();
        assert_eq!(format_rfc3339(ts), "2026-11-24T19:20:00.123Z");
        let ts = parse_rfc3339("2026-11-24T19:20:00.123456Z").unwrap();
        assert_eq!(format_rfc3339(ts), "2026-11-24T19:20:00.123456Z");
        assert!(parse_rfc3339("yesterday").unwrap_err().contains("RFC 3339"));
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("500MB").unwrap(), 500_000_000);
        assert_eq!(parse_size("1 GiB").unwrap(), 1 << 30);
        assert!(parse_size("10 parsecs").is_err());
        assert_eq!(parse_duration("5m").unwrap().as_secs(), 300);
        assert!(parse_duration("soon").is_err());
    }
}
