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
    Rfc3339Buf::new(ts).as_str().to_string()
}

/// A timestamp written as RFC 3339 UTC into a stack buffer: what [`format_rfc3339`] returns,
/// without the allocation or the formatting machinery, for serialising every event.
pub struct Rfc3339Buf {
    bytes: [u8; 27],
    len: usize,
}

impl Rfc3339Buf {
    /// `ts` in the [`format_rfc3339`] form (years outside 0000–9999 are clamped).
    pub fn new(ts: Timestamp) -> Self {
        let micros = ts.as_micros();
        let dt = OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1_000)
            .unwrap_or(OffsetDateTime::UNIX_EPOCH);
        let sub = micros.rem_euclid(1_000_000) as u32;
        let mut bytes = *b"0000-00-00T00:00:00.000000Z";
        let mut put = |at: usize, width: usize, mut n: u32| {
            for i in (at..at + width).rev() {
                bytes[i] = b'0' + (n % 10) as u8;
                n /= 10;
            }
        };
        put(0, 4, dt.year().clamp(0, 9999) as u32);
        put(5, 2, dt.month() as u32);
        put(8, 2, u32::from(dt.day()));
        put(11, 2, u32::from(dt.hour()));
        put(14, 2, u32::from(dt.minute()));
        put(17, 2, u32::from(dt.second()));
        let len = if sub.is_multiple_of(1_000) {
            put(20, 3, sub / 1_000);
            bytes[23] = b'Z';
            24
        } else {
            put(20, 6, sub);
            27
        };
        Self { bytes, len }
    }

    /// The text.
    pub fn as_str(&self) -> &str {
        // Only ASCII digits and separators are ever written.
        std::str::from_utf8(&self.bytes[..self.len]).unwrap_or("1970-01-01T00:00:00.000Z")
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
    fn the_stack_formatter_matches_the_calendar_for_any_time() {
        // The reference: the calendar arithmetic of the `time` crate, printed by `format!`.
        let reference = |micros: i64| {
            let dt = OffsetDateTime::from_unix_timestamp_nanos(micros as i128 * 1_000).unwrap();
            let sub = micros.rem_euclid(1_000_000);
            let head = format!(
                "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}",
                dt.year(),
                dt.month() as u8,
                dt.day(),
                dt.hour(),
                dt.minute(),
                dt.second()
            );
            if sub % 1_000 == 0 {
                format!("{head}.{:03}Z", sub / 1_000)
            } else {
                format!("{head}.{sub:06}Z")
            }
        };
        let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
        for i in 0..20_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Up to the year 9999, half of them on whole milliseconds.
            let mut micros = (x % 253_402_300_799_000_000) as i64;
            if i % 2 == 0 {
                micros -= micros % 1_000;
            }
            let ts = Timestamp::from_micros(micros);
            assert_eq!(format_rfc3339(ts), reference(micros), "{micros}");
        }
        assert_eq!(
            format_rfc3339(Timestamp::from_micros(0)),
            "1970-01-01T00:00:00.000Z"
        );
        assert_eq!(
            format_rfc3339(Timestamp::from_micros(951_782_400_000_001)),
            "2000-02-29T00:00:00.000001Z"
        );
    }

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
