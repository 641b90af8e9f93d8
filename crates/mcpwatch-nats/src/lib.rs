//! mcpwatch on NATS JetStream (SPEC 10): edges publish events to one stream, collectors consume
//! it. Nothing home-made: the log, its replication and its redelivery are JetStream's.
//!
//! - [`subject`]: the subject each event goes to, carrying the stable hash partition of each
//!   key family (user, server, IP), computed at the edge;
//! - [`stream`]: the stream (file storage, R3 in a cluster, limits by age and bytes, duplicate
//!   window), created or updated by `serve`;
//! - [`connect`]: URL checking and a client that reconnects by itself;
//! - [`publish`]: the edges' publisher, one acknowledged message per event, `Nats-Msg-Id` = id;
//! - [`consume`]: `serve`'s durable consumer, acknowledging only what the store committed;
//! - [`relay`]: the MAC on events a cluster node relays from its ingest API;
//! - [`config`]: the `[nats]` section of `serve`'s config file;
//! - `testing` (feature `testing`): a real 3-node nats-server cluster for tests.

#![forbid(unsafe_code)]

pub mod config;
pub mod connect;
pub mod consume;
pub mod publish;
pub mod relay;
pub mod stream;
pub mod subject;
#[cfg(feature = "testing")]
pub mod testing;

pub use async_nats;
pub use connect::{connect, parse_urls};
pub use publish::{PublishError, Publisher};
pub use stream::{ensure_stream, StreamSettings};

/// What went wrong talking to NATS.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum NatsError {
    /// The URL cannot name a NATS server.
    #[error("invalid NATS URL {0}")]
    Url(String),
    /// No server could be reached.
    #[error("cannot reach NATS at {0}")]
    Unreachable(String),
    /// The stream or consumer could not be made or read.
    #[error("{0}")]
    Stream(String),
}
