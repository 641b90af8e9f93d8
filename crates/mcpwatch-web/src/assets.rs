//! The dashboard's static files, compiled into the binary: the vendored htmx and its SSE
//! extension (versions in the file names, licenses beside them in `assets/`), the page script
//! and the stylesheet. Names carry versions, so they are cached for a year.

use axum::http::{header, HeaderValue};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;

use crate::WebState;

/// htmx 2.0.11 (Zero-Clause BSD), `dist/htmx.min.js` from the npm package `htmx.org`.
pub const HTMX: &str = "/assets/htmx-2.0.11.min.js";
/// htmx-ext-sse 2.2.4 (Zero-Clause BSD), `dist/sse.min.js` from the npm package.
pub const HTMX_SSE: &str = "/assets/htmx-ext-sse-2.2.4.min.js";
/// The dashboard's own script (pause, live counters, overview refresh).
pub const APP_JS: &str = "/assets/app-1.js";
/// The page icon (browsers ask for one; this keeps them from asking for `/favicon.ico`).
pub const ICON: &str = "/assets/favicon-1.svg";
/// The stylesheet.
pub const STYLE: &str = "/assets/style-1.css";

const JS: &str = "text/javascript; charset=utf-8";

fn asset(body: &'static [u8], content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CACHE_CONTROL,
                HeaderValue::from_static("public, max-age=31536000, immutable"),
            ),
        ],
        body,
    )
        .into_response()
}

/// The routes under `/assets/`.
pub fn router() -> Router<WebState> {
    Router::new()
        .route(
            HTMX,
            get(|| async { asset(include_bytes!("../assets/htmx-2.0.11.min.js"), JS) }),
        )
        .route(
            HTMX_SSE,
            get(|| async { asset(include_bytes!("../assets/htmx-ext-sse-2.2.4.min.js"), JS) }),
        )
        .route(
            APP_JS,
            get(|| async { asset(include_bytes!("../assets/app.js"), JS) }),
        )
        .route(
            ICON,
            get(|| async { asset(include_bytes!("../assets/favicon.svg"), "image/svg+xml") }),
        )
        .route(
            STYLE,
            get(|| async {
                asset(
                    include_bytes!("../assets/style.css"),
                    "text/css; charset=utf-8",
                )
            }),
        )
}
