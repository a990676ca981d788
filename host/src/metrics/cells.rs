//! The shared cells of each filter plugin the routes use, in `/metrics`.

use std::collections::BTreeMap;
use std::fmt::Write;

use super::{escape, family, header};
use crate::plugin::SharedCells;
use crate::snapshot::FilterStage;

/// The shared cells of each filter plugin the routes use: what they hold
/// against their caps, and what was refused.
pub(super) fn families(out: &mut String, stages: &[(String, &FilterStage)]) {
    let by_plugin: BTreeMap<&str, &SharedCells> = stages
        .iter()
        .map(|(_, stage)| {
            let plugin = stage.pool.plugin();
            (plugin.name(), &*plugin.state().cells)
        })
        .collect();
    let rows: Vec<_> = by_plugin
        .iter()
        .map(|(plugin, cells)| (format!("plugin=\"{}\"", escape(plugin)), *cells))
        .collect();
    family(
        out,
        "weir_plugin_cells",
        "gauge",
        "Shared cells a filter plugin holds (expired ones until forgotten).",
        &rows,
        |cells| cells.usage().cells.to_string(),
    );
    family(
        out,
        "weir_plugin_cell_bytes",
        "gauge",
        "Bytes a filter plugin's cells count against its cap (key length plus a fixed overhead each).",
        &rows,
        |cells| cells.usage().bytes.to_string(),
    );
    header(
        out,
        "weir_plugin_cell_refusals_total",
        "counter",
        "Shared cell operations refused: key too long, cells full, or too many writes in one call.",
    );
    for (labels, cells) in &rows {
        for (reason, count) in cells.refusals() {
            let _ = writeln!(
                out,
                "weir_plugin_cell_refusals_total{{{labels},reason=\"{}\"}} {count}",
                reason.as_str()
            );
        }
    }
}
