//! The registry as OTLP metrics: parses the OpenMetrics text `GET /metrics` serves (one source
//! of truth for both) into cumulative sums, gauges and explicit-bucket histograms. The MCP
//! convention histograms get their OTel names and attribute keys back
//! (`mcp_server_operation_duration_seconds{mcp_method_name}` → `mcp.server.operation.duration`
//! with `mcp.method.name`); mcpwatch's own metrics keep their Prometheus names.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::common::v1::KeyValue;
use opentelemetry_proto::tonic::metrics::v1::{
    metric, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint,
    Metric, NumberDataPoint, Sum,
};

use super::span::kv;

/// OTel names of the convention metrics: Prometheus family → (OTel name, unit).
const OTEL_NAMES: [(&str, &str, &str); 2] = [
    (
        "mcp_server_operation_duration_seconds",
        "mcp.server.operation.duration",
        "s",
    ),
    (
        "mcp_server_session_duration_seconds",
        "mcp.server.session.duration",
        "s",
    ),
];

fn otel_key(k: &str) -> String {
    match k {
        "mcp_method_name" => "mcp.method.name".into(),
        "gen_ai_tool_name" => "gen_ai.tool.name".into(),
        "error_type" => "error.type".into(),
        other => other.into(),
    }
}

/// A label set as parsed.
type LabelPairs = Vec<(String, String)>;
/// One histogram series: (upper bound, cumulative count) per bucket, sum, count.
type HistSeries = (Vec<(f64, u64)>, f64, u64);

#[derive(Default)]
struct Family {
    kind: String,
    help: String,
    unit: String,
    /// Number samples: labels → value.
    numbers: Vec<(LabelPairs, f64)>,
    /// Histogram series: labels (without `le`) → (bounds+cumulative counts, sum, count).
    hist: BTreeMap<LabelPairs, HistSeries>,
}

/// Parses `key="value",…` (OpenMetrics escapes: `\\`, `\"`, `\n`).
fn parse_labels(s: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = s;
    while let Some((key, after)) = rest.split_once("=\"") {
        let mut value = String::new();
        let mut chars = after.char_indices();
        let mut end = after.len();
        while let Some((i, c)) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some((_, 'n')) => value.push('\n'),
                    Some((_, c)) => value.push(c),
                    None => {}
                },
                '"' => {
                    end = i + 1;
                    break;
                }
                c => value.push(c),
            }
        }
        out.push((key.trim_start_matches(',').to_owned(), value));
        rest = &after[end..];
    }
    out
}

/// Converts OpenMetrics text to OTLP metrics at `now_ns`, cumulative since `start_ns`.
pub fn metrics_of(text: &str, start_ns: u64, now_ns: u64) -> Vec<Metric> {
    let mut families: BTreeMap<String, Family> = BTreeMap::new();
    let mut current = String::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (Some(what), Some(name)) = (parts.next(), parts.next()) else {
                continue;
            };
            let value = parts.next().unwrap_or_default().to_owned();
            current = name.to_owned();
            let f = families.entry(current.clone()).or_default();
            match what {
                "TYPE" => f.kind = value,
                "HELP" => f.help = value,
                "UNIT" => f.unit = value,
                _ => {}
            }
            continue;
        }
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let Ok(value) = value.parse::<f64>() else {
            continue;
        };
        let (name, labels) = match series.split_once('{') {
            Some((n, l)) => (n, parse_labels(l.trim_end_matches('}'))),
            None => (series, Vec::new()),
        };
        let Some(f) = families.get_mut(&current) else {
            continue;
        };
        let suffix = name.strip_prefix(current.as_str()).unwrap_or_default();
        if f.kind == "histogram" {
            let (le, rest): (Vec<_>, Vec<_>) = labels.into_iter().partition(|(k, _)| k == "le");
            let h = f.hist.entry(rest).or_default();
            match suffix {
                "_bucket" => {
                    let bound = le
                        .first()
                        .map_or(f64::INFINITY, |(_, v)| v.parse().unwrap_or(f64::INFINITY));
                    h.0.push((bound, value as u64));
                }
                "_sum" => h.1 = value,
                "_count" => h.2 = value as u64,
                _ => {}
            }
        } else if suffix.is_empty() || suffix == "_total" {
            f.numbers.push((labels, value));
        }
    }
    families
        .into_iter()
        .filter_map(|(name, f)| family_metric(name, f, start_ns, now_ns))
        .collect()
}

fn attrs(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| kv(&otel_key(k), v)).collect()
}

fn family_metric(name: String, f: Family, start_ns: u64, now_ns: u64) -> Option<Metric> {
    let (name, unit) = match OTEL_NAMES.iter().find(|(p, ..)| *p == name) {
        Some((_, otel, unit)) => ((*otel).to_owned(), (*unit).to_owned()),
        None => (name, f.unit),
    };
    let point = |labels: &[(String, String)], v: f64| NumberDataPoint {
        attributes: attrs(labels),
        start_time_unix_nano: start_ns,
        time_unix_nano: now_ns,
        value: Some(number_data_point::Value::AsDouble(v)),
        ..Default::default()
    };
    let data = match f.kind.as_str() {
        "counter" => metric::Data::Sum(Sum {
            data_points: f.numbers.iter().map(|(l, v)| point(l, *v)).collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        "gauge" => metric::Data::Gauge(Gauge {
            data_points: f.numbers.iter().map(|(l, v)| point(l, *v)).collect(),
        }),
        "histogram" => metric::Data::Histogram(Histogram {
            data_points: f
                .hist
                .iter()
                .map(|(labels, (buckets, sum, count))| {
                    let mut b = buckets.clone();
                    b.sort_by(|x, y| x.0.total_cmp(&y.0));
                    let mut prev = 0;
                    let bucket_counts = b
                        .iter()
                        .map(|(_, c)| {
                            let n = c.saturating_sub(prev);
                            prev = *c;
                            n
                        })
                        .collect();
                    HistogramDataPoint {
                        attributes: attrs(labels),
                        start_time_unix_nano: start_ns,
                        time_unix_nano: now_ns,
                        count: *count,
                        sum: Some(*sum),
                        bucket_counts,
                        explicit_bounds: b
                            .iter()
                            .map(|(le, _)| *le)
                            .filter(|le| le.is_finite())
                            .collect(),
                        ..Default::default()
                    }
                })
                .collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
        _ => return None,
    };
    Some(Metric {
        name,
        description: f.help,
        unit,
        data: Some(data),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn text_becomes_sums_gauges_and_histograms() {
        let text = "# HELP mcp_server_operation_duration_seconds d\n# TYPE mcp_server_operation_duration_seconds histogram\n# UNIT mcp_server_operation_duration_seconds seconds\nmcp_server_operation_duration_seconds_sum{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"a \\\"b\\\"\"} 0.5\nmcp_server_operation_duration_seconds_count{mcp_method_name=\"tools/call\",gen_ai_tool_name=\"a \\\"b\\\"\"} 3\nmcp_server_operation_duration_seconds_bucket{le=\"0.01\",mcp_method_name=\"tools/call\",gen_ai_tool_name=\"a \\\"b\\\"\"} 1\nmcp_server_operation_duration_seconds_bucket{le=\"0.1\",mcp_method_name=\"tools/call\",gen_ai_tool_name=\"a \\\"b\\\"\"} 3\nmcp_server_operation_duration_seconds_bucket{le=\"+Inf\",mcp_method_name=\"tools/call\",gen_ai_tool_name=\"a \\\"b\\\"\"} 3\n# HELP mcpwatch_requests r\n# TYPE mcpwatch_requests counter\nmcpwatch_requests_total{server=\"fs\"} 7\n# HELP g x\n# TYPE g gauge\ng 1.5\n# EOF\n";
        let m = metrics_of(text, 1, 2);
        assert_eq!(m.len(), 3);
        let h = m
            .iter()
            .find(|m| m.name == "mcp.server.operation.duration")
            .unwrap();
        assert_eq!(h.unit, "s");
        let Some(metric::Data::Histogram(h)) = &h.data else {
            panic!("not a histogram")
        };
        let p = &h.data_points[0];
        assert_eq!(
            (
                p.count,
                p.sum,
                p.bucket_counts.clone(),
                p.explicit_bounds.clone()
            ),
            (3, Some(0.5), vec![1, 2, 0], vec![0.01, 0.1])
        );
        let keys: Vec<&str> = p.attributes.iter().map(|a| a.key.as_str()).collect();
        assert_eq!(keys, ["mcp.method.name", "gen_ai.tool.name"]);
        assert_eq!(p.attributes[1].value, kv("", "a \"b\"").value);
        let c = m.iter().find(|m| m.name == "mcpwatch_requests").unwrap();
        let Some(metric::Data::Sum(s)) = &c.data else {
            panic!("not a sum")
        };
        assert!(s.is_monotonic);
        assert_eq!(
            s.data_points[0].value,
            Some(number_data_point::Value::AsDouble(7.0))
        );
    }
}
