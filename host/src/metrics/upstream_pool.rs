//! HTTP/1.1 upstreams' connection pools in `/metrics`: connections open,
//! idle and opened, requests on reused connections, failed dials,
//! requests re-sent after a pooled connection failed before answering, and
//! responses refused.

use std::sync::Arc;

use super::{escape, family};
use crate::upstream::{H1Stats, Upstream};

/// The `weir_upstream_connections*` families, one series per HTTP/1.1
/// upstream.
pub(super) fn families(out: &mut String, upstreams: &[(&String, &Arc<Upstream>)]) {
    let pools: Vec<(String, H1Stats)> = upstreams
        .iter()
        .filter_map(|(name, u)| {
            let stats = u.client().h1_stats()?;
            Some((format!("upstream=\"{}\"", escape(name)), stats))
        })
        .collect();
    for (name, kind, help, value) in [
        (
            "weir_upstream_connections",
            "gauge",
            "HTTP/1.1 connections to the upstream's backends open now (idle or carrying a request).",
            (|s: &H1Stats| s.open) as fn(&H1Stats) -> u64,
        ),
        (
            "weir_upstream_connections_idle",
            "gauge",
            "HTTP/1.1 connections to the upstream's backends idle in the pool now.",
            |s| s.idle,
        ),
        (
            "weir_upstream_connections_opened_total",
            "counter",
            "HTTP/1.1 connections to the upstream's backends opened.",
            |s| s.opened,
        ),
        (
            "weir_upstream_connections_reused_total",
            "counter",
            "Requests sent on an HTTP/1.1 connection taken from the pool.",
            |s| s.reused,
        ),
        (
            "weir_upstream_connect_failures_total",
            "counter",
            "HTTP/1.1 connections to the upstream's backends that could not be made (connect, TLS).",
            |s| s.failed,
        ),
        (
            "weir_upstream_requests_resent_total",
            "counter",
            "Requests a pooled HTTP/1.1 connection failed before any response byte, sent again on a new connection.",
            |s| s.resent,
        ),
        (
            "weir_upstream_responses_refused_total",
            "counter",
            "HTTP/1.1 backend responses refused and their connections closed: framing that reads two ways, malformed chunks, an oversized head, a 1xx flood, bytes past the body's end.",
            |s| s.refused,
        ),
    ] {
        family(out, name, kind, help, &pools, |s| value(s).to_string());
    }
}
