//! `error_rate`: per server and tool, a one-sided CUSUM on failures against the tool's own
//! baseline failure rate. Each failure adds `1 - (p0 + k)`, each success subtracts `p0 + k`
//! (k = max(p0/2, 0.05)); it fires when the sum passes `error_cusum_h`, then stays quiet for
//! 100 calls. Refused (`denied`) and cancelled calls are not failures of the tool.

use super::keyed::{Keyed, KeyedStats};
use super::{learned, Anomaly, AnomalySettings, Call, Detector, DetectorKind};
use crate::finding::Severity;
use crate::state::Aged;

const BASE: f64 = 0.01;
const RECENT: f64 = 1.0 / 20.0;
const COOLDOWN: u32 = 100;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    #[serde(with = "crate::state::f64_bits")]
    p0: f64,
    #[serde(with = "crate::state::f64_bits")]
    recent: f64,
    #[serde(with = "crate::state::f64_bits")]
    s: f64,
    n: u32,
    cooldown: u32,
    first: i64,
    last: i64,
}

impl Aged for State {
    fn last_seen(&self) -> i64 {
        self.last
    }
}

pub(crate) struct ErrorRate {
    s: AnomalySettings,
    keys: Keyed<State>,
}

impl ErrorRate {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            s: s.clone(),
            keys: Keyed::new(s),
        }
    }
}

impl Detector for ErrorRate {
    fn observe(&mut self, c: &Call<'_>, out: &mut Vec<Anomaly>) {
        let Some(failed) = c.failed else { return };
        let x = if failed { 1.0 } else { 0.0 };
        let st = self.keys.entry(&[c.server, c.tool], c.ts, || State {
            p0: 0.0,
            recent: 0.0,
            s: 0.0,
            n: 0,
            cooldown: 0,
            first: c.ts,
            last: c.ts,
        });
        st.n = st.n.saturating_add(1);
        st.last = st.last.max(c.ts);
        st.recent += RECENT * (x - st.recent);
        let ready = learned(&self.s, st.first, st.n, c.ts);
        let k = (st.p0 / 2.0).max(0.05);
        if st.cooldown > 0 {
            st.cooldown -= 1;
        } else {
            if ready {
                st.s = (st.s + x - (st.p0 + k)).max(0.0);
            }
            if st.s >= self.s.error_cusum_h {
                st.s = 0.0;
                st.cooldown = COOLDOWN;
                let severity = if st.recent >= 0.5 {
                    Severity::High
                } else {
                    Severity::Medium
                };
                out.push(Anomaly {
                    kind: DetectorKind::ErrorRate,
                    score: st.recent / st.p0.max(0.01),
                    severity,
                    description: format!(
                        "{} error rate {:.0}% over the last 20 calls vs baseline {:.1}%; latest failure by {}",
                        c.tool_label(),
                        st.recent * 100.0,
                        st.p0 * 100.0,
                        c.who()
                    ),
                    action: "Look at the recent failures' error messages; check the server and what it depends on",
                    group: c.tool_group(),
                    behavioral: false,
                });
            }
            // The baseline does not learn during a burst (cool-down) or right after it.
            let w = if st.n <= 20 {
                1.0 / f64::from(st.n)
            } else {
                BASE
            };
            st.p0 += w * (x - st.p0);
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
