//! `unusual_parameters` (SPEC 6.2): per server and tool, the key sets seen (up to 8
//! fingerprints; a tool with more is too varied to judge new sets) and the keys seen (up to 32;
//! likewise); per parameter, an EWMA of its log size and, while it has taken at most 4 distinct
//! short scalar values, those values (categorical once seen 20 times with no more). After the tool's learning period (and the parameter's
//! minimum samples) a call fires when it has a never-seen key or key set, a parameter
//! `parameters_z` deviations larger than usual (and at least 256 bytes: large unexpected inputs
//! are where injected payloads and exfiltrated data show up), or a value never seen for a
//! parameter that only ever took a few. One finding per call says every reason, compared with
//! what is usual; it is grouped per user, so different users' calls never fold into one alert.

use std::collections::BTreeMap;

use serde_json::Value;

use super::keyed::{Keyed, KeyedStats};
use super::{learned, shown, Anomaly, AnomalySettings, Call, Detector, DetectorKind, Ewma};
use crate::finding::Severity;
use crate::state::{stable_hash, Aged};

const SETS: usize = 8;
/// Parameters tracked per tool at most; a tool with more is too varied to judge new keys.
const PARAMS: u8 = 32;
/// Distinct values a parameter may take and still count as having a small set of usual ones.
const VALUES: usize = 4;
/// Samples with at most [`VALUES`] distinct values before a parameter counts as categorical.
const CATEGORICAL_SAMPLES: u32 = 5 * VALUES as u32;
/// Values longer than this are not categorical.
const MAX_VALUE_BYTES: usize = 64;
/// Smallest parameter reported as outlying in size.
const MIN_OUTLYING_BYTES: u64 = 256;
const ALPHA: f64 = 0.02;

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Tool {
    sets: [u64; SETS],
    nsets: u8,
    overflow: bool,
    params: u8,
    n: u32,
    first: i64,
    last: i64,
}

impl Aged for Tool {
    fn last_seen(&self) -> i64 {
        self.last
    }
}

#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct Param {
    size: Ewma,
    n: u32,
    values: [u64; VALUES],
    nvalues: u8,
    /// Took more than [`VALUES`] values, or values that are not short scalars.
    varied: bool,
    last: i64,
}

impl Aged for Param {
    fn last_seen(&self) -> i64 {
        self.last
    }
}

pub(crate) struct Parameters {
    s: AnomalySettings,
    tools: Keyed<Tool>,
    params: Keyed<Param>,
}

impl Parameters {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            s: s.clone(),
            tools: Keyed::new(s),
            params: Keyed::new(s),
        }
    }
}

/// A short scalar value as text, for the set of usual values.
fn categorical(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) if s.len() <= MAX_VALUE_BYTES => Some(s.clone()),
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::Null => Some("null".to_owned()),
        _ => None,
    }
}

impl Detector for Parameters {
    fn observe(&mut self, c: &Call<'_>, out: &mut Vec<Anomaly>) {
        if c.params.is_none() {
            return;
        }
        let entries = c.entries();
        let names: Vec<&str> = entries.iter().map(|e| e.0).collect();
        let set = stable_hash(&names);
        let tool = self.tools.entry(&[c.server, c.tool], c.ts, || Tool {
            sets: [0; SETS],
            nsets: 0,
            overflow: false,
            params: 0,
            n: 0,
            first: c.ts,
            last: c.ts,
        });
        tool.n = tool.n.saturating_add(1);
        tool.last = tool.last.max(c.ts);
        let ready = learned(&self.s, tool.first, tool.n, c.ts);
        let known_set = tool.sets[..usize::from(tool.nsets)].contains(&set);
        let judge_sets = ready && !tool.overflow;
        if !known_set {
            if usize::from(tool.nsets) < SETS {
                tool.sets[usize::from(tool.nsets)] = set;
                tool.nsets += 1;
            } else {
                tool.overflow = true;
            }
        }
        let (nsets, mut room) = (tool.nsets, PARAMS.saturating_sub(tool.params));
        let judge_keys = ready && room > 0;

        let mut reasons: Vec<String> = Vec::new();
        let mut new_keys: Vec<&str> = Vec::new();
        let mut score: f64 = 1.0;
        for &(key, bytes, value) in &entries {
            let seen = self.params.contains(&[c.server, c.tool, key]);
            if !seen {
                if room == 0 {
                    continue;
                }
                room -= 1;
                if judge_keys {
                    new_keys.push(key);
                }
            }
            let x = (bytes as f64).ln_1p();
            let value = categorical(value);
            let st = self.params.entry(&[c.server, c.tool, key], c.ts, || Param {
                size: Ewma::start(x),
                n: 0,
                values: [0; VALUES],
                nvalues: 0,
                varied: false,
                last: c.ts,
            });
            st.last = st.last.max(c.ts);
            let judged = seen && ready && st.n >= self.s.min_samples;
            let z = (x - st.size.mean) / st.size.sd(0.25);
            if judged && z >= self.s.parameters_z && bytes >= MIN_OUTLYING_BYTES {
                score = score.max(z);
                reasons.push(format!(
                    "`{}` is {bytes} bytes vs a typical {:.0}",
                    shown(key),
                    st.size.mean.exp_m1()
                ));
            }
            match value {
                Some(v) if !st.varied => {
                    let h = stable_hash(&[&v]);
                    let usual = usize::from(st.nvalues);
                    if !st.values[..usual].contains(&h) {
                        if judged && usual > 0 && st.n >= CATEGORICAL_SAMPLES {
                            reasons.push(format!(
                                "`{}` is `{}`, a value never seen where it only ever took {usual}",
                                shown(key),
                                shown(&v)
                            ));
                        }
                        if usual < VALUES {
                            st.values[usual] = h;
                            st.nvalues += 1;
                        } else {
                            st.varied = true;
                        }
                    }
                }
                None => st.varied = true,
                Some(_) => {}
            }
            st.n = st.n.saturating_add(1);
            let w = if st.n <= 10 {
                1.0 / f64::from(st.n)
            } else {
                ALPHA
            };
            st.size.update(x, w);
        }
        tool.params = PARAMS - room;
        if !new_keys.is_empty() {
            let list: Vec<String> = new_keys.iter().map(|k| format!("`{}`", shown(k))).collect();
            reasons.insert(0, format!("never-seen key {}", list.join(", ")));
        } else if judge_sets && !known_set {
            let list: Vec<String> = names.iter().map(|k| shown(k)).collect();
            reasons.insert(
                0,
                format!(
                    "a key set never seen: [{}] ({nsets} known)",
                    list.join(", ")
                ),
            );
        }
        if reasons.is_empty() {
            return;
        }
        let mut group: BTreeMap<String, String> = c.user_tool_group();
        group.insert("anomaly".into(), "parameters".into());
        out.push(Anomaly {
            kind: DetectorKind::UnusualParameters,
            score,
            severity: Severity::Medium,
            description: format!(
                "{} called by {} with unusual parameters: {}",
                c.tool_label(),
                c.who(),
                reasons.join("; ")
            ),
            action: "Look at the call's parameters: unexpected keys, sizes or values often carry injected content or exfiltrated data, or show the agent being steered",
            group,
            behavioral: false,
        });
    }

    fn maps_mut(&mut self) -> Vec<&mut dyn KeyedStats> {
        vec![&mut self.tools, &mut self.params]
    }

    fn maps(&self) -> Vec<&dyn KeyedStats> {
        vec![&self.tools, &self.params]
    }

    fn save(&self) -> serde_json::Value {
        crate::state::to_value(&(&self.tools, &self.params))
    }

    fn load(&mut self, state: serde_json::Value) -> Result<(), serde_json::Error> {
        let (tools, params) = serde_json::from_value(state)?;
        self.tools.restore(tools);
        self.params.restore(params);
        Ok(())
    }
}
