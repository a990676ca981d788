//! JavaScript plugins: a folder with a `package.json` and a `build.mjs`
//! that writes the component to the path it is given (componentize-js).

use std::fs;
use std::path::Path;
use std::process::Command;

use crate::Error;
use crate::tools::{self, Inputs, Output};

/// Builds the JavaScript plugin in `dir` as `work/NAME.wasm`, unless its
/// sources, lockfile and the WIT are unchanged since the last build.
/// Installs its npm dependencies (`npm ci`, pinned by the lockfile) first
/// when `node_modules` is missing or older than the lockfile.
pub(crate) fn build(name: &str, dir: &Path, wit: &Path, work: &Path) -> Result<Output, Error> {
    let what = format!("JavaScript plugin {name}");
    let node = tools::find("node", &what)?;
    let mut inputs = Inputs::default();
    inputs
        .text(&tools::version(&node)?)
        .path(&dir.join("src"))?
        .path(&dir.join("build.mjs"))?
        .path(&dir.join("package.json"))?
        .path(&dir.join("package-lock.json"))?
        .path(wit)?;
    let output = Output::new(work, name, &inputs)?;
    if output.is_fresh() {
        return Ok(output);
    }

    if needs_npm_ci(dir) {
        let npm = tools::find("npm", &what)?;
        eprintln!("xtask: {name}: npm ci");
        tools::run(
            Command::new(npm)
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(dir),
            &format!("{what}: installing its npm dependencies"),
        )?;
    }
    eprintln!("xtask: {name}: componentize-js (takes some seconds)");
    tools::run(
        Command::new(node)
            .arg("build.mjs")
            .arg(&output.wasm)
            .current_dir(dir),
        &format!("{what}: building"),
    )?;
    output.mark_fresh()?;
    Ok(output)
}

/// Whether `node_modules` is missing, or older than `package-lock.json`
/// (npm rewrites `node_modules/.package-lock.json` on every install).
fn needs_npm_ci(dir: &Path) -> bool {
    let modified = |path: &Path| fs::metadata(path).and_then(|m| m.modified()).ok();
    let installed = modified(&dir.join("node_modules/.package-lock.json"));
    let locked = modified(&dir.join("package-lock.json"));
    match (installed, locked) {
        (Some(installed), Some(locked)) => installed < locked,
        _ => true,
    }
}
