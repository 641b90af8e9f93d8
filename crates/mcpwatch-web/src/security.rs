//! Headers every dashboard response carries, and the one way JSON goes into a page.
//!
//! The policy allows scripts and styles from the collector only: no inline script, no inline
//! style, no `eval` (htmx is configured with `allowEval: false`), no framing, forms post only
//! back to the collector. A page that some traffic managed to inject markup into still cannot
//! run it or send anything anywhere.

use axum::extract::Request;
use axum::http::{header, HeaderValue};
use axum::middleware::Next;
use axum::response::Response;

/// The Content-Security-Policy of every page.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; \
connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'";

/// Adds the security headers; pages (not assets) are never cached.
pub async fn headers(req: Request, next: Next) -> Response {
    let mut resp = next.run(req).await;
    let h = resp.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    h.entry(header::CACHE_CONTROL)
        .or_insert(HeaderValue::from_static("no-store"));
    resp
}

/// JSON safe to place anywhere in an HTML document: `<`, `>` and `&` become `\u003c`,
/// `\u003e` and `\u0026`, which JSON parsers read back as the same characters, so no
/// `</script>` or `<!--` can end or change the surrounding markup.
pub fn json_for_html(v: &serde_json::Value, pretty: bool) -> String {
    let text = if pretty {
        serde_json::to_string_pretty(v)
    } else {
        serde_json::to_string(v)
    }
    .unwrap_or_else(|_| "null".to_owned());
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '<' => out.push_str("\\u003c"),
            '>' => out.push_str("\\u003e"),
            '&' => out.push_str("\\u0026"),
            '\u{2028}' => out.push_str("\\u2028"),
            '\u{2029}' => out.push_str("\\u2029"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::json_for_html;

    #[test]
    fn json_in_pages_cannot_close_markup() {
        let v = serde_json::json!({"m": "</script><img src=x onerror=alert(1)>&amp;"});
        let out = json_for_html(&v, false);
        assert!(!out.contains('<') && !out.contains('>') && !out.contains('&'));
        let back: serde_json::Value = serde_json::from_str(&out).expect("still JSON");
        assert_eq!(back, v);
    }
}
