//! HTTP/2 upstreams' connection pools in `/metrics`: connections open and
//! opened, failed dials, and requests on them now.

use std::sync::Arc;

use super::{escape, family};
use crate::upstream::{H2Stats, Upstream};

/// The `weir_upstream_h2_*` families, one series per HTTP/2 upstream.
pub(super) fn families(out: &mut String, upstreams: &[(&String, &Arc<Upstream>)]) {
    let pools: Vec<(String, H2Stats)> = upstreams
        .iter()
        .filter_map(|(name, u)| {
            let stats = u.client().h2_stats()?;
            Some((format!("upstream=\"{}\"", escape(name)), stats))
        })
        .collect();
    for (name, kind, help, value) in [
        (
            "weir_upstream_h2_connections",
            "gauge",
            "HTTP/2 connections to the upstream's backends open now.",
            (|s: &H2Stats| s.open) as fn(&H2Stats) -> u64,
        ),
        (
            "weir_upstream_h2_connections_opened_total",
            "counter",
            "HTTP/2 connections to the upstream's backends opened.",
            |s| s.opened,
        ),
        (
            "weir_upstream_h2_connect_failures_total",
            "counter",
            "HTTP/2 connections to the upstream's backends that could not be made (connect, TLS, not HTTP/2).",
            |s| s.failed,
        ),
        (
            "weir_upstream_h2_streams",
            "gauge",
            "Requests on the upstream's HTTP/2 connections now (until each response body ends).",
            |s| s.streams,
        ),
    ] {
        family(out, name, kind, help, &pools, |s| value(s).to_string());
    }
}
