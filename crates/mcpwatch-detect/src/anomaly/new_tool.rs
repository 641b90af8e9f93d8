//! `new_tool`: a user calls a tool for the first time after their own learning period (the
//! learning period and minimum samples count from that user's first call). One key per user and
//! one per (user, tool) pair; an evicted pair may be reported again later.

use std::collections::BTreeMap;

use super::{learned, Anomaly, AnomalySettings, Call, Detector};
use crate::finding::Severity;
use crate::state::{Aged, BoundedMap};

#[derive(Debug)]
struct User {
    first: i64,
    last: i64,
    calls: u32,
    tools: u32,
}

impl Aged for User {
    fn last_seen(&self) -> i64 {
        self.last
    }
}

#[derive(Debug)]
struct Pair(i64);

impl Aged for Pair {
    fn last_seen(&self) -> i64 {
        self.0
    }
}

pub(crate) struct NewTool {
    s: AnomalySettings,
    users: BoundedMap<User>,
    pairs: BoundedMap<Pair>,
    key: String,
}

impl NewTool {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            s: s.clone(),
            users: BoundedMap::new(s.max_keys),
            pairs: BoundedMap::new(s.max_keys),
            key: String::new(),
        }
    }
}

impl Detector for NewTool {
    fn observe(&mut self, c: &Call<'_>, out: &mut Vec<Anomaly>) {
        if c.user.is_empty() {
            return;
        }
        let idle = c.ts - self.s.idle_us;
        let user = self.users.entry(c.user, idle, || User {
            first: c.ts,
            last: c.ts,
            calls: 0,
            tools: 0,
        });
        user.last = user.last.max(c.ts);
        let ready = learned(&self.s, user.first, user.calls, c.ts);
        user.calls = user.calls.saturating_add(1);
        self.key.clear();
        self.key.push_str(c.user);
        self.key.push('\u{1f}');
        self.key.push_str(c.server);
        self.key.push('\u{1f}');
        self.key.push_str(c.tool);
        let is_new = !self.pairs.contains(&self.key);
        self.pairs.entry(&self.key, idle, || Pair(c.ts)).0 = c.ts;
        if !is_new {
            return;
        }
        let (calls, tools) = (user.calls - 1, user.tools);
        user.tools = user.tools.saturating_add(1);
        if !ready {
            return;
        }
        let mut group = BTreeMap::new();
        group.insert("metadata.user_id".into(), c.user.to_owned());
        group.insert("metadata.server".into(), c.server.to_owned());
        group.insert("metadata.tool_name".into(), c.tool.to_owned());
        out.push(Anomaly {
            kind: "new_tool",
            score: f64::from(calls).ln_1p(),
            severity: Severity::Low,
            description: format!(
                "user {} called {} for the first time, after {calls} calls to {tools} other tools",
                c.user,
                c.tool_label()
            ),
            action: "Confirm the user or their agent meant to use this tool; check how the tool was introduced",
            group,
            behavioral: true,
        });
    }

    fn sweep(&mut self, idle_before: i64) {
        self.users.expire(idle_before);
        self.pairs.expire(idle_before);
    }

    fn tracked_keys(&self) -> usize {
        self.users.len() + self.pairs.len()
    }

    fn state_bytes(&self) -> usize {
        self.users.state_bytes() + self.pairs.state_bytes()
    }

    fn expired_and_evicted(&self) -> (u64, u64) {
        (
            self.users.expired + self.pairs.expired,
            self.users.evicted + self.pairs.evicted,
        )
    }
}
