//! What decides a backend's health: active checks, passive ejection and the
//! operator's drain, plus the slow-start ramp after a recovery.
//!
//! [`BackendState`] is shared by every backend set (and every reload) a
//! backend appears in, like its stats. The health a policy sees is computed
//! from it into an immutable [`super::BackendSet`] by the upstream that
//! holds the backend.

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

// tokio's clock: it follows paused time in tests.
use tokio::time::Instant;

use super::{CheckError, Health, TunnelEnd};

/// The health inputs of one backend.
#[derive(Debug, Default)]
pub struct BackendState {
    inner: Mutex<Inner>,
    /// Failed requests in a row, for outlier detection (hot path: atomic).
    consecutive_errors: AtomicU32,
    /// Set by the operator through the admin API.
    draining: AtomicBool,
    /// Set when the backend left its upstream (reload, admin API).
    removed: AtomicBool,
    /// Woken when it is drained or removed: its tunnels must close.
    leaving: tokio::sync::Notify,
    checks_passed: AtomicU64,
    checks_failed: AtomicU64,
    ejections: AtomicU64,
}

#[derive(Debug, Default)]
struct Inner {
    /// The active health check holds it down.
    check_down: bool,
    /// Consecutive check results of the same kind: positive passes,
    /// negative failures.
    check_streak: i64,
    /// Why the checks took it down.
    down_reason: Option<String>,
    /// Ejected by outlier detection until then.
    ejected_until: Option<Instant>,
    /// Why it was last ejected.
    ejection_reason: Option<String>,
    /// When it last became eligible again, for slow start.
    recovered_at: Option<Instant>,
}

/// A change of a backend's health-check verdict.
#[derive(Debug)]
pub enum CheckTransition {
    /// It passed `rise` checks in a row and is up again.
    Up,
    /// It failed `fall` checks in a row; the last failure.
    Down(CheckError),
}

impl BackendState {
    /// Health as of `now` from every input, and the reason when it is not
    /// healthy. An ejection whose time is over ends here (and starts the
    /// slow-start ramp).
    pub fn health(&self, now: Instant) -> (Health, Option<String>) {
        if self.draining.load(Ordering::Relaxed) {
            return (Health::Draining, Some("drained by the operator".into()));
        }
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if inner.check_down {
            let why = inner.down_reason.clone().unwrap_or_default();
            return (Health::Unhealthy, Some(why));
        }
        match inner.ejected_until {
            Some(until) if until > now => {
                let why = inner.ejection_reason.as_deref().unwrap_or("failing");
                (Health::Unhealthy, Some(format!("ejected: {why}")))
            }
            Some(_) => {
                inner.ejected_until = None;
                inner.recovered_at = Some(now);
                (Health::Healthy, None)
            }
            None => (Health::Healthy, None),
        }
    }

    /// The weight policies should see at `now`: `weight` ramped linearly
    /// from 1 over `slow_start` after a recovery, `weight` itself otherwise.
    pub fn effective_weight(&self, weight: u32, slow_start: Duration, now: Instant) -> u32 {
        if slow_start.is_zero() || weight <= 1 {
            return weight;
        }
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match inner.recovered_at {
            Some(at) if now.saturating_duration_since(at) < slow_start => {
                let share =
                    now.saturating_duration_since(at).as_secs_f64() / slow_start.as_secs_f64();
                ((weight as f64 * share).ceil() as u32).clamp(1, weight)
            }
            _ => weight,
        }
    }

    /// When something about this backend changes by itself next: its
    /// ejection ends, or its slow-start weight should step up.
    pub fn next_change(&self, slow_start: Duration, now: Instant) -> Option<Instant> {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let ejection = inner.ejected_until.filter(|&t| t > now);
        let ramp = inner
            .recovered_at
            .filter(|&at| !slow_start.is_zero() && now.saturating_duration_since(at) < slow_start)
            .map(|_| now + (slow_start / 20).max(Duration::from_millis(50)));
        ejection.into_iter().chain(ramp).min()
    }

    /// Records one active check result; returns the transition it causes
    /// with `rise` passes or `fall` failures in a row.
    pub fn record_check(
        &self,
        result: Result<(), CheckError>,
        rise: u32,
        fall: u32,
        now: Instant,
    ) -> Option<CheckTransition> {
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        match result {
            Ok(()) => {
                self.checks_passed.fetch_add(1, Ordering::Relaxed);
                inner.check_streak = inner.check_streak.max(0) + 1;
                if inner.check_down && inner.check_streak >= rise as i64 {
                    inner.check_down = false;
                    inner.recovered_at = Some(now);
                    return Some(CheckTransition::Up);
                }
            }
            Err(why) => {
                self.checks_failed.fetch_add(1, Ordering::Relaxed);
                inner.check_streak = inner.check_streak.min(0) - 1;
                if !inner.check_down && -inner.check_streak >= fall as i64 {
                    inner.check_down = true;
                    inner.down_reason = Some(format!(
                        "health check failed {fall} times in a row, last: {}",
                        why.describe()
                    ));
                    return Some(CheckTransition::Down(why));
                }
            }
        }
        None
    }

    /// Counts one proxied request's outcome; returns the number of failures
    /// in a row when this one failed.
    pub fn record_outcome(&self, failed: bool) -> u32 {
        if failed {
            self.consecutive_errors.fetch_add(1, Ordering::Relaxed) + 1
        } else {
            // Read first: a store on every success would bounce the cache
            // line between cores for nothing.
            if self.consecutive_errors.load(Ordering::Relaxed) != 0 {
                self.consecutive_errors.store(0, Ordering::Relaxed);
            }
            0
        }
    }

    /// True while an ejection lasts.
    pub fn is_ejected(&self, now: Instant) -> bool {
        let inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        inner.ejected_until.is_some_and(|t| t > now)
    }

    /// Ejects the backend: the n-th ejection lasts n x `base`, at most
    /// `max`. Returns how long this one lasts.
    pub fn eject(&self, reason: String, base: Duration, max: Duration, now: Instant) -> Duration {
        let n = self.ejections.fetch_add(1, Ordering::Relaxed) + 1;
        let length = base
            .saturating_mul(n.min(u32::MAX as u64) as u32)
            .min(max.max(base));
        let mut inner = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        // Bounded by config validation; saturate all the same.
        inner.ejected_until = Some(
            now.checked_add(length)
                .unwrap_or(now + Duration::from_secs(7 * 86_400)),
        );
        inner.ejection_reason = Some(reason);
        self.consecutive_errors.store(0, Ordering::Relaxed);
        length
    }

    /// Sets or clears the operator's drain.
    pub fn set_draining(&self, draining: bool) {
        self.draining.store(draining, Ordering::Relaxed);
        if draining {
            self.leaving.notify_waiters();
        }
    }

    /// Marks the backend as gone from its upstream: its tunnels close.
    pub fn set_removed(&self) {
        self.removed.store(true, Ordering::Relaxed);
        self.leaving.notify_waiters();
    }

    /// Whether long-lived connections to the backend should end, and why:
    /// [`TunnelEnd::Removed`] or [`TunnelEnd::Drained`].
    pub fn leaving(&self) -> Option<TunnelEnd> {
        if self.removed.load(Ordering::Relaxed) {
            Some(TunnelEnd::Removed)
        } else if self.draining.load(Ordering::Relaxed) {
            Some(TunnelEnd::Drained)
        } else {
            None
        }
    }

    /// Waits until the backend is drained or removed ([`Self::leaving`]).
    pub async fn left(&self) -> TunnelEnd {
        loop {
            let notice = self.leaving.notified();
            tokio::pin!(notice);
            notice.as_mut().enable();
            if let Some(removed) = self.leaving() {
                return removed;
            }
            notice.await;
        }
    }

    /// Active checks passed in all.
    pub fn checks_passed(&self) -> u64 {
        self.checks_passed.load(Ordering::Relaxed)
    }

    /// Active checks failed in all.
    pub fn checks_failed(&self) -> u64 {
        self.checks_failed.load(Ordering::Relaxed)
    }

    /// Times ejected by outlier detection.
    pub fn ejections(&self) -> u64 {
        self.ejections.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn checks_take_fall_failures_to_go_down_and_rise_passes_to_come_back() {
        let state = BackendState::default();
        let now = Instant::now();
        let fail = || Err(CheckError::Status(500));
        assert!(state.record_check(fail(), 2, 3, now).is_none());
        assert!(state.record_check(fail(), 2, 3, now).is_none());
        // A pass in between starts the count again.
        assert!(state.record_check(Ok(()), 2, 3, now).is_none());
        assert!(state.record_check(fail(), 2, 3, now).is_none());
        assert!(state.record_check(fail(), 2, 3, now).is_none());
        assert!(matches!(
            state.record_check(fail(), 2, 3, now),
            Some(CheckTransition::Down(CheckError::Status(500)))
        ));
        assert_eq!(state.health(now).0, Health::Unhealthy);
        assert!(state.record_check(fail(), 2, 3, now).is_none());
        assert!(state.record_check(Ok(()), 2, 3, now).is_none());
        assert!(matches!(
            state.record_check(Ok(()), 2, 3, now),
            Some(CheckTransition::Up)
        ));
        assert_eq!(state.health(now), (Health::Healthy, None));
        assert_eq!((state.checks_passed(), state.checks_failed()), (3, 6));
    }

    #[test]
    fn ejections_grow_with_each_repeat_up_to_the_maximum() {
        let state = BackendState::default();
        let now = Instant::now();
        assert_eq!(state.eject("5xx".into(), 100 * MS, 250 * MS, now), 100 * MS);
        assert!(state.is_ejected(now + 99 * MS));
        assert_eq!(state.health(now).0, Health::Unhealthy);
        assert_eq!(state.next_change(Duration::ZERO, now), Some(now + 100 * MS));
        // The ejection ends by itself.
        assert_eq!(state.health(now + 100 * MS), (Health::Healthy, None));
        assert_eq!(state.eject("5xx".into(), 100 * MS, 250 * MS, now), 200 * MS);
        assert_eq!(state.eject("5xx".into(), 100 * MS, 250 * MS, now), 250 * MS);
        assert_eq!(state.ejections(), 3);
    }

    #[test]
    fn drain_wins_over_everything() {
        let state = BackendState::default();
        state.set_draining(true);
        assert_eq!(state.health(Instant::now()).0, Health::Draining);
        state.set_draining(false);
        assert_eq!(state.health(Instant::now()).0, Health::Healthy);
    }

    #[tokio::test]
    async fn tunnels_waiting_hear_of_a_drain_and_of_a_removal() {
        let state = std::sync::Arc::new(BackendState::default());
        assert_eq!(state.leaving(), None);
        let waiting = {
            let state = state.clone();
            tokio::spawn(async move { state.left().await })
        };
        tokio::task::yield_now().await;
        state.set_draining(false);
        assert!(!waiting.is_finished(), "enabling is no reason to leave");
        state.set_draining(true);
        assert_eq!(waiting.await.unwrap(), TunnelEnd::Drained);
        // Already leaving: no wait; a removal wins over a drain.
        state.set_removed();
        assert_eq!(state.left().await, TunnelEnd::Removed);
    }

    #[test]
    fn slow_start_ramps_weight_from_one_to_full() {
        let state = BackendState::default();
        let now = Instant::now();
        let window = 1000 * MS;
        assert_eq!(state.effective_weight(10, window, now), 10);
        state.eject("x".into(), 10 * MS, 10 * MS, now);
        let back = now + 10 * MS;
        state.health(back);
        assert_eq!(state.effective_weight(10, window, back), 1);
        assert_eq!(state.effective_weight(10, window, back + 500 * MS), 5);
        assert_eq!(state.effective_weight(10, window, back + 999 * MS), 10);
        assert_eq!(state.effective_weight(10, window, back + window), 10);
        assert!(state.next_change(window, back + 500 * MS).is_some());
        assert_eq!(state.next_change(window, back + window), None);
    }

    #[test]
    fn outcomes_count_failures_in_a_row() {
        let state = BackendState::default();
        assert_eq!(state.record_outcome(true), 1);
        assert_eq!(state.record_outcome(true), 2);
        assert_eq!(state.record_outcome(false), 0);
        assert_eq!(state.record_outcome(true), 1);
    }
}
