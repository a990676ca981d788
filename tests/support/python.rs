//! Python peers for the tests: the interpreter with the pinned test
//! packages (`websockets`, `grpcio`, `grpcio-tools`, `grpcio-health-checking`, installed by
//! `.ci/toolchains` into a virtualenv), and a script run as a child that
//! prints its port first and is killed when dropped.

use std::io::{BufRead, BufReader, Lines};
use std::path::PathBuf;
use std::process::{ChildStdout, Command, Stdio};

/// The Python interpreter that has the test packages: `WEIR_PYTHON`, else
/// the virtualenv `.ci/toolchains` makes (`$WEIR_TOOLS` or
/// `$HOME/.cache/weir-tools`, then `py/bin/python3`), else `python3`.
pub fn python() -> PathBuf {
    if let Some(path) = std::env::var_os("WEIR_PYTHON") {
        return PathBuf::from(path);
    }
    let tools = std::env::var_os("WEIR_TOOLS")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache/weir-tools")));
    if let Some(venv) = tools.map(|t| t.join("py/bin/python3"))
        && venv.is_file()
    {
        return venv;
    }
    PathBuf::from("python3")
}

/// A Python script running as a child process; killed when dropped.
pub struct PyChild {
    /// The child.
    pub child: std::process::Child,
    /// Its stdout, after the lines already read.
    pub stdout: Lines<BufReader<ChildStdout>>,
}

impl PyChild {
    /// Runs `script` (its source) with `args`; stderr goes to the test's.
    pub fn spawn(script: &str, args: &[&str]) -> PyChild {
        PyChild::spawn_in(script, args, None)
    }

    /// Like [`PyChild::spawn`], in directory `dir` when given (where
    /// generated stubs are imported from).
    pub fn spawn_in(script: &str, args: &[&str], dir: Option<&std::path::Path>) -> PyChild {
        let mut command = Command::new(python());
        command
            .arg("-u")
            .arg("-c")
            .arg(script)
            .args(args)
            .stdout(Stdio::piped());
        if let Some(dir) = dir {
            command.current_dir(dir).env("PYTHONPATH", dir);
        }
        let mut child = command.spawn().unwrap_or_else(|e| {
            panic!(
                "{}: {e}; run .ci/toolchains, which makes the test virtualenv",
                python().display()
            )
        });
        let stdout = BufReader::new(child.stdout.take().unwrap()).lines();
        PyChild { child, stdout }
    }

    /// The next line the script printed; panics if it ended first.
    pub fn line(&mut self) -> String {
        match self.stdout.next() {
            Some(Ok(line)) => line,
            other => panic!("the python script ended without a line: {other:?}"),
        }
    }

    /// The first line, read as the port the script listens on.
    pub fn port(&mut self) -> u16 {
        let line = self.line();
        line.trim()
            .parse()
            .unwrap_or_else(|_| panic!("python printed {line:?}, not its port"))
    }
}

impl Drop for PyChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
