//! What every plugin call goes through, balancer or filter: counting,
//! timing, quarantine, and logging each failed call with its causes.
//! One mechanism, so a limit added here holds for every hook.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::CallError;
use super::quarantine::{Cause, Change, Quarantine, QuarantinePolicy};
use crate::error::chain;

/// The counters and quarantine of one pool (one plugin version serving one
/// upstream, or one place in a route's chain).
#[derive(Debug)]
pub struct Calls {
    plugin: Arc<str>,
    owner: Arc<str>,
    calls: AtomicU64,
    failures: AtomicU64,
    busy_nanos: AtomicU64,
    quarantine: Quarantine,
}

impl Calls {
    /// Counters for `plugin` serving `owner`, quarantined as `policy` says.
    pub(super) fn new(plugin: Arc<str>, owner: Arc<str>, policy: QuarantinePolicy) -> Self {
        Calls {
            plugin,
            owner,
            calls: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            busy_nanos: AtomicU64::new(0),
            quarantine: Quarantine::new(policy, Instant::now()),
        }
    }

    /// Runs one call unless the pool is quarantined, and accounts for it:
    /// its time against the CPU budget, a failure against the failures in a
    /// row, a log line for the failure (the first and every power of two)
    /// and for any quarantine it starts or ends.
    /// `call` is given the instant the call started (the clock is read once
    /// per call, here, for the deadline, the quarantine and the histogram).
    pub(super) fn run<R>(
        &self,
        call: impl FnOnce(Instant) -> Result<R, CallError>,
    ) -> Result<R, CallError> {
        self.run_timed(call).0
    }

    /// [`Calls::run`], also returning how long the call took (zero when it
    /// was refused for quarantine), so a caller keeping its own histogram
    /// does not read the clock again.
    pub(super) fn run_timed<R>(
        &self,
        call: impl FnOnce(Instant) -> Result<R, CallError>,
    ) -> (Result<R, CallError>, Duration) {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        match self.quarantine.admit(started) {
            Err(remaining) => {
                // Not logged per call: the quarantine's own line said why.
                self.failures.fetch_add(1, Ordering::Relaxed);
                return (Err(CallError::Quarantined(remaining)), Duration::ZERO);
            }
            Ok(Some(change)) => self.log(&change),
            Ok(None) => {}
        }
        let result = call(started);
        let took = started.elapsed();
        self.busy_nanos.fetch_add(
            u64::try_from(took.as_nanos()).unwrap_or(u64::MAX),
            Ordering::Relaxed,
        );
        let change = match &result {
            Ok(_) => self.quarantine.record(started, took, None),
            Err(error) => {
                self.record_failure(error);
                self.quarantine
                    .record(started, took, Some(&|| chain(error).to_string()))
            }
        };
        if let Some(change) = change {
            self.log(&change);
        }
        (result, took)
    }

    /// Counts a failed call and logs it: the first failure and then every
    /// power of two, so a plugin failing on every request cannot flood the
    /// log; the count in each line says how many there were.
    fn record_failure(&self, error: &CallError) {
        let failures = self.failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures.is_power_of_two() {
            tracing::warn!(
                plugin = &*self.plugin,
                owner = &*self.owner,
                failures,
                "plugin call failed: {}",
                chain(error)
            );
        }
    }

    fn log(&self, change: &Change) {
        let (plugin, owner) = (&*self.plugin, &*self.owner);
        match change {
            Change::Quarantined {
                cause,
                duration,
                level,
            } => {
                let why = match cause {
                    Cause::Failures(n, last) => format!("{n} failed calls in a row, last: {last}"),
                    Cause::Cpu(spent) => format!(
                        "its calls took {spent:?} of worker time within {:?}, over its CPU budget",
                        super::quarantine::WINDOW
                    ),
                    Cause::Slow(calls, last) => format!(
                        "{calls} calls in a row each took longer than the slow-call threshold (the last {last:?})"
                    ),
                };
                tracing::warn!(
                    plugin,
                    owner,
                    quarantines_in_a_row = level,
                    "plugin quarantined for {duration:?}: {why}; its owner's on_failure applies meanwhile"
                );
            }
            Change::Released => {
                tracing::info!(
                    plugin,
                    owner,
                    "plugin quarantine over: calls resume (one more failure quarantines it again)"
                );
            }
        }
    }

    /// Calls made (quarantined ones included).
    pub fn calls(&self) -> u64 {
        self.calls.load(Ordering::Relaxed)
    }

    /// Calls that failed, quarantined ones included: decisions the plugin
    /// did not make.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Total time spent in calls (instantiation included).
    pub fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy_nanos.load(Ordering::Relaxed))
    }

    /// How much longer the pool is quarantined, if it is.
    pub fn quarantined_for(&self) -> Option<Duration> {
        self.quarantine.remaining(Instant::now())
    }

    /// Times the pool was quarantined.
    pub fn quarantines(&self) -> u64 {
        self.quarantine.count()
    }
}
