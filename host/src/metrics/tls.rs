//! TLS in `/metrics`: handshakes per listener, by version and resumption,
//! failures by reason, and when each served certificate expires.

use std::time::UNIX_EPOCH;

use super::{escape, family};
use crate::snapshot::Snapshot;

/// One TLS listener's handshake counts.
#[derive(Debug, Default, Clone)]
pub struct Handshakes {
    /// The listener's bound address.
    pub listener: String,
    /// Completed handshakes as `(version, resumed, count)`.
    pub done: Vec<(&'static str, bool, u64)>,
    /// Failed handshakes by reason.
    pub failed: Vec<(&'static str, u64)>,
}

pub(super) fn families(out: &mut String, snapshot: &Snapshot, handshakes: &[Handshakes]) {
    let done: Vec<_> = handshakes
        .iter()
        .flat_map(|h| {
            let listener = escape(&h.listener);
            h.done.iter().map(move |(version, resumed, n)| {
                let labels =
                    format!("listener=\"{listener}\",version=\"{version}\",resumed=\"{resumed}\"");
                (labels, *n)
            })
        })
        .collect();
    family(
        out,
        "weir_tls_handshakes_total",
        "counter",
        "TLS handshakes completed, by listener, TLS version and whether the session was resumed.",
        &done,
        u64::to_string,
    );
    let failed: Vec<_> = handshakes
        .iter()
        .flat_map(|h| {
            let listener = escape(&h.listener);
            h.failed.iter().map(move |(reason, n)| {
                (format!("listener=\"{listener}\",reason=\"{reason}\""), *n)
            })
        })
        .collect();
    family(
        out,
        "weir_tls_handshake_failures_total",
        "counter",
        "TLS handshakes that failed, by listener and reason (timeout, closed, plain_http, malformed, incompatible, no_client_certificate, bad_client_certificate, certificate_refused_by_client, alert, other).",
        &failed,
        u64::to_string,
    );
    let expiry: Vec<_> = snapshot
        .listener_tls()
        .iter()
        .flat_map(|(address, tls)| {
            let listener = escape(address);
            tls.pairs.iter().map(move |pair| {
                let file = escape(&pair.cert_path.display().to_string());
                let at = pair
                    .facts
                    .not_after
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs());
                (format!("listener=\"{listener}\",cert_file=\"{file}\""), at)
            })
        })
        .collect();
    family(
        out,
        "weir_tls_certificate_expiry_timestamp_seconds",
        "gauge",
        "When each certificate a listener serves expires (its notAfter), as a Unix time.",
        &expiry,
        u64::to_string,
    );
}
