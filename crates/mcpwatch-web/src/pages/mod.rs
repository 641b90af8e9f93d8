//! One module per page. Shared here: the time range of a page, which lives in the URL as a
//! relative `range=1h` or as absolute `since`/`until` bounds, so a link can be shared and a
//! reload shows "the last hour" again.

pub mod alerts;
pub mod events;
pub mod live;
pub mod overview;
pub mod rules;
pub mod tools;
pub mod users;

use std::time::Duration;

use mcpwatch_core::{time_fmt, Timestamp};
use mcpwatch_server::http::params::parse_time;

use crate::view::PageError;

/// The relative ranges offered in the pickers.
pub const RANGES: [&str; 6] = ["15m", "1h", "6h", "24h", "7d", "30d"];

/// A resolved time range.
#[derive(Debug, Clone)]
pub struct Range {
    /// Start (inclusive).
    pub since: Timestamp,
    /// End (exclusive).
    pub until: Timestamp,
    /// The relative range it came from, if any (`1h`).
    pub relative: Option<String>,
}

impl Range {
    /// From `range` (a duration back from now) or `since`/`until` (RFC 3339, Unix seconds or a
    /// duration back from now); `default` when none is given.
    pub fn parse(
        range: Option<&str>,
        since: Option<&str>,
        until: Option<&str>,
        now: Timestamp,
        default: &str,
    ) -> Result<Range, PageError> {
        let bad = |e: mcpwatch_server::http::ApiError| PageError::bad_request(e.message());
        let range = range.filter(|r| !r.is_empty());
        let since = since.filter(|r| !r.is_empty());
        let until = until.filter(|r| !r.is_empty());
        if range.is_some() && (since.is_some() || until.is_some()) {
            return Err(PageError::bad_request(
                "give either range (like 1h) or since/until, not both",
            ));
        }
        if since.is_none() && until.is_none() {
            let r = range.unwrap_or(default);
            let d = time_fmt::parse_duration(r).map_err(|e| {
                PageError::bad_request(format!(
                    "range=`{r}` is not a duration ({e}); write it like 15m, 1h or 7d"
                ))
            })?;
            return Ok(Range {
                since: now.saturating_sub(d),
                until: now,
                relative: Some(r.to_owned()),
            });
        }
        let until = until
            .map(|u| parse_time("until", u, now).map_err(bad))
            .transpose()?
            .unwrap_or(now);
        let since = since
            .map(|s| parse_time("since", s, now).map_err(bad))
            .transpose()?
            .unwrap_or_else(|| until.saturating_sub(Duration::from_secs(3600)));
        if since >= until {
            return Err(PageError::bad_request("since must be before until"));
        }
        Ok(Range {
            since,
            until,
            relative: None,
        })
    }
}
