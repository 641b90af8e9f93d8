//! One module per subcommand.

pub mod config;
pub mod events;
pub mod serve;
pub mod wrap;
