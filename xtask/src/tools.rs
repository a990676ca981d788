//! What the JavaScript and C plugin builds share: finding external tools,
//! running them with errors that say what failed, and skipping a build whose
//! inputs have not changed.

use std::collections::hash_map::DefaultHasher;
use std::env;
use std::fs;
use std::hash::Hasher;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;

/// Installs every toolchain the non-Rust plugins need (apt packages, pinned
/// cargo tools); named in the errors about a missing tool.
pub(crate) const INSTALL_HINT: &str =
    ".ci/toolchains (as root: apt packages, then cargo tools into ~/.cache/weir-tools)";

/// Where `.ci/toolchains` installs cargo-built tools: `$WEIR_TOOLS/bin`,
/// by default `$HOME/.cache/weir-tools/bin`.
fn tools_bin() -> Option<PathBuf> {
    let root = env::var_os("WEIR_TOOLS")
        .filter(|root| !root.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            env::var_os("HOME").map(|home| PathBuf::from(home).join(".cache/weir-tools"))
        })?;
    Some(root.join("bin"))
}

/// The path of executable `name`: in `~/.cache/weir-tools/bin`, else on
/// `PATH`. `what` says who needs it, for the error.
pub(crate) fn find(name: &str, what: &str) -> Result<PathBuf, Error> {
    let path = env::var_os("PATH").unwrap_or_default();
    let dirs = tools_bin().into_iter().chain(env::split_paths(&path));
    for dir in dirs {
        let candidate = dir.join(name);
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    Err(format!(
        "`{name}` not found (in $WEIR_TOOLS/bin, default ~/.cache/weir-tools/bin, or on PATH); {what} needs it. Install it with {INSTALL_HINT}"
    ))
}

/// Runs `command` to completion; an error names `what` and the command.
pub(crate) fn run(command: &mut Command, what: &str) -> Result<(), Error> {
    let status = command
        .status()
        .map_err(|e| format!("{what}: running {:?}: {e}", command.get_program()))?;
    if status.success() {
        Ok(())
    } else {
        Err(format!("{what}: {command:?} failed ({status})"))
    }
}

/// The first line `program --version` prints: part of a build's inputs, so
/// a different tool version rebuilds.
pub(crate) fn version(program: &Path) -> Result<String, Error> {
    let output = Command::new(program)
        .arg("--version")
        .output()
        .map_err(|e| format!("running {} --version: {e}", program.display()))?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.lines().next().unwrap_or_default().trim().to_string())
}

/// A digest of a build's inputs: file names and contents, plus free-form
/// strings (tool versions). Not stable across Rust releases, which only
/// costs a rebuild.
#[derive(Default)]
pub(crate) struct Inputs {
    hasher: DefaultHasher,
}

impl Inputs {
    /// Adds `path` and its content, or every file under it when it is a
    /// directory, in sorted order.
    pub(crate) fn path(&mut self, path: &Path) -> Result<&mut Self, Error> {
        if path.is_dir() {
            let mut entries: Vec<_> = fs::read_dir(path)
                .map_err(|e| format!("reading {}: {e}", path.display()))?
                .filter_map(|entry| entry.ok().map(|entry| entry.path()))
                .collect();
            entries.sort();
            for entry in entries {
                self.path(&entry)?;
            }
        } else {
            let bytes = fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
            self.hasher.write(path.to_string_lossy().as_bytes());
            self.hasher.write(&bytes);
        }
        Ok(self)
    }

    /// Adds a string, such as a tool's version.
    pub(crate) fn text(&mut self, text: &str) -> &mut Self {
        self.hasher.write(text.as_bytes());
        self
    }

    fn digest(&self) -> String {
        format!("{:016x}", self.hasher.finish())
    }
}

/// One non-Rust plugin's build output, `<work>/NAME.wasm`, with the digest
/// of the inputs it was built from beside it (`NAME.inputs`).
pub(crate) struct Output {
    /// Where the component is written.
    pub(crate) wasm: PathBuf,
    stamp: PathBuf,
    digest: String,
}

impl Output {
    /// The output of plugin `name` in `work`, which is created.
    pub(crate) fn new(work: &Path, name: &str, inputs: &Inputs) -> Result<Self, Error> {
        fs::create_dir_all(work).map_err(|e| format!("creating {}: {e}", work.display()))?;
        Ok(Self {
            wasm: work.join(format!("{name}.wasm")),
            stamp: work.join(format!("{name}.inputs")),
            digest: inputs.digest(),
        })
    }

    /// Whether the component exists and was built from these inputs.
    pub(crate) fn is_fresh(&self) -> bool {
        self.wasm.is_file()
            && fs::read_to_string(&self.stamp).is_ok_and(|stamp| stamp.trim() == self.digest)
    }

    /// Records that the component now matches the inputs.
    pub(crate) fn mark_fresh(&self) -> Result<(), Error> {
        fs::write(&self.stamp, &self.digest)
            .map_err(|e| format!("writing {}: {e}", self.stamp.display()))
    }
}
