//! `cargo xtask plugins`: build every plugin for wasm and lay the components
//! out as `<target-dir>/plugins/NAME.wasm`.
//!
//! A plugin is a sub-folder of [`PLUGIN_FOLDERS`], of one of three kinds:
//! with a `Cargo.toml`, a Rust crate built for wasm32-wasip2 (all in one
//! cargo invocation) and named by its package; with a `package.json`,
//! JavaScript built by componentize-js ([`crate::js`]); with C files in
//! `src/`, C built with wit-bindgen, clang and wasm-tools ([`crate::c`]).
//! The last two are named by their folder.

use std::collections::BTreeSet;
use std::fs;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::{Error, Workspace, c, js};

/// The target Rust plugins are compiled for.
const TARGET: &str = "wasm32-wasip2";
/// The cargo profile Rust plugins are built with (root `Cargo.toml`).
const PROFILE: &str = "plugin";
/// Workspace folders whose every sub-folder holding a plugin is one.
const PLUGIN_FOLDERS: &[&str] = &["plugins", "tests/plugins"];

/// One plugin.
#[derive(Debug, PartialEq, Eq)]
struct Plugin {
    /// What weir loads it as: the stem of `NAME.wasm`.
    name: String,
    /// Its folder.
    dir: PathBuf,
    /// How it is built.
    kind: Kind,
}

/// The language of a plugin, and what building it needs to know.
#[derive(Debug, PartialEq, Eq)]
enum Kind {
    /// A crate; `name` is its package name, what `-p` takes.
    Rust {
        /// The library name: the stem of the `.wasm` cargo writes.
        lib: String,
    },
    /// `package.json` and `build.mjs`.
    JavaScript,
    /// `src/*.c`.
    C,
}

/// Which plugins a command needs built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Languages {
    /// Every plugin: `plugins`, `test`.
    All,
    /// Only the Rust ones, which need nothing beyond rustup: `demo`.
    RustOnly,
}

impl Workspace {
    /// Builds the plugins `languages` asks for and returns the directory
    /// holding `NAME.wasm` for each.
    pub(crate) fn build_plugins(&self, languages: Languages) -> Result<PathBuf, Error> {
        let plugins = self.discover_plugins()?;
        if plugins.is_empty() {
            return Err(format!("no plugins in {PLUGIN_FOLDERS:?}"));
        }
        let out = self.target_dir.join("plugins");
        fs::create_dir_all(&out).map_err(|e| format!("creating {}: {e}", out.display()))?;

        self.build_rust(&plugins, &out)?;
        if languages == Languages::All {
            let wit = self.root.join("wit");
            let work = self.target_dir.join("plugins-build");
            for plugin in &plugins {
                let built = match plugin.kind {
                    Kind::Rust { .. } => continue,
                    Kind::JavaScript => js::build(&plugin.name, &plugin.dir, &wit, &work)?,
                    Kind::C => c::build(&plugin.name, &plugin.dir, &wit, &work)?,
                };
                copy(&built.wasm, &out.join(format!("{}.wasm", plugin.name)))?;
            }
        }

        // Plugins not built this time keep their last build; only files no
        // plugin names any more go.
        let known = plugins.iter().map(|p| format!("{}.wasm", p.name)).collect();
        remove_stale(&out, &known)?;
        Ok(out)
    }

    /// Builds the Rust plugins in one cargo invocation and copies them to
    /// `out`.
    fn build_rust(&self, plugins: &[Plugin], out: &Path) -> Result<(), Error> {
        let rust: Vec<_> = plugins
            .iter()
            .filter_map(|p| match &p.kind {
                Kind::Rust { lib } => Some((p.name.as_str(), lib.as_str())),
                _ => None,
            })
            .collect();
        if rust.is_empty() {
            return Ok(());
        }
        ensure_target_installed()?;
        let mut build = self.cargo();
        build.args(["build", "--profile", PROFILE, "--target", TARGET]);
        for (package, _) in &rust {
            build.args(["-p", package]);
        }
        let status = build
            .status()
            .map_err(|e| format!("running cargo build: {e}"))?;
        if !status.success() {
            return Err(format!("building the plugins failed ({status})"));
        }
        let built = self.target_dir.join(TARGET).join(PROFILE);
        for (package, lib) in rust {
            copy(
                &built.join(format!("{lib}.wasm")),
                &out.join(format!("{package}.wasm")),
            )?;
        }
        Ok(())
    }

    /// Every plugin under [`PLUGIN_FOLDERS`], sorted by name.
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
                if let Some(plugin) = plugin_in(&entry.path())? {
                    plugins.push(plugin);
                }
            }
        }
        plugins.sort_by(|a, b| a.name.cmp(&b.name));
        if let Some(twice) = plugins.windows(2).find(|w| w[0].name == w[1].name) {
            return Err(format!(
                "two plugins are called {}: {} and {}",
                twice[0].name,
                twice[0].dir.display(),
                twice[1].dir.display()
            ));
        }
        Ok(plugins)
    }
}

/// The plugin in folder `dir`, if it holds one.
fn plugin_in(dir: &Path) -> Result<Option<Plugin>, Error> {
    let folder_name = || {
        dir.file_name()
            .map(|name| name.to_string_lossy().into_owned())
            .unwrap_or_default()
    };
    let manifest = dir.join("Cargo.toml");
    let (name, kind) = if manifest.is_file() {
        let text = fs::read_to_string(&manifest)
            .map_err(|e| format!("reading {}: {e}", manifest.display()))?;
        let package = toml_value(&text, "package", "name")
            .ok_or_else(|| format!("{}: no [package] name", manifest.display()))?;
        let lib = toml_value(&text, "lib", "name").unwrap_or_else(|| package.replace('-', "_"));
        (package, Kind::Rust { lib })
    } else if dir.join("package.json").is_file() {
        (folder_name(), Kind::JavaScript)
    } else if has_c_sources(&dir.join("src")) {
        (folder_name(), Kind::C)
    } else {
        return Ok(None);
    };
    Ok(Some(Plugin {
        name,
        dir: dir.to_path_buf(),
        kind,
    }))
}

/// Whether `src` holds a `.c` file.
fn has_c_sources(src: &Path) -> bool {
    fs::read_dir(src).is_ok_and(|entries| {
        entries
            .flatten()
            .any(|entry| entry.path().extension().is_some_and(|ext| ext == "c"))
    })
}

fn copy(from: &Path, to: &Path) -> Result<(), Error> {
    fs::copy(from, to)
        .map(drop)
        .map_err(|e| format!("copying {} to {}: {e}", from.display(), to.display()))
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
        let kind = |name: &str| &plugins.iter().find(|p| p.name == name).unwrap().kind;
        assert_eq!(
            kind("round-robin"),
            &Kind::Rust {
                lib: "round_robin".into()
            }
        );
        assert!(plugins.iter().any(|p| p.name == "wrong-world"));
        assert_eq!(kind("js-round-robin"), &Kind::JavaScript);
        assert_eq!(kind("c-round-robin"), &Kind::C);
        assert!(plugins.windows(2).all(|w| w[0].name < w[1].name));
    }
}
