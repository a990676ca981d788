//! Each plugin pool's time in calls and quarantine, and what weir refused
//! of each plugin's host calls, in `/metrics`.

use std::fmt::Write;

use super::{escape, family, header};
use crate::snapshot::Snapshot;

/// Every plugin pool's time in calls and quarantine, balancers and filters
/// alike, labelled by plugin and owner (`upstream NAME`, `route N filter M`).
pub(super) fn pools(out: &mut String, snapshot: &Snapshot) {
    let rows: Vec<_> = snapshot
        .plugin_pools()
        .map(|(plugin, owner, calls)| {
            (
                format!(
                    "plugin=\"{}\",owner=\"{}\"",
                    escape(plugin.name()),
                    escape(&owner)
                ),
                calls,
            )
        })
        .collect();
    family(
        out,
        "weir_plugin_busy_seconds_total",
        "counter",
        "Worker time spent in a plugin pool's calls (instantiation included); weighed against its CPU budget.",
        &rows,
        |c| c.busy().as_secs_f64().to_string(),
    );
    family(
        out,
        "weir_plugin_quarantined",
        "gauge",
        "1 while a plugin pool is quarantined (failing, or over its CPU budget), else 0.",
        &rows,
        |c| u8::from(c.quarantined_for().is_some()).to_string(),
    );
    family(
        out,
        "weir_plugin_quarantines_total",
        "counter",
        "Times a plugin pool was quarantined.",
        &rows,
        |c| c.quarantines().to_string(),
    );
}

/// Host calls weir refused and ignored, by plugin and kind.
pub(super) fn refusals(
    out: &mut String,
    refusals_by_plugin: &[(String, Vec<(&'static str, u64)>)],
) {
    header(
        out,
        "weir_plugin_refusals_total",
        "counter",
        "Plugin host calls weir refused and ignored (invalid or excess response headers, bad counter names).",
    );
    for (plugin, refusals) in refusals_by_plugin {
        for (what, value) in refusals {
            let _ = writeln!(
                out,
                "weir_plugin_refusals_total{{plugin=\"{}\",what=\"{what}\"}} {value}",
                escape(plugin)
            );
        }
    }
}
