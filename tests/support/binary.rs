//! The real `weir` binary as a child process, killed when dropped.

use std::path::Path;
use std::process::{ChildStderr, Command, Stdio};

/// The weir binary, with the admin token `examples/weir.toml` reads from
/// the environment.
pub fn weir() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_weir"));
    command.env("WEIR_ADMIN_TOKEN", "example-token");
    command
}

/// Kills the child on drop, so a failing test leaves nothing running.
pub struct Child(pub std::process::Child);

impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `weir run --config PATH` logging at `info` without colours, its
/// stdout discarded; returns it and its stderr, for the caller to read (or
/// not).
pub fn spawn_run(path: &Path) -> (Child, ChildStderr) {
    let mut child = Child(
        weir()
            .args(["run", "--config"])
            .arg(path)
            .env("WEIR_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let stderr = child.0.stderr.take().unwrap();
    (child, stderr)
}
