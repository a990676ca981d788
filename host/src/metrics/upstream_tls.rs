//! TLS failures to each TLS upstream's backends, by reason, in `/metrics`.

use std::fmt::Write;
use std::sync::Arc;

use super::{escape, header};
use crate::upstream::Upstream;

/// `weir_upstream_tls_failures_total{upstream,reason}`: every reason of
/// every upstream that speaks TLS, zeros included, so alerts need no
/// absent-series handling.
pub(super) fn family(out: &mut String, upstreams: &[(&String, &Arc<Upstream>)]) {
    header(
        out,
        "weir_upstream_tls_failures_total",
        "counter",
        "TLS connections to backends that failed (requests and health checks), by reason.",
    );
    for (name, upstream) in upstreams {
        let client = upstream.client();
        if client.origination().is_none() {
            continue;
        }
        let name = escape(name);
        for (reason, count) in client.tls_failures().by_reason() {
            let _ = writeln!(
                out,
                "weir_upstream_tls_failures_total{{upstream=\"{name}\",reason=\"{reason}\"}} {count}"
            );
        }
    }
}
