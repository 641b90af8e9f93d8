//! [`Alerting`]: the alert lifecycle on top of the store.
//!
//! `on_finding` folds a finding into its open alert (or opens one; an open alert already quiet
//! for `resolve_after` resolves first), with the fold `replay` uses too
//! (`mcpwatch_detect::alert`), applies silences and, when
//! due, queues notifications in the outbox, all in one transaction of the [`AlertStore`] on the
//! caller's thread; it never touches the network. `tick` resolves alerts that went quiet. The API's
//! actions (acknowledge, resolve, silences) go through here too. Delivery is in
//! [`crate::delivery`].
//!
//! Lifecycle: `new` → `sent` (a channel accepted it) → `acknowledged` → `resolved`;
//! `suppressed` while a silence matches. Re-notification happens when the alert is still
//! firing after `repeat_interval` (or its severity rose); acknowledged and suppressed alerts
//! are not notified.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::ids::IdGenerator;
use mcpwatch_core::Timestamp;
use mcpwatch_detect::alert::{alert_id, fingerprint, fold_into, new_alert};
use mcpwatch_detect::finding::derived_id;
use mcpwatch_detect::{AlertStatus, Finding};
use tokio::sync::Notify;

use crate::config::Settings;
use crate::error::AlertError;
use crate::matcher::Matcher;
use crate::model::{AlertRecord, NotificationKind, Silence};
use crate::store::{AlertFilter, AlertStore, AlertTx, Checkpoint, Fence, SqliteAlertStore};

/// Counters of alerting's health, for `/metrics`.
#[derive(Debug, Default)]
pub struct AlertHealth {
    /// Notifications queued in the outbox.
    pub queued: AtomicU64,
    /// Notifications a receiver accepted.
    pub delivered: AtomicU64,
    /// Attempts that failed and will be retried.
    pub retried: AtomicU64,
    /// Notifications given up on.
    pub failed: AtomicU64,
    /// Notifications not queued because the outbox was full.
    pub dropped_outbox_full: AtomicU64,
    /// Findings or ticks that failed on the alert store.
    pub store_errors: AtomicU64,
}

/// A silence as the API creates it.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewSilence {
    /// `label=value`, `label!=value`, `label=~regex`, `label!~regex`; all must match.
    pub matchers: Vec<String>,
    /// From when (default now).
    #[serde(default)]
    pub starts_at: Option<Timestamp>,
    /// Until when; give this or `duration`.
    #[serde(default)]
    pub ends_at: Option<Timestamp>,
    /// How long from `starts_at`, e.g. `"2h"`.
    #[serde(default)]
    pub duration: Option<String>,
    /// Why; required.
    #[serde(default)]
    pub comment: String,
}

/// Alerting: the store, the settings, and the wake-up of the delivery worker.
pub struct Alerting {
    pub(crate) store: Arc<dyn AlertStore>,
    pub(crate) settings: Settings,
    pub(crate) clock: SharedClock,
    pub(crate) wake: Notify,
    pub(crate) health: AlertHealth,
    ids: IdGenerator,
    last_prune: AtomicI64,
    /// Until when silence boundaries were applied (micros); see [`crate::silencing`].
    pub(crate) silences_checked: AtomicI64,
}

/// The most findings one [`Alerting::on_findings_fenced`] folds: each holds a fingerprint lock
/// until the commit, and PostgreSQL's lock table is shared by every session.
pub const MAX_FENCED_FINDINGS: usize = 512;

/// Alerts resolved by quiet period per tick.
const MAX_QUIET_PER_TICK: usize = 500;
/// How often resolved alerts past retention are deleted.
const PRUNE_EVERY: Duration = Duration::from_secs(3600);

impl Alerting {
    /// Opens `alerts.db` in `data_dir`.
    pub fn open(
        data_dir: &std::path::Path,
        settings: Settings,
        clock: SharedClock,
    ) -> Result<Arc<Alerting>, AlertError> {
        let store = SqliteAlertStore::open(data_dir)?;
        Ok(Self::with_store(Arc::new(store), settings, clock))
    }

    /// Alerting on `store` (SQLite, or a database several collectors share).
    pub fn with_store(
        store: Arc<dyn AlertStore>,
        settings: Settings,
        clock: SharedClock,
    ) -> Arc<Alerting> {
        Arc::new(Alerting {
            store,
            settings,
            clock,
            wake: Notify::new(),
            health: AlertHealth::default(),
            ids: IdGenerator::new(),
            last_prune: AtomicI64::new(i64::MIN),
            silences_checked: AtomicI64::new(i64::MIN),
        })
    }

    /// The store it keeps alerts in.
    pub fn store(&self) -> &Arc<dyn AlertStore> {
        &self.store
    }

    /// The health counters.
    pub fn health(&self) -> &AlertHealth {
        &self.health
    }

    /// The settings it runs with.
    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// A link to an alert in the API.
    pub fn link(&self, id: &str) -> String {
        format!("{}/api/v1/alerts/{id}", self.settings.external_url)
    }

    /// Folds one finding in: one transaction; wakes the delivery worker if it queued anything.
    /// A finding already folded into the open alert (another collector on a shared store saw
    /// the same events) only returns the alert.
    pub fn on_finding(&self, f: &Finding) -> Result<AlertRecord, AlertError> {
        let now = self.clock.now();
        let tx = self.store.begin()?;
        tx.lock_fingerprint(&fingerprint(f.source, &f.name, &f.group))?;
        let silences = active_silences(&*tx, now)?;
        let (rec, queued) = self.fold_finding(&*tx, f, &silences, now)?;
        tx.commit()?;
        if queued {
            self.wake.notify_one();
        }
        Ok(rec)
    }

    /// Cluster mode: folds a task's findings and writes its checkpoint, as ONE transaction
    /// fenced by the task's lease (see [`crate::postgres::cluster`]). It locks the lease row and
    /// checks it is still `fence`'s (else [`AlertError::Fenced`], and nothing is written: the
    /// node stands down for the task), folds every finding as [`Alerting::on_finding`] does
    /// (a finding folded already, say by the task's previous owner, only returns its alert),
    /// writes `cp` on the lease row, commits, and wakes the delivery worker if it queued
    /// anything. At most [`MAX_FENCED_FINDINGS`] findings per call: split a larger batch,
    /// each part with the checkpoint of its last message.
    pub fn on_findings_fenced(
        &self,
        findings: &[Finding],
        fence: &Fence,
        cp: &Checkpoint,
    ) -> Result<Vec<AlertRecord>, AlertError> {
        if findings.len() > MAX_FENCED_FINDINGS {
            return Err(AlertError::Invalid(format!(
                "{} findings in one fenced fold of task {}, more than {MAX_FENCED_FINDINGS}; split the batch",
                findings.len(),
                fence.task
            )));
        }
        let now = self.clock.now();
        let tx = self.store.begin()?;
        tx.fence(fence)?;
        // Every fingerprint up front and in one order, so that two tasks folding overlapping
        // fingerprints never wait on each other in a circle.
        let mut fingerprints: Vec<String> = findings
            .iter()
            .map(|f| fingerprint(f.source, &f.name, &f.group))
            .collect();
        fingerprints.sort_unstable();
        fingerprints.dedup();
        for fp in &fingerprints {
            tx.lock_fingerprint(fp)?;
        }
        let silences = if findings.is_empty() {
            Vec::new()
        } else {
            active_silences(&*tx, now)?
        };
        let mut out = Vec::with_capacity(findings.len());
        let mut queued = false;
        for f in findings {
            let (rec, q) = self.fold_finding(&*tx, f, &silences, now)?;
            queued |= q;
            out.push(rec);
        }
        tx.write_checkpoint(fence, cp)?;
        tx.commit()?;
        if queued {
            self.wake.notify_one();
        }
        Ok(out)
    }

    /// Folds one finding into its open alert (or opens one) inside `tx`, which holds the
    /// finding's fingerprint lock; the alert, and whether a notification was queued.
    fn fold_finding(
        &self,
        tx: &dyn AlertTx,
        f: &Finding,
        silences: &[Vec<Matcher>],
        now: Timestamp,
    ) -> Result<(AlertRecord, bool), AlertError> {
        let fp = fingerprint(f.source, &f.name, &f.group);
        let key = finding_key(f);
        let policy = self.settings.fold_policy();
        let (mut rec, created) = match tx.find_open(&fp)? {
            Some(r) if !tx.record_finding(&r.alert.id, &key, now)? => {
                // Folded already: another collector on a shared store saw the same events.
                return Ok((r, false));
            }
            Some(mut r) if !policy.is_quiet(r.updated_at, now) => {
                self.fold(&mut r, f, now);
                (r, false)
            }
            Some(mut quiet) => {
                // Quiet long enough to have resolved (the periodic `tick` had not got to it
                // yet): resolve it now, as replay does, and open a new one.
                self.resolve_in(tx, &mut quiet, now)?;
                (self.open_alert(tx, &fp, f, &key, now)?, true)
            }
            None => (self.open_alert(tx, &fp, f, &key, now)?, true),
        };
        let silenced = silences.iter().any(|m| m.iter().all(|m| m.matches(&rec)));
        rec.alert.status = match rec.alert.status {
            AlertStatus::Acknowledged => AlertStatus::Acknowledged,
            _ if silenced => AlertStatus::Suppressed,
            AlertStatus::Suppressed => AlertStatus::New,
            s => s,
        };
        if created {
            if !tx.insert(&rec)? {
                // Held by the fingerprint lock, this only happens if a backend cannot lock.
                return Err(AlertError::Conflict(format!(
                    "alert {} was opened by another collector at the same moment; the finding is folded at its next firing",
                    rec.alert.id
                )));
            }
        } else {
            tx.update(&rec)?;
        }
        let queued = matches!(rec.alert.status, AlertStatus::New | AlertStatus::Sent)
            && self.maybe_notify(tx, &mut rec, now)?;
        Ok((rec, queued))
    }

    fn fold(&self, r: &mut AlertRecord, f: &Finding, now: Timestamp) {
        fold_into(&mut r.alert, f, self.settings.max_event_ids);
        r.tags.clone_from(&f.event.tags);
        r.updated_at = now;
    }

    fn open_alert(
        &self,
        tx: &dyn AlertTx,
        fp: &str,
        f: &Finding,
        key: &str,
        now: Timestamp,
    ) -> Result<AlertRecord, AlertError> {
        // The same id `replay` gives; a later alert for the same events (after a resolve) gets
        // a fresh one.
        let mut id = alert_id(fp, f);
        if tx.exists(&id)? {
            id = self.ids.next(now);
        }
        tx.record_finding(&id, key, now)?;
        Ok(AlertRecord {
            alert: new_alert(fp, id, f, self.settings.max_event_ids),
            tags: f.event.tags.clone(),
            updated_at: now,
            notified_at: None,
            acknowledged_at: None,
            resolved_at: None,
            channels: Default::default(),
            deliveries: None,
        })
    }

    /// Queues firing notifications if the alert has never been notified, the repeat interval
    /// has passed, or its severity rose since the last notification.
    pub(crate) fn maybe_notify(
        &self,
        tx: &dyn AlertTx,
        rec: &mut AlertRecord,
        now: Timestamp,
    ) -> Result<bool, AlertError> {
        let id = rec.alert.id.clone();
        let due = match rec.notified_at {
            None => true,
            Some(at) => {
                now >= at.saturating_add(self.settings.repeat_interval)
                    || tx
                        .notified_severity(&id)?
                        .is_none_or(|s| rec.alert.severity > s)
            }
        };
        if !due {
            return Ok(false);
        }
        let channels = self.settings.routing.channels_for(rec);
        if channels.is_empty() {
            return Ok(false);
        }
        if tx.pending_count()? + channels.len() > self.settings.delivery.max_pending {
            self.health
                .dropped_outbox_full
                .fetch_add(1, Ordering::Relaxed);
            tracing::warn!(alert = %id, "the alert outbox is full; this notification is not queued (raise alerting.delivery.max_pending or fix the failing channels)");
            return Ok(false);
        }
        let mut queued = false;
        for c in &channels {
            if tx.enqueue(&id, c, NotificationKind::Firing, now)? {
                self.health.queued.fetch_add(1, Ordering::Relaxed);
                queued = true;
            }
        }
        tx.set_notified(&id, now, rec.alert.severity)?;
        rec.notified_at = Some(now);
        Ok(queued)
    }

    /// Resolves alerts that have been quiet for `resolve_after`, applies silences that started
    /// or ended, and prunes old resolved alerts.
    pub fn tick(&self, now: Timestamp) -> Result<usize, AlertError> {
        self.silence_boundaries(now)?;
        let mut resolved = 0;
        if let Some(quiet) = self.settings.resolve_after {
            let tx = self.store.begin()?;
            for mut rec in tx.quiet(now.saturating_sub(quiet), MAX_QUIET_PER_TICK)? {
                self.resolve_in(&*tx, &mut rec, now)?;
                resolved += 1;
            }
            tx.commit()?;
        }
        let last = self.last_prune.load(Ordering::Relaxed);
        if now.as_micros().saturating_sub(last) >= PRUNE_EVERY.as_micros() as i64 {
            self.last_prune.store(now.as_micros(), Ordering::Relaxed);
            let tx = self.store.begin()?;
            let pruned = tx.prune(now.saturating_sub(self.settings.retention))?;
            tx.commit()?;
            if pruned > 0 {
                tracing::info!(pruned, "deleted resolved alerts past alerting.retention");
            }
        }
        if resolved > 0 {
            self.wake.notify_one();
        }
        Ok(resolved)
    }

    fn resolve_in(
        &self,
        tx: &dyn AlertTx,
        rec: &mut AlertRecord,
        now: Timestamp,
    ) -> Result<(), AlertError> {
        rec.alert.status = AlertStatus::Resolved;
        rec.resolved_at = Some(now);
        tx.update(rec)?;
        for c in tx.channels_notified(&rec.alert.id)? {
            let sends = self
                .settings
                .channels
                .get(&c)
                .is_some_and(|ch| ch.sends_resolved());
            if sends && tx.enqueue(&rec.alert.id, &c, NotificationKind::Resolved, now)? {
                self.health.queued.fetch_add(1, Ordering::Relaxed);
            }
        }
        Ok(())
    }

    /// Alerts newest first and the cursor of the next page.
    pub fn list(
        &self,
        filter: &AlertFilter,
    ) -> Result<(Vec<AlertRecord>, Option<i64>), AlertError> {
        self.store.read()?.list(filter)
    }

    /// One alert with its deliveries.
    pub fn get(&self, id: &str) -> Result<AlertRecord, AlertError> {
        self.store
            .begin()?
            .get(id, true)?
            .ok_or_else(|| not_found(id))
    }

    /// Marks an alert acknowledged: it stays open and folds findings but is not notified again;
    /// channels that track acknowledgement (PagerDuty) are told.
    pub fn acknowledge(&self, id: &str) -> Result<AlertRecord, AlertError> {
        let now = self.clock.now();
        let queued = {
            let tx = self.store.begin()?;
            let mut rec = tx.get(id, false)?.ok_or_else(|| not_found(id))?;
            if rec.alert.status == AlertStatus::Resolved {
                return Err(AlertError::Conflict(format!(
                    "alert {id} is already resolved; nothing to acknowledge"
                )));
            }
            let mut queued = false;
            if rec.alert.status != AlertStatus::Acknowledged {
                rec.alert.status = AlertStatus::Acknowledged;
                rec.acknowledged_at = Some(now);
                tx.update(&rec)?;
                queued = self.queue_acknowledged(&*tx, &rec, now)?;
            }
            tx.commit()?;
            queued
        };
        if queued {
            self.wake.notify_one();
        }
        self.get(id)
    }

    /// Resolves an alert and queues resolved notifications; resolving twice is a no-op.
    pub fn resolve(&self, id: &str) -> Result<AlertRecord, AlertError> {
        let now = self.clock.now();
        {
            let tx = self.store.begin()?;
            let mut rec = tx.get(id, false)?.ok_or_else(|| not_found(id))?;
            if rec.alert.status != AlertStatus::Resolved {
                self.resolve_in(&*tx, &mut rec, now)?;
            }
            tx.commit()?;
        }
        self.wake.notify_one();
        self.get(id)
    }

    /// Creates a silence and suppresses the open alerts it matches.
    pub fn add_silence(&self, req: NewSilence, created_by: &str) -> Result<Silence, AlertError> {
        let now = self.clock.now();
        if req.matchers.is_empty() {
            return Err(AlertError::Invalid(
                "give at least one matcher, e.g. name=brute_force_detection".into(),
            ));
        }
        let matchers = req
            .matchers
            .iter()
            .map(|m| Matcher::parse(m))
            .collect::<Result<Vec<_>, _>>()
            .map_err(AlertError::Invalid)?;
        if req.comment.trim().is_empty() {
            return Err(AlertError::Invalid(
                "say why in `comment` (e.g. \"pen test until 17:00\")".into(),
            ));
        }
        let starts_at = req.starts_at.unwrap_or(now);
        let ends_at = match (req.ends_at, &req.duration) {
            (Some(e), None) => e,
            (None, Some(d)) => starts_at.saturating_add(
                mcpwatch_core::time_fmt::parse_duration(d)
                    .map_err(|m| AlertError::Invalid(format!("duration `{d}`: {m}")))?,
            ),
            _ => {
                return Err(AlertError::Invalid(
                    "give either ends_at or duration (e.g. \"2h\")".into(),
                ))
            }
        };
        if ends_at <= starts_at || ends_at <= now {
            return Err(AlertError::Invalid(
                "the silence must end after it starts and in the future".into(),
            ));
        }
        let silence = Silence {
            id: self.ids.next(now),
            matchers: matchers.iter().map(ToString::to_string).collect(),
            starts_at,
            ends_at,
            comment: req.comment,
            created_by: created_by.to_owned(),
            created_at: now,
        };
        let tx = self.store.begin()?;
        tx.insert_silence(&silence)?;
        let queued = silence.active_at(now) && self.reapply_silences(&*tx, now)?;
        tx.commit()?;
        if queued {
            self.wake.notify_one();
        }
        Ok(silence)
    }

    /// Silences, newest first; only those not yet ended unless `all`.
    pub fn silences(&self, all: bool) -> Result<Vec<Silence>, AlertError> {
        let now = self.clock.now();
        self.store.begin()?.silences((!all).then_some(now), 1000)
    }

    /// Ends a silence now; the alerts it held are open again and notified when due.
    pub fn expire_silence(&self, id: &str) -> Result<Silence, AlertError> {
        let now = self.clock.now();
        let (silence, queued) = {
            let tx = self.store.begin()?;
            if !tx.expire_silence(id, now)? {
                return Err(AlertError::NotFound(format!(
                    "no silence {id}; list them with `mcpwatch alerts silences`"
                )));
            }
            let queued = self.reapply_silences(&*tx, now)?;
            let silence = tx
                .get_silence(id)?
                .ok_or_else(|| AlertError::NotFound(format!("no silence {id}")))?;
            tx.commit()?;
            (silence, queued)
        };
        if queued {
            self.wake.notify_one();
        }
        Ok(silence)
    }
}

fn not_found(id: &str) -> AlertError {
    AlertError::NotFound(format!(
        "no alert {id}; list them with `mcpwatch alerts list`"
    ))
}

pub(crate) fn active_silences(
    tx: &dyn AlertTx,
    now: Timestamp,
) -> Result<Vec<Vec<Matcher>>, AlertError> {
    Ok(tx
        .silences(Some(now), 10_000)?
        .into_iter()
        .filter(|s| s.active_at(now))
        .map(|s| {
            s.matchers
                .iter()
                .filter_map(|m| Matcher::parse(m).ok())
                .collect::<Vec<_>>()
        })
        .filter(|m| !m.is_empty())
        .collect())
}

/// The key a finding is folded under once: its derived event id (from its source, name and
/// triggering events) with its firing time, the same on every collector that saw those events.
fn finding_key(f: &Finding) -> String {
    derived_id([f.event.id.as_str(), &f.at.as_micros().to_string()])
}
