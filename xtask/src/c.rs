//! C plugins: a folder whose `src/` holds `.c` files, built against
//! bindings that `wit-bindgen c` generates from the WIT, compiled by clang
//! with wasi-libc into a core module, and made a component by
//! `wasm-tools component new`.

use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use crate::Error;
use crate::tools::{self, INSTALL_HINT, Inputs, Output};

/// The world C plugins implement; also the stem of the generated files
/// (`balancer.h`, `balancer.c`, `balancer_component_type.o`).
const WORLD: &str = "balancer";

/// Builds the C plugin in `dir` as `work/NAME.wasm`, unless its sources,
/// the WIT and the tools are unchanged since the last build.
pub(crate) fn build(name: &str, dir: &Path, wit: &Path, work: &Path) -> Result<Output, Error> {
    let what = format!("C plugin {name}");
    let wit_bindgen = tools::find("wit-bindgen", &what)?;
    let wasm_tools = tools::find("wasm-tools", &what)?;
    let clang = tools::find("clang", &what)?;
    let sysroot = env::var_os("WASI_SYSROOT").map(PathBuf::from);

    let src = dir.join("src");
    let mut inputs = Inputs::default();
    for tool in [&wit_bindgen, &wasm_tools, &clang] {
        inputs.text(&tools::version(tool)?);
    }
    if let Some(sysroot) = &sysroot {
        inputs.text(&sysroot.to_string_lossy());
    }
    inputs.path(&src)?.path(wit)?;
    let output = Output::new(work, name, &inputs)?;
    if output.is_fresh() {
        return Ok(output);
    }

    let scratch = work.join(format!("{name}.c-build"));
    let _ = fs::remove_dir_all(&scratch);
    let generated = scratch.join("bindings");
    tools::run(
        Command::new(&wit_bindgen)
            .arg("c")
            .arg(wit)
            .args(["--world", WORLD, "--out-dir"])
            .arg(&generated),
        &format!("{what}: generating bindings"),
    )?;

    let core = scratch.join(format!("{name}.core.wasm"));
    let mut compile = Command::new(&clang);
    compile
        .args([
            "--target=wasm32-wasi",
            "-mexec-model=reactor",
            "-O2",
            "-Wall",
            "-Wextra",
            "-Wl,--strip-debug",
        ])
        .arg("-I")
        .arg(&generated);
    if let Some(sysroot) = &sysroot {
        compile.arg("--sysroot").arg(sysroot);
    }
    compile
        .args(c_sources(&src)?)
        .arg(generated.join(format!("{WORLD}.c")))
        .arg(generated.join(format!("{WORLD}_component_type.o")))
        .arg("-o")
        .arg(&core);
    tools::run(
        &mut compile,
        &format!(
            "{what}: compiling with clang for wasm32-wasi (it needs wasi-libc and the wasm32 \
             compiler runtime; {INSTALL_HINT} installs them, or set WASI_SYSROOT to a wasi-sdk sysroot)"
        ),
    )?;

    tools::run(
        Command::new(&wasm_tools)
            .args(["component", "new"])
            .arg(&core)
            .arg("-o")
            .arg(&output.wasm),
        &format!("{what}: making the component"),
    )?;
    output.mark_fresh()?;
    Ok(output)
}

/// The `.c` files in `src`, sorted.
fn c_sources(src: &Path) -> Result<Vec<PathBuf>, Error> {
    let mut sources: Vec<_> = fs::read_dir(src)
        .map_err(|e| format!("reading {}: {e}", src.display()))?
        .filter_map(|entry| entry.ok().map(|entry| entry.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "c"))
        .collect();
    sources.sort();
    Ok(sources)
}
