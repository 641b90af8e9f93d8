//! Resource URIs in one canonical spelling, so that a pattern such as `file:///etc/**` cannot
//! be walked around by writing the same resource another way.
//!
//! [`normalize`] lower-cases the scheme and the host, decodes percent-escapes of unreserved
//! characters (`%65` → `e`) and upper-cases the others, resolves `.` and `..` segments,
//! collapses empty segments (`////etc` → `/etc`), drops `localhost` from `file:` URIs and
//! reads `file:/etc/passwd` as `file:///etc/passwd`. What it cannot put in one spelling it
//! refuses with [`UriError`]: a bad escape, an escaped `/`, `\` or NUL (a server that decodes
//! them would read another path), control characters and whitespace, a `file:` URI naming a
//! host or a user, and text without a scheme. Queries and fragments are kept (with the same escape rules), never reordered.

use std::fmt::Write as _;

/// Why a URI has no canonical spelling.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UriError {
    /// No `scheme:` at the start.
    #[error("no scheme (a resource URI starts with e.g. file: or https:)")]
    NoScheme,
    /// `%` not followed by two hex digits.
    #[error("a % not followed by two hex digits")]
    BadEscape,
    /// An escape that would change the path's structure once a server decodes it.
    #[error("an escaped {0} (%{1:02X}), which servers may decode into a different path")]
    StructuralEscape(&'static str, u8),
    /// A control character or whitespace.
    #[error("a control character or whitespace (U+{0:04X})")]
    Control(u32),
    /// A `file:` URI with a user name or password.
    #[error("a file: URI with user information")]
    FileUserinfo,
    /// A `file:` URI naming a host other than `localhost`: servers read it in different ways
    /// (`file://etc/passwd` is host `etc` to some, the relative path `etc/passwd` to others).
    #[error("a file: URI with host {0:?}; write file:///path")]
    FileHost(String),
}

/// Unreserved characters (RFC 3986 §2.3): decoded wherever they are escaped.
fn unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The canonical spelling of `uri`, or why there is none.
pub fn normalize(uri: &str) -> Result<String, UriError> {
    if let Some(c) = uri.chars().find(|c| c.is_control() || c.is_whitespace()) {
        return Err(UriError::Control(u32::from(c)));
    }
    let colon = uri.find(':').ok_or(UriError::NoScheme)?;
    let scheme = &uri[..colon];
    let valid_scheme = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !valid_scheme {
        return Err(UriError::NoScheme);
    }
    let scheme = scheme.to_ascii_lowercase();
    let rest = &uri[colon + 1..];
    let (before_fragment, fragment) = split_at_first(rest, '#');
    let (hier, query) = split_at_first(before_fragment, '?');
    let file = scheme == "file";
    let (authority, path) = match hier.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            (Some(&after[..end]), &after[end..])
        }
        // `file:/etc/passwd` is `file:///etc/passwd` (RFC 8089).
        None if file && hier.starts_with('/') => (Some(""), hier),
        None => (None, hier),
    };
    let mut out = String::with_capacity(uri.len() + 2);
    out.push_str(&scheme);
    out.push(':');
    if let Some(authority) = authority {
        out.push_str("//");
        out.push_str(&normalize_authority(&scheme, authority)?);
    }
    let path = decode_unreserved(path, true)?;
    if authority.is_some() || path.starts_with('/') {
        out.push_str(&remove_dot_segments(&path));
    } else {
        out.push_str(&path);
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(&decode_unreserved(q, false)?);
    }
    if let Some(f) = fragment {
        out.push('#');
        out.push_str(&decode_unreserved(f, false)?);
    }
    Ok(out)
}

fn split_at_first(s: &str, c: char) -> (&str, Option<&str>) {
    match s.split_once(c) {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    }
}

fn normalize_authority(scheme: &str, authority: &str) -> Result<String, UriError> {
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((u, h)) => (Some(u), h),
        None => (None, authority),
    };
    if scheme == "file" && userinfo.is_some() {
        return Err(UriError::FileUserinfo);
    }
    // The port follows the last `:` outside an IPv6 literal's brackets.
    let (host, port) = match hostport.rfind(':') {
        Some(i) if !hostport[i..].contains(']') => (&hostport[..i], Some(&hostport[i + 1..])),
        _ => (hostport, None),
    };
    let host = decode_unreserved(host, false)?.to_ascii_lowercase();
    let mut out = String::new();
    if let Some(u) = userinfo {
        out.push_str(&decode_unreserved(u, false)?);
        out.push('@');
    }
    if scheme == "file" && !(host.is_empty() || host == "localhost") {
        return Err(UriError::FileHost(host));
    }
    if scheme != "file" {
        out.push_str(&host);
    }
    let default_port = match scheme {
        "http" | "ws" => Some("80"),
        "https" | "wss" => Some("443"),
        _ => None,
    };
    match port {
        Some(p) if !p.is_empty() && Some(p) != default_port => {
            out.push(':');
            out.push_str(p);
        }
        _ => {}
    }
    Ok(out)
}

/// Decodes escaped unreserved characters and upper-cases the other escapes. In a path, an
/// escaped `/`, `\` or NUL has no canonical spelling and is refused.
fn decode_unreserved(s: &str, path: bool) -> Result<String, UriError> {
    let bytes = s.as_bytes();
    let mut out = String::with_capacity(s.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] != b'%' {
            let next = s[i..].find('%').map_or(s.len(), |n| i + n);
            out.push_str(&s[i..next]);
            i = next;
            continue;
        }
        let hex = |b: u8| char::from(b).to_digit(16);
        let (Some(hi), Some(lo)) = (
            bytes.get(i + 1).copied().and_then(hex),
            bytes.get(i + 2).copied().and_then(hex),
        ) else {
            return Err(UriError::BadEscape);
        };
        let b = (hi * 16 + lo) as u8;
        match b {
            _ if unreserved(b) => out.push(char::from(b)),
            b'/' if path => return Err(UriError::StructuralEscape("/", b)),
            b'\\' if path => return Err(UriError::StructuralEscape("\\", b)),
            0 => return Err(UriError::StructuralEscape("NUL", b)),
            _ => {
                let _ = write!(out, "%{b:02X}");
            }
        }
        i += 3;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 on a path that starts with `/` (or is empty), with empty segments dropped:
/// `/a//b/./c/../d` → `/a/b/d`. `..` above the root stays at the root. A trailing `/` (or a
/// last segment of `.` or `..`) is kept as a trailing `/`.
fn remove_dot_segments(path: &str) -> String {
    let mut segments: Vec<&str> = Vec::new();
    let mut trailing = false;
    for seg in path.split('/') {
        trailing = false;
        match seg {
            "" => trailing = true,
            "." => trailing = true,
            ".." => {
                segments.pop();
                trailing = true;
            }
            s => segments.push(s),
        }
    }
    let mut out = String::with_capacity(path.len());
    for s in &segments {
        out.push('/');
        out.push_str(s);
    }
    if trailing || segments.is_empty() {
        out.push('/');
    }
    if path.is_empty() {
        out.clear();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_of_etc_passwd_is_one() {
        for spelling in [
            "file:///etc/passwd",
            "file:///tmp/../etc/passwd",
            "file:////etc/passwd",
            "file:///%65tc/passwd",
            "FILE:///etc/passwd",
            "file://localhost/etc/passwd",
            "file://LOCALHOST/etc/passwd",
            "file:///./etc/passwd",
            "file:/etc/passwd",
            "file:///etc//passwd",
            "file:///%2e%2e/etc/passwd",
            "file:///etc/./x/%2E%2E/passwd",
        ] {
            assert_eq!(
                normalize(spelling).as_deref(),
                Ok("file:///etc/passwd"),
                "{spelling}"
            );
        }
    }

    #[test]
    fn hosts_ports_queries_and_opaque_uris() {
        let cases = [
            (
                "HTTPS://Example.COM:443/a/../b?x=%7e#F%2f",
                "https://example.com/b?x=~#F%2F",
            ),
            ("http://example.com:8080", "http://example.com:8080"),
            ("http://[::1]:80/", "http://[::1]/"),
            ("urn:isbn:0451450523", "urn:isbn:0451450523"),
            ("mem:%41bc", "mem:Abc"),
            ("file:///etc/", "file:///etc/"),
            ("file:///etc/..", "file:///"),
            ("file://", "file://"),
            ("db://x/a%20b", "db://x/a%20b"),
        ];
        for (input, want) in cases {
            assert_eq!(normalize(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn what_has_no_canonical_spelling_is_refused() {
        for (input, want) in [
            ("/etc/passwd", UriError::NoScheme),
            ("1file:///x", UriError::NoScheme),
            (
                "file:///etc%2Fpasswd",
                UriError::StructuralEscape("/", b'/'),
            ),
            (
                "file:///etc%5cpasswd",
                UriError::StructuralEscape("\\", b'\\'),
            ),
            (
                "file:///etc/passwd%00.txt",
                UriError::StructuralEscape("NUL", 0),
            ),
            ("file:///etc/%zzpasswd", UriError::BadEscape),
            ("file:///etc/passwd%2", UriError::BadEscape),
            ("file:///etc/pass wd", UriError::Control(0x20)),
            ("file:///etc/passwd\n", UriError::Control(0x0a)),
            ("file://user@localhost/etc/passwd", UriError::FileUserinfo),
            ("file://etc/passwd", UriError::FileHost("etc".into())),
            ("file://Server/share/x", UriError::FileHost("server".into())),
        ] {
            assert_eq!(normalize(input), Err(want), "{input}");
        }
    }
}
