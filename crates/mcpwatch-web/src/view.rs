//! The page shell (head, navigation, who is signed in), error pages and small shared pieces.
//!
//! Every page body that shows traffic goes inside [`payload`], an `hx-disable` region, so
//! htmx never reads attributes in it, whatever the escaping upstream did.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{html, Markup, DOCTYPE};

use crate::assets;
use crate::session::Viewer;

/// htmx settings: no eval, no script tags from swaps, no inline indicator style (the CSP
/// forbids inline style), requests to this origin only, no history cache of page contents.
const HTMX_CONFIG: &str = r#"{"allowEval":false,"allowScriptTags":false,"includeIndicatorStyles":false,"selfRequestsOnly":true,"historyCacheSize":0,"refreshOnHistoryMiss":true}"#;

/// The pages in the navigation, in order: (path, label).
const NAV: [(&str, &str); 7] = [
    ("/", "Overview"),
    ("/alerts", "Alerts"),
    ("/events", "Events"),
    ("/live", "Live"),
    ("/tools", "Tools"),
    ("/users", "Users"),
    ("/rules", "Rules"),
];

fn head(title: &str) -> Markup {
    html! {
        head {
            meta charset="utf-8";
            meta name="viewport" content="width=device-width, initial-scale=1";
            meta name="color-scheme" content="light dark";
            meta name="htmx-config" content=(HTMX_CONFIG);
            title { (title) " · mcpwatch" }
            link rel="icon" href=(assets::ICON) type="image/svg+xml";
            link rel="stylesheet" href=(assets::STYLE);
            script src=(assets::HTMX) defer {}
            script src=(assets::HTMX_SSE) defer {}
            script src=(assets::APP_JS) defer {}
        }
    }
}

/// A full page with navigation; `active` is the nav path to highlight.
pub fn page(title: &str, active: &str, viewer: &Viewer, body: Markup) -> Html<String> {
    let doc = html! {
        (DOCTYPE)
        html lang="en" {
            (head(title))
            body {
                header.top {
                    a.brand href="/" { "mcpwatch" }
                    nav {
                        @for (path, label) in NAV {
                            @if path == active {
                                a href=(path) aria-current="page" { (label) }
                            } @else {
                                a href=(path) { (label) }
                            }
                        }
                    }
                    @if let Some(name) = &viewer.name {
                        form.who method="post" action="/logout" {
                            span { (name) @if viewer.admin { " (admin)" } }
                            input type="hidden" name="csrf" value=(viewer.csrf);
                            button type="submit" { "Sign out" }
                        }
                    }
                }
                main { (body) }
            }
        }
    };
    Html(doc.into_string())
}

/// A page without navigation (sign-in, errors).
pub fn bare(title: &str, body: Markup) -> Html<String> {
    let doc = html! {
        (DOCTYPE)
        html lang="en" { (head(title)) body { main { (body) } } }
    };
    Html(doc.into_string())
}

/// Traffic-derived content: htmx ignores every attribute inside.
pub fn payload(inner: Markup) -> Markup {
    html! { div.payload hx-disable { (inner) } }
}

/// An error shown as a page, with a status that says what happened.
#[derive(Debug)]
pub struct PageError {
    status: StatusCode,
    message: String,
}

impl PageError {
    /// An error with a message that says what to do.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        PageError {
            status,
            message: message.into(),
        }
    }

    /// The status it is shown with.
    pub fn status(&self) -> StatusCode {
        self.status
    }

    /// What it says.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// A 400 for a bad filter or form field.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, message)
    }

    /// A 500 for a store that failed.
    pub fn internal(what: &str, e: impl std::fmt::Display) -> Self {
        tracing::error!(error = %e, "dashboard: {what} failed");
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("{what} failed: {e}"),
        )
    }
}

impl IntoResponse for PageError {
    fn into_response(self) -> Response {
        let title = self.status.canonical_reason().unwrap_or("Error");
        let body = html! {
            section.error-page {
                h1 { (self.status.as_u16()) " " (title) }
                p role="alert" { (self.message) }
                p { a href="/" { "Back to the overview" } }
            }
        };
        (self.status, bare(title, body)).into_response()
    }
}

/// Runs blocking store work off the async workers.
pub async fn blocking<T: Send + 'static, E: std::fmt::Display + Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, E> + Send + 'static,
) -> Result<T, PageError> {
    match tokio::task::spawn_blocking(f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(PageError::internal(what, e)),
        Err(e) => Err(PageError::internal(what, e)),
    }
}

/// A hidden CSRF field for a form.
pub fn csrf_field(v: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(v.csrf); }
}

/// A small "level" badge; the class is from a closed set, never from traffic.
pub fn badge(kind: &'static str, text: &str) -> Markup {
    html! { span class=(format!("badge {kind}")) { (text) } }
}
