//! `latency`: per server and tool, a slow EWMA of log latency is the baseline and a fast one
//! (about the last 40 calls) the recent median; it fires when the recent median is both
//! `latency_ratio` times the baseline, `latency_z` standard errors above it and at least
//! `latency_min_increase_ms` slower than it (a busy host turning 1 ms into 20 ms is no incident;
//! a tool going from 12 ms to 800 ms is). It fires once
//! per episode and re-arms when the recent median falls back to half the trigger distance.

use super::keyed::{Keyed, KeyedStats};
use super::{learned, Anomaly, AnomalySettings, Call, Detector, DetectorKind, Ewma};
use crate::finding::Severity;
use crate::state::Aged;

/// Weight of a call in the baseline.
const SLOW: f64 = 0.02;
/// Weight of a call in the recent mean: an effective memory of about 40 calls.
const FAST: f64 = 2.0 / 41.0;
const RECENT_CALLS: u32 = 40;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct State {
    base: Ewma,
    #[serde(with = "crate::state::f64_bits")]
    recent: f64,
    n: u32,
    first: i64,
    last: i64,
    alarmed: bool,
}

impl Aged for State {
    fn last_seen(&self) -> i64 {
        self.last
    }
}

pub(crate) struct Latency {
    s: AnomalySettings,
    keys: Keyed<State>,
}

impl Latency {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            s: s.clone(),
            keys: Keyed::new(s),
        }
    }
}

impl Detector for Latency {
    fn observe(&mut self, c: &Call<'_>, out: &mut Vec<Anomaly>) {
        let Some(secs) = c.latency_s else { return };
        let x = (secs * 1000.0).max(0.01).ln();
        let st = self.keys.entry(&[c.server, c.tool], c.ts, || State {
            base: Ewma::start(x),
            recent: x,
            n: 0,
            first: c.ts,
            last: c.ts,
            alarmed: false,
        });
        st.n = st.n.saturating_add(1);
        st.last = st.last.max(c.ts);
        st.recent += FAST * (x - st.recent);
        let ready = learned(&self.s, st.first, st.n, c.ts);
        // Standard error of the fast mean under the baseline's spread.
        let se = st.base.sd(0.05) * (FAST / (2.0 - FAST)).sqrt();
        let dev = st.recent - st.base.mean;
        let z = dev / se;
        let trigger = self.s.latency_ratio.ln();
        // The absolute rise is checked last: two `exp`, needed only when the rest holds.
        if ready
            && !st.alarmed
            && dev >= trigger
            && z >= self.s.latency_z
            && st.recent.exp() - st.base.mean.exp() >= self.s.latency_min_increase_ms
        {
            st.alarmed = true;
            let (now_ms, base_ms) = (st.recent.exp(), st.base.mean.exp());
            out.push(Anomaly {
                kind: DetectorKind::Latency,
                score: z,
                severity: Severity::Medium,
                description: format!(
                    "{} p50 latency {} vs baseline {} over the last {RECENT_CALLS} calls ({:.1}x slower); latest call by {}",
                    c.tool_label(),
                    ms(now_ms),
                    ms(base_ms),
                    now_ms / base_ms,
                    c.who()
                ),
                action: "Check the server's health and its upstream dependencies; look for load or a slow backend",
                group: c.tool_group(),
                behavioral: false,
            });
        } else if st.alarmed && dev < trigger / 2.0 {
            st.alarmed = false;
        }
        // The baseline learns slowly, from winsorised samples (a few outliers do not move it),
        // and ten times slower while the recent median drifts away, so that an episode does
        // not become normal before it is reported.
        let suspect = st.alarmed || dev > trigger / 2.0;
        let w = match st.n {
            n if n <= 10 => 1.0 / f64::from(n),
            _ if suspect => SLOW / 10.0,
            _ => SLOW,
        };
        let lim = 3.0 * st.base.sd(0.05);
        let clipped = if st.n <= 10 {
            x
        } else {
            st.base.mean + (x - st.base.mean).clamp(-lim, lim)
        };
        st.base.update(clipped, w);
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

pub(crate) fn ms(v: f64) -> String {
    if v >= 1000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 10.0 {
        format!("{v:.0} ms")
    } else {
        format!("{v:.1} ms")
    }
}
