//! `unusual_parameters`: per server and tool, the set of parameter key sets seen (up to 8
//! fingerprints; a tool with more is too varied to judge and is no longer checked for new
//! sets) and an EWMA of the log size of the parameters. After learning it fires on a new key
//! set, or on parameters `parameters_z` deviations larger than usual and at least 256 bytes
//! (large, unusual inputs are where injected payloads and exfiltrated data show up).

use serde_json::Value;

use super::{learned, Anomaly, AnomalySettings, Call, Detector, Ewma};
use crate::finding::Severity;
use crate::state::{stable_hash, Aged, BoundedMap};

const SETS: usize = 8;
const ALPHA: f64 = 0.02;

#[derive(Debug)]
struct State {
    sets: [u64; SETS],
    nsets: u8,
    overflow: bool,
    size: Ewma,
    n: u32,
    first: i64,
    last: i64,
}

impl Aged for State {
    fn last_seen(&self) -> i64 {
        self.last
    }
}

pub(crate) struct Parameters {
    s: AnomalySettings,
    keys: BoundedMap<State>,
    key: String,
}

impl Parameters {
    pub fn new(s: &AnomalySettings) -> Self {
        Self {
            s: s.clone(),
            keys: BoundedMap::new(s.max_keys),
            key: String::new(),
        }
    }
}

/// Bytes of text in a JSON value (keys and strings; numbers count as 8).
fn size(v: &Value, depth: u32) -> usize {
    if depth > 32 {
        return 0;
    }
    match v {
        Value::String(s) => s.len(),
        Value::Array(a) => a.iter().map(|i| size(i, depth + 1)).sum(),
        Value::Object(m) => m.iter().map(|(k, i)| k.len() + size(i, depth + 1)).sum(),
        _ => 8,
    }
}

impl Detector for Parameters {
    fn observe(&mut self, c: &Call<'_>, out: &mut Vec<Anomaly>) {
        let Some(Value::Object(params)) = c.params else {
            return;
        };
        let names: Vec<&str> = params.keys().map(String::as_str).collect(); // sorted map
        let set = stable_hash(&names);
        let bytes = size(c.params.unwrap_or(&Value::Null), 0);
        let x = (bytes as f64).ln_1p();
        self.key.clear();
        self.key.push_str(c.server);
        self.key.push('\u{1f}');
        self.key.push_str(c.tool);
        let st = self.keys.entry(&self.key, c.ts - self.s.idle_us, || State {
            sets: [0; SETS],
            nsets: 0,
            overflow: false,
            size: Ewma::start(x),
            n: 0,
            first: c.ts,
            last: c.ts,
        });
        st.n = st.n.saturating_add(1);
        st.last = st.last.max(c.ts);
        let ready = learned(&self.s, st.first, st.n, c.ts);
        let known = st.sets[..usize::from(st.nsets)].contains(&set);
        if !known && ready && !st.overflow {
            out.push(Anomaly {
                kind: "unusual_parameters",
                score: 1.0,
                severity: Severity::Medium,
                description: format!(
                    "{} called with a parameter set never seen before: [{}] ({} known sets)",
                    c.tool_label(),
                    names.join(", "),
                    st.nsets
                ),
                action: "Check whether the tool's schema changed or the agent is being steered to pass unexpected arguments",
                group: c.tool_group(),
                behavioral: false,
            });
        }
        if !known {
            if usize::from(st.nsets) < SETS {
                st.sets[usize::from(st.nsets)] = set;
                st.nsets += 1;
            } else {
                st.overflow = true;
            }
        }
        let sd = st.size.sd(0.25);
        let z = (x - st.size.mean) / sd;
        if ready && z >= self.s.parameters_z && bytes >= 256 {
            let mut group = c.tool_group();
            group.insert("anomaly".into(), "size".into());
            out.push(Anomaly {
                kind: "unusual_parameters",
                score: z,
                severity: Severity::Medium,
                description: format!(
                    "{} called with {bytes} bytes of parameters vs a typical {:.0} bytes",
                    c.tool_label(),
                    st.size.mean.exp_m1()
                ),
                action: "Look at the call's parameters: large unexpected inputs often carry injected content or exfiltrated data",
                group,
                behavioral: false,
            });
        }
        let w = if st.n <= 10 {
            1.0 / f64::from(st.n)
        } else {
            ALPHA
        };
        st.size.update(x, w);
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
