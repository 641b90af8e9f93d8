//! How rollup rows become answers, the same for every backend: each reader fetches the rows
//! its own way and folds them here, so the backends cannot drift apart in what they answer.

use std::collections::{BTreeMap, HashMap};

use mcpwatch_core::Timestamp;
use serde_json::value::RawValue;

use crate::hist;
use crate::query::{
    KindCount, Latency, SecurityPoint, SecuritySeries, Series, SeriesPoint, StatsQuery, ToolStats,
    UserTool, UserUsage,
};
use crate::rollup::{HOUR, MINUTE};
use crate::StoreError;

/// A stored body as raw JSON.
pub(crate) fn raw(body: String) -> Result<Box<RawValue>, StoreError> {
    RawValue::from_string(body)
        .map_err(|e| StoreError::BadQuery(format!("stored event is not JSON: {e}")))
}

/// `%text%` with `%`, `_` and `\` escaped, for a LIKE pattern with `ESCAPE '\'`.
pub(crate) fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

/// The hour range of a statistics query: `[since rounded down, until rounded up)`.
pub(crate) fn hour_range(q: &StatsQuery) -> (i64, i64) {
    let since = q.since.map_or(i64::MIN, |t| t.as_micros().div_euclid(HOUR));
    let until = q
        .until
        .map_or(i64::MAX, |t| (t.as_micros() + HOUR - 1).div_euclid(HOUR));
    (since, until)
}

/// One grouped row of `tool_hour`.
pub(crate) struct ToolRow {
    pub server: String,
    pub tool: String,
    pub outcome: String,
    pub count: i64,
    pub sum_time: f64,
    pub min_time: f64,
    pub max_time: f64,
    pub last_ts: i64,
}

/// Per-tool statistics being summed: the stats, the sum of durations, the histogram.
#[derive(Default)]
pub(crate) struct ToolFold {
    by_tool: BTreeMap<(String, String), (ToolStats, f64)>,
    hists: HashMap<(String, String), BTreeMap<i64, u64>>,
}

impl ToolFold {
    pub(crate) fn row(&mut self, r: ToolRow) {
        let entry = self
            .by_tool
            .entry((r.server.clone(), r.tool.clone()))
            .or_insert_with(|| {
                let latency = Latency {
                    avg: 0.0,
                    min: f64::INFINITY,
                    max: 0.0,
                    p50: 0.0,
                    p95: 0.0,
                    p99: 0.0,
                };
                let stats = ToolStats {
                    server: r.server,
                    tool: r.tool,
                    count: 0,
                    successes: 0,
                    failures: BTreeMap::new(),
                    success_rate: 0.0,
                    latency,
                    last_seen: Timestamp::from_micros(0),
                };
                (stats, 0.0)
            });
        let s = &mut entry.0;
        s.count += r.count as u64;
        if r.outcome == "success" {
            s.successes += r.count as u64;
        } else {
            *s.failures.entry(r.outcome).or_default() += r.count as u64;
        }
        entry.1 += r.sum_time;
        s.latency.min = s.latency.min.min(r.min_time);
        s.latency.max = s.latency.max.max(r.max_time);
        s.last_seen = s.last_seen.max(Timestamp::from_micros(r.last_ts));
    }

    /// Adds `count` durations in histogram bucket `bucket`.
    pub(crate) fn bucket(&mut self, server: String, tool: String, bucket: i64, count: u64) {
        *self
            .hists
            .entry((server, tool))
            .or_default()
            .entry(bucket)
            .or_default() += count;
    }

    /// Adds an encoded histogram (see [`hist::encode`]).
    pub(crate) fn encoded(&mut self, server: String, tool: String, blob: &[u8]) {
        hist::decode_into(blob, self.hists.entry((server, tool)).or_default());
    }

    /// The statistics, busiest first, at most `limit` (0: all).
    pub(crate) fn finish(mut self, limit: usize) -> Vec<ToolStats> {
        let mut out: Vec<ToolStats> = std::mem::take(&mut self.by_tool)
            .into_iter()
            .map(|(key, (mut s, sum))| {
                let buckets: Vec<(i64, u64)> = self
                    .hists
                    .remove(&key)
                    .map(|b| b.into_iter().collect())
                    .unwrap_or_default();
                let l = &mut s.latency;
                if s.count > 0 {
                    l.avg = sum / s.count as f64;
                    s.success_rate = s.successes as f64 / s.count as f64;
                }
                if !l.min.is_finite() {
                    l.min = 0.0;
                }
                let p = hist::percentiles(&buckets, &[0.5, 0.95, 0.99], l.min, l.max);
                (l.p50, l.p95, l.p99) = (p[0], p[1], p[2]);
                s
            })
            .collect();
        out.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.tool.cmp(&b.tool)));
        if limit > 0 {
            out.truncate(limit);
        }
        out
    }
}

/// Users being summed from `user_tool` rows.
#[derive(Default)]
pub(crate) struct UserFold {
    users: BTreeMap<String, UserUsage>,
}

impl UserFold {
    /// One user and tool: executions, first and last use.
    pub(crate) fn row(
        &mut self,
        user: String,
        server: String,
        tool: String,
        count: i64,
        first: i64,
        last: i64,
    ) {
        let u = self.users.entry(user.clone()).or_insert_with(|| UserUsage {
            user,
            count: 0,
            last_used: Timestamp::from_micros(0),
            tools: Vec::new(),
        });
        u.count += count as u64;
        u.last_used = u.last_used.max(Timestamp::from_micros(last));
        u.tools.push(UserTool {
            server,
            tool,
            count: count as u64,
            first_used: Timestamp::from_micros(first),
            last_used: Timestamp::from_micros(last),
            parameter_patterns: BTreeMap::new(),
        });
    }

    /// The users, most recently active first, at most `limit` (0: all).
    pub(crate) fn finish(self, limit: usize) -> Vec<UserUsage> {
        let mut out: Vec<UserUsage> = self.users.into_values().collect();
        out.sort_by(|a, b| {
            b.last_used
                .cmp(&a.last_used)
                .then_with(|| a.user.cmp(&b.user))
        });
        if limit > 0 {
            out.truncate(limit);
        }
        out
    }
}

/// Gives a user's tools their parameter patterns, keyed by (server, tool), and orders the
/// tools busiest first.
pub(crate) fn patterns_into(
    u: &mut UserUsage,
    mut patterns: HashMap<(String, String), BTreeMap<String, u64>>,
) {
    for t in &mut u.tools {
        if let Some(p) = patterns.remove(&(t.server.clone(), t.tool.clone())) {
            t.parameter_patterns = p;
        }
    }
    u.tools
        .sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.tool.cmp(&b.tool)));
}

/// The buckets of a series from `since` to `until`: (step, first minute, end minute, count).
pub(crate) fn buckets(
    since: Timestamp,
    until: Timestamp,
    bucket_minutes: i64,
) -> Result<(i64, i64, i64, i64), StoreError> {
    let step = bucket_minutes.max(1);
    let first = since.as_micros().div_euclid(MINUTE).div_euclid(step) * step;
    let end = (until.as_micros() + MINUTE - 1).div_euclid(MINUTE);
    let buckets = ((end - first) / step).max(0) + 1;
    if buckets > 10_000 {
        return Err(StoreError::BadQuery(format!(
            "{buckets} buckets is too many; widen the bucket or narrow the range"
        )));
    }
    Ok((step, first, end, buckets))
}

/// A security series being filled, bucket by bucket.
pub(crate) struct SecurityFold {
    step: i64,
    points: Vec<SecurityPoint>,
}

impl SecurityFold {
    pub(crate) fn new(step: i64, first: i64, n: i64) -> Self {
        let points = (0..n)
            .map(|i| SecurityPoint {
                t: Timestamp::from_micros((first + i * step) * MINUTE),
                by_type: BTreeMap::new(),
            })
            .collect();
        Self { step, points }
    }

    /// Bucket `i` has `count` events of `kind`, `failures` of them failed.
    pub(crate) fn row(&mut self, i: i64, kind: String, count: i64, failures: i64) {
        let Some(p) = usize::try_from(i).ok().and_then(|i| self.points.get_mut(i)) else {
            return;
        };
        p.by_type.insert(
            kind,
            KindCount {
                count: count.max(0) as u64,
                failures: failures.max(0) as u64,
            },
        );
    }

    pub(crate) fn finish(self) -> SecuritySeries {
        SecuritySeries {
            bucket_seconds: self.step * 60,
            points: self.points,
        }
    }
}

/// A series being filled, bucket by bucket.
pub(crate) struct SeriesFold {
    step: i64,
    points: Vec<(SeriesPoint, i64, f64)>,
}

/// One grouped rollup row of a series bucket.
pub(crate) struct SeriesRow {
    pub bucket: i64,
    pub category: String,
    pub count: i64,
    pub errors: i64,
    pub timed: i64,
    pub sum_time: f64,
}

impl SeriesFold {
    pub(crate) fn new(step: i64, first: i64, n: i64) -> Self {
        let points = (0..n)
            .map(|i| {
                let t = Timestamp::from_micros((first + i * step) * MINUTE);
                let p = SeriesPoint {
                    t,
                    count: 0,
                    errors: 0,
                    avg_time: None,
                    by_category: BTreeMap::new(),
                };
                (p, 0, 0.0)
            })
            .collect();
        Self { step, points }
    }

    pub(crate) fn row(&mut self, r: SeriesRow) {
        let Some((p, timed, sum)) = usize::try_from(r.bucket)
            .ok()
            .and_then(|i| self.points.get_mut(i))
        else {
            return;
        };
        p.count += r.count as u64;
        p.errors += r.errors as u64;
        *timed += r.timed;
        *sum += r.sum_time;
        p.by_category.insert(r.category, r.count as u64);
    }

    pub(crate) fn finish(self) -> Series {
        let points = self
            .points
            .into_iter()
            .map(|(mut p, timed, sum)| {
                p.avg_time = (timed > 0).then(|| sum / timed as f64);
                p
            })
            .collect();
        Series {
            bucket_seconds: self.step * 60,
            points,
        }
    }
}

/// Whether a series of `step` minutes from minute `first` can read the hourly rollup: whole-hour
/// buckets without a tool filter (60 times fewer rows).
pub(crate) fn hourly(step: i64, first: i64, tool: Option<&str>) -> bool {
    step % 60 == 0 && first % 60 == 0 && tool.is_none()
}
