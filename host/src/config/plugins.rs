//! `[plugins]`: the plugin directory and the sandbox every call runs in,
//! and their checks.

use std::path::PathBuf;

use serde::Deserialize;

use super::validate::{Checker, Place};
use super::{ConfigError, MAX_PERIOD_MS, MAX_TIMEOUT_MS};

/// Plugin log lines each plugin may write per second, by default
/// (`plugins.log_lines_per_second`).
pub const DEFAULT_LINES_PER_SECOND: u32 = 100;

/// The highest `plugins.log_lines_per_second` the config accepts.
pub const MAX_LINES_PER_SECOND: u32 = 100_000;

/// Plugin directory and the sandbox every plugin call runs in.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct PluginsConfig {
    /// Directory holding `NAME.wasm` components, relative to the config file.
    pub dir: PathBuf,
    /// Longest a single plugin call may run, in milliseconds.
    pub timeout_ms: u64,
    /// Most linear memory one plugin instance may use, in MiB.
    pub memory_mib: u64,
    /// Most plugin instances alive at once, across all upstreams.
    pub max_instances: u32,
    /// Watch the plugin directory (and the config file) and reload on change.
    pub watch: bool,
    /// How often the polling watcher looks, in milliseconds, where file
    /// events are unavailable (or `WEIR_WATCH_MODE=poll`); a change is then
    /// applied once the file has stayed the same for one interval. With
    /// events a change applies once writes have settled (about 100 ms).
    pub watch_interval_ms: u64,
    /// Keep compiled plugins on disk, keyed by content, so a restart with
    /// unchanged plugins does not compile again.
    pub cache: bool,
    /// Where the compiled-code cache lives; default `$HOME/.cache/weir`.
    pub cache_dir: Option<PathBuf>,
    /// Failed calls in a row that quarantine a plugin pool (one plugin
    /// serving one upstream or one place in a chain); 0: never.
    pub quarantine_after_failures: u32,
    /// The first quarantine's length in milliseconds; each one in a row
    /// doubles it.
    pub quarantine_ms: u64,
    /// The longest quarantine, in milliseconds.
    pub quarantine_max_ms: u64,
    /// Share of all worker threads' time (percent, per second) one pool's
    /// calls may take before it is quarantined; 0: no budget.
    pub cpu_budget_percent: u32,
    /// Eight calls in a row each over this share of `timeout_ms` (percent)
    /// quarantine the pool; 0: never.
    pub slow_call_percent: u32,
    /// Log lines each plugin may write per second, all its instances
    /// together, with a burst of two seconds'
    /// worth; lines over it are dropped and counted. Within
    /// 1..=[`MAX_LINES_PER_SECOND`].
    pub log_lines_per_second: u32,
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig {
            dir: PathBuf::from("plugins"),
            timeout_ms: 5,
            memory_mib: 64,
            max_instances: 1000,
            watch: true,
            watch_interval_ms: 500,
            cache: true,
            cache_dir: None,
            quarantine_after_failures: 5,
            quarantine_ms: 1_000,
            quarantine_max_ms: 60_000,
            cpu_budget_percent: 50,
            slow_call_percent: 50,
            log_lines_per_second: DEFAULT_LINES_PER_SECOND,
        }
    }
}

impl Checker<'_> {
    /// Every sandbox limit within its bounds.
    pub(super) fn plugins(&self, plugins: &PluginsConfig) -> Result<(), ConfigError> {
        let at = |key| Place::of(&["plugins", key]);
        let at_least_one = [
            (plugins.timeout_ms, "timeout_ms"),
            (plugins.watch_interval_ms, "watch_interval_ms"),
            (u64::from(plugins.max_instances), "max_instances"),
        ];
        for (value, key) in at_least_one {
            self.bounded(value, 1..=u64::MAX, &at(key), &format!("plugins.{key}"), "")?;
        }
        let within = [
            (plugins.memory_mib, 1..=4096, "memory_mib"),
            (plugins.quarantine_ms, 1..=MAX_PERIOD_MS, "quarantine_ms"),
            (
                u64::from(plugins.cpu_budget_percent),
                0..=100,
                "cpu_budget_percent",
            ),
            (
                u64::from(plugins.slow_call_percent),
                0..=100,
                "slow_call_percent",
            ),
            (
                u64::from(plugins.log_lines_per_second),
                1..=u64::from(MAX_LINES_PER_SECOND),
                "log_lines_per_second",
            ),
        ];
        for (value, range, key) in within {
            self.within(value, range, &at(key), &format!("plugins.{key}"))?;
        }
        let max = plugins.quarantine_max_ms;
        self.ensure(
            (plugins.quarantine_ms..=MAX_TIMEOUT_MS).contains(&max),
            &at("quarantine_max_ms"),
            || format!("plugins.quarantine_max_ms must be within quarantine_ms..={MAX_TIMEOUT_MS}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{GOOD, assert_refused_at, good_with, parse, position_of};
    use super::MAX_LINES_PER_SECOND;

    #[test]
    fn plugin_log_rate_is_bounded() {
        assert_eq!(parse(GOOD).unwrap().plugins.log_lines_per_second, 100);
        for rate in [0, MAX_LINES_PER_SECOND + 1] {
            let text = format!("{GOOD}\n[plugins]\nlog_lines_per_second = {rate}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains("log_lines_per_second must be within"), "{err}");
        }
        let text = format!("{GOOD}\n[plugins]\nlog_lines_per_second = 5\n");
        assert_eq!(parse(&text).unwrap().plugins.log_lines_per_second, 5);
    }

    #[test]
    fn quarantine_settings_are_bounded() {
        let plugins = parse(GOOD).unwrap().plugins;
        assert_eq!(
            (
                plugins.quarantine_after_failures,
                plugins.quarantine_ms,
                plugins.quarantine_max_ms,
                plugins.cpu_budget_percent,
                plugins.slow_call_percent
            ),
            (5, 1_000, 60_000, 50, 50)
        );
        for (lines, expected) in [
            ("quarantine_ms = 0", "quarantine_ms must be within"),
            ("quarantine_ms = 3600001", "quarantine_ms must be within"),
            (
                "quarantine_ms = 5000\nquarantine_max_ms = 4000",
                "quarantine_max_ms must be within",
            ),
            (
                "quarantine_max_ms = 86400001",
                "quarantine_max_ms must be within",
            ),
            (
                "cpu_budget_percent = 101",
                "cpu_budget_percent must be within",
            ),
            (
                "slow_call_percent = 101",
                "slow_call_percent must be within",
            ),
            ("quarantine_after_failures = -1", "invalid value"),
        ] {
            let text = format!("{GOOD}\n[plugins]\n{lines}\n");
            let err = parse(&text).unwrap_err().to_string();
            assert!(err.contains(expected), "{lines}: {err}");
        }
        // Zero turns each check off, and is accepted.
        let off = "quarantine_after_failures = 0\ncpu_budget_percent = 0\nslow_call_percent = 0";
        assert!(parse(&format!("{GOOD}\n[plugins]\n{off}\n")).is_ok());
    }

    /// Each `[plugins]` bound names its key, the rule, and the value's line.
    #[test]
    fn each_plugin_bound_points_at_its_value() {
        let max_rate = MAX_LINES_PER_SECOND;
        let rate = format!("log_lines_per_second = {}", max_rate + 1);
        for (line, rule) in [
            ("timeout_ms = 0", "plugins.timeout_ms must be at least 1"),
            (
                "watch_interval_ms = 0",
                "plugins.watch_interval_ms must be at least 1",
            ),
            (
                "max_instances = 0",
                "plugins.max_instances must be at least 1",
            ),
            (
                "memory_mib = 0",
                "plugins.memory_mib must be within 1..=4096",
            ),
            (
                "memory_mib = 4097",
                "plugins.memory_mib must be within 1..=4096",
            ),
            (
                "quarantine_ms = 0",
                "plugins.quarantine_ms must be within 1..=3600000",
            ),
            (
                "cpu_budget_percent = 101",
                "plugins.cpu_budget_percent must be within 0..=100",
            ),
            (
                "slow_call_percent = 101",
                "plugins.slow_call_percent must be within 0..=100",
            ),
            (
                "log_lines_per_second = 0",
                "plugins.log_lines_per_second must be within",
            ),
            (&rate, "plugins.log_lines_per_second must be within"),
            (
                "quarantine_max_ms = 86400001",
                "plugins.quarantine_max_ms must be within",
            ),
        ] {
            let text = good_with(&format!("[plugins]\nwatch = true\n{line}"));
            assert_refused_at(&text, line, &[rule]);
        }
    }

    #[test]
    fn a_bound_broken_by_a_default_points_at_the_table() {
        // quarantine_max_ms keeps its default (60 s), now below quarantine_ms.
        let text = good_with("[plugins]\nquarantine_ms = 70000");
        assert_refused_at(&text, "[plugins]", &["quarantine_max_ms must be within"]);
    }

    /// Values serde cannot take are refused at the value, by toml.
    #[test]
    fn hostile_plugin_values_point_at_their_line() {
        for (line, reason) in [
            ("timeout_ms = 18446744073709551616", "integer"),
            ("timeout_ms = 99999999999999999999999999", "integer"),
            ("timeout_ms = -5", "invalid value"),
            ("max_instances = 4294967296", "invalid value"),
            ("timeout_ms = \"5\"", "invalid type"),
            ("timeout_ms = 5.5", "invalid type"),
            ("watch = 1", "invalid type"),
            ("dir = [\"a\"]", "invalid type"),
        ] {
            let text = good_with(&format!("[plugins]\n{line}"));
            assert_refused_at(&text, line, &[reason]);
        }
        let text = good_with("[plugins]\ntimeout_ms = 5\ntimeout_ms = 6");
        // A duplicate key is pointed at by its key.
        let (line, _) = position_of(&text, "timeout_ms = 6");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.starts_with(&format!("weir.toml:{line}:1: duplicate key")),
            "{err}"
        );
        let text = good_with("[plugins]\n[plugins]");
        let err = parse(&text).unwrap_err().to_string();
        assert!(
            err.contains("duplicate") || err.contains("invalid table header"),
            "{err}"
        );
    }
}
