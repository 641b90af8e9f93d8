//! How far ahead of the collector's clock detection lets event time run.
//!
//! Every window, baseline and idle sweep in detection moves with the newest event time seen. One
//! event dated far ahead (a capture host whose clock is wrong, or anything that reaches the
//! engine without ingest's skew check) would move all of them at once: open windows expire,
//! baselines are swept, and later real events count as late. So once the engine knows the
//! collector's clock (the live path ticks it every second), an event dated more than
//! [`MAX_AHEAD`] past that clock is detected on as if it happened at the clock's time, and
//! counted. The event itself is stored as sent; only detection's view is moved.
//!
//! Without a clock (replay) nothing is moved: replay sorts events by time first, so an outlier
//! comes last and cannot disturb what came before it.

use std::borrow::Cow;
use std::time::Duration;

use mcpwatch_core::{Event, Timestamp};

/// How far past the collector's clock event time is trusted: clocks of capture hosts that are
/// kept by NTP are well within it, and windows shorter than it are rare.
pub const MAX_AHEAD: Duration = Duration::from_secs(30);

/// What a snapshot keeps of a [`TimeGuard`]: the clock (µs) and the moved count.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub(crate) struct TimeState {
    wall: Option<i64>,
    moved: u64,
}

/// Bounds event time by the collector's clock.
#[derive(Debug)]
pub(crate) struct TimeGuard {
    /// The collector's clock at the last tick; `None` until the first (replay has none).
    wall: Option<Timestamp>,
    max_ahead: Duration,
    /// Events dated past the bound, detected at the clock's time instead.
    pub(crate) moved: u64,
}

impl TimeGuard {
    pub(crate) fn new(max_ahead: Duration) -> Self {
        Self {
            wall: None,
            max_ahead,
            moved: 0,
        }
    }

    /// The clock and the count of moved events, for a snapshot.
    pub(crate) fn save(&self) -> TimeState {
        TimeState {
            wall: self.wall.map(Timestamp::as_micros),
            moved: self.moved,
        }
    }

    /// Takes the state [`TimeGuard::save`] wrote.
    pub(crate) fn load(&mut self, state: &TimeState) {
        self.wall = state.wall.map(Timestamp::from_micros);
        self.moved = state.moved;
    }

    /// The collector's clock says `now`.
    pub(crate) fn tick(&mut self, now: Timestamp) {
        self.wall = Some(self.wall.map_or(now, |w| w.max(now)));
    }

    /// `event` as detection should see it: itself, or a copy dated at the collector's clock
    /// when it claims to be further ahead than the bound.
    pub(crate) fn admit<'e>(&mut self, event: &'e Event) -> Cow<'e, Event> {
        match self.wall {
            Some(wall) if event.timestamp > wall.saturating_add(self.max_ahead) => {
                self.moved += 1;
                let mut moved = event.clone();
                moved.timestamp = wall;
                Cow::Owned(moved)
            }
            _ => Cow::Borrowed(event),
        }
    }
}
