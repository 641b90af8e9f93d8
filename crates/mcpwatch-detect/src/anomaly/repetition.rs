//! `repetition`: per session (or user when there is no session) and tool, the length of the
//! current run of calls with identical arguments; it fires once per run when the run reaches
//! `repetition_count` within `repetition_window`: an agent stuck in a loop. The minimum sample
//! count is the run length itself; no longer learning is needed for an absolute pattern.

use super::{Anomaly, AnomalySettings, Call, Detector};
use crate::finding::Severity;
use crate::rules::engine::humanize_us;
use crate::state::{stable_hash, Aged, BoundedMap};

#[derive(Debug)]
struct State {
    args: u64,
    run: u32,
    start: i64,
    last: i64,
    fired: bool,
}

impl Aged for State {
    fn last_seen(&self) -> i64 {
        self.last
    }
}

pub(crate) struct Repetition {
    s: AnomalySettings,
    keys: BoundedMap<State>,
    key: String,
    args: String,
}

impl Repetition {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            s: s.clone(),
            keys: BoundedMap::new(s.max_keys),
            key: String::new(),
            args: String::new(),
        }
    }
}

impl Detector for Repetition {
    fn observe(&mut self, c: &Call<'_>, out: &mut Vec<Anomaly>) {
        let who = c.session.unwrap_or(c.user);
        self.key.clear();
        self.key.push_str(who);
        self.key.push('\u{1f}');
        self.key.push_str(c.server);
        self.key.push('\u{1f}');
        self.key.push_str(c.tool);
        self.args.clear();
        if let Some(p) = c.params {
            // serde_json maps are sorted, so equal arguments serialise equally.
            self.args = p.to_string();
        }
        let h = stable_hash(&[&self.args]);
        let st = self.keys.entry(&self.key, c.ts - self.s.idle_us, || State {
            args: h,
            run: 0,
            start: c.ts,
            last: c.ts,
            fired: false,
        });
        st.last = st.last.max(c.ts);
        if st.args == h && c.ts - st.start <= self.s.repetition_window_us {
            st.run = st.run.saturating_add(1);
        } else {
            *st = State {
                args: h,
                run: 1,
                start: c.ts,
                last: c.ts,
                fired: false,
            };
        }
        if st.fired || st.run < self.s.repetition_count {
            return;
        }
        st.fired = true;
        let mut group = c.tool_group();
        let (k, v) = match c.session {
            Some(s) => ("metadata.session_id", s),
            None => ("metadata.user_id", c.user),
        };
        group.insert(k.into(), v.to_owned());
        let by = if c.user.is_empty() {
            String::new()
        } else {
            format!(" by user {}", c.user)
        };
        out.push(Anomaly {
            kind: "repetition",
            score: f64::from(st.run) / f64::from(self.s.repetition_count.max(1)),
            severity: Severity::Medium,
            description: format!(
                "{} called {} times in a row with identical arguments within {}{by}; the agent looks stuck in a loop",
                c.tool_label(),
                st.run,
                humanize_us(c.ts - st.start),
            ),
            action: "Stop or restart the agent's session and look at the tool result it keeps reacting to",
            group,
            behavioral: true,
        });
    }

    fn sweep(&mut self, idle_before: i64) {
        self.keys.expire(idle_before);
    }

    fn tracked_keys(&self) -> usize {
        self.keys.len()
    }

    fn state_bytes(&self) -> usize {
        self.keys.state_bytes()
    }

    fn expired_and_evicted(&self) -> (u64, u64) {
        (self.keys.expired, self.keys.evicted)
    }
}
