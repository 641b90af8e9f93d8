//! Rollup deltas: what a batch of events adds to the statistics tables, summed in memory by the
//! writer of any backend and written by that backend's own flush.

/// Rollup keys are hashed for every event on the writer thread; SipHash's DoS resistance buys
/// nothing here (every map is bounded per flush) and foldhash is several times faster.
pub(crate) type HashMap<K, V> = std::collections::HashMap<K, V, foldhash::fast::RandomState>;

use mcpwatch_core::params::Params;
use mcpwatch_core::{Event, Level, Outcome};
use serde_json::Value;

use crate::hist;

pub(crate) const MINUTE: i64 = 60_000_000;
pub(crate) const HOUR: i64 = 60 * MINUTE;
/// Distinct parameter-key patterns kept per user and tool: keys are attacker-controlled.
pub(crate) const MAX_PATTERNS_PER_USER_TOOL: i64 = 64;
/// Longest parameter-key pattern kept, in bytes.
const MAX_PATTERN_BYTES: usize = 256;

#[derive(Default, Clone, Copy)]
pub(crate) struct MinuteAgg {
    pub(crate) count: i64,
    pub(crate) errors: i64,
    pub(crate) timed: i64,
    pub(crate) sum_time: f64,
}

#[derive(Clone, Copy)]
pub(crate) struct ToolAgg {
    pub(crate) count: i64,
    pub(crate) sum_time: f64,
    pub(crate) min_time: f64,
    pub(crate) max_time: f64,
    pub(crate) last_ts: i64,
}

#[derive(Clone, Copy)]
pub(crate) struct UserAgg {
    pub(crate) count: i64,
    pub(crate) first_ts: i64,
    pub(crate) last_ts: i64,
}

/// Strings of rollup keys, stored once; keys hold their indexes.
#[derive(Default)]
pub(crate) struct Interner {
    pub(crate) ids: HashMap<String, u32>,
    pub(crate) names: Vec<String>,
    /// Reused to build parameter patterns without allocating per event.
    pub(crate) scratch: String,
}

impl Interner {
    fn id(&mut self, s: &str) -> u32 {
        if let Some(&i) = self.ids.get(s) {
            return i;
        }
        let i = self.names.len() as u32;
        self.ids.insert(s.to_owned(), i);
        self.names.push(s.to_owned());
        i
    }

    pub(crate) fn name(&self, i: u32) -> &str {
        &self.names[i as usize]
    }
}

pub(crate) type Sym = u32;

/// Rollup deltas not yet written, with the last event sequence they include.
#[derive(Default)]
pub(crate) struct Rollups {
    pub(crate) strings: Interner,
    pub(crate) last_seq: i64,
    pub(crate) minute: HashMap<(i64, Sym, i64, Sym, Sym), MinuteAgg>,
    pub(crate) hour: HashMap<(i64, Sym, i64, Sym), MinuteAgg>,
    /// Security events by minute and type: (count, failures and denials).
    pub(crate) security: HashMap<(i64, Sym), (i64, i64)>,
    pub(crate) tool: HashMap<(i64, Sym, Sym, Sym), ToolAgg>,
    pub(crate) hist: HashMap<(i64, Sym, Sym, i64), i64>,
    pub(crate) user: HashMap<(Sym, Sym, Sym), UserAgg>,
    pub(crate) params: HashMap<(Sym, Sym, Sym, Sym), (i64, i64)>,
}

impl Rollups {
    pub(crate) fn is_empty(&self) -> bool {
        self.minute.is_empty() && self.last_seq == 0
    }

    pub(crate) fn keys(&self) -> usize {
        self.minute.len()
            + self.hour.len()
            + self.security.len()
            + self.tool.len()
            + self.hist.len()
            + self.user.len()
            + self.params.len()
    }

    pub(crate) fn add(&mut self, e: &Event, seq: i64) {
        self.last_seq = self.last_seq.max(seq);
        let ts = e.timestamp.as_micros();
        let tool_name = e.tool().unwrap_or("");
        let outcome_name = e
            .metadata
            .get("outcome")
            .and_then(Value::as_str)
            .unwrap_or("");
        let failed = (!outcome_name.is_empty() && outcome_name != Outcome::Success.as_str())
            || e.level >= Level::Error;
        let duration = e.duration_secs().filter(|d| d.is_finite() && *d >= 0.0);
        let (cat, tool, outcome) = (
            self.strings.id(&e.category),
            self.strings.id(tool_name),
            self.strings.id(outcome_name),
        );
        let m = self
            .minute
            .entry((ts.div_euclid(MINUTE), cat, e.level.rank(), tool, outcome))
            .or_default();
        m.count += 1;
        m.errors += failed as i64;
        if let Some(d) = duration {
            m.timed += 1;
            m.sum_time += d;
        }
        let h = self
            .hour
            .entry((ts.div_euclid(HOUR), cat, e.level.rank(), outcome))
            .or_default();
        h.count += 1;
        h.errors += failed as i64;
        if let Some(d) = duration {
            h.timed += 1;
            h.sum_time += d;
        }
        if e.category == "security" {
            let kind = self.strings.id(&e.event_type);
            let k = self
                .security
                .entry((ts.div_euclid(MINUTE), kind))
                .or_default();
            // A failed sign-in or a denial (SPEC 2: `result` is `failure` or `denied`).
            let refused = matches!(
                e.metadata.get("result").and_then(Value::as_str),
                Some("failure" | "denied")
            );
            k.0 += 1;
            k.1 += refused as i64;
        }
        if !e.is_execution_complete() {
            return;
        }
        let server = self.strings.id(e.server().unwrap_or(""));
        let hour = ts.div_euclid(HOUR);
        let d = duration.unwrap_or(0.0);
        let t = self
            .tool
            .entry((hour, server, tool, outcome))
            .or_insert(ToolAgg {
                count: 0,
                sum_time: 0.0,
                min_time: f64::INFINITY,
                max_time: 0.0,
                last_ts: ts,
            });
        t.count += 1;
        t.sum_time += d;
        t.min_time = t.min_time.min(d);
        t.max_time = t.max_time.max(d);
        t.last_ts = t.last_ts.max(ts);
        *self
            .hist
            .entry((hour, server, tool, hist::bucket_of(d)))
            .or_default() += 1;
        let Some(user_name) = e.user() else { return };
        let user = self.strings.id(user_name);
        let u = self.user.entry((user, server, tool)).or_insert(UserAgg {
            count: 0,
            first_ts: ts,
            last_ts: ts,
        });
        u.count += 1;
        u.first_ts = u.first_ts.min(ts);
        u.last_ts = u.last_ts.max(ts);
        let mut scratch = std::mem::take(&mut self.strings.scratch);
        parameter_pattern(e, &mut scratch);
        let pattern = self.strings.id(&scratch);
        self.strings.scratch = scratch;
        let p = self
            .params
            .entry((user, server, tool, pattern))
            .or_insert((0, ts));
        p.0 += 1;
        p.1 = p.1.max(ts);
    }
}

/// The top-level keys of `metadata.parameters`, e.g. `encoding,path`, into `out`: sorted for
/// whole arguments (serde_json's map iterates in key order), as capture listed them for the
/// shape of arguments too big to keep.
fn parameter_pattern(e: &Event, out: &mut String) {
    out.clear();
    let Some(params) = e.metadata.get("parameters").and_then(Params::of) else {
        return;
    };
    for (i, k) in params.keys().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        if out.len() > MAX_PATTERN_BYTES {
            mcpwatch_core::redact::truncate(out, MAX_PATTERN_BYTES);
            return;
        }
    }
}
