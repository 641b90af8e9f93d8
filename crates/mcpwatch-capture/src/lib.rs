//! mcpwatch-capture: where events come from.
//!
//! `mcpwatch wrap` runs an MCP server behind a byte-for-byte stdio [`relay`]; copies of its lines
//! go to the transport-independent [`session`] tracker (which the HTTP [`gateway`] reuses), whose
//! events reach the collector through [`delivery`] (batches over HTTP, a bounded spool when the
//! collector is away). Tool listings are pinned by [`pins`]; [`classify`] says which data is
//! sensitive.
//!
//! Architecture Invariant: the relay never waits on parsing, storage or the network.

#![forbid(unsafe_code)]

pub mod classify;
pub mod delivery;
pub mod depth;
pub mod error;
#[cfg(test)]
mod frame_properties;
pub mod gateway;
pub mod health;
pub mod jsonrpc;
pub mod pins;
#[cfg(test)]
mod properties;
pub mod relay;
pub mod session;
pub mod uri;
pub mod wrap;

pub use error::CaptureError;
