//! `call_rate`: per user, tool calls per one-minute bucket against that user's baseline of
//! calls per active minute (an EWMA over minutes that had calls). It fires once in a minute
//! when the count is `call_rate_z` deviations above the baseline, at least three times it, and
//! at least `call_rate_min_calls`.

use std::collections::BTreeMap;

use super::keyed::{Keyed, KeyedStats};
use super::{learned, Anomaly, AnomalySettings, Call, Detector, DetectorKind, Ewma};
use crate::finding::Severity;
use crate::state::Aged;

const BUCKET_US: i64 = 60_000_000;
const ALPHA: f64 = 0.1;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    base: Ewma,
    bucket: i64,
    count: u32,
    buckets: u32,
    calls: u32,
    first: i64,
    last: i64,
    fired: bool,
}

impl Aged for State {
    fn last_seen(&self) -> i64 {
        self.last
    }
}

pub(crate) struct CallRate {
    s: AnomalySettings,
    keys: Keyed<State>,
}

impl CallRate {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            s: s.clone(),
            keys: Keyed::new(s),
        }
    }
}

impl Detector for CallRate {
    fn observe(&mut self, c: &Call<'_>, out: &mut Vec<Anomaly>) {
        if c.user.is_empty() {
            return;
        }
        let b = c.ts - c.ts.rem_euclid(BUCKET_US);
        let st = self.keys.entry(&[c.user], c.ts, || State {
            base: Ewma::default(),
            bucket: b,
            count: 0,
            buckets: 0,
            calls: 0,
            first: c.ts,
            last: c.ts,
            fired: false,
        });
        st.last = st.last.max(c.ts);
        st.calls = st.calls.saturating_add(1);
        if b > st.bucket {
            let n = f64::from(st.count);
            if st.buckets == 0 {
                st.base = Ewma::start(n);
            } else {
                st.base
                    .update(n, ALPHA.max(1.0 / f64::from(st.buckets + 1)));
            }
            st.buckets += 1;
            st.bucket = b;
            st.count = 0;
            st.fired = false;
        }
        st.count = st.count.saturating_add(1);
        let ready = learned(&self.s, st.first, st.calls, c.ts) && st.buckets >= 10;
        if !ready || st.fired {
            return;
        }
        let n = f64::from(st.count);
        let sd = st.base.sd(1.0);
        let z = (n - st.base.mean) / sd;
        if z >= self.s.call_rate_z
            && n >= 3.0 * st.base.mean
            && st.count >= self.s.call_rate_min_calls
        {
            st.fired = true;
            let mut group = BTreeMap::new();
            group.insert("metadata.user_id".into(), c.user.to_owned());
            out.push(Anomaly {
                kind: DetectorKind::CallRate,
                score: z,
                severity: Severity::Medium,
                description: format!(
                    "{} made {} tool calls within one minute vs a baseline of {:.1} ± {:.1} per active minute; the latest to {}",
                    c.who(), st.count, st.base.mean, sd, c.tool_label()
                ),
                action: "Check what the user's agent is doing; a runaway loop or a scripted client is likely. Rate-limit it if needed",
                group,
                behavioral: true,
            });
        }
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
        self.keys.restore(serde_json::from_value(state)?);
        Ok(())
    }
}
