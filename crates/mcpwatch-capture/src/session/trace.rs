//! W3C trace context of a request, so that its spans join the caller's trace: the request's
//! own `params._meta.traceparent` (the MCP semantic conventions, either transport), else the
//! `traceparent` header of the HTTP request that carried it (the gateway sets that with
//! [`SessionTracker::set_transport_trace`]). Only a well-formed value is kept, lower-cased, so
//! what reaches an event is 55 bytes of hex and dashes and nothing a caller chose.

use serde_json::Value;

use super::SessionTracker;

/// `version-traceid-parentid-flags` (W3C Trace Context level 1); `None` unless well formed.
pub fn parse_traceparent(v: &str) -> Option<String> {
    let v = v.trim();
    let parts: Vec<&str> = v.split('-').collect();
    let hex = |s: &str, n: usize| s.len() == n && s.bytes().all(|b| b.is_ascii_hexdigit());
    let [version, trace, parent, flags, ..] = parts[..] else {
        return None;
    };
    // Version ff is invalid; version 00 has exactly four fields, later ones may add more.
    if !hex(version, 2)
        || version.eq_ignore_ascii_case("ff")
        || (version == "00" && parts.len() != 4)
    {
        return None;
    }
    if !hex(trace, 32) || !hex(parent, 16) || !hex(flags, 2) {
        return None;
    }
    if trace.bytes().all(|b| b == b'0') || parent.bytes().all(|b| b == b'0') {
        return None;
    }
    Some(format!("00-{trace}-{parent}-{flags}").to_ascii_lowercase())
}

impl SessionTracker {
    /// The `traceparent` header of the HTTP request whose body is fed next (`None` clears it).
    pub fn set_transport_trace(&mut self, header: Option<&str>) {
        self.transport_trace = header.and_then(parse_traceparent);
    }

    /// The trace a request joins.
    pub(super) fn trace_of(&self, params: &Value) -> Option<String> {
        params
            .get("_meta")
            .and_then(|m| m.get("traceparent"))
            .and_then(Value::as_str)
            .and_then(parse_traceparent)
            .or_else(|| self.transport_trace.clone())
    }
}

#[cfg(test)]
mod tests {
    use super::parse_traceparent;

    #[test]
    fn only_well_formed_traceparents_are_kept() {
        let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(parse_traceparent(good).as_deref(), Some(good));
        assert_eq!(
            parse_traceparent(&good.to_ascii_uppercase()).as_deref(),
            Some(good)
        );
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-x",
            "00-4bf92f3577b34da6a3ce929d0e0e473g-00f067aa0ba902b7-01",
            "00-<script>-00f067aa0ba902b7-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad:?}");
        }
    }
}
