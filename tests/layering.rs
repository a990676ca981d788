//! The host's modules form layers: no top-level module of `host/src`
//! reaches itself again through `crate::` paths. Leaf types (backends, the
//! request view, the policy trait, connections, histograms) sit below the
//! modules that use them, so a newcomer can read one without the rest, and
//! `plugin` and `upstream` can change apart.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// Top-level module -> the top-level modules its code (not its tests, not
/// its doc comments) names through `crate::`.
fn graph() -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut stack = vec![src.clone()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
                continue;
            }
            if path.extension().is_none_or(|e| e != "rs") {
                continue;
            }
            let relative = path.strip_prefix(&src).unwrap();
            let first = relative.components().next().unwrap();
            let top = first
                .as_os_str()
                .to_string_lossy()
                .trim_end_matches(".rs")
                .to_string();
            if top == "main" || top == "lib" {
                continue;
            }
            let text = std::fs::read_to_string(&path).unwrap();
            // Tests may use anything: they are not part of the layering.
            let code = text.split("#[cfg(test)]").next().unwrap();
            let uses = graph.entry(top.clone()).or_default();
            for line in code.lines().map(str::trim) {
                if line.starts_with("//") {
                    continue;
                }
                for module in referenced(line) {
                    if module != top {
                        uses.insert(module);
                    }
                }
            }
        }
    }
    graph
}

/// The modules `line` names as `crate::name` or inside `use crate::{..}`.
fn referenced(line: &str) -> Vec<String> {
    let mut found = Vec::new();
    let mut rest = line;
    while let Some(at) = rest.find("crate::") {
        rest = &rest[at + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item
                    .trim()
                    .chars()
                    .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                    .collect();
                if !name.is_empty() {
                    found.push(name);
                }
            }
        } else {
            let name: String = rest
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_')
                .collect();
            if !name.is_empty() {
                found.push(name);
            }
        }
    }
    found
}

/// A path from `from` back to `from`, if there is one.
fn cycle_through(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    let mut stack = vec![vec![from.to_string()]];
    let mut seen = BTreeSet::new();
    while let Some(path) = stack.pop() {
        let last = path.last().unwrap();
        for next in graph.get(last).into_iter().flatten() {
            if next == from {
                let mut cycle = path.clone();
                cycle.push(next.clone());
                return Some(cycle);
            }
            if seen.insert(next.clone()) {
                let mut longer = path.clone();
                longer.push(next.clone());
                stack.push(longer);
            }
        }
    }
    None
}

#[test]
fn no_host_module_imports_itself_through_another() {
    let graph = graph();
    assert!(
        graph.contains_key("proxy") && graph.contains_key("plugin"),
        "{graph:?}"
    );
    let cycles: Vec<String> = graph
        .keys()
        .filter_map(|m| cycle_through(&graph, m))
        .map(|c| c.join(" -> "))
        .collect();
    assert!(cycles.is_empty(), "import cycles:\n{}", cycles.join("\n"));
}

#[test]
fn the_leaf_modules_stay_leaves() {
    let graph = graph();
    // Each leaf, and the only modules of weir it may use (leaves below it).
    let leaves: [(&str, &[&str]); 10] = [
        ("connection", &[]),
        ("workers", &[]),
        ("framing", &[]),
        ("histogram", &[]),
        ("error", &[]),
        ("date", &[]),
        ("tls", &["error", "date"]),
        ("view", &["connection"]),
        ("backend", &["histogram", "error", "view"]),
        ("policy", &["backend", "view", "error"]),
    ];
    for (leaf, allowed) in leaves {
        let uses: Vec<&String> = graph[leaf]
            .iter()
            .filter(|m| !allowed.contains(&m.as_str()))
            .collect();
        assert!(uses.is_empty(), "{leaf} imports {uses:?}");
    }
    // The plugin runtime knows backends, never the upstreams that hold them.
    assert!(
        !graph["plugin"].contains("upstream"),
        "{:?}",
        graph["plugin"]
    );
}

#[test]
fn references_are_found_in_paths_and_groups() {
    assert_eq!(referenced("use crate::plugin::CallError;"), ["plugin"]);
    assert_eq!(
        referenced("use crate::{backend::Backend, view};"),
        ["backend", "view"]
    );
    assert_eq!(
        referenced("let x = crate::a::f(crate::b_c::g());"),
        ["a", "b_c"]
    );
}
