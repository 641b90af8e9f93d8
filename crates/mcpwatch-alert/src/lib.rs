//! mcpwatch-alert: the alerting stage (SPEC section 7).
//!
//! Findings from detection become persistent alerts in an [`store::AlertStore`] (`alerts.db`
//! by default, or a shared PostgreSQL database, [`postgres`]), folded by
//! fingerprint, silenced by [`matcher`]s, routed by severity ([`routing`]) and notified
//! through a persistent outbox that the [`delivery`] worker drains into [`channels`]
//! (webhook, Slack, PagerDuty, email). [`config`] builds it all from `[alerting]`,
//! `[channels.NAME]` and `[[routes]]`; [`api`] serves `/api/v1/alerts`, `/silences` and
//! `/channels`.
//!
//! Architecture Invariant: folding a finding is one store transaction and never waits on the
//! network; only the delivery worker talks to receivers.
//! Architecture Invariant: every notification is an outbox row before anyone tries to send
//! it, so a channel outage or a restart delays a notification but never loses it.

#![forbid(unsafe_code)]

pub mod api;
pub mod channels;
pub mod config;
pub mod delivery;
pub mod error;
pub mod matcher;
pub mod migrate;
pub mod model;
pub mod postgres;
pub mod routing;
pub mod service;
mod silencing;
pub mod store;

#[cfg(test)]
mod testing;

pub use config::{build, check, Settings};
pub use error::AlertError;
pub use model::{AlertRecord, Delivery, Notification, NotificationKind, Silence};
pub use service::{AlertHealth, Alerting, NewSilence};
