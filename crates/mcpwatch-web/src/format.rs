//! Numbers, durations, sizes and times as a person reads them on a page.

use mcpwatch_core::{time_fmt, Timestamp};

/// `1234567` → `1,234,567`.
pub fn count(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::with_capacity(s.len() + s.len() / 3);
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds as `850 µs`, `12.3 ms` or `1.20 s`.
pub fn secs(s: f64) -> String {
    if !s.is_finite() {
        return "–".to_owned();
    }
    if s < 0.001 {
        format!("{:.0} µs", s * 1e6)
    } else if s < 1.0 {
        format!("{:.1} ms", s * 1e3)
    } else {
        format!("{s:.2} s")
    }
}

/// A ratio as `97.5 %`.
pub fn pct(r: f64) -> String {
    if !r.is_finite() {
        return "–".to_owned();
    }
    format!("{:.1} %", r * 100.0)
}

/// Bytes as `12.3 MiB`.
pub fn bytes(b: f64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b.max(0.0);
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{v:.0} {}", UNITS[u])
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// A timestamp as RFC 3339 in UTC, to the second.
pub fn time(ts: Timestamp) -> String {
    let full = time_fmt::format_rfc3339(ts);
    match full.split_once('.') {
        Some((head, _)) => format!("{head}Z"),
        None => full,
    }
}

/// How long before `now`: `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
pub fn ago(now: Timestamp, ts: Timestamp) -> String {
    let d = (now.as_micros() - ts.as_micros()).max(0) / 1_000_000;
    match d {
        0..60 => format!("{d} s ago"),
        60..3600 => format!("{} min ago", d / 60),
        3600..86_400 => format!("{} h ago", d / 3600),
        _ => format!("{} d ago", d / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(count(0), "0");
        assert_eq!(count(1234567), "1,234,567");
        assert_eq!(secs(0.0004), "400 µs");
        assert_eq!(secs(0.0123), "12.3 ms");
        assert_eq!(secs(2.0), "2.00 s");
        assert_eq!(pct(0.975), "97.5 %");
        assert_eq!(bytes(1536.0), "1.5 KiB");
        let now = Timestamp::from_micros(10_000_000_000);
        assert_eq!(
            ago(now, Timestamp::from_micros(10_000_000_000 - 300_000_000)),
            "5 min ago"
        );
    }
}
