//! `/metrics`: everything weir counts, in the Prometheus text exposition
//! format (version 0.0.4), rendered on request from the live counters.

mod cells;
pub use crate::histogram;
mod plugins;
mod tls;
mod tunnels;
mod upstream_h2;
mod upstream_pool;
mod upstream_tls;

pub use tls::Handshakes;

use std::fmt::Write;

use crate::backend::Health;
use crate::snapshot::Snapshot;

/// Process-wide counters that do not live in the snapshot.
#[derive(Debug, Default, Clone)]
pub struct ProcessCounters {
    /// Counters plugins defined through the `metrics` import, by plugin.
    pub plugin_counters: Vec<(String, Vec<(String, u64)>)>,
    /// Host calls weir refused, by plugin and kind.
    pub plugin_refusals: Vec<(String, Vec<(&'static str, u64)>)>,
    /// Snapshots swapped in by reloads.
    pub reloads: u64,
    /// Reloads rejected (bad config, or a plugin without a good version).
    pub reload_failures: u64,
    /// Plugin files rejected (each distinct file once).
    pub plugin_rejections: u64,
    /// Access log lines dropped because the writer fell behind.
    pub access_log_dropped: u64,
    /// Plugin log lines dropped by each plugin's rate limit, by plugin.
    pub plugin_log_dropped: Vec<(String, u64)>,
    /// weir's own log lines dropped because stderr fell behind.
    pub log_dropped: u64,
    /// Requests refused before routing (400, 431), by reason.
    pub requests_refused: Vec<(&'static str, u64)>,
    /// TLS handshakes of each TLS listener.
    pub handshakes: Vec<Handshakes>,
    /// Client connections hibernated now, and hibernations since start.
    pub hibernated: (u64, u64),
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Every metric, as Prometheus text.
pub fn render(snapshot: &Snapshot, process: &ProcessCounters) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let upstreams: Vec<_> = snapshot.upstreams().collect();
    let backends: Vec<_> = upstreams
        .iter()
        .flat_map(|(name, upstream)| {
            let set = upstream.backends();
            let labels: Vec<_> = set
                .iter()
                .map(|b| {
                    (
                        format!(
                            "upstream=\"{}\",backend=\"{}\"",
                            escape(name),
                            escape(&b.name)
                        ),
                        b.clone(),
                    )
                })
                .collect();
            labels
        })
        .collect();

    header(
        &mut out,
        "weir_requests_total",
        "counter",
        "Responses from backends, by status class.",
    );
    for (labels, b) in &backends {
        for class in 1..=5 {
            let _ = writeln!(
                out,
                "weir_requests_total{{{labels},code=\"{class}xx\"}} {}",
                b.stats.responses(class)
            );
        }
    }
    header(
        &mut out,
        "weir_request_duration_seconds",
        "histogram",
        "Time from sending a request to a backend to its response headers.",
    );
    for (labels, b) in &backends {
        b.stats
            .duration
            .render(&mut out, "weir_request_duration_seconds", labels);
    }
    family(
        &mut out,
        "weir_backend_failures_total",
        "counter",
        "Requests to a backend that got no response (connect error, reset, timeout).",
        &backends,
        |b| b.stats.failures().to_string(),
    );
    family(
        &mut out,
        "weir_backend_in_flight",
        "gauge",
        "Requests sent to a backend and not finished.",
        &backends,
        |b| b.stats.in_flight().to_string(),
    );
    family(
        &mut out,
        "weir_backend_latency_ewma_seconds",
        "gauge",
        "Moving average of a backend's response-header latency.",
        &backends,
        |b| (f64::from(b.stats.ewma_latency_us()) / 1e6).to_string(),
    );
    family(
        &mut out,
        "weir_backend_weight",
        "gauge",
        "A backend's weight as policies see it (ramped during slow start).",
        &backends,
        |b| b.weight.to_string(),
    );
    header(
        &mut out,
        "weir_backend_health",
        "gauge",
        "1 for a backend's current health state, 0 for the others.",
    );
    for (labels, b) in &backends {
        for state in [Health::Healthy, Health::Unhealthy, Health::Draining] {
            let _ = writeln!(
                out,
                "weir_backend_health{{{labels},state=\"{}\"}} {}",
                state.as_str(),
                u8::from(b.health == state)
            );
        }
    }
    header(
        &mut out,
        "weir_health_checks_total",
        "counter",
        "Active health checks, by result.",
    );
    for (labels, b) in &backends {
        let _ = writeln!(
            out,
            "weir_health_checks_total{{{labels},result=\"pass\"}} {}",
            b.state.checks_passed()
        );
        let _ = writeln!(
            out,
            "weir_health_checks_total{{{labels},result=\"fail\"}} {}",
            b.state.checks_failed()
        );
    }
    family(
        &mut out,
        "weir_backend_ejections_total",
        "counter",
        "Times outlier detection ejected a backend.",
        &backends,
        |b| b.state.ejections().to_string(),
    );

    tunnels::families(&mut out, &backends);

    use std::sync::atomic::Ordering::Relaxed;
    let by_upstream: Vec<_> = upstreams
        .iter()
        .map(|(name, u)| (format!("upstream=\"{}\"", escape(name)), u.stats()))
        .collect();
    family(
        &mut out,
        "weir_retries_total",
        "counter",
        "Requests retried on another backend.",
        &by_upstream,
        |s| s.retries.load(Relaxed).to_string(),
    );
    family(
        &mut out,
        "weir_retries_refused_total",
        "counter",
        "Retries not made because the retry budget was spent.",
        &by_upstream,
        |s| s.retries_refused.load(Relaxed).to_string(),
    );
    header(
        &mut out,
        "weir_unavailable_total",
        "counter",
        "Requests answered 503 by weir without a backend, by reason.",
    );
    for (name, u) in &upstreams {
        let name = escape(name);
        let _ = writeln!(
            out,
            "weir_unavailable_total{{upstream=\"{name}\",reason=\"no_backend\"}} {}",
            u.stats().no_backend.load(Relaxed)
        );
        let _ = writeln!(
            out,
            "weir_unavailable_total{{upstream=\"{name}\",reason=\"max_in_flight\"}} {}",
            u.stats().saturated.load(Relaxed)
        );
    }

    upstream_tls::family(&mut out, &upstreams);
    upstream_h2::families(&mut out, &upstreams);
    upstream_pool::families(&mut out, &upstreams);

    let plugins: Vec<_> = upstreams
        .iter()
        .filter_map(|(name, u)| {
            let plugin = u.balancer()?.pool.plugin().name().to_string();
            Some((
                format!(
                    "upstream=\"{}\",plugin=\"{}\"",
                    escape(name),
                    escape(&plugin)
                ),
                *u,
            ))
        })
        .collect();
    header(
        &mut out,
        "weir_plugin_call_duration_seconds",
        "histogram",
        "Duration of balancer plugin calls (select).",
    );
    for (labels, u) in &plugins {
        u.stats()
            .plugin_calls
            .render(&mut out, "weir_plugin_call_duration_seconds", labels);
    }
    header(
        &mut out,
        "weir_plugin_failures_total",
        "counter",
        "Balancer plugin calls that trapped, timed out or answered nonsense.",
    );
    for (labels, u) in &plugins {
        let _ = writeln!(
            out,
            "weir_plugin_failures_total{{{labels}}} {}",
            u.stats().plugin_failures.load(Relaxed)
        );
    }

    header(
        &mut out,
        "weir_filter_calls_total",
        "counter",
        "Filter calls (on-request and on-response), by route and filter position.",
    );
    let stages: Vec<_> = snapshot
        .routes()
        .iter()
        .flat_map(|route| {
            route.filters.iter().enumerate().map(move |(i, stage)| {
                let labels = format!(
                    "route=\"{}\",position=\"{}\",filter=\"{}\"",
                    escape(&route.name),
                    i + 1,
                    escape(stage.pool.plugin().name())
                );
                (labels, stage)
            })
        })
        .collect();
    for (labels, stage) in &stages {
        let _ = writeln!(
            out,
            "weir_filter_calls_total{{{labels}}} {}",
            stage.pool.calls()
        );
    }
    header(
        &mut out,
        "weir_filter_failures_total",
        "counter",
        "Filter calls that trapped, timed out or answered nonsense.",
    );
    for (labels, stage) in &stages {
        let _ = writeln!(
            out,
            "weir_filter_failures_total{{{labels}}} {}",
            stage.pool.failures()
        );
    }
    plugins::pools(&mut out, snapshot);
    plugins::refusals(&mut out, &process.plugin_refusals);
    cells::families(&mut out, &stages);
    tls::families(&mut out, snapshot, &process.handshakes);
    header(
        &mut out,
        "weir_plugin_counter_total",
        "counter",
        "Counters plugins define through the metrics import.",
    );
    for (plugin, counters) in &process.plugin_counters {
        for (name, value) in counters {
            let _ = writeln!(
                out,
                "weir_plugin_counter_total{{plugin=\"{}\",name=\"{}\"}} {value}",
                escape(plugin),
                escape(name)
            );
        }
    }

    let plugin_log: Vec<_> = process
        .plugin_log_dropped
        .iter()
        .map(|(plugin, dropped)| (format!("plugin=\"{}\"", escape(plugin)), *dropped))
        .collect();
    family(
        &mut out,
        "weir_plugin_log_dropped_total",
        "counter",
        "Plugin log lines dropped because the plugin logged over its rate.",
        &plugin_log,
        u64::to_string,
    );

    let refused: Vec<_> = process
        .requests_refused
        .iter()
        .map(|(reason, n)| (format!("reason=\"{reason}\""), *n))
        .collect();
    family(
        &mut out,
        "weir_requests_refused_total",
        "counter",
        "Requests refused and client connections closed for breaking a rule or limit (host rules, sizes, timeouts, body framing, connections, HTTP/2 floods).",
        &refused,
        u64::to_string,
    );

    let grpc: Vec<_> = crate::proxy::grpc_answers_by_code()
        .into_iter()
        .map(|(code, n)| (format!("code=\"{code}\""), n))
        .collect();
    family(
        &mut out,
        "weir_grpc_answers_total",
        "counter",
        "weir's own answers to gRPC requests (no route, no backend, backend failed, timeout, a filter's answer), by grpc-status.",
        &grpc,
        u64::to_string,
    );

    for (name, kind, help, value) in [
        (
            "weir_grpc_timeout_malformed_total",
            "counter",
            "grpc-timeout headers ignored as malformed (the call ran with the upstream's request timeout).",
            crate::proxy::grpc_malformed_timeouts(),
        ),
        (
            "weir_reloads_total",
            "counter",
            "Configuration and plugin reloads that took effect.",
            process.reloads,
        ),
        (
            "weir_reload_failures_total",
            "counter",
            "Reloads rejected; the running configuration kept serving.",
            process.reload_failures,
        ),
        (
            "weir_plugin_rejections_total",
            "counter",
            "Plugin files rejected (broken, wrong world, init failed).",
            process.plugin_rejections,
        ),
        (
            "weir_access_log_dropped_total",
            "counter",
            "Access log lines dropped because the writer fell behind.",
            process.access_log_dropped,
        ),
        (
            "weir_log_dropped_total",
            "counter",
            "weir's own log lines dropped because stderr fell behind.",
            process.log_dropped,
        ),
        (
            "weir_client_connections_hibernated",
            "gauge",
            "Idle HTTP/1.1 client connections (TCP or TLS) held as their stream alone, hyper's buffers freed.",
            process.hibernated.0,
        ),
        (
            "weir_client_hibernations_total",
            "counter",
            "Times an idle HTTP/1.1 client connection (TCP or TLS) hibernated.",
            process.hibernated.1,
        ),
    ] {
        header(&mut out, name, kind, help);
        let _ = writeln!(out, "{name} {value}");
    }
    out
}

/// A family with one sample per row (labels already formatted: a
/// backend's or an upstream's).
fn family<T>(
    out: &mut String,
    name: &str,
    kind: &str,
    help: &str,
    rows: &[(String, T)],
    value: impl Fn(&T) -> String,
) {
    header(out, name, kind, help);
    for (labels, row) in rows {
        let _ = writeln!(out, "{name}{{{labels}}} {}", value(row));
    }
}

fn header(out: &mut String, name: &str, kind: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} {kind}");
}

/// A label value with `\`, `"` and newlines escaped.
fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_values_are_escaped() {
        assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
    }
}
