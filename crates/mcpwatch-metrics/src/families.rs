//! Every metric family `GET /metrics` shows about traffic, registered in one place with its
//! HELP text. `docs/metrics.md` is the same list for people; keep the two together.
//!
//! Names follow Prometheus conventions: base units (seconds, bytes, ratios 0–1), `_total` on
//! counters (added by the encoder), `mcpwatch_` on everything mcpwatch defines, and the
//! OpenTelemetry MCP names (`mcp.server.operation.duration` → `mcp_server_operation_duration_seconds`).

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::{Family, MetricConstructor};
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::{Registry, Unit};

use crate::labels::Labels;

/// Bucket boundaries (seconds) of the OpenTelemetry MCP duration histograms, as the convention
/// gives them for `mcp.server.operation.duration` and `mcp.server.session.duration`
/// (open-telemetry/semantic-conventions-genai, docs/gen-ai/mcp.md, "ExplicitBucketBoundaries").
pub const MCP_DURATION_BUCKETS: [f64; 14] = [
    0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0,
];

/// Buckets (seconds) of mcpwatch's own tool and request duration histograms: finer below 10 ms,
/// where local stdio servers answer.
pub const LATENCY_BUCKETS: [f64; 15] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
];

/// Builds histograms with fixed buckets inside a [`Family`].
#[derive(Debug, Clone, Copy)]
pub struct Buckets(pub &'static [f64]);

impl MetricConstructor<Histogram> for Buckets {
    fn new_metric(&self) -> Histogram {
        Histogram::new(self.0.iter().copied())
    }
}

/// A counter family with `N` labels.
pub type CounterFamily<const N: usize> = Family<Labels<N>, Counter>;
/// A ratio/level gauge family with `N` labels.
pub type GaugeFamily<const N: usize> = Family<Labels<N>, Gauge<f64, std::sync::atomic::AtomicU64>>;
/// A histogram family with `N` labels.
pub type HistogramFamily<const N: usize> = Family<Labels<N>, Histogram, Buckets>;

/// The traffic metrics.
#[derive(Debug, Clone)]
pub struct Families {
    /// Completed tool executions.
    pub tool_executions: CounterFamily<3>,
    /// Tool execution time.
    pub tool_duration: HistogramFamily<3>,
    /// Share of a tool's executions that succeeded, over the window.
    pub tool_success_ratio: GaugeFamily<2>,
    /// Share of a tool's executions that failed, over the window.
    pub tool_error_ratio: GaugeFamily<2>,
    /// MCP requests by method and outcome.
    pub requests: CounterFamily<3>,
    /// MCP request latency.
    pub request_duration: HistogramFamily<2>,
    /// Requests per second over the window.
    pub request_throughput: GaugeFamily<1>,
    /// Share of requests that failed, over the window.
    pub request_error_ratio: GaugeFamily<1>,
    /// Share of requests answered (not timed out, not lost to transport errors), over the window.
    pub availability_ratio: GaugeFamily<1>,
    /// The OTel MCP operation histogram.
    pub mcp_operation_duration: HistogramFamily<3>,
    /// The OTel MCP session histogram.
    pub mcp_session_duration: HistogramFamily<1>,
    /// Sessions started.
    pub sessions: CounterFamily<1>,
    /// Authentication attempts by result.
    pub auth_attempts: CounterFamily<1>,
    /// Failed authentication attempts.
    pub auth_failures: Counter,
    /// Authorization decisions by result.
    pub authz_decisions: CounterFamily<1>,
    /// Authorization denials.
    pub authz_denials: Counter,
    /// Data access events by classification.
    pub data_access: CounterFamily<1>,
    /// Anomalies, threats and rule triggers.
    pub suspicious: CounterFamily<3>,
    /// Protocol errors seen by capture.
    pub protocol_errors: CounterFamily<2>,
    /// Lines capture relayed but could not inspect.
    pub capture_dropped_lines: CounterFamily<1>,
    /// Bytes of those lines.
    pub capture_dropped_bytes: CounterFamily<1>,
    /// Events capture lost because its spool was full.
    pub spool_lost_events: CounterFamily<1>,
    /// Each edge's spool on disk, from its latest `system/edge_health`.
    pub edge_spool_bytes: GaugeFamily<1>,
    /// Of that, what the edge has not yet delivered.
    pub edge_spool_pending_bytes: GaugeFamily<1>,
    /// The cap of each edge's spool.
    pub edge_spool_max_bytes: GaugeFamily<1>,
    /// Events each edge lost to a full spool since it started, as it last reported.
    pub edge_lost_events: GaugeFamily<1>,
    /// When each edge last reported its health (Unix seconds, event time).
    pub edge_health_timestamp: GaugeFamily<1>,
    /// Every event committed, by category and level.
    pub events: CounterFamily<2>,
    /// Events committed per second over the window.
    pub ingest_rate: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// The rate window in seconds.
    pub window_seconds: Gauge<f64, std::sync::atomic::AtomicU64>,
    /// Per-user tool executions (only when `per_user`).
    pub user_tool_executions: CounterFamily<4>,
    /// Per-user authentication attempts (only when `per_user`).
    pub user_auth_attempts: CounterFamily<2>,
    /// Label values admitted, per bounded label.
    pub label_values: Family<Labels<1>, Gauge>,
    /// Label values refused (counted as `other`), per bounded label.
    pub label_overflow: CounterFamily<1>,
    /// The bound of each bounded label.
    pub label_limit: Family<Labels<1>, Gauge>,
}

impl Families {
    /// Registers every family; the per-user ones only when `per_user`.
    pub fn register(registry: &mut Registry, per_user: bool) -> Families {
        let f = Families {
            tool_executions: Family::default(),
            tool_duration: Family::new_with_constructor(Buckets(&LATENCY_BUCKETS)),
            tool_success_ratio: Family::default(),
            tool_error_ratio: Family::default(),
            requests: Family::default(),
            request_duration: Family::new_with_constructor(Buckets(&LATENCY_BUCKETS)),
            request_throughput: Family::default(),
            request_error_ratio: Family::default(),
            availability_ratio: Family::default(),
            mcp_operation_duration: Family::new_with_constructor(Buckets(&MCP_DURATION_BUCKETS)),
            mcp_session_duration: Family::new_with_constructor(Buckets(&MCP_DURATION_BUCKETS)),
            sessions: Family::default(),
            auth_attempts: Family::default(),
            auth_failures: Counter::default(),
            authz_decisions: Family::default(),
            authz_denials: Counter::default(),
            data_access: Family::default(),
            suspicious: Family::default(),
            protocol_errors: Family::default(),
            capture_dropped_lines: Family::default(),
            capture_dropped_bytes: Family::default(),
            spool_lost_events: Family::default(),
            edge_spool_bytes: Family::default(),
            edge_spool_pending_bytes: Family::default(),
            edge_spool_max_bytes: Family::default(),
            edge_lost_events: Family::default(),
            edge_health_timestamp: Family::default(),
            events: Family::default(),
            ingest_rate: Gauge::default(),
            window_seconds: Gauge::default(),
            user_tool_executions: Family::default(),
            user_auth_attempts: Family::default(),
            label_values: Family::default(),
            label_overflow: Family::default(),
            label_limit: Family::default(),
        };
        let r = registry;
        r.register("mcpwatch_tool_executions", "Completed tool executions (tools/call), by server, tool and outcome; only outcome=\"success\" is a success (isError: true is outcome=\"tool_error\")", f.tool_executions.clone());
        r.register_with_unit(
            "mcpwatch_tool_execution_duration",
            "Tool execution time from request to response, by server, tool and outcome",
            Unit::Seconds,
            f.tool_duration.clone(),
        );
        r.register("mcpwatch_tool_success_ratio", "Share (0-1) of a tool's executions with outcome success over the rate window (see mcpwatch_metrics_window_seconds); NaN when it had none", f.tool_success_ratio.clone());
        r.register("mcpwatch_tool_error_ratio", "Share (0-1) of a tool's executions with any other outcome over the rate window; NaN when it had none", f.tool_error_ratio.clone());
        r.register(
            "mcpwatch_requests",
            "MCP requests answered or ended, by server, JSON-RPC method and outcome",
            f.requests.clone(),
        );
        r.register_with_unit(
            "mcpwatch_request_duration",
            "MCP request latency from request to response, by server and method",
            Unit::Seconds,
            f.request_duration.clone(),
        );
        r.register(
            "mcpwatch_request_throughput_per_second",
            "MCP requests per second per server, averaged over the rate window",
            f.request_throughput.clone(),
        );
        r.register("mcpwatch_request_error_ratio", "Share (0-1) of a server's requests that did not succeed over the rate window; NaN when it had none", f.request_error_ratio.clone());
        r.register("mcpwatch_availability_ratio", "Share (0-1) of a server's requests that got an answer (result or error, not timeout or transport error) over the rate window; NaN when it had none", f.availability_ratio.clone());
        r.register_with_unit("mcp_server_operation_duration", "OpenTelemetry mcp.server.operation.duration: MCP request duration, by mcp_method_name, gen_ai_tool_name (tools/call) and error_type (JSON-RPC code, tool_error, timeout, ...; absent on success)", Unit::Seconds, f.mcp_operation_duration.clone());
        r.register_with_unit("mcp_server_session_duration", "OpenTelemetry mcp.server.session.duration: MCP session duration, from session_end events", Unit::Seconds, f.mcp_session_duration.clone());
        r.register(
            "mcpwatch_sessions",
            "MCP sessions started (initialize answered), by server",
            f.sessions.clone(),
        );
        r.register("mcpwatch_authentication_attempts", "Authentication attempts (security/authentication events), by result (success, failure)", f.auth_attempts.clone());
        r.register(
            "mcpwatch_authentication_failures",
            "Failed authentication attempts",
            f.auth_failures.clone(),
        );
        r.register(
            "mcpwatch_authorization_decisions",
            "Authorization decisions (security/authorization events), by result (allowed, denied)",
            f.authz_decisions.clone(),
        );
        r.register(
            "mcpwatch_authorization_denials",
            "Authorization decisions with result denied",
            f.authz_denials.clone(),
        );
        r.register(
            "mcpwatch_data_access",
            "Data access events (security/data_access), by data_classification",
            f.data_access.clone(),
        );
        r.register("mcpwatch_suspicious_activities", "Suspicious activities: anomaly and security_alert events (anomalies, threat signatures, rule triggers), by category, event_type and level", f.suspicious.clone());
        r.register("mcpwatch_protocol_errors", "Malformed or unexpected MCP traffic seen by capture (system/protocol_error), by server and kind", f.protocol_errors.clone());
        r.register("mcpwatch_capture_dropped_lines", "Lines capture relayed unchanged but could not inspect because its queue was full (system/capture_dropped)", f.capture_dropped_lines.clone());
        r.register_with_unit(
            "mcpwatch_capture_dropped",
            "Bytes of the lines capture could not inspect",
            Unit::Bytes,
            f.capture_dropped_bytes.clone(),
        );
        r.register("mcpwatch_edge_spool_bytes", "Bytes each edge's delivery spool holds on disk, counted against its cap (system/edge_health; label edge = the event's source, bounded)", f.edge_spool_bytes.clone());
        r.register(
            "mcpwatch_edge_spool_pending_bytes",
            "Bytes in each edge's spool not yet delivered to the collector (system/edge_health)",
            f.edge_spool_pending_bytes.clone(),
        );
        r.register(
            "mcpwatch_edge_spool_max_bytes",
            "The cap of each edge's delivery spool; 0 when it has none (system/edge_health)",
            f.edge_spool_max_bytes.clone(),
        );
        r.register("mcpwatch_edge_lost_events", "Events each edge lost to a full spool since it started, as it last reported (system/edge_health)", f.edge_lost_events.clone());
        r.register("mcpwatch_edge_health_timestamp_seconds", "When each edge last reported its health, Unix seconds of the event (system/edge_health)", f.edge_health_timestamp.clone());
        r.register("mcpwatch_capture_spool_lost_events", "Events capture lost because the collector was away and its spool was full (system/spool_overflow)", f.spool_lost_events.clone());
        r.register(
            "mcpwatch_events",
            "Events committed to the store, by category and level",
            f.events.clone(),
        );
        r.register(
            "mcpwatch_ingest_events_per_second",
            "Events committed per second, averaged over the rate window",
            f.ingest_rate.clone(),
        );
        r.register(
            "mcpwatch_metrics_window_seconds",
            "The window over which the *_ratio, *_per_second gauges are computed (metrics.window)",
            f.window_seconds.clone(),
        );
        if per_user {
            r.register("mcpwatch_user_tool_executions", "Tool executions by user (metrics.per_user), server, tool and outcome; users past metrics.max_users count as user=\"other\"", f.user_tool_executions.clone());
            r.register("mcpwatch_user_authentication_attempts", "Authentication attempts by user (metrics.per_user) and result; users past metrics.max_users count as user=\"other\"", f.user_auth_attempts.clone());
        }
        r.register(
            "mcpwatch_metrics_label_values",
            "Distinct values admitted for a bounded label (user, server, tool, method, ...)",
            f.label_values.clone(),
        );
        r.register(
            "mcpwatch_metrics_label_limit",
            "Most distinct values a bounded label may have before the rest count as \"other\"",
            f.label_limit.clone(),
        );
        r.register(
            "mcpwatch_metrics_label_overflow",
            "Observations whose label value was past the bound and counted as \"other\"",
            f.label_overflow.clone(),
        );
        f
    }
}
