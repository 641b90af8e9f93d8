//! `new_tool`: a user calls a tool for the first time after their own learning period (the
//! learning period and minimum samples count from that user's first call). One key per user and
//! one per (user, tool) pair; an evicted pair may be reported again later.

use std::collections::BTreeMap;

use super::keyed::{Keyed, KeyedStats};
use super::{learned, Anomaly, AnomalySettings, Call, Detector, DetectorKind};
use crate::finding::Severity;
use crate::state::Aged;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
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

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Pair(i64);

impl Aged for Pair {
    fn last_seen(&self) -> i64 {
        self.0
    }
}

pub(crate) struct NewTool {
    s: AnomalySettings,
    users: Keyed<User>,
    pairs: Keyed<Pair>,
}

impl NewTool {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            s: s.clone(),
            users: Keyed::new(s),
            pairs: Keyed::new(s),
        }
    }
}

impl Detector for NewTool {
    fn observe(&mut self, c: &Call<'_>, out: &mut Vec<Anomaly>) {
        if c.user.is_empty() {
            return;
        }
        let user = self.users.entry(&[c.user], c.ts, || User {
            first: c.ts,
            last: c.ts,
            calls: 0,
            tools: 0,
        });
        user.last = user.last.max(c.ts);
        let ready = learned(&self.s, user.first, user.calls, c.ts);
        user.calls = user.calls.saturating_add(1);
        let pair = [c.user, c.server, c.tool];
        let is_new = !self.pairs.contains(&pair);
        self.pairs.entry(&pair, c.ts, || Pair(c.ts)).0 = c.ts;
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
            kind: DetectorKind::NewTool,
            score: f64::from(calls).ln_1p(),
            severity: Severity::Low,
            description: format!(
                "{} called {} for the first time, after {calls} calls to {tools} other tools",
                c.who(),
                c.tool_label()
            ),
            action: "Confirm the user or their agent meant to use this tool; check how the tool was introduced",
            group,
            behavioral: true,
        });
    }

    fn maps_mut(&mut self) -> Vec<&mut dyn KeyedStats> {
        vec![&mut self.users, &mut self.pairs]
    }

    fn maps(&self) -> Vec<&dyn KeyedStats> {
        vec![&self.users, &self.pairs]
    }

    fn save(&self) -> serde_json::Value {
        crate::state::to_value(&(&self.users, &self.pairs))
    }

    fn load(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error> {
        let (users, pairs) = serde_json::from_value(state)?;
        self.users.restore(users);
        self.pairs.restore(pairs);
        Ok(())
    }
}
