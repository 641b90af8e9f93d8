//! mcpwatch-detect: the detection stage (SPEC section 6), as a pure library.
//!
//! Events in, [`Finding`]s out: YAML [`rules`] with sliding windows, online [`anomaly`]
//! detectors, [`threat`] signatures and performance [`threshold`]s, all on event time so
//! [`replay`] and live traffic give the same output. [`alert::AlertBook`] folds findings into
//! alert records (SPEC 7). No runtime, no network; only the rule and event file loaders read
//! files.
//!
//! Architecture Invariant: detection never reads a clock; time is the events' time, bounded on
//! the live path by the clock [`Engine::advance_to`] is given ([`watermark`]).

#![forbid(unsafe_code)]

pub mod alert;
pub mod anomaly;
pub mod config;
pub mod engine;
pub mod error;
pub mod finding;
pub mod replay;
pub mod rules;
pub mod scope;
#[cfg(test)]
mod scope_tests;
#[cfg(test)]
mod snapshot_tests;
mod state;
pub mod threat;
pub mod threshold;
pub mod watermark;

pub use alert::{Alert, AlertBook, AlertChange, AlertStatus, FoldPolicy};
pub use config::{DetectConfig, DetectSettings};
pub use engine::{Engine, Health, SNAPSHOT_VERSION};
pub use error::{DetectError, RuleError, SnapshotError};
pub use finding::{Finding, FindingSource, Severity};
pub use replay::{load_events_jsonl, replay, replay_with, ReplaySummary, SummaryRow};
pub use rules::{check_rule_files, RuleEngine, RuleSet};
pub use scope::{rule_scope, Scope};
