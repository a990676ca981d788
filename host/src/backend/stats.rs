//! Live load of one backend: in flight, latency, outcomes. Shared by every
//! backend set (and every reload) the backend appears in.

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use crate::histogram::{Histogram, REQUEST_SECONDS};

/// Live load of one backend, updated by the proxy and read by plugins
/// through the `load` import and by `/metrics`.
#[derive(Debug)]
pub struct BackendStats {
    in_flight: AtomicU32,
    ewma_latency_us: AtomicU32,
    consecutive_failures: AtomicU32,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Responses by status class: 1xx to 5xx.
    responses: [AtomicU64; 5],
    /// Time to the response headers of answered requests.
    pub duration: Histogram,
    /// Upgraded connections (WebSockets) to the backend.
    pub tunnels: super::TunnelStats,
}

impl Default for BackendStats {
    fn default() -> Self {
        BackendStats {
            in_flight: AtomicU32::new(0),
            ewma_latency_us: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            responses: Default::default(),
            duration: Histogram::new(REQUEST_SECONDS),
            tunnels: Default::default(),
        }
    }
}

/// Weight of a new sample in the latency EWMA.
const EWMA_ALPHA: f64 = 0.3;

impl BackendStats {
    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Moving average of response-header latency in microseconds.
    pub fn ewma_latency_us(&self) -> u32 {
        self.ewma_latency_us.load(Ordering::Relaxed)
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Requests sent in all.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests that failed in all.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Counts a request as started; dropping the guard counts it finished.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Responses answered by the backend with a status of class `class`
    /// (1 to 5).
    pub fn responses(&self, class: u16) -> u64 {
        self.responses
            .get(usize::from(class).wrapping_sub(1))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Records a response's status and header latency.
    pub fn record_response(&self, status: u16, latency: Duration) {
        if let Some(counter) = self
            .responses
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.duration.observe(latency);
        self.record_success(latency);
    }

    /// Records a response's header latency.
    pub fn record_success(&self, latency: Duration) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        let sample = latency.as_micros().min(u32::MAX as u128) as f64;
        let old = self.ewma_latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old as f64 + EWMA_ALPHA * (sample - old as f64)
        };
        self.ewma_latency_us
            .store(new.round().max(1.0) as u32, Ordering::Relaxed);
    }

    /// Records a failed request (connect error, timeout).
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request in flight to a backend; counted until dropped, which for a
/// proxied response is when its body has been sent or abandoned.
#[derive(Debug)]
pub struct InFlight(Arc<BackendStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let stats = Arc::new(BackendStats::default());
        let a = stats.start();
        let b = stats.start();
        assert_eq!(stats.in_flight(), 2);
        drop(a);
        assert_eq!(stats.in_flight(), 1);
        drop(b);
        assert_eq!((stats.in_flight(), stats.requests()), (0, 2));
    }

    #[test]
    fn ewma_starts_at_first_sample_and_moves_toward_new_ones() {
        let stats = BackendStats::default();
        stats.record_success(Duration::from_micros(1000));
        assert_eq!(stats.ewma_latency_us(), 1000);
        stats.record_success(Duration::from_micros(2000));
        assert_eq!(stats.ewma_latency_us(), 1300);
        stats.record_failure();
        stats.record_failure();
        assert_eq!(stats.consecutive_failures(), 2);
        stats.record_success(Duration::from_micros(1300));
        assert_eq!(stats.consecutive_failures(), 0);
    }
}
