//! The retry budget: retries may add only a share of an upstream's request
//! rate (plus a small floor), so during an outage they cannot multiply the
//! load on the backends that are left.
//!
//! A token bucket: every request deposits `percent / 100` of a token, time
//! adds `min_per_second` tokens per second, and each retry takes one whole
//! token. The bucket holds at most ten seconds' worth of the floor, or ten
//! tokens, whichever is more.

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Instant;

/// Milli-tokens per token.
const TOKEN: i64 = 1000;

/// A token bucket shared by one upstream's requests.
#[derive(Debug)]
pub struct RetryBudget {
    tokens: AtomicI64,
    /// Milliseconds since `epoch` of the last time-based refill.
    refilled_ms: AtomicU64,
    epoch: Instant,
    /// Milli-tokens each request deposits.
    per_request: i64,
    /// Milli-tokens per millisecond of time (= tokens per second).
    per_ms: i64,
    cap: i64,
}

impl RetryBudget {
    /// A budget of `percent` of requests plus `min_per_second` retries per
    /// second, starting full.
    pub fn new(percent: u32, min_per_second: u32, now: Instant) -> RetryBudget {
        let cap = (i64::from(min_per_second) * 10).max(10) * TOKEN;
        RetryBudget {
            tokens: AtomicI64::new(cap),
            refilled_ms: AtomicU64::new(0),
            epoch: now,
            per_request: i64::from(percent) * TOKEN / 100,
            per_ms: i64::from(min_per_second),
            cap,
        }
    }

    /// Counts one request (first attempts only).
    pub fn deposit(&self) {
        if self.per_request == 0 {
            return;
        }
        let tokens = self.tokens.fetch_add(self.per_request, Ordering::Relaxed);
        if tokens + self.per_request > self.cap {
            // Racy but harmless: the cap is a bound on bursts, not a count.
            self.tokens.store(self.cap, Ordering::Relaxed);
        }
    }

    /// Takes the token for one retry; false when the budget is spent.
    pub fn withdraw(&self, now: Instant) -> bool {
        self.refill(now);
        let mut tokens = self.tokens.load(Ordering::Relaxed);
        loop {
            if tokens < TOKEN {
                return false;
            }
            match self.tokens.compare_exchange_weak(
                tokens,
                tokens - TOKEN,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(actual) => tokens = actual,
            }
        }
    }

    fn refill(&self, now: Instant) {
        let now_ms = now.saturating_duration_since(self.epoch).as_millis() as u64;
        let last = self.refilled_ms.load(Ordering::Relaxed);
        if now_ms <= last
            || self
                .refilled_ms
                .compare_exchange(last, now_ms, Ordering::Relaxed, Ordering::Relaxed)
                .is_err()
        {
            return;
        }
        let add = (now_ms - last) as i64 * self.per_ms;
        let tokens = self.tokens.fetch_add(add, Ordering::Relaxed) + add;
        if tokens > self.cap {
            self.tokens.store(self.cap, Ordering::Relaxed);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn spend(budget: &RetryBudget, now: Instant) -> usize {
        std::iter::from_fn(|| budget.withdraw(now).then_some(()))
            .take(10_000)
            .count()
    }

    #[test]
    fn starts_full_then_allows_the_share_of_requests() {
        let now = Instant::now();
        let budget = RetryBudget::new(20, 3, now);
        // Full: ten seconds of the floor (at least ten tokens).
        assert_eq!(spend(&budget, now), 30);
        for _ in 0..100 {
            budget.deposit();
        }
        // 20% of 100 requests.
        assert_eq!(spend(&budget, now), 20);
    }

    #[test]
    fn time_refills_the_floor_up_to_the_cap() {
        let now = Instant::now();
        let budget = RetryBudget::new(0, 5, now);
        assert_eq!(spend(&budget, now), 50);
        assert_eq!(spend(&budget, now + Duration::from_secs(1)), 5);
        assert_eq!(spend(&budget, now + Duration::from_secs(100)), 50);
    }

    #[test]
    fn deposits_never_exceed_the_cap() {
        let now = Instant::now();
        let budget = RetryBudget::new(100, 1, now);
        for _ in 0..1000 {
            budget.deposit();
        }
        assert_eq!(spend(&budget, now), 10);
    }
}
