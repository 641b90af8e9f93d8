//! What happens to open alerts when a silence starts or ends, and who is told when an alert is
//! acknowledged. Both are parts of the lifecycle in [`crate::service`], kept apart from the
//! folding of findings.
//!
//! A silence suppresses the open alerts it matches while it is in force. When it ends (its
//! time passes or someone deletes it), every alert it held that no other silence holds is
//! open again: `new`, routed and notified as a fresh firing would be (at once if no channel
//! was told of it yet or the repeat interval has passed). When a silence that was created for later
//! starts, the open alerts it matches are suppressed. `tick` looks for silences that started
//! or ended since it last looked, so this happens within a tick of the boundary, and after a
//! restart for everything that changed while the collector was down.

use std::sync::atomic::Ordering;

use mcpwatch_core::Timestamp;
use mcpwatch_detect::AlertStatus;

use crate::error::AlertError;
use crate::model::{AlertRecord, NotificationKind};
use crate::service::{active_silences, Alerting};
use crate::store::AlertTx;

/// Open alerts re-checked against the silences at one boundary.
const MAX_RECHECKED: usize = 10_000;

impl Alerting {
    /// Re-applies the silences in force at `now` to the open alerts: suppresses the matched,
    /// reopens and notifies the no-longer-matched. Whether it queued a notification.
    pub(crate) fn reapply_silences(
        &self,
        tx: &dyn AlertTx,
        now: Timestamp,
    ) -> Result<bool, AlertError> {
        let silences = active_silences(tx, now)?;
        let mut queued = false;
        for mut rec in tx.open_unacknowledged(MAX_RECHECKED)? {
            let silenced = silences.iter().any(|m| m.iter().all(|m| m.matches(&rec)));
            match (rec.alert.status, silenced) {
                (AlertStatus::New | AlertStatus::Sent, true) => {
                    rec.alert.status = AlertStatus::Suppressed;
                    tx.update(&rec)?;
                }
                (AlertStatus::Suppressed, false) => {
                    rec.alert.status = AlertStatus::New;
                    // A notification the silence stopped (failed as silenced) does not count:
                    // with no channel told, the alert is due now.
                    if tx.channels_notified(&rec.alert.id)?.is_empty() {
                        rec.notified_at = None;
                    }
                    tx.update(&rec)?;
                    queued |= self.maybe_notify(tx, &mut rec, now)?;
                }
                _ => {}
            }
        }
        Ok(queued)
    }

    /// From `tick`: re-applies the silences if one started or ended since the last look.
    pub(crate) fn silence_boundaries(&self, now: Timestamp) -> Result<(), AlertError> {
        let since = self.silences_checked.load(Ordering::Relaxed);
        let queued = {
            let tx = self.store.begin()?;
            if !tx.silence_boundary_between(since, now.as_micros())? {
                self.silences_checked
                    .store(now.as_micros(), Ordering::Relaxed);
                return Ok(());
            }
            let queued = self.reapply_silences(&*tx, now)?;
            tx.commit()?;
            queued
        };
        self.silences_checked
            .store(now.as_micros(), Ordering::Relaxed);
        if queued {
            self.wake.notify_one();
        }
        Ok(())
    }

    /// Queues an `acknowledged` notification to every channel that was told the alert fired
    /// and wants to know (PagerDuty's `acknowledge`). Whether it queued one.
    pub(crate) fn queue_acknowledged(
        &self,
        tx: &dyn AlertTx,
        rec: &AlertRecord,
        now: Timestamp,
    ) -> Result<bool, AlertError> {
        let mut queued = false;
        for c in tx.channels_notified(&rec.alert.id)? {
            let wants = self
                .settings
                .channels
                .get(&c)
                .is_some_and(|ch| ch.sends_acknowledged());
            if wants && tx.enqueue(&rec.alert.id, &c, NotificationKind::Acknowledged, now)? {
                self.health.queued.fetch_add(1, Ordering::Relaxed);
                queued = true;
            }
        }
        Ok(queued)
    }
}
