//! mcpwatch-core: the vocabulary every other crate speaks.
//!
//! The [`Event`] (SPEC section 2) and its validation, the [`Clock`] that all logic takes time
//! from, time-ordered [`ids`], [`redact`]ion of secrets before anything is persisted, the
//! [`EventSink`] entry point of the pipeline, the TOML [`config`] types, and fast [`json`] output
//! for events. Nothing here does I/O, so every stage can depend on it without pulling in a
//! runtime.

pub mod auth;
pub mod clock;
pub mod config;
pub mod event;
pub mod ids;
pub mod json;
pub mod pace;
pub mod params;
pub mod paths;
pub mod redact;
pub mod sink;
pub mod time_fmt;
pub mod validate;

pub use clock::{Clock, ManualClock, SystemClock};
pub use event::{Event, Level, Outcome, Timestamp};
pub use redact::Redactor;
pub use sink::{EventSink, SinkError};
pub use validate::{parse_batch, FieldError};
