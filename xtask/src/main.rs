//! Build and test helpers for the weir workspace, run as `cargo xtask CMD`.
//!
//! Rust plugins are built for `wasm32-wasip2` in one cargo invocation, the
//! JavaScript and C ones with their own toolchains, and all are copied to
//! `<target-dir>/plugins/NAME.wasm`, the layout weir loads plugins from.
//! The target dir is `$CARGO_TARGET_DIR`, else `<workspace>/target`.

use std::env;
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

mod c;
mod js;
mod plugins;
mod tools;

use plugins::Languages;

const USAGE: &str = "\
usage: cargo xtask <command> [args...]

commands:
  plugins          build every plugin (plugins/*, tests/plugins/*: Rust for wasm32-wasip2,
                   JavaScript with componentize-js, C with wit-bindgen + clang + wasm-tools)
                   into <target-dir>/plugins/NAME.wasm and print that directory
  demo [args...]   the Rust plugins, then
                   `cargo run --release -p weir -- demo --plugin-dir DIR [args...]`
  test [args...]   .ci/toolchains (installs the JavaScript and C toolchains once), plugins, then `cargo test --profile quick --workspace [args...]`
                   with WEIR_PLUGIN_DIR=DIR
  ci               what CI runs (currently: test)
  help             this message";

/// A failure to report on stderr before exiting with status 1.
type Error = String;

fn main() -> ExitCode {
    let mut args = env::args_os().skip(1);
    let command = args.next();
    let rest: Vec<OsString> = args.collect();
    let result = match command.as_deref().and_then(OsStr::to_str) {
        Some("plugins") if rest.is_empty() => Workspace::locate()
            .and_then(|ws| ws.build_plugins(Languages::All))
            .map(|dir| {
                println!("{}", dir.display());
                ExitCode::SUCCESS
            }),
        Some("demo") => Workspace::locate().and_then(|ws| ws.demo(&rest)),
        Some("test") => Workspace::locate().and_then(|ws| ws.test(&rest)),
        Some("ci") if rest.is_empty() => Workspace::locate().and_then(|ws| ws.test(&[])),
        Some("help" | "-h" | "--help") => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        _ => {
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    result.unwrap_or_else(|error| {
        eprintln!("xtask: {error}");
        ExitCode::FAILURE
    })
}

/// Where the workspace and its build outputs live.
struct Workspace {
    root: PathBuf,
    target_dir: PathBuf,
    cargo: OsString,
}

impl Workspace {
    fn locate() -> Result<Self, Error> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .parent()
            .ok_or("xtask is not inside a workspace")?
            .to_path_buf();
        let target_dir = match env::var_os("CARGO_TARGET_DIR").filter(|dir| !dir.is_empty()) {
            // Relative to where we were started from, as cargo reads it.
            Some(dir) => env::current_dir()
                .map_err(|e| format!("current directory: {e}"))?
                .join(dir),
            None => root.join("target"),
        };
        let cargo = env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
        Ok(Self {
            root,
            target_dir,
            cargo,
        })
    }

    /// A `cargo` command run from the workspace root, building into our
    /// target dir whatever the caller's directory.
    fn cargo(&self) -> Command {
        let mut command = Command::new(&self.cargo);
        command
            .current_dir(&self.root)
            .env("CARGO_TARGET_DIR", &self.target_dir);
        command
    }

    /// `cargo xtask demo`: runs weir's demo against freshly built plugins.
    fn demo(&self, args: &[OsString]) -> Result<ExitCode, Error> {
        let dir = self.build_plugins(Languages::RustOnly)?;
        let mut command = self.cargo();
        command
            .args([
                "run",
                "--release",
                "-p",
                "weir",
                "--",
                "demo",
                "--plugin-dir",
            ])
            .arg(&dir)
            .args(args);
        exec(command)
    }

    /// `cargo xtask test` and `ci`: the workspace's tests, with the plugins
    /// built and their directory in `WEIR_PLUGIN_DIR`. Every test binary
    /// runs even after one fails, so one run reports every failure.
    fn test(&self, args: &[OsString]) -> Result<ExitCode, Error> {
        self.install_toolchains()?;
        let dir = self.build_plugins(Languages::All)?;
        let mut command = self.cargo();
        command
            .args([
                "test",
                "--profile",
                "quick",
                "--workspace",
                "--no-fail-fast",
            ])
            .args(args)
            .env("WEIR_PLUGIN_DIR", &dir);
        run(command)
    }
}

impl Workspace {
    /// Runs `.ci/toolchains`, which installs what the JavaScript and C
    /// plugins need (once; a second run only checks, in well under a
    /// second), so the README's test command works on a fresh machine.
    fn install_toolchains(&self) -> Result<(), Error> {
        let script = self.root.join(".ci/toolchains");
        let status = Command::new("bash")
            .arg(&script)
            .current_dir(&self.root)
            .status()
            .map_err(|e| format!("running {}: {e}", script.display()))?;
        if status.success() {
            Ok(())
        } else {
            Err(format!(
                "{} failed ({status}): it installs Node.js, clang and wasi-libc with apt (as root or with sudo) and wit-bindgen and wasm-tools with cargo",
                script.display()
            ))
        }
    }
}

/// Runs `command` to completion and exits with its status.
fn run(mut command: Command) -> Result<ExitCode, Error> {
    let status = command
        .status()
        .map_err(|e| format!("running {:?}: {e}", command.get_program()))?;
    Ok(match status.code() {
        Some(0) => ExitCode::SUCCESS,
        Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        // Killed by a signal.
        None => ExitCode::FAILURE,
    })
}

/// Replaces this process with `command` where the platform allows (so
/// signals such as Ctrl-C reach it directly), else runs it to completion.
fn exec(command: Command) -> Result<ExitCode, Error> {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        let mut command = command;
        let error = command.exec();
        Err(format!("running {:?}: {error}", command.get_program()))
    }
    #[cfg(not(unix))]
    run(command)
}
