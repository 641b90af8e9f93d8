//! One task's detection: messages of its subject filter, decoded and redacted exactly as the
//! storing consumer does, through an [`Engine`] restricted to the task's scope, ticked with each
//! message's JetStream publish time. The live task (`task.rs`) and `replay --stream` both run
//! this, so replay over an export of the stream equals what the cluster found.
//!
//! An event an edge publishes again after the stream's duplicate window (a spool flushed late)
//! is stored once, since the store keeps ids once, but it would count twice in the task's
//! windows. So each task remembers the ids it saw last ([`RECENT_IDS`], as 64-bit hashes) and
//! skips a repeat; the memory is part of its snapshot, so a new owner and replay skip the same.

use mcpwatch_core::clock::SharedClock;
use mcpwatch_core::{Redactor, SystemClock};
use mcpwatch_detect::{DetectSettings, Engine, Finding, RuleSet, Scope};
use mcpwatch_nats::consume::{Decoder, Received, RelayCheck};
use mcpwatch_nats::subject::{Family, Task};

/// The detection scope a task runs.
pub fn scope_of(task: Task) -> Scope {
    match task.family() {
        Some(Family::User) => Scope::User,
        Some(Family::Server) => Scope::Server,
        Some(Family::Ip) => Scope::Ip,
        None => Scope::Global,
    }
}

/// What a task needs to decode and detect, the same for every task of a node.
#[derive(Clone)]
pub struct DetectSpec {
    /// The rules in force.
    pub rules: RuleSet,
    /// `[detection]`.
    pub settings: DetectSettings,
    /// `[redaction]`, as the pipeline applies it before storing.
    pub redactor: Redactor,
    /// `server.max_clock_skew`, as the storing consumer bounds event time.
    pub max_clock_skew: std::time::Duration,
    /// How messages relayed from a node's ingest API are checked, as the storing consumer
    /// checks them.
    pub relay: RelayCheck,
}

/// How many recent event ids a task remembers to skip repeats (8 bytes each).
pub const RECENT_IDS: usize = 32_768;

/// The start of a task snapshot: then the recent ids' count (u32, big-endian), the ids (u64,
/// big-endian, oldest first), and the engine's own snapshot.
const SNAPSHOT_MAGIC: &[u8] = b"mcpwatch-task-1\n";

/// The ids a task saw last, oldest first.
#[derive(Default)]
struct RecentIds {
    order: std::collections::VecDeque<u64>,
    set: std::collections::HashSet<u64>,
}

impl RecentIds {
    /// Whether `id` is new; remembers it.
    fn insert(&mut self, id: &str) -> bool {
        let h = mcpwatch_nats::subject::fnv1a(id.as_bytes());
        if !self.set.insert(h) {
            return false;
        }
        self.order.push_back(h);
        if self.order.len() > RECENT_IDS {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
        true
    }
}

/// A task's engine and its decoding.
pub struct TaskDetector {
    engine: Engine,
    recent: RecentIds,
    /// Events skipped because the task saw their id already.
    pub repeats: u64,
    redactor: Redactor,
    decoder: Decoder,
    findings: Vec<Finding>,
    /// Messages that hold no storable event (the storing consumer refuses them too).
    pub skipped: u64,
}

impl TaskDetector {
    /// A task starting from nothing (the stream's start).
    pub fn new(task: Task, spec: &DetectSpec) -> Self {
        Self::with_engine(
            Engine::with_scope(spec.rules.clone(), &spec.settings, scope_of(task)),
            spec,
        )
    }

    /// A task resuming from a snapshot ([`TaskDetector::snapshot`]).
    pub fn restore(task: Task, spec: &DetectSpec, snapshot: &[u8]) -> anyhow::Result<Self> {
        let corrupt = || anyhow::anyhow!("cannot restore task state: the snapshot is cut short");
        let rest = snapshot.strip_prefix(SNAPSHOT_MAGIC).ok_or_else(|| {
            anyhow::anyhow!("cannot restore task state: not a task snapshot of this version")
        })?;
        let (count, mut rest) = rest.split_first_chunk::<4>().ok_or_else(corrupt)?;
        let count = u32::from_be_bytes(*count) as usize;
        if count > RECENT_IDS {
            anyhow::bail!("cannot restore task state: {count} recent ids, more than {RECENT_IDS}");
        }
        let mut recent = RecentIds::default();
        for _ in 0..count {
            let (id, tail) = rest.split_first_chunk::<8>().ok_or_else(corrupt)?;
            let h = u64::from_be_bytes(*id);
            if recent.set.insert(h) {
                recent.order.push_back(h);
            }
            rest = tail;
        }
        let engine = Engine::restore(spec.rules.clone(), &spec.settings, scope_of(task), rest)
            .map_err(|e| anyhow::anyhow!("cannot restore task state: {e}"))?;
        let mut d = Self::with_engine(engine, spec);
        d.recent = recent;
        Ok(d)
    }

    fn with_engine(engine: Engine, spec: &DetectSpec) -> Self {
        let clock: SharedClock = std::sync::Arc::new(SystemClock);
        Self {
            engine,
            recent: RecentIds::default(),
            repeats: 0,
            redactor: spec.redactor.clone(),
            decoder: Decoder::new(clock, spec.max_clock_skew).with_relay_check(spec.relay.clone()),
            findings: Vec::new(),
            skipped: 0,
        }
    }

    /// Detects on one message.
    pub fn feed(&mut self, msg: &Received<'_>) {
        let mut event = match self.decoder.decode(msg) {
            Ok(e) => e,
            Err(_) => {
                self.skipped += 1;
                return;
            }
        };
        if !self.recent.insert(&event.id) {
            self.repeats += 1;
            return;
        }
        self.redactor.redact_event(&mut event);
        if let Some(at) = msg.published {
            self.engine.advance_to(at, &mut self.findings);
        }
        self.engine.process(&event, &mut self.findings);
    }

    /// Whether findings wait to be taken.
    pub fn has_findings(&self) -> bool {
        !self.findings.is_empty()
    }

    /// The findings so far, in the order they were made.
    pub fn findings(&self) -> &[Finding] {
        &self.findings
    }

    /// Takes the findings so far.
    pub fn take_findings(&mut self) -> Vec<Finding> {
        std::mem::take(&mut self.findings)
    }

    /// The task's state, for a checkpoint: the recent ids, then the engine's state.
    pub fn snapshot(&self) -> Vec<u8> {
        let engine = self.engine.snapshot();
        let mut out = Vec::with_capacity(
            SNAPSHOT_MAGIC.len() + 4 + self.recent.order.len() * 8 + engine.len(),
        );
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&(self.recent.order.len() as u32).to_be_bytes());
        for h in &self.recent.order {
            out.extend_from_slice(&h.to_be_bytes());
        }
        out.extend_from_slice(&engine);
        out
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use mcpwatch_core::ids::IdGenerator;
    use mcpwatch_core::validate::{parse_batch, BodyFormat, Defaults};
    use mcpwatch_core::{Event, Timestamp};
    use mcpwatch_nats::subject::subject_for;

    /// Failed sign-ins of `user` as an application posts them, through ingest's parsing.
    pub(crate) fn failures(user: &str, n: usize, first: usize) -> Vec<Event> {
        let body: Vec<serde_json::Value> = (first..first + n)
            .map(|i| {
                serde_json::json!({"id": format!("{user}-{i}"), "timestamp": 1_790_000_000.0 + i as f64,
                    "category": "security", "event_type": "authentication", "source": "app:login",
                    "level": "warning", "message": "sign-in failed",
                    "metadata": {"user_id": user, "result": "failure", "ip_address": "10.0.0.1"}})
            })
            .collect();
        let ids = IdGenerator::new();
        let clock = mcpwatch_core::ManualClock::new(Timestamp::from_micros(1_790_000_100_000_000));
        parse_batch(
            serde_json::to_string(&body).unwrap().as_bytes(),
            BodyFormat::Json,
            &Defaults {
                ids: &ids,
                clock: &clock,
                source: "api",
                max_events: 100,
                max_future_skew: std::time::Duration::from_secs(300),
            },
        )
        .unwrap()
    }

    /// Each event as the edge publishes it: its JSON, subject and id.
    fn feed(d: &mut TaskDetector, events: &[Event]) {
        for e in events {
            let body = serde_json::to_vec(e).unwrap();
            let subject = subject_for(e);
            d.feed(&Received {
                payload: &body,
                msg_id: Some(&e.id),
                subject: &subject,
                published: Some(e.timestamp),
                relay_mac: None,
            });
        }
    }

    fn spec() -> DetectSpec {
        DetectSpec {
            rules: RuleSet::load(&[] as &[std::path::PathBuf], true).unwrap(),
            settings: DetectSettings::default(),
            redactor: Redactor::default(),
            max_clock_skew: std::time::Duration::from_secs(300),
            relay: RelayCheck::Refuse,
        }
    }

    fn brute(d: &TaskDetector) -> usize {
        d.findings()
            .iter()
            .filter(|f| f.name == "brute_force_detection")
            .count()
    }

    #[test]
    fn a_republished_event_counts_once_before_and_after_a_restore() {
        let task = Task::parse(&format!(
            "user/{}",
            mcpwatch_nats::subject::partition("alice")
        ))
        .unwrap();
        let spec = spec();
        let mut d = TaskDetector::new(task, &spec);
        let four = failures("alice", 4, 0);
        feed(&mut d, &four);
        // The same four again (an edge re-sending after the duplicate window): not eight.
        feed(&mut d, &four);
        assert_eq!((brute(&d), d.repeats), (0, 4));
        let mut restored = TaskDetector::restore(task, &spec, &d.snapshot()).unwrap();
        feed(&mut restored, &four);
        assert_eq!((brute(&restored), restored.repeats), (0, 4));
        feed(&mut restored, &failures("alice", 1, 4));
        assert_eq!(brute(&restored), 1, "the fifth distinct failure fires");
    }

    #[test]
    fn a_damaged_snapshot_is_refused_with_the_reason() {
        let task = Task::Global;
        let spec = spec();
        let mut d = TaskDetector::new(task, &spec);
        feed(&mut d, &failures("bob", 3, 0));
        let snap = d.snapshot();
        for (bad, why) in [
            (b"garbage".to_vec(), "not a task snapshot"),
            (snap[..SNAPSHOT_MAGIC.len() + 6].to_vec(), "cut short"),
            (snap[..snap.len() - 5].to_vec(), "cannot restore task state"),
        ] {
            let err = TaskDetector::restore(task, &spec, &bad).err().unwrap();
            assert!(err.to_string().contains(why), "{err}");
        }
    }
}
