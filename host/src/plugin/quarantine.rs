//! Quarantine: a plugin pool that keeps failing, or that spends more than
//! its share of worker time, is not called for a while.
//!
//! Every call is already bounded by its deadline, but a bound per call is
//! not a bound per second: a version whose `init` traps just under its
//! allowance costs that allowance on every request (each failed call
//! discards its instance, so the next one builds another), and a plugin
//! that spends most of its deadline on every call takes the worker threads
//! every route shares. A pool therefore counts failures in a row, and the
//! calls and the time they took in the current one-second window. It is
//! quarantined after too many failures in a row, when its calls take more
//! than its CPU budget (a share of all workers' time) in a window, or when
//! [`SLOW_CALLS`] calls in a row each took longer than the slow-call
//! threshold (a share of the call deadline): a plugin that uses most of its
//! deadline on every call is one descheduling away from timing out anyway,
//! while one slow call (a cold instance, a large `set-backends`, a GC
//! pause) is not a slow plugin. A quarantine lasts a growing interval (base, 2x, 4x ... up to
//! the maximum), during which calls are refused at once, costing nothing,
//! and the owner's failure policy applies (balancer `fallback` or `fail`,
//! filter `open` or `closed`). When the interval ends calls resume on
//! probation: one more failure quarantines it again, for longer. A pool
//! that stays out of quarantine for the maximum interval starts again
//! from the base.
//!
//! The hot path is two relaxed atomic loads when not quarantined; state
//! changes take a lock and log one line each.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// When and for how long pools are quarantined.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuarantinePolicy {
    /// Failed calls in a row that quarantine a pool; 0: never for failures.
    pub after_failures: u32,
    /// The first quarantine's length; each one in a row doubles it.
    pub base: Duration,
    /// The longest quarantine.
    pub max: Duration,
    /// Most time a pool's calls may take per [`WINDOW`]; zero: no budget.
    pub cpu_budget: Duration,
    /// [`SLOW_CALLS`] calls in a row each longer than this quarantine the
    /// pool; zero: no threshold.
    pub slow_call: Duration,
}

impl Default for QuarantinePolicy {
    fn default() -> Self {
        QuarantinePolicy {
            after_failures: 5,
            base: Duration::from_secs(1),
            max: Duration::from_secs(60),
            cpu_budget: WINDOW,
            slow_call: Duration::from_micros(2500),
        }
    }
}

/// The window the CPU budget is counted over.
pub const WINDOW: Duration = Duration::from_secs(1);

/// Calls in a row over [`QuarantinePolicy::slow_call`] that quarantine.
pub const SLOW_CALLS: u32 = 8;

/// Why a pool was quarantined, for its log line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// This many failures in a row, the last one described.
    Failures(u32, String),
    /// Its calls took this long within one window.
    Cpu(Duration),
    /// This many calls in a row were slow, the last one taking this long.
    Slow(u32, Duration),
}

/// A state change for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Change {
    /// Quarantined for this long, the `n`-th time in a row.
    Quarantined {
        /// Why.
        cause: Cause,
        /// For how long.
        duration: Duration,
        /// Quarantines in a row (1 for the first).
        level: u32,
    },
    /// The quarantine ended: calls resume, on probation.
    Released,
}

/// One pool's quarantine state.
#[derive(Debug)]
pub struct Quarantine {
    policy: QuarantinePolicy,
    /// The clock's origin: instants are kept as nanoseconds since it.
    epoch: Instant,
    /// End of the current quarantine (nanoseconds since `epoch`), 0: none.
    until: AtomicU64,
    /// Failed calls in a row.
    failures_in_a_row: AtomicU32,
    /// Start of the CPU window, and the call time spent in it.
    window_start: AtomicU64,
    spent: AtomicU64,
    /// Calls in a row over the slow-call threshold.
    slow_in_a_row: AtomicU32,
    /// Quarantines so far (for metrics).
    quarantines: AtomicU64,
    /// Level of escalation and when the last quarantine ended.
    escalation: Mutex<Escalation>,
}

#[derive(Debug, Default)]
struct Escalation {
    level: u32,
    last_end: Option<Instant>,
}

impl Quarantine {
    /// A pool not quarantined, counting from `now`.
    pub fn new(policy: QuarantinePolicy, now: Instant) -> Self {
        Quarantine {
            policy,
            epoch: now,
            until: AtomicU64::new(0),
            failures_in_a_row: AtomicU32::new(0),
            window_start: AtomicU64::new(0),
            spent: AtomicU64::new(0),
            slow_in_a_row: AtomicU32::new(0),
            quarantines: AtomicU64::new(0),
            escalation: Mutex::new(Escalation::default()),
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        u64::try_from(at.saturating_duration_since(self.epoch).as_nanos())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Whether a call may be made at `now`: `Err(remaining)` while
    /// quarantined; `Ok(Some(Released))` when this call ends a quarantine.
    pub fn admit(&self, now: Instant) -> Result<Option<Change>, Duration> {
        let until = self.until.load(Ordering::Relaxed);
        if until == 0 {
            return Ok(None);
        }
        let at = self.nanos(now);
        if at < until {
            return Err(Duration::from_nanos(until - at));
        }
        // Only the caller that clears it reports the release.
        if self
            .until
            .compare_exchange(until, 0, Ordering::Relaxed, Ordering::Relaxed)
            .is_err()
        {
            return Ok(None);
        }
        // On probation: the next failure quarantines again.
        let probation = self.policy.after_failures.saturating_sub(1);
        self.failures_in_a_row.store(probation, Ordering::Relaxed);
        self.window_start.store(at, Ordering::Relaxed);
        self.spent.store(0, Ordering::Relaxed);
        self.slow_in_a_row.store(0, Ordering::Relaxed);
        let mut escalation = self.lock();
        escalation.last_end = Some(now);
        Ok(Some(Change::Released))
    }

    /// Records a call that was admitted, started at `started` and took
    /// `took`; `failure` describes it when it failed. Returns a quarantine
    /// it caused.
    pub fn record(
        &self,
        started: Instant,
        took: Duration,
        failure: Option<&dyn Fn() -> String>,
    ) -> Option<Change> {
        let end = started + took;
        if let Some(change) = self.spend(end, took) {
            return Some(change);
        }
        match failure {
            None => {
                if self.failures_in_a_row.load(Ordering::Relaxed) != 0 {
                    self.failures_in_a_row.store(0, Ordering::Relaxed);
                }
                None
            }
            Some(describe) => {
                let n = self.failures_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                let limit = self.policy.after_failures;
                if limit != 0 && n >= limit {
                    self.quarantine(end, Cause::Failures(n, describe()))
                } else {
                    None
                }
            }
        }
    }

    /// Adds a call that took `took` to the window ending at `end`;
    /// quarantines past the budget or after too many slow calls in a row.
    fn spend(&self, end: Instant, took: Duration) -> Option<Change> {
        let (budget, slow) = (self.policy.cpu_budget, self.policy.slow_call);
        if !slow.is_zero() {
            if took > slow {
                let n = self.slow_in_a_row.fetch_add(1, Ordering::Relaxed) + 1;
                if n >= SLOW_CALLS {
                    self.slow_in_a_row.store(0, Ordering::Relaxed);
                    return self.quarantine(end, Cause::Slow(n, took));
                }
            } else if self.slow_in_a_row.load(Ordering::Relaxed) != 0 {
                self.slow_in_a_row.store(0, Ordering::Relaxed);
            }
        }
        if budget.is_zero() {
            return None;
        }
        let at = self.nanos(end);
        let took = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
        let start = self.window_start.load(Ordering::Relaxed);
        let spent = if at.saturating_sub(start) >= WINDOW.as_nanos() as u64 {
            // A new window; racing callers may each restart it, which only
            // forgets a few calls' time.
            self.window_start.store(at, Ordering::Relaxed);
            self.spent.store(took, Ordering::Relaxed);
            took
        } else {
            self.spent
                .fetch_add(took, Ordering::Relaxed)
                .saturating_add(took)
        };
        if spent > budget.as_nanos() as u64 {
            self.spent.store(0, Ordering::Relaxed);
            return self.quarantine(end, Cause::Cpu(Duration::from_nanos(spent)));
        }
        None
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Escalation> {
        self.escalation.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn quarantine(&self, now: Instant, cause: Cause) -> Option<Change> {
        let mut escalation = self.lock();
        if self.until.load(Ordering::Relaxed) != 0 {
            // Another call quarantined it already.
            return None;
        }
        let calm = escalation
            .last_end
            .is_some_and(|end| now.saturating_duration_since(end) >= self.policy.max);
        if calm {
            escalation.level = 0;
        }
        escalation.level = escalation.level.saturating_add(1);
        let factor = 1u32 << (escalation.level - 1).min(20);
        let duration = self.policy.base.saturating_mul(factor).min(self.policy.max);
        self.until
            .store(self.nanos(now + duration), Ordering::Relaxed);
        self.failures_in_a_row.store(0, Ordering::Relaxed);
        self.quarantines.fetch_add(1, Ordering::Relaxed);
        Some(Change::Quarantined {
            cause,
            duration,
            level: escalation.level,
        })
    }

    /// How much longer the pool is quarantined at `now`, if it is.
    pub fn remaining(&self, now: Instant) -> Option<Duration> {
        let until = self.until.load(Ordering::Relaxed);
        let at = self.nanos(now);
        (until != 0 && at < until).then(|| Duration::from_nanos(until - at))
    }

    /// Quarantines so far.
    pub fn count(&self) -> u64 {
        self.quarantines.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> QuarantinePolicy {
        QuarantinePolicy {
            after_failures: 3,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
            cpu_budget: 100 * MS,
            slow_call: Duration::ZERO,
        }
    }

    fn fail(q: &Quarantine, at: Instant) -> Option<Change> {
        q.record(at, MS, Some(&|| "trapped".to_string()))
    }

    #[test]
    fn failures_in_a_row_quarantine_for_a_growing_interval() {
        let t0 = Instant::now();
        let q = Quarantine::new(policy(), t0);
        assert_eq!(fail(&q, t0), None);
        assert_eq!(fail(&q, t0), None);
        let Some(Change::Quarantined {
            cause, duration, ..
        }) = fail(&q, t0)
        else {
            panic!("not quarantined")
        };
        assert_eq!(cause, Cause::Failures(3, "trapped".into()));
        assert_eq!(duration, Duration::from_secs(1));
        assert!(q.admit(t0 + 500 * MS).is_err());
        assert_eq!(q.remaining(t0 + 500 * MS), Some(501 * MS));
        // Released, on probation: one failure quarantines for twice as long.
        let t1 = t0 + 1100 * MS;
        assert_eq!(q.admit(t1), Ok(Some(Change::Released)));
        assert_eq!(q.admit(t1), Ok(None));
        let Some(Change::Quarantined {
            duration, level, ..
        }) = fail(&q, t1)
        else {
            panic!("probation ignored")
        };
        assert_eq!((duration, level), (Duration::from_secs(2), 2));
        // It escalates to the maximum and no further.
        let mut at = t1;
        for _ in 0..6 {
            at += Duration::from_secs(9);
            q.admit(at).unwrap();
            fail(&q, at);
        }
        assert_eq!(q.remaining(at), Some(Duration::from_secs(8) + MS));
        assert_eq!(q.count(), 8);
    }

    #[test]
    fn a_success_resets_the_count_and_a_calm_period_the_level() {
        let t0 = Instant::now();
        let q = Quarantine::new(policy(), t0);
        fail(&q, t0);
        fail(&q, t0);
        assert_eq!(q.record(t0, MS, None), None);
        fail(&q, t0);
        assert_eq!(fail(&q, t0), None, "the success reset the count");
        assert!(fail(&q, t0).is_some());
        let t1 = t0 + Duration::from_secs(2);
        q.admit(t1).unwrap();
        // Healthy for longer than the maximum: back to the base interval.
        let t2 = t1 + Duration::from_secs(9);
        q.record(t2, MS, None);
        for _ in 0..2 {
            fail(&q, t2);
        }
        let Some(Change::Quarantined { duration, .. }) = fail(&q, t2) else {
            panic!()
        };
        assert_eq!(duration, Duration::from_secs(1));
    }

    #[test]
    fn spending_past_the_budget_in_a_window_quarantines() {
        let t0 = Instant::now();
        let q = Quarantine::new(policy(), t0);
        // 90 ms in each of two windows: under budget.
        for i in 0..9 {
            assert_eq!(q.record(t0 + i * 10 * MS, 10 * MS, None), None);
        }
        let t1 = t0 + 1500 * MS;
        for i in 0..9 {
            assert_eq!(q.record(t1 + i * 10 * MS, 10 * MS, None), None);
        }
        // Then 110 ms within one window.
        let t2 = t1 + Duration::from_secs(2);
        let mut change = None;
        for i in 0..11 {
            change = change.or(q.record(t2 + i * 10 * MS, 10 * MS, None));
        }
        let Some(Change::Quarantined { cause, .. }) = change else {
            panic!("over budget, not quarantined")
        };
        assert!(matches!(cause, Cause::Cpu(d) if d > 100 * MS), "{cause:?}");
    }

    #[test]
    fn slow_calls_in_a_row_quarantine_and_one_slow_call_does_not() {
        let t0 = Instant::now();
        let policy = QuarantinePolicy {
            cpu_budget: Duration::ZERO,
            slow_call: 2 * MS,
            ..policy()
        };
        let q = Quarantine::new(policy, t0);
        // A very slow call (a large set-backends) among fast ones: fine.
        assert_eq!(q.record(t0, 50 * MS, None), None);
        for i in 1..50 {
            assert_eq!(q.record(t0 + i * MS, Duration::from_micros(20), None), None);
        }
        // Seven slow ones, a fast one, then slow ones: eight in a row count.
        for _ in 0..SLOW_CALLS - 1 {
            assert_eq!(q.record(t0, 3 * MS, None), None);
        }
        assert_eq!(q.record(t0, MS, None), None);
        let mut seen = 0;
        let change = loop {
            seen += 1;
            if let Some(change) = q.record(t0 + seen * 3 * MS, 3 * MS, None) {
                break change;
            }
        };
        assert_eq!(seen, SLOW_CALLS);
        let Change::Quarantined { cause, .. } = change else {
            panic!()
        };
        assert_eq!(cause, Cause::Slow(SLOW_CALLS, 3 * MS));
    }

    #[test]
    fn zero_limits_turn_each_check_off() {
        let t0 = Instant::now();
        let q = Quarantine::new(
            QuarantinePolicy {
                after_failures: 0,
                cpu_budget: Duration::ZERO,
                ..policy()
            },
            t0,
        );
        for _ in 0..100 {
            assert_eq!(
                q.record(t0, Duration::from_secs(1), Some(&|| String::new())),
                None
            );
        }
        assert_eq!(q.admit(t0), Ok(None));
    }
}
