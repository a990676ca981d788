//! The limits every plugin call and instance runs under, read from the
//! `[plugins]` section, and the epoch ticks deadlines are counted in.

use std::time::Duration;

use super::quarantine::{self, QuarantinePolicy};

/// The finest epoch tick: no call timeout is measured finer than this.
const MIN_TICK: Duration = Duration::from_millis(1);

/// The coarsest epoch tick, whatever the call timeout.
const MAX_TICK: Duration = Duration::from_millis(10);

/// The shortest deadline for instantiating a plugin and running its `init`.
const MIN_INIT_TIMEOUT: Duration = Duration::from_millis(100);

/// `timeout` in ticks of `tick`, rounded up, plus one for the tick already
/// under way when the deadline is set.
fn ticks(timeout: Duration, tick: Duration) -> u64 {
    let tick = tick.as_micros().max(1);
    (timeout.as_micros().div_ceil(tick) as u64).max(1) + 1
}

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

    /// How often the epoch advances: half the call timeout, between 1 and
    /// 10 ms. A call is cut off after at least its timeout and at most two
    /// ticks more; one tick more when the timeout is a whole number of
    /// ticks, as it is up to 20 ms (the default 5 ms: between 5 and 7.5 ms,
    /// for 400 ticker wake-ups a second while plugins are called and none
    /// while they are not; see `ticker`).
    pub(crate) fn epoch_tick(&self) -> Duration {
        (self.timeout / 2).clamp(MIN_TICK, MAX_TICK)
    }

    /// The deadline of one call in epoch ticks, rounded up, plus one for the
    /// tick already under way.
    pub(crate) fn deadline_ticks(&self) -> u64 {
        ticks(self.timeout, self.epoch_tick())
    }

    /// The deadline for making an instance and running its `init`: a
    /// one-off per instance, which may touch fresh memory and parse
    /// settings, so it gets twenty times the call timeout, and at least
    /// [`MIN_INIT_TIMEOUT`].
    pub(crate) fn init_deadline_ticks(&self) -> u64 {
        ticks(self.init_timeout(), self.epoch_tick())
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
    fn the_tick_is_half_the_timeout_between_1_and_10_ms() {
        assert_eq!(with_timeout(5).epoch_tick(), Duration::from_micros(2_500));
        assert_eq!(with_timeout(1).epoch_tick(), MIN_TICK);
        assert_eq!(with_timeout(100).epoch_tick(), MAX_TICK);
    }

    #[test]
    fn a_deadline_is_never_shorter_than_its_timeout_nor_two_ticks_longer() {
        for ms in [1, 2, 3, 5, 7, 10, 25, 100, 1_000] {
            let limits = with_timeout(ms);
            let tick = limits.epoch_tick();
            let ticks = u32::try_from(limits.deadline_ticks()).unwrap();
            // The deadline is set somewhere inside a tick: the call traps
            // after between ticks - 1 and ticks whole ticks.
            assert!(
                tick * (ticks - 1) >= limits.timeout,
                "{ms} ms: {ticks} ticks"
            );
            assert!(tick * ticks <= limits.timeout + tick * 2, "{ms} ms");
            if ms <= 20 {
                assert!(tick * ticks <= limits.timeout + tick, "{ms} ms");
            }
            let init = u32::try_from(limits.init_deadline_ticks()).unwrap();
            assert!(tick * (init - 1) >= limits.init_timeout(), "{ms} ms init");
        }
    }
}
