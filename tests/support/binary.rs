//! The real `weir` binary as a child process, killed when dropped.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{ChildStderr, Command, Stdio};
use std::time::Duration;

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

/// `weir run --config PATH`, its listening address (read from its log),
/// and its log lines as they come.
pub async fn start_weir_run(
    path: &std::path::Path,
) -> (Child, String, tokio::sync::mpsc::UnboundedReceiver<String>) {
    let (child, stderr) = spawn_run(path);
    let mut lines_rx = log_lines(stderr);
    let addr = loop {
        let line = tokio::time::timeout(Duration::from_secs(30), lines_rx.recv())
            .await
            .expect("weir logged no listening address in time")
            .expect("weir exited before listening");
        if let Some(addr) = line
            .split_whitespace()
            .find_map(|w| w.strip_prefix("addr=").map(str::to_string))
        {
            break addr;
        }
    };
    (child, addr, lines_rx)
}

/// The lines of a child's log, as they come, read on a thread of their own.
pub fn log_lines(stderr: ChildStderr) -> tokio::sync::mpsc::UnboundedReceiver<String> {
    let (lines_tx, lines_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if lines_tx.send(line).is_err() {
                break;
            }
        }
    });
    lines_rx
}
