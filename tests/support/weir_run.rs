//! `weir run` as a child process with its log collected, for tests that
//! look at what weir logged.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Child, spawn_run};

/// A running `weir run`, its addresses and every log line so far.
pub struct WeirRun {
    pub child: Child,
    pub proxy: SocketAddr,
    pub admin: Option<SocketAddr>,
    log: Arc<Mutex<Vec<String>>>,
}

impl WeirRun {
    /// Starts weir on the config at `path`; waits until it listens (and its
    /// admin API too when `admin`).
    pub async fn start(path: &Path, admin: bool) -> WeirRun {
        let (child, stderr) = spawn_run(path);
        let log = Arc::new(Mutex::new(Vec::new()));
        let lines = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                lines.lock().unwrap().push(line);
            }
        });
        let mut run = WeirRun {
            child,
            proxy: SocketAddr::from(([0, 0, 0, 0], 0)),
            admin: None,
            log,
        };
        let addr_of = |line: &String| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix("addr=")?.parse::<SocketAddr>().ok())
        };
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            {
                let log = run.log.lock().unwrap();
                for line in log.iter() {
                    if line.contains("admin API listening") {
                        run.admin = addr_of(line);
                    } else if line.contains("listening") && run.proxy.port() == 0 {
                        run.proxy = addr_of(line).unwrap_or(run.proxy);
                    }
                }
            }
            if run.proxy.port() != 0 && (!admin || run.admin.is_some()) {
                return run;
            }
            if let Ok(Some(status)) = run.child.0.try_wait() {
                panic!(
                    "weir exited ({status}): {}",
                    run.log.lock().unwrap().join("\n")
                );
            }
            assert!(
                std::time::Instant::now() < deadline,
                "weir did not listen in time"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The proxy's URL for `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.proxy)
    }

    /// Log lines containing every one of `needles`.
    pub fn lines_with(&self, needles: &[&str]) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter()
            .filter(|l| needles.iter().all(|n| l.contains(n)))
            .cloned()
            .collect()
    }

    /// Waits until at least `n` log lines contain all of `needles`.
    pub async fn wait_lines(&self, needles: &[&str], n: usize) {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        while self.lines_with(needles).len() < n {
            let log = self.log_text();
            assert!(
                std::time::Instant::now() < deadline,
                "no {n} log lines with {needles:?} in:\n{log}"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Everything logged so far, for failure messages.
    pub fn log_text(&self) -> String {
        self.log.lock().unwrap().join("\n")
    }
}
