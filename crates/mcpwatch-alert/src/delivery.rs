//! The delivery worker: a tokio task that drains the outbox.
//!
//! It takes due rows (at most `delivery.concurrency` at a time, never two for the same alert
//! and channel), sends them, and records each attempt: delivered, retried after an exponential
//! backoff with jitter, or failed after `max_attempts` or a refusal retrying cannot fix. Rows
//! are only marked after the attempt, so a crash re-sends (at least once) and a restart picks
//! up everything pending.
//!
//! Architecture Invariant: the network is only touched here and in `test_channel`, never on
//! the stage thread; the database lock is never held across an await.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use futures_util::future::join_all;
use mcpwatch_core::Timestamp;
use mcpwatch_detect::{Alert, AlertStatus, FindingSource, Severity};

use crate::channels::{Receipt, SendError};
use crate::error::AlertError;
use crate::model::{AlertRecord, Delivery, Notification, NotificationKind};
use crate::service::Alerting;
use crate::store::Attempt;

/// The longest the worker sleeps before looking at the outbox again.
const MAX_IDLE: Duration = Duration::from_secs(1);

/// The wait before attempt `attempt + 1`: `initial · 2^(attempt-1)`, capped, times a jitter
/// in [0.5, 1].
pub fn backoff(initial: Duration, max: Duration, attempt: u32, jitter: f64) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.saturating_sub(1).min(20));
    exp.min(max).mul_f64(0.5 + 0.5 * jitter.clamp(0.0, 1.0))
}

impl Alerting {
    /// Runs the delivery worker until the runtime stops.
    pub async fn run_delivery(self: Arc<Self>) {
        loop {
            let now = self.clock.now();
            let limit = self.settings.delivery.concurrency;
            let due = self
                .blocking(move |a| {
                    let tx = a.store.begin()?;
                    let rows = tx.due(now, limit)?;
                    tx.commit()?;
                    Ok(rows)
                })
                .await;
            match due {
                Ok(rows) if !rows.is_empty() => {
                    join_all(rows.iter().map(|d| self.deliver(d))).await;
                    continue;
                }
                Ok(_) => {}
                Err(e) => {
                    self.health.store_errors.fetch_add(1, Ordering::Relaxed);
                    tracing::error!(error = %e, "cannot read the alert outbox; retrying");
                }
            }
            let next = self
                .blocking(|a| a.store.begin()?.next_due())
                .await
                .ok()
                .flatten();
            let wait = next.map_or(MAX_IDLE, |t| {
                let micros = t.as_micros().saturating_sub(self.clock.now().as_micros());
                Duration::from_micros(micros.max(0) as u64)
                    .clamp(Duration::from_millis(5), MAX_IDLE)
            });
            tokio::select! {
                _ = self.wake.notified() => {}
                _ = tokio::time::sleep(wait) => {}
            }
        }
    }

    async fn blocking<T: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Alerting) -> Result<T, AlertError> + Send + 'static,
    ) -> Result<T, AlertError> {
        let me = self.clone();
        tokio::task::spawn_blocking(move || f(&me))
            .await
            .map_err(|e| AlertError::Invalid(format!("alert store task failed: {e}")))?
    }

    async fn deliver(self: &Arc<Self>, d: &Delivery) {
        let id = d.alert_id.clone();
        let alert = self
            .blocking(move |a| a.store.begin()?.get(&id, false))
            .await;
        let outcome = match alert {
            Err(e) => {
                tracing::error!(error = %e, "cannot read an alert to deliver; retrying");
                return;
            }
            Ok(None) => Err(SendError::permanent("the alert no longer exists")),
            Ok(Some(a))
                if d.kind == NotificationKind::Firing
                    && a.alert.status == AlertStatus::Suppressed =>
            {
                Err(SendError::permanent("not sent: the alert was silenced"))
            }
            Ok(Some(a)) => self.send(&d.channel, d.kind, &a, notification_id(d)).await,
        };
        let now = self.clock.now();
        let attempts = d.attempts + 1;
        let max = self.settings.delivery.max_attempts;
        let row = d.id;
        let (alert_id, kind) = (d.alert_id.clone(), d.kind);
        match &outcome {
            Ok(_) => self.health.delivered.fetch_add(1, Ordering::Relaxed),
            Err(e) if e.retryable && attempts < max => {
                self.health.retried.fetch_add(1, Ordering::Relaxed)
            }
            Err(_) => self.health.failed.fetch_add(1, Ordering::Relaxed),
        };
        if let Err(e) = &outcome {
            tracing::warn!(channel = %d.channel, alert = %d.alert_id, attempt = attempts, error = %e.message, "alert delivery failed");
        }
        let (initial, cap) = (
            self.settings.delivery.initial_backoff,
            self.settings.delivery.max_backoff,
        );
        let recorded = self
            .blocking(move |a| {
                let tx = a.store.begin()?;
                match outcome {
                    Ok(r) => {
                        tx.record_attempt(row, now, Attempt::Delivered(&r.response))?;
                        if kind == NotificationKind::Firing {
                            tx.mark_sent(&alert_id)?;
                        }
                    }
                    Err(e) if e.retryable && attempts < max => {
                        let wait = backoff(initial, cap, attempts, fastrand::f64());
                        tx.record_attempt(
                            row,
                            now,
                            Attempt::Retry(&e.message, now.saturating_add(wait)),
                        )?;
                    }
                    Err(e) => {
                        let why = if e.retryable {
                            format!("gave up after {attempts} attempts: {}", e.message)
                        } else {
                            e.message
                        };
                        tx.record_attempt(row, now, Attempt::Failed(&why))?;
                    }
                }
                tx.commit()?;
                Ok(())
            })
            .await;
        if let Err(e) = recorded {
            self.health.store_errors.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "cannot record a delivery attempt; it will be retried");
        }
    }

    async fn send(
        &self,
        channel: &str,
        kind: NotificationKind,
        alert: &AlertRecord,
        id: String,
    ) -> Result<Receipt, SendError> {
        let Some(ch) = self.settings.channels.get(channel) else {
            return Err(SendError::permanent(format!(
                "channel `{channel}` is no longer configured; add [channels.{channel}] back to deliver it"
            )));
        };
        let n = Notification {
            kind,
            alert,
            channel,
            link: self.link(&alert.alert.id),
            external_url: &self.settings.external_url,
            now: self.clock.now(),
            id,
        };
        let limit = self.settings.delivery.timeout + Duration::from_secs(1);
        match tokio::time::timeout(limit, ch.send(&n)).await {
            Ok(r) => r,
            Err(_) => Err(SendError::transient(format!(
                "no answer within {}",
                humantime_secs(limit)
            ))),
        }
    }

    /// The configured channels: name and kind.
    pub fn channels(&self) -> Vec<(String, &'static str)> {
        self.settings
            .channels
            .iter()
            .map(|(n, c)| (n.clone(), c.kind()))
            .collect()
    }

    /// Sends a test notification to one channel now (not through the outbox) and returns what
    /// the receiver answered.
    pub async fn test_channel(
        &self,
        channel: &str,
    ) -> Result<Result<Receipt, SendError>, AlertError> {
        if !self.settings.channels.contains_key(channel) {
            let known: Vec<String> = self.settings.channels.keys().cloned().collect();
            return Err(AlertError::NotFound(format!(
                "no channel `{channel}`; configured channels: {}",
                if known.is_empty() {
                    "none (add a [channels.NAME] section)".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        let now = self.clock.now();
        let alert = test_alert(channel, now);
        let id = alert.alert.id.clone();
        Ok(self.send(channel, NotificationKind::Test, &alert, id).await)
    }
}

/// The id of the notification an outbox row sends: its alert, its kind and the row.
pub fn notification_id(d: &Delivery) -> String {
    format!("{}/{}/{}", d.alert_id, d.kind.as_str(), d.id)
}

fn humantime_secs(d: Duration) -> String {
    format!("{}s", d.as_secs())
}

/// The synthetic alert `alerts test` sends.
fn test_alert(channel: &str, now: Timestamp) -> AlertRecord {
    AlertRecord {
        alert: Alert {
            id: format!("test-{}", now.as_micros()),
            fingerprint: format!("mcpwatch-test-{channel}"),
            source: FindingSource::Rule,
            name: "mcpwatch_test".into(),
            severity: Severity::Low,
            status: AlertStatus::New,
            first_seen: now,
            last_seen: now,
            count: 1,
            description: format!("A test notification from `mcpwatch alerts test --channel {channel}`; the channel works."),
            recommended_action: "Nothing to do.".into(),
            group: Default::default(),
            event_ids: Vec::new(),
        },
        tags: vec!["test".into()],
        updated_at: now,
        notified_at: None,
        acknowledged_at: None,
        resolved_at: None,
        channels: Default::default(),
        deliveries: None,
    }
}
