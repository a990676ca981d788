//! Counters of one upstream, for `/metrics`; carried across reloads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use super::retry::RetryBudget;
use crate::config::RetryConfig;
use crate::histogram::{Histogram, PLUGIN_CALL_SECONDS};
use crate::tls::client::TlsFailure;

/// What happened to an upstream's requests besides the backends' answers.
#[derive(Debug)]
pub struct UpstreamStats {
    /// Requests answered 503 because no backend was eligible (or the
    /// plugin chose none).
    pub no_backend: AtomicU64,
    /// Requests answered 503 because every candidate was at its in-flight
    /// limit.
    pub saturated: AtomicU64,
    /// Attempts retried on another backend.
    pub retries: AtomicU64,
    /// Retries not made because the retry budget was spent.
    pub retries_refused: AtomicU64,
    /// Balancer plugin calls that failed (trap, timeout, bad answer).
    pub plugin_failures: AtomicU64,
    /// Duration of balancer plugin calls.
    pub plugin_calls: Histogram,
    /// The retry budget.
    pub budget: RetryBudget,
}

impl UpstreamStats {
    /// Fresh counters with a budget for `retry`, continuing the counts of
    /// `previous` if given.
    pub fn new(retry: &RetryConfig, previous: Option<&UpstreamStats>) -> UpstreamStats {
        let carry = |pick: fn(&UpstreamStats) -> &AtomicU64| {
            AtomicU64::new(previous.map_or(0, |p| pick(p).load(Ordering::Relaxed)))
        };
        UpstreamStats {
            no_backend: carry(|s| &s.no_backend),
            saturated: carry(|s| &s.saturated),
            retries: carry(|s| &s.retries),
            retries_refused: carry(|s| &s.retries_refused),
            plugin_failures: carry(|s| &s.plugin_failures),
            plugin_calls: Histogram::new(PLUGIN_CALL_SECONDS),
            budget: RetryBudget::new(
                retry.budget_percent,
                retry.min_retries_per_second,
                Instant::now(),
            ),
        }
    }
}

/// TLS failures to an upstream's backends (requests and health checks), by
/// reason; shared by the client and the probe, carried across reloads.
#[derive(Debug, Default)]
pub struct TlsFailures {
    counts: [AtomicU64; TlsFailure::LABELS.len()],
}

impl TlsFailures {
    /// Counts one failure for `reason`.
    pub fn count(&self, reason: &TlsFailure) {
        self.counts[reason.index()].fetch_add(1, Ordering::Relaxed);
    }

    /// Each reason's label with its count, in [`TlsFailure::LABELS`] order.
    pub fn by_reason(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        (TlsFailure::LABELS.iter())
            .zip(&self.counts)
            .map(|(label, count)| (*label, count.load(Ordering::Relaxed)))
    }
}
