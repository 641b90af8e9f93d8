//! mcpwatch-server: the collector that `mcpwatch serve` runs.
//!
//! [`pipeline`] is the one entry point every event goes through (redact, commit, then fan out
//! to live subscribers); [`http`] is the API of SPEC section 9 on top of it.

pub mod http;
pub mod pipeline;

pub use pipeline::{Committed, Pipeline, PipelineConfig, Stage, WriterHandle};
