//! Tunnels (upgraded connections such as WebSockets) of each backend in
//! `/metrics`: open now, ended by reason, bytes each way, and the `101`
//! answers weir refused.

use std::fmt::Write;
use std::sync::Arc;

use super::header;
use crate::backend::{Backend, TunnelEnd};

/// The tunnel families, one row per backend (`labels` already formatted:
/// `upstream="…",backend="…"`); every reason of every backend, zeros
/// included.
pub(super) fn families(out: &mut String, backends: &[(String, Arc<Backend>)]) {
    header(
        out,
        "weir_tunnels_open",
        "gauge",
        "Upgraded connections (WebSockets) open to a backend.",
    );
    for (labels, b) in backends {
        let _ = writeln!(
            out,
            "weir_tunnels_open{{{labels}}} {}",
            b.stats.tunnels.open()
        );
    }
    header(
        out,
        "weir_tunnels_total",
        "counter",
        "Upgraded connections that ended, by why: client_closed, backend_closed, idle, drained, removed, shutdown, error.",
    );
    for (labels, b) in backends {
        for why in TunnelEnd::ALL {
            let _ = writeln!(
                out,
                "weir_tunnels_total{{{labels},reason=\"{}\"}} {}",
                why.as_str(),
                b.stats.tunnels.ended(why)
            );
        }
    }
    header(
        out,
        "weir_tunnel_bytes_total",
        "counter",
        "Bytes carried through upgraded connections, by direction.",
    );
    for (labels, b) in backends {
        let (to_backend, to_client) = b.stats.tunnels.bytes();
        for (direction, bytes) in [("to_backend", to_backend), ("to_client", to_client)] {
            let _ = writeln!(
                out,
                "weir_tunnel_bytes_total{{{labels},direction=\"{direction}\"}} {bytes}"
            );
        }
    }
    header(
        out,
        "weir_upgrade_refused_switches_total",
        "counter",
        "101 answers weir refused with a 502: to a request that did not ask to upgrade, or naming a protocol the client did not offer.",
    );
    for (labels, b) in backends {
        let _ = writeln!(
            out,
            "weir_upgrade_refused_switches_total{{{labels}}} {}",
            b.stats.tunnels.bad_switches()
        );
    }
}
