//! `[upstreams.NAME]`: timeouts, passive health and retries of a group of
//! backends, and their checks.

use std::time::Duration;

use serde::Deserialize;

use super::validate::{Checker, Place};
use super::{BackendConfig, BalancerConfig, ConfigError, HealthCheckConfig, UpstreamTlsConfig};
use super::{H2Config, UpstreamProtocol};
use super::{MAX_EJECTION_MS, MAX_PERIOD_MS, MAX_TIMEOUT_MS};

/// A named group of backends and the policy that chooses among them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamConfig {
    /// The backends (`[[upstreams.NAME.backends]]`).
    #[serde(default)]
    pub backends: Vec<BackendConfig>,
    /// The balancing plugin; absent means weir's native round robin.
    pub balancer: Option<BalancerConfig>,
    /// Longest wait for a TCP connection to a backend, in milliseconds.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_ms: u64,
    /// Longest wait for a backend's response headers, in milliseconds.
    #[serde(default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// How long an unused keep-alive connection to a backend is kept, in
    /// milliseconds.
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout_ms: u64,
    /// Most idle keep-alive connections kept per backend.
    #[serde(default = "default_max_idle")]
    pub max_idle_per_backend: usize,
    /// Most requests in flight to one backend at once (0: no limit); a
    /// backend's own `max_in_flight` overrides it. A backend at its limit is
    /// skipped and the balancer asked again.
    #[serde(default)]
    pub max_in_flight_per_backend: u32,
    /// After a backend recovers (health check or ejection), ramp the weight
    /// that policies see from 1 up to its full weight over this long (0:
    /// at once).
    #[serde(default)]
    pub slow_start_ms: u64,
    /// Active health checking (`[upstreams.NAME.health_check]`); absent:
    /// none.
    pub health_check: Option<HealthCheckConfig>,
    /// Passive health (`[upstreams.NAME.outlier_detection]`); absent: none.
    pub outlier_detection: Option<OutlierConfig>,
    /// Retrying requests that never reached a backend
    /// (`[upstreams.NAME.retry]`).
    #[serde(default)]
    pub retry: RetryConfig,
    /// TLS to the backends (`[upstreams.NAME.tls]`); absent: plain HTTP.
    pub tls: Option<UpstreamTlsConfig>,
    /// The HTTP version spoken to the backends: `http1`, `h2c`, `h2`.
    #[serde(default)]
    pub protocol: UpstreamProtocol,
    /// HTTP/2 connection sharing and keep-alive (`[upstreams.NAME.h2]`).
    #[serde(default)]
    pub h2: H2Config,
    /// An upgraded connection (a WebSocket) that passes no byte either way
    /// for this long is closed, in milliseconds.
    #[serde(default = "default_tunnel_idle_timeout")]
    pub tunnel_idle_timeout_ms: u64,
    /// How long a tunnel goes on after its backend is drained or removed,
    /// or weir begins to shut down, before it is closed, in milliseconds.
    #[serde(default = "default_tunnel_drain_grace")]
    pub tunnel_drain_grace_ms: u64,
}

/// Ejecting backends that keep failing real requests.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OutlierConfig {
    /// Consecutive failures (connect errors, timeouts, 5xx answers) that
    /// eject a backend.
    pub consecutive_failures: u32,
    /// First ejection's length, in milliseconds; the n-th lasts n times as
    /// long.
    pub base_ejection_ms: u64,
    /// Longest an ejection lasts, in milliseconds.
    pub max_ejection_ms: u64,
    /// Most of the upstream's backends ejected at once, in percent.
    pub max_ejection_percent: u32,
}

impl Default for OutlierConfig {
    fn default() -> Self {
        OutlierConfig {
            consecutive_failures: 5,
            base_ejection_ms: 30_000,
            max_ejection_ms: 300_000,
            max_ejection_percent: 50,
        }
    }
}

/// Retrying a request whose backend could not be reached.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Further attempts after the first, each on a backend not tried yet
    /// (0: never retry).
    pub retries: u32,
    /// Retries may add at most this percentage to the upstream's request
    /// rate (the retry budget) ...
    pub budget_percent: u32,
    /// ... plus this many retries per second.
    pub min_retries_per_second: u32,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            retries: 1,
            budget_percent: 20,
            min_retries_per_second: 10,
        }
    }
}

fn default_connect_timeout() -> u64 {
    1_000
}
fn default_request_timeout() -> u64 {
    30_000
}
fn default_idle_timeout() -> u64 {
    60_000
}
fn default_max_idle() -> usize {
    256
}
fn default_tunnel_idle_timeout() -> u64 {
    300_000
}
fn default_tunnel_drain_grace() -> u64 {
    5_000
}

impl UpstreamConfig {
    /// The connect timeout as a duration.
    pub fn connect_timeout(&self) -> Duration {
        Duration::from_millis(self.connect_timeout_ms)
    }
    /// The response-header timeout as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
    /// The idle keep-alive timeout as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }
    /// The tunnel idle timeout as a duration.
    pub fn tunnel_idle_timeout(&self) -> Duration {
        Duration::from_millis(self.tunnel_idle_timeout_ms)
    }
    /// The tunnel drain grace as a duration.
    pub fn tunnel_drain_grace(&self) -> Duration {
        Duration::from_millis(self.tunnel_drain_grace_ms)
    }
    /// The TLS settings as loaded when the config was checked; none for
    /// plain HTTP.
    pub fn tls_material(&self) -> Option<&std::sync::Arc<super::TlsMaterial>> {
        self.tls.as_ref().and_then(|t| t.material())
    }
}

impl Checker<'_> {
    /// The upstream's backends, timeouts, health checking, passive health,
    /// retries and balancer.
    pub(super) fn upstream(
        &self,
        name: &str,
        upstream: &UpstreamConfig,
    ) -> Result<(), ConfigError> {
        let at = Place::of(&["upstreams", name]);
        self.backends(&at.key("backends"), name, &upstream.backends)?;
        for (value, key) in [
            (upstream.connect_timeout_ms, "connect_timeout_ms"),
            (upstream.request_timeout_ms, "request_timeout_ms"),
            (upstream.idle_timeout_ms, "idle_timeout_ms"),
            (upstream.tunnel_idle_timeout_ms, "tunnel_idle_timeout_ms"),
        ] {
            let what = format!("upstream {name}: {key}");
            self.bounded(value, 1..=MAX_TIMEOUT_MS, &at.key(key), &what, " (1 day)")?;
        }
        if let Some(check) = &upstream.health_check {
            self.health_check(&at.key("health_check"), name, check)?;
        }
        if let Some(outlier) = &upstream.outlier_detection {
            self.outlier(&at.key("outlier_detection"), name, outlier)?;
        }
        let what = format!("upstream {name}: slow_start_ms");
        let slow_start = at.key("slow_start_ms");
        self.bounded(
            upstream.slow_start_ms,
            0..=MAX_PERIOD_MS,
            &slow_start,
            &what,
            " (1 hour)",
        )?;
        let key = "tunnel_drain_grace_ms";
        let what = format!("upstream {name}: {key}");
        let grace = upstream.tunnel_drain_grace_ms;
        self.bounded(grace, 0..=MAX_PERIOD_MS, &at.key(key), &what, " (1 hour)")?;
        let retries = u64::from(upstream.retry.retries);
        let what = format!("upstream {name}: retry.retries");
        self.within(retries, 0..=10, &at.key("retry").key("retries"), &what)?;
        if let Some(balancer) = &upstream.balancer {
            self.plugin_name(&format!("upstream {name}:"), &balancer.plugin)?;
        }
        if let Some(tls) = &upstream.tls {
            self.upstream_tls(&at.key("tls"), name, tls)?;
        }
        self.protocol(&at, name, upstream)
    }

    fn outlier(
        &self,
        at: &Place<'_>,
        name: &str,
        outlier: &OutlierConfig,
    ) -> Result<(), ConfigError> {
        let what = |key| format!("upstream {name}: outlier_detection {key}");
        let failures = u64::from(outlier.consecutive_failures);
        let key = "consecutive_failures";
        self.bounded(failures, 1..=u64::MAX, &at.key(key), &what(key), "")?;
        for (value, min, key) in [
            (outlier.base_ejection_ms, 1, "base_ejection_ms"),
            (outlier.max_ejection_ms, 0, "max_ejection_ms"),
        ] {
            self.bounded(
                value,
                min..=MAX_EJECTION_MS,
                &at.key(key),
                &what(key),
                " (7 days)",
            )?;
        }
        let percent = u64::from(outlier.max_ejection_percent);
        let key = "max_ejection_percent";
        self.within(percent, 0..=100, &at.key(key), &what(key))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{GOOD, assert_refused_at, good_with, parse};

    #[test]
    fn periods_are_bounded() {
        for (extra, what) in [
            (
                "[upstreams.web.health_check]\ninterval_ms = 18446744073709551615\n",
                "interval_ms must be at most",
            ),
            (
                "[upstreams.web.health_check]\ntimeout_ms = 3600001\n",
                "timeout_ms must be at most",
            ),
            (
                "[upstreams.web.outlier_detection]\nbase_ejection_ms = 18446744073709551615\n",
                "base_ejection_ms must be at most",
            ),
            (
                "[upstreams.web.outlier_detection]\nmax_ejection_ms = 604800001\n",
                "max_ejection_ms must be at most",
            ),
        ] {
            let err = parse(&format!("{GOOD}\n{extra}")).unwrap_err().to_string();
            assert!(err.contains(what), "{extra}: {err}");
        }
        let text = GOOD.replace(
            "[upstreams.web]\n",
            "[upstreams.web]\nidle_timeout_ms = 86400001\n",
        );
        assert!(
            parse(&text)
                .unwrap_err()
                .to_string()
                .contains("idle_timeout_ms must be at most")
        );
        let text = GOOD.replace(
            "[upstreams.web]\n",
            "[upstreams.web]\nslow_start_ms = 3600001\n",
        );
        assert!(
            parse(&text)
                .unwrap_err()
                .to_string()
                .contains("slow_start_ms must be at most")
        );
    }

    /// `GOOD` with `lines` added to `[upstreams.web]`.
    fn web_with(lines: &str) -> String {
        GOOD.replace("[upstreams.web]\n", &format!("[upstreams.web]\n{lines}\n"))
    }

    #[test]
    fn each_upstream_bound_points_at_its_value() {
        for key in [
            "connect_timeout_ms",
            "request_timeout_ms",
            "idle_timeout_ms",
            "tunnel_idle_timeout_ms",
        ] {
            let zero = format!("{key} = 0");
            let rule = format!("upstream web: {key} must be at least 1");
            assert_refused_at(&web_with(&zero), &zero, &[&rule]);
            let long = format!("{key} = 86400001");
            let rule = format!("upstream web: {key} must be at most 86400000 (1 day)");
            assert_refused_at(&web_with(&long), &long, &[&rule]);
        }
        let line = "slow_start_ms = 3600001";
        assert_refused_at(
            &web_with(line),
            line,
            &["upstream web: slow_start_ms must be at most"],
        );
        let line = "tunnel_drain_grace_ms = 3600001";
        assert_refused_at(
            &web_with(line),
            line,
            &["upstream web: tunnel_drain_grace_ms must be at most 3600000 (1 hour)"],
        );
        let line = "retry.retries = 11";
        assert_refused_at(
            &web_with(line),
            line,
            &["upstream web: retry.retries must be within 0..=10"],
        );
        let text = good_with("[upstreams.web.retry]\nretries = 11");
        assert_refused_at(
            &text,
            "retries = 11",
            &["retry.retries must be within 0..=10"],
        );
    }

    #[test]
    fn each_outlier_bound_points_at_its_value() {
        for (line, rule) in [
            (
                "consecutive_failures = 0",
                "outlier_detection consecutive_failures must be at least 1",
            ),
            (
                "base_ejection_ms = 0",
                "outlier_detection base_ejection_ms must be at least 1",
            ),
            (
                "base_ejection_ms = 604800001",
                "outlier_detection base_ejection_ms must be at most 604800000 (7 days)",
            ),
            (
                "max_ejection_ms = 604800001",
                "outlier_detection max_ejection_ms must be at most",
            ),
            (
                "max_ejection_percent = 101",
                "outlier_detection max_ejection_percent must be within 0..=100",
            ),
        ] {
            let text = good_with(&format!("[upstreams.web.outlier_detection]\n{line}"));
            assert_refused_at(&text, line, &["upstream web:", rule]);
        }
        // The same table written inline still points at the value.
        let text = web_with("outlier_detection = { max_ejection_percent = 101 }");
        assert_refused_at(
            &text,
            "max_ejection_percent = 101",
            &["max_ejection_percent"],
        );
    }

    #[test]
    fn a_second_upstream_is_found_by_its_name() {
        let text = good_with("[upstreams.api]\nconnect_timeout_ms = 0");
        assert_refused_at(
            &text,
            "connect_timeout_ms = 0",
            &["upstream api: connect_timeout_ms"],
        );
    }
}
