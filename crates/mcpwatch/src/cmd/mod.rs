//! One module per subcommand.

pub mod alerts;
pub mod clients;
pub mod cluster;
pub mod config;
pub mod demo;
pub mod events;
pub mod gateway;
pub mod nats;
pub mod replay;
pub mod rules;
pub mod serve;
pub mod spool;
pub mod store;
pub mod wrap;
