//! Engine snapshots: all of an engine's detection state as bytes, so that a new owner of a
//! task (issue #14) continues where the old one stopped: rule windows, groups and suppression,
//! anomaly baselines, the threat scanner's memory, threshold windows and quiet times, the clock
//! bound and the counters.
//!
//! Format: one JSON object with a `version` ([`SNAPSHOT_VERSION`]) and the engine's scope.
//! Keyed state is written as its entries in key order with its counters, so equal states give
//! equal bytes; caps come from the settings given to [`Engine::restore`] (over a smaller cap
//! the least recently seen keys go, counted as evicted). Rule state is filed under the rule's
//! name and a hash of its definition: a rule whose definition changed starts empty, as on
//! [`Engine::reload_rules`]. Baselines' floating-point numbers are kept as their bits.

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::Engine;
use crate::config::DetectSettings;
use crate::error::{DetectError, SnapshotError};
use crate::finding::FindingSource;
use crate::rules::RuleSet;
use crate::scope::Scope;
use crate::watermark::TimeState;

/// The snapshot format this build writes and reads.
pub const SNAPSHOT_VERSION: u64 = 1;

#[derive(Serialize)]
struct Out<'a> {
    version: u64,
    scope: Scope,
    events: u64,
    findings: Vec<(FindingSource, &'a str, u64)>,
    time: TimeState,
    rules: Value,
    anomalies: Value,
    threats: Option<Value>,
    thresholds: Value,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct In {
    #[serde(rename = "version")]
    _version: u64,
    scope: Scope,
    events: u64,
    findings: Vec<(FindingSource, String, u64)>,
    time: TimeState,
    rules: Value,
    anomalies: Value,
    threats: Option<Value>,
    thresholds: Value,
}

impl Engine {
    /// All detection state, for [`Engine::restore`].
    pub fn snapshot(&self) -> Vec<u8> {
        let out = Out {
            version: SNAPSHOT_VERSION,
            scope: self.scope,
            events: self.events,
            findings: self
                .findings
                .iter()
                .map(|((s, n), c)| (*s, n.as_str(), *c))
                .collect(),
            time: self.time.save(),
            rules: self.rules.save(),
            anomalies: self.anomalies.save(),
            threats: self
                .threats
                .as_ref()
                .map(crate::threat::ThreatScanner::save),
            thresholds: self.thresholds.save(),
        };
        // Plain numbers, strings, sequences and string-keyed maps: it serialises.
        serde_json::to_vec(&out)
            .unwrap_or_else(|e| unreachable!("an engine snapshot serialises: {e}"))
    }

    /// An engine of `scope` running `rules` under `settings`, with the state `snapshot` (from
    /// [`Engine::snapshot`] of an engine of the same scope) holds.
    pub fn restore(
        rules: RuleSet,
        settings: &DetectSettings,
        scope: Scope,
        snapshot: &[u8],
    ) -> Result<Engine, DetectError> {
        let corrupt =
            |what: &str, e: serde_json::Error| SnapshotError::Corrupt(format!("{what}: {e}"));
        let v: Value = serde_json::from_slice(snapshot).map_err(|e| corrupt("not JSON", e))?;
        let Some(obj) = v.as_object() else {
            return Err(SnapshotError::Corrupt("not a JSON object".into()).into());
        };
        let version = obj.get("version");
        if version.and_then(Value::as_u64) != Some(SNAPSHOT_VERSION) {
            return Err(SnapshotError::Version {
                found: version.map_or_else(|| "none".to_owned(), Value::to_string),
                supported: SNAPSHOT_VERSION,
            }
            .into());
        }
        let snap: In = serde_json::from_value(v).map_err(|e| corrupt("bad layout", e))?;
        if snap.scope != scope {
            return Err(SnapshotError::Scope {
                found: snap.scope,
                expected: scope,
            }
            .into());
        }
        let mut e = Engine::with_scope(rules, settings, scope);
        e.events = snap.events;
        e.findings = snap
            .findings
            .into_iter()
            .map(|(s, n, c)| ((s, n), c))
            .collect();
        e.time.load(&snap.time);
        e.rules
            .load(snap.rules)
            .map_err(|err| corrupt("rule state", err))?;
        e.anomalies
            .load(snap.anomalies)
            .map_err(|err| corrupt("anomaly state", err))?;
        if let (Some(t), Some(state)) = (&mut e.threats, snap.threats) {
            t.load(state).map_err(|err| corrupt("threat state", err))?;
        }
        e.thresholds
            .load(snap.thresholds)
            .map_err(|err| corrupt("threshold state", err))?;
        Ok(e)
    }
}
