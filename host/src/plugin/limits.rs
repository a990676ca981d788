//! The limits every plugin call and instance runs under, read from the
//! `[plugins]` section.

use std::time::Duration;

use super::quarantine::{self, QuarantinePolicy};

/// The shortest deadline for instantiating a plugin and running its `init`.
const MIN_INIT_TIMEOUT: Duration = Duration::from_millis(100);

/// The worker threads weir's runtime runs (tokio's default: one per CPU),
/// which the CPU budget is a share of.
fn workers() -> u32 {
    std::thread::available_parallelism().map_or(1, |n| n.get().try_into().unwrap_or(u32::MAX))
}

/// Sandbox limits applied to every plugin call and instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PluginLimits {
    /// Longest one call may run.
    pub timeout: Duration,
    /// Most linear memory one instance may have, in bytes.
    pub memory_bytes: usize,
    /// Most instances alive at once in this runtime.
    pub max_instances: u32,
    /// When a pool that keeps failing, or spends past its CPU budget, is
    /// quarantined.
    pub quarantine: QuarantinePolicy,
    /// Log lines each plugin (by name, all instances together) may write
    /// per second; see [`LogLimiter`].
    pub log_lines_per_second: u32,
}

impl PluginLimits {
    /// Reads the limits from the `[plugins]` section.
    pub fn from_config(config: &crate::config::PluginsConfig) -> Self {
        PluginLimits {
            timeout: Duration::from_millis(config.timeout_ms),
            memory_bytes: (config.memory_mib as usize) << 20,
            max_instances: config.max_instances,
            quarantine: QuarantinePolicy {
                after_failures: config.quarantine_after_failures,
                base: Duration::from_millis(config.quarantine_ms),
                max: Duration::from_millis(config.quarantine_max_ms),
                cpu_budget: quarantine::WINDOW * workers() * config.cpu_budget_percent / 100,
                slow_call: Duration::from_millis(config.timeout_ms) * config.slow_call_percent
                    / 100,
            },
            log_lines_per_second: config.log_lines_per_second,
        }
    }

    /// How long one call runs before it is cut off: its timeout and half
    /// again (the default 5 ms: 7.5 ms). The grace is the upper end of the
    /// window the fixed epoch tick of half the timeout gave (a call was cut
    /// off after between its timeout and one tick more): a call descheduled
    /// on a busy CPU near the end of its timeout is not cut off for it,
    /// while a spinning one is stopped at a fixed point.
    pub fn cutoff(&self) -> Duration {
        self.timeout + self.timeout / 2
    }

    /// Longest instantiation plus `init` may run.
    pub fn init_timeout(&self) -> Duration {
        (self.timeout * 20).max(MIN_INIT_TIMEOUT)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_timeout(ms: u64) -> PluginLimits {
        let config = crate::config::PluginsConfig::default();
        PluginLimits {
            timeout: Duration::from_millis(ms),
            ..PluginLimits::from_config(&config)
        }
    }

    #[test]
    fn a_call_is_cut_off_at_its_timeout_and_half_again() {
        assert_eq!(with_timeout(5).cutoff(), Duration::from_micros(7_500));
        for ms in [1, 2, 3, 5, 7, 10, 25, 100, 1_000] {
            let limits = with_timeout(ms);
            assert!(limits.cutoff() >= limits.timeout, "{ms} ms");
            assert!(limits.cutoff() <= limits.timeout * 3 / 2, "{ms} ms");
        }
    }

    #[test]
    fn instantiation_gets_twenty_timeouts_and_at_least_100_ms() {
        assert_eq!(with_timeout(5).init_timeout(), MIN_INIT_TIMEOUT);
        assert_eq!(with_timeout(50).init_timeout(), Duration::from_secs(1));
        for ms in [1, 2, 3, 5, 7, 10, 25, 100, 1_000] {
            let limits = with_timeout(ms);
            assert!(limits.init_timeout() >= limits.timeout * 20, "{ms} ms");
        }
    }
}
