//! `repetition`: an agent stuck in a loop. Per session (per user for calls without one), the
//! current run of consecutive calls to the same server and tool with the same arguments; any
//! other call in the session ends the run. It fires once per run when the last
//! `repetition_count` calls of the run fall within `repetition_window` (a sliding window: a slow
//! loop fires as soon as it speeds up, a run that merely lasts long does not). The arguments
//! compare by a stable hash of their canonical JSON as capture recorded them (sorted keys,
//! redacted, bounded). No learning period: the pattern is absolute.

use std::fmt::Write as _;

use super::keyed::{Keyed, KeyedStats};
use super::{Anomaly, AnomalySettings, Call, Detector, DetectorKind};
use crate::finding::Severity;
use crate::rules::engine::humanize_us;
use crate::state::{stable_hash, Aged};

/// Keys of the arguments named in a description at most.
const SHOWN_KEYS: usize = 5;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    /// Hash of server, tool and arguments of the run's call.
    call: u64,
    run: u32,
    /// Times of the run's latest calls, a ring of `repetition_count` slots.
    times: Box<[i64]>,
    last: i64,
    fired: bool,
}

impl Aged for State {
    fn last_seen(&self) -> i64 {
        self.last
    }
    fn heap_bytes(&self) -> usize {
        self.times.len() * size_of::<i64>()
    }
}

pub(crate) struct Repetition {
    s: AnomalySettings,
    keys: Keyed<State>,
    json: Vec<u8>,
}

impl Repetition {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            s: s.clone(),
            keys: Keyed::new(s),
            json: Vec::new(),
        }
    }
}

impl Detector for Repetition {
    fn observe(&mut self, c: &Call<'_>, out: &mut Vec<Anomaly>) {
        self.json.clear();
        if let Some(p) = c.params_json {
            // serde_json maps are sorted, so equal arguments serialise equally.
            mcpwatch_core::json::write_value(&mut self.json, p);
        }
        let args = std::str::from_utf8(&self.json).unwrap_or_default();
        let h = stable_hash(&[c.server, c.tool, args]);
        let n = self.s.repetition_count.max(2) as usize;
        let (scope, who) = match c.session {
            Some(s) if !s.is_empty() => ("s", s),
            _ => ("u", c.user),
        };
        let st = self.keys.entry(&[scope, who], c.ts, || State {
            call: h,
            run: 0,
            times: vec![i64::MIN; n].into_boxed_slice(),
            last: c.ts,
            fired: false,
        });
        st.last = st.last.max(c.ts);
        if st.call != h || st.run == 0 {
            st.call = h;
            st.run = 0;
            st.fired = false;
        }
        let slot = st.run as usize % n;
        st.times[slot] = c.ts;
        st.run = st.run.saturating_add(1);
        if st.fired || (st.run as usize) < n {
            return;
        }
        // The oldest of the last `n` calls is the slot after the newest.
        let oldest = st.times[(slot + 1) % n];
        let span = c.ts.saturating_sub(oldest);
        if span > self.s.repetition_window_us {
            return;
        }
        st.fired = true;
        let mut group = c.user_tool_group();
        if let Some(s) = c.session {
            group.insert("metadata.session_id".into(), s.to_owned());
        }
        out.push(Anomaly {
            kind: DetectorKind::Repetition,
            score: st.run as f64 / n as f64,
            severity: Severity::Medium,
            description: format!(
                "{} called {} times in a row with identical arguments ({}) within {} by {}; the agent looks stuck in a loop",
                c.tool_label(),
                st.run,
                shape(c),
                humanize_us(span),
                c.who(),
            ),
            action: "Stop or restart the agent's session and look at the tool result it keeps reacting to",
            group,
            behavioral: true,
        });
    }

    fn maps_mut(&mut self) -> Vec<&mut dyn KeyedStats> {
        vec![&mut self.keys]
    }

    fn maps(&self) -> Vec<&dyn KeyedStats> {
        vec![&self.keys]
    }

    fn save(&self) -> serde_json::Value {
        crate::state::to_value(&self.keys)
    }

    fn load(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error> {
        let mut snap: crate::state::MapSnapshot<State> = serde_json::from_value(state)?;
        // A run's ring has `repetition_count` slots; runs saved under another count restart.
        let n = self.s.repetition_count.max(2) as usize;
        snap.retain(|st| st.times.len() == n);
        self.keys.restore(snap);
        Ok(())
    }
}

/// The arguments' shape for a person: `path: 17 B, encoding: 6 B`.
fn shape(c: &Call<'_>) -> String {
    let entries = c.entries();
    if entries.is_empty() {
        return "no arguments".to_owned();
    }
    let mut s = String::new();
    for (i, (k, n, _)) in entries.iter().take(SHOWN_KEYS).enumerate() {
        let sep = if i > 0 { ", " } else { "" };
        let _ = write!(s, "{sep}`{}`: {n} B", super::shown(k));
    }
    if entries.len() > SHOWN_KEYS {
        let _ = write!(s, ", and {} more", entries.len() - SHOWN_KEYS);
    }
    s
}
