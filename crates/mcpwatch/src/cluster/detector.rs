//! One task's detection: messages of its subject filter, decoded and redacted exactly as the
//! storing consumer does, through an [`Engine`] restricted to the task's scope, ticked with each
//! message's JetStream publish time. The live task (`task.rs`) and `replay --stream` both run
//! this, so replay over an export of the stream equals what the cluster found.

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

/// A task's engine and its decoding.
pub struct TaskDetector {
    engine: Engine,
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

    /// A task resuming from a snapshot of its engine.
    pub fn restore(task: Task, spec: &DetectSpec, snapshot: &[u8]) -> anyhow::Result<Self> {
        let engine = Engine::restore(
            spec.rules.clone(),
            &spec.settings,
            scope_of(task),
            snapshot,
        )
        .map_err(|e| anyhow::anyhow!("cannot restore task state: {e}"))?;
        Ok(Self::with_engine(engine, spec))
    }

    fn with_engine(engine: Engine, spec: &DetectSpec) -> Self {
        let clock: SharedClock = std::sync::Arc::new(SystemClock);
        Self {
            engine,
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

    /// The engine's state, for a checkpoint.
    pub fn snapshot(&self) -> Vec<u8> {
        self.engine.snapshot()
    }
}
