//! weir's own log: tracing events formatted on the thread that raises them,
//! written to stderr by a thread of their own.
//!
//! What weir guarantees: logging never blocks a request or the admin API.
//! Each formatted line is queued for the `weir-log` writer thread; while it
//! is stuck (a stderr pipe nobody reads, a slow terminal) at most
//! [`BUFFERED_LINES`] lines wait, and further lines are dropped and counted
//! ([`dropped_lines`], `weir_log_dropped_total`). Dropping the [`LogGuard`]
//! writes out what is queued, waiting at most about a second for a stalled
//! stderr.

use std::io::Write;
use std::sync::OnceLock;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Most formatted lines queued for stderr; past it, lines are dropped.
/// Plugin lines are at most [`crate::plugin::MAX_MESSAGE_BYTES`] plus their
/// fields, so the queue holds a few tens of MiB at worst.
pub const BUFFERED_LINES: usize = 8192;

/// How log lines look.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// The counter of the writer [`init`] set up.
static DROPPED: OnceLock<ErrorCounter> = OnceLock::new();

/// Keeps the writer thread for as long as the process logs; dropping it
/// writes out the queued lines.
#[must_use = "dropping the guard stops weir's log"]
pub struct LogGuard {
    _worker: WorkerGuard,
}

/// weir's log could not be set up (a global subscriber was already set).
#[derive(Debug, thiserror::Error)]
#[error("cannot set up weir's log: {0}")]
pub struct LogError(#[source] Box<dyn std::error::Error + Send + Sync>);

/// Sends this process's tracing events (and the `log` crate's records) to
/// stderr through the non-blocking writer, keeping those `filter` (tracing's
/// `EnvFilter` syntax; an invalid one means `info`) lets through.
pub fn init(filter: &str, format: LogFormat) -> Result<LogGuard, LogError> {
    let (writer, worker) = non_blocking(std::io::stderr());
    let _ = DROPPED.set(writer.error_counter());
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer);
    match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    }
    .map_err(LogError)?;
    Ok(LogGuard { _worker: worker })
}

/// Lines of weir's log dropped because stderr fell behind (0 before
/// [`init`]).
pub fn dropped_lines() -> u64 {
    DROPPED
        .get()
        .map_or(0, |counter| counter.dropped_lines() as u64)
}

/// A lossy writer to `out` on its own thread, queueing at most
/// [`BUFFERED_LINES`] lines.
fn non_blocking<W: Write + Send + 'static>(out: W) -> (NonBlocking, WorkerGuard) {
    NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(BUFFERED_LINES)
        .thread_name("weir-log")
        .finish(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::{Duration, Instant};

    /// A writer that blocks until opened, then keeps what it is given.
    #[derive(Clone, Default)]
    struct Gate {
        shared: Arc<GateState>,
    }

    #[derive(Default)]
    struct GateState {
        /// Whether it is open, and what was written.
        state: Mutex<(bool, Vec<u8>)>,
        opened: Condvar,
    }

    impl Gate {
        fn open(&self) {
            self.shared.state.lock().unwrap().0 = true;
            self.shared.opened.notify_all();
        }

        fn lines(&self) -> usize {
            let state = self.shared.state.lock().unwrap();
            state.1.iter().filter(|&&b| b == b'\n').count()
        }
    }

    impl Write for Gate {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            let shared = &*self.shared;
            let mut state = shared
                .opened
                .wait_while(shared.state.lock().unwrap(), |(open, _)| !*open)
                .unwrap();
            state.1.extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_stalled_writer_costs_dropped_lines_not_a_blocked_thread() {
        let gate = Gate::default();
        let (writer, worker) = non_blocking(gate.clone());
        let counter = writer.error_counter();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(writer)
            .with_ansi(false)
            .finish();
        let total = BUFFERED_LINES + 500;
        let started = Instant::now();
        tracing::subscriber::with_default(subscriber, || {
            for i in 0..total {
                tracing::info!(i, "a line nobody reads yet");
            }
        });
        // Generous: the loop itself takes milliseconds; a blocking writer
        // would never return at all.
        assert!(started.elapsed() < Duration::from_secs(20));
        let dropped = counter.dropped_lines();
        // The queue is full and the writer holds at most one line.
        assert!(dropped >= total - BUFFERED_LINES - 1, "{dropped}");
        gate.open();
        let deadline = Instant::now() + Duration::from_secs(20);
        while gate.lines() + dropped < total {
            assert!(Instant::now() < deadline, "queued lines not written");
            std::thread::sleep(Duration::from_millis(5));
        }
        drop(worker);
        assert_eq!(gate.lines() + dropped, total, "every queued line written");
        assert_eq!(counter.dropped_lines(), dropped, "none dropped once open");
    }
}
