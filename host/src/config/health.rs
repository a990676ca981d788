//! `[upstreams.NAME.health_check]`: how an upstream's backends are probed,
//! and its checks.

use serde::Deserialize;
use toml::Spanned;

use super::validate::{Checker, Place};
use super::{ConfigError, MAX_PERIOD_MS};

/// How an upstream's backends are probed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` (a request whose answer is checked), `tcp` (a connect) or
    /// `grpc` (`grpc.health.v1.Health/Check` over HTTP/2).
    #[serde(rename = "type", default)]
    pub kind: HealthCheckKind,
    /// Request path of HTTP checks.
    #[serde(default = "default_check_path")]
    pub path: String,
    /// Request method of HTTP checks.
    #[serde(default = "default_check_method")]
    pub method: String,
    /// `Host` header of HTTP checks; default the backend's address.
    pub host: Option<String>,
    /// Statuses that pass, as codes or inclusive ranges (`"200-399"`).
    #[serde(default = "default_expect_status")]
    pub expect_status: Vec<Spanned<String>>,
    /// The body must contain this text to pass (the first 64 KiB are read).
    pub body_contains: Option<String>,
    /// The service a `grpc` check asks about; none: the server as a whole
    /// (the empty name).
    pub grpc_service: Option<String>,
    /// Time between checks of one backend, in milliseconds.
    #[serde(default = "default_check_interval")]
    pub interval_ms: u64,
    /// Longest a check may take, in milliseconds.
    #[serde(default = "default_check_timeout")]
    pub timeout_ms: u64,
    /// Random spread added to each interval, as a percentage of it, so
    /// checks of many weirs do not arrive in step.
    #[serde(default = "default_jitter")]
    pub jitter_percent: u32,
    /// Consecutive passes that bring a down backend back.
    #[serde(default = "default_rise")]
    pub rise: u32,
    /// Consecutive failures that take an up backend down.
    #[serde(default = "default_fall")]
    pub fall: u32,
}

/// The kind of active health check.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum HealthCheckKind {
    /// An HTTP/1.1 request on a new connection.
    #[default]
    Http,
    /// A TCP connect.
    Tcp,
    /// `grpc.health.v1.Health/Check` over HTTP/2: passes on SERVING.
    Grpc,
}

fn default_check_path() -> String {
    "/".to_string()
}
fn default_check_method() -> String {
    "GET".to_string()
}
fn default_expect_status() -> Vec<Spanned<String>> {
    vec![Spanned::new(0..0, "200-399".to_string())]
}
fn default_check_interval() -> u64 {
    2_000
}
fn default_check_timeout() -> u64 {
    1_000
}
fn default_jitter() -> u32 {
    10
}
fn default_rise() -> u32 {
    2
}
fn default_fall() -> u32 {
    3
}

impl HealthCheckConfig {
    /// The accepted status ranges, already validated.
    pub fn status_ranges(&self) -> Vec<(u16, u16)> {
        self.expect_status
            .iter()
            .filter_map(|s| parse_status_range(s.get_ref()))
            .collect()
    }
}

/// `"200"` or `"200-399"` as an inclusive range.
fn parse_status_range(text: &str) -> Option<(u16, u16)> {
    let (low, high) = text.split_once('-').unwrap_or((text, text));
    let (low, high) = (low.trim().parse().ok()?, high.trim().parse().ok()?);
    ((100..=599).contains(&low) && (low..=599).contains(&high)).then_some((low, high))
}

impl Checker<'_> {
    /// Statuses, method and path that make sense, and timings within
    /// bounds.
    pub(super) fn health_check(
        &self,
        at: &Place<'_>,
        name: &str,
        check: &HealthCheckConfig,
    ) -> Result<(), ConfigError> {
        for status in &check.expect_status {
            if parse_status_range(status.get_ref()).is_none() {
                return Err(self.config.error(
                    status.span(),
                    format!(
                        "upstream {name}: health_check expect_status {:?} is not a status or a range like \"200-399\"",
                        status.get_ref()
                    ),
                ));
            }
        }
        let method = &check.method;
        self.ensure(
            http::Method::from_bytes(method.as_bytes()).is_ok(),
            &at.key("method"),
            || format!("upstream {name}: health_check method {method:?} is not an HTTP method"),
        )?;
        let path = &check.path;
        self.ensure(
            path.starts_with('/') && path.parse::<http::uri::PathAndQuery>().is_ok(),
            &at.key("path"),
            || {
                format!(
                    "upstream {name}: health_check path {path:?} must be a path starting with '/'"
                )
            },
        )?;
        self.grpc_check(at, name, check)?;
        let what = |key| format!("upstream {name}: health_check {key}");
        for (value, key) in [
            (check.interval_ms, "interval_ms"),
            (check.timeout_ms, "timeout_ms"),
        ] {
            self.bounded(
                value,
                1..=MAX_PERIOD_MS,
                &at.key(key),
                &what(key),
                " (1 hour)",
            )?;
        }
        for (value, key) in [(check.rise, "rise"), (check.fall, "fall")] {
            self.bounded(value.into(), 1..=u64::MAX, &at.key(key), &what(key), "")?;
        }
        let jitter = check.jitter_percent.into();
        self.within(
            jitter,
            0..=100,
            &at.key("jitter_percent"),
            &what("jitter_percent"),
        )
    }
}

/// Longest `grpc_service` name accepted.
const MAX_GRPC_SERVICE: usize = 1024;

impl Checker<'_> {
    /// `grpc_service` only on a `grpc` check, and a name a service could
    /// have; `body_contains` not on one (it has no text body).
    fn grpc_check(
        &self,
        at: &Place<'_>,
        name: &str,
        check: &HealthCheckConfig,
    ) -> Result<(), ConfigError> {
        let grpc = check.kind == HealthCheckKind::Grpc;
        if let Some(service) = &check.grpc_service {
            self.ensure(grpc, &at.key("grpc_service"), || {
                format!(
                    "upstream {name}: health_check grpc_service applies to type = \"grpc\" only"
                )
            })?;
            self.ensure(
                service.len() <= MAX_GRPC_SERVICE && !service.chars().any(char::is_control),
                &at.key("grpc_service"),
                || {
                    format!(
                        "upstream {name}: health_check grpc_service must be at most {MAX_GRPC_SERVICE} bytes without control characters"
                    )
                },
            )?;
        }
        self.ensure(
            !(grpc && check.body_contains.is_some()),
            &at.key("body_contains"),
            || {
                format!(
                    "upstream {name}: health_check body_contains does not apply to type = \"grpc\""
                )
            },
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_refused_at, good_with, parse, position_of};

    #[test]
    fn each_health_check_value_points_at_its_line() {
        for (line, rule) in [
            (
                "method = \"G E T\"",
                "health_check method \"G E T\" is not an HTTP method",
            ),
            (
                "path = \"health\"",
                "health_check path \"health\" must be a path starting with '/'",
            ),
            (
                "path = \"/a b\"",
                "health_check path \"/a b\" must be a path",
            ),
            (
                "interval_ms = 0",
                "health_check interval_ms must be at least 1",
            ),
            (
                "interval_ms = 18446744073709551615",
                "health_check interval_ms must be at most",
            ),
            (
                "interval_ms = 3600001",
                "health_check interval_ms must be at most 3600000 (1 hour)",
            ),
            (
                "timeout_ms = 0",
                "health_check timeout_ms must be at least 1",
            ),
            (
                "timeout_ms = 3600001",
                "health_check timeout_ms must be at most",
            ),
            ("rise = 0", "health_check rise must be at least 1"),
            ("fall = 0", "health_check fall must be at least 1"),
            (
                "jitter_percent = 101",
                "health_check jitter_percent must be within 0..=100",
            ),
            ("type = \"udp\"", "unknown variant `udp`"),
            (
                "grpc_service = \"svc\"",
                "health_check grpc_service applies to type = \"grpc\" only",
            ),
        ] {
            let text = good_with(&format!("[upstreams.web.health_check]\n{line}"));
            let err = assert_refused_at(&text, line, &[rule]);
            assert!(
                err.contains("health_check") || line.starts_with("type"),
                "{err}"
            );
        }
    }

    #[test]
    fn a_grpc_check_refuses_what_does_not_apply_to_it() {
        let grpc = |line: &str| {
            good_with(&format!(
                "[upstreams.web.health_check]\ntype = \"grpc\"\n{line}"
            ))
        };
        let text = grpc("body_contains = \"ok\"");
        assert_refused_at(
            &text,
            "body_contains = ",
            &["body_contains does not apply to type = \"grpc\""],
        );
        let text = grpc("grpc_service = \"a\\nb\"");
        assert_refused_at(&text, "grpc_service = ", &["without control characters"]);
        let text = grpc(&format!("grpc_service = \"{}\"", "s".repeat(1025)));
        assert_refused_at(&text, "grpc_service = ", &["at most 1024 bytes"]);
        let config = parse(&grpc("grpc_service = \"weir.test.Echo\"")).unwrap();
        let check = config.upstreams["web"].health_check.as_ref().unwrap();
        assert_eq!(check.kind, super::HealthCheckKind::Grpc);
        assert_eq!(check.grpc_service.as_deref(), Some("weir.test.Echo"));
    }

    #[test]
    fn a_bad_status_points_at_the_element_itself() {
        let text = good_with("[upstreams.web.health_check]\nexpect_status = [\"200\", \"700\"]");
        let err = parse(&text).unwrap_err().to_string();
        let (line, column) = position_of(&text, "\"700\"");
        let expected = format!(
            "weir.toml:{line}:{column}: upstream web: health_check expect_status \"700\" is not a status"
        );
        assert!(err.starts_with(&expected), "{err}");
    }
}
