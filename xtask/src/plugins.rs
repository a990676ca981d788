//! `cargo xtask plugins`: build every plugin crate for wasm and lay the
//! components out as `<target-dir>/plugins/NAME.wasm`.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Workspace};

/// The target plugins are compiled for.
const TARGET: &str = "wasm32-wasip2";
/// The cargo profile plugins are built with (root `Cargo.toml`).
const PROFILE: &str = "plugin";
/// Workspace folders whose every sub-folder with a `Cargo.toml` is a plugin.
const PLUGIN_FOLDERS: &[&str] = &["plugins", "tests/plugins"];

/// One plugin crate.
#[derive(Debug, PartialEq, Eq)]
struct Plugin {
    /// The package name: what `-p` takes and what weir loads it as.
    package: String,
    /// The library name: the stem of the `.wasm` cargo writes.
    lib: String,
}

impl Workspace {
    /// Builds all plugins and returns the directory holding `NAME.wasm` for
    /// each.
    pub(crate) fn build_plugins(&self) -> Result<PathBuf, Error> {
        ensure_target_installed()?;
        let plugins = self.discover_plugins()?;
        if plugins.is_empty() {
            return Err(format!("no plugin crates in {PLUGIN_FOLDERS:?}"));
        }

        let mut build = self.cargo();
        build.args(["build", "--profile", PROFILE, "--target", TARGET]);
        for plugin in &plugins {
            build.args(["-p", &plugin.package]);
        }
        let status = build
            .status()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !status.success() {
            return Err(format!("building the plugins failed ({status})"));
        }

        let built = self.target_dir.join(TARGET).join(PROFILE);
        let out = self.target_dir.join("plugins");
        fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;
        let mut written = BTreeSet::new();
        for plugin in &plugins {
            let from = built.join(format!("{}.wasm", plugin.lib));
            let name = format!("{}.wasm", plugin.package);
            let to = out.join(&name);
            fs::copy(&from, &to)
                .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))?;
            written.insert(name);
        }
        remove_stale(&out, &written)?;
        Ok(out)
    }

    /// Every plugin crate under [`PLUGIN_FOLDERS`], sorted by package name.
    fn discover_plugins(&self) -> Result<Vec<Plugin>, Error> {
        let mut plugins = Vec::new();
        for folder in PLUGIN_FOLDERS {
            let folder = self.root.join(folder);
            let entries = match fs::read_dir(&folder) {
                Ok(entries) => entries,
                Err(e) if e.kind() == ErrorKind::NotFound => continue,
                Err(e) => return Err(format!("reading {}: {e}", folder.display())),
            };
            for entry in entries {
                let entry = entry.map_err(|e| format!("reading {}: {e}", folder.display()))?;
                let manifest = entry.path().join("Cargo.toml");
                if !manifest.is_file() {
                    continue;
                }
                let text = fs::read_to_string(&manifest)
                    .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
                let package = toml_value(&text, "package", "name")
                    .ok_or_else(|| format!("{}: no [package] name", manifest.display()))?;
                let lib =
                    toml_value(&text, "lib", "name").unwrap_or_else(|| package.replace('-', "_"));
                plugins.push(Plugin { package, lib });
            }
        }
        plugins.sort_by(|a, b| a.package.cmp(&b.package));
        Ok(plugins)
    }
}

/// `rustup target add wasm32-wasip2`, quietly; without rustup, checks that
/// the target's standard library is there anyway.
fn ensure_target_installed() -> Result<(), Error> {
    let added = Command::new("rustup")
        .args(["target", "add", TARGET])
        .stdin(Stdio::null())
        .output();
    match added {
        Ok(output) if output.status.success() => Ok(()),
        // rustup failed (offline, say) or is missing: fine if already there.
        _ if target_installed() => Ok(()),
        Ok(output) => Err(format!(
            "rustup target add {TARGET} failed: {}",
            String::from_utf8_lossy(&output.stderr).trim()
        )),
        Err(e) => Err(format!(
            "the {TARGET} target is not installed and rustup could not run ({e})"
        )),
    }
}

/// Whether the active toolchain has the wasm target's standard library.
fn target_installed() -> bool {
    let Ok(output) = Command::new("rustc").args(["--print", "sysroot"]).output() else {
        return false;
    };
    let sysroot = String::from_utf8_lossy(&output.stdout);
    Path::new(sysroot.trim())
        .join("lib/rustlib")
        .join(TARGET)
        .is_dir()
}

/// Deletes `.wasm` files in `dir` other than `keep`: plugins since removed.
fn remove_stale(dir: &Path, keep: &BTreeSet<String>) -> Result<(), Error> {
    let entries = fs::read_dir(dir).map_err(|e| format!("reading {}: {e}", dir.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if name.ends_with(".wasm") && !keep.contains(&name) {
            fs::remove_file(entry.path())
                .map_err(|e| format!("removing {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

/// The string value of `key` in `[section]` of a Cargo manifest: just
/// enough TOML for `name = "..."` lines.
fn toml_value(manifest: &str, section: &str, key: &str) -> Option<String> {
    let header = format!("[{section}]");
    let mut in_section = false;
    for line in manifest.lines().map(str::trim) {
        if line.starts_with('[') {
            in_section = line == header;
        } else if in_section
            && let Some(value) = line
                .strip_prefix(key)
                .and_then(|rest| rest.trim_start().strip_prefix('='))
        {
            let value = value.trim();
            let value = value.strip_prefix('"')?;
            return Some(value[..value.find('"')?].to_string());
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MANIFEST: &str = r#"
[package]
name = "round-robin"
names-are-not-name = "x"
version.workspace = true

[lib]
crate-type = ["cdylib", "rlib"]

[dependencies]
name = "not-this-one"
"#;

    #[test]
    fn reads_package_name_only_from_its_section() {
        assert_eq!(
            toml_value(MANIFEST, "package", "name").as_deref(),
            Some("round-robin")
        );
        assert_eq!(toml_value(MANIFEST, "lib", "name"), None);
        assert_eq!(
            toml_value("[lib]\nname = \"rr\" # short\n", "lib", "name").as_deref(),
            Some("rr")
        );
    }

    #[test]
    fn discovers_this_workspace_plugins() {
        let ws = Workspace::locate().unwrap();
        let plugins = ws.discover_plugins().unwrap();
        let rr = plugins.iter().find(|p| p.package == "round-robin").unwrap();
        assert_eq!(rr.lib, "round_robin");
        assert!(plugins.iter().any(|p| p.package == "wrong-world"));
        assert!(plugins.windows(2).all(|w| w[0].package < w[1].package));
    }
}
