//! `protocol` and `[upstreams.NAME.h2]`: the HTTP version weir speaks to an
//! upstream's backends, and how its HTTP/2 connections are shared and kept
//! alive.

use std::time::Duration;

use serde::Deserialize;

use super::validate::{Checker, Place};
use super::{ConfigError, MAX_TIMEOUT_MS, UpstreamConfig};

/// The HTTP version weir speaks to an upstream's backends.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UpstreamProtocol {
    /// HTTP/1.1 with keep-alive (over TLS too, offering ALPN `http/1.1`).
    #[default]
    Http1,
    /// HTTP/2 over plain TCP, with prior knowledge (RFC 9113 §3.3).
    H2c,
    /// HTTP/2 over TLS, negotiated with ALPN `h2`; needs a `tls` table.
    H2,
}

/// How an HTTP/2 upstream's connections are used.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct H2Config {
    /// Most requests sharing one connection; past it another connection
    /// to the same backend is opened. A backend's own
    /// `SETTINGS_MAX_CONCURRENT_STREAMS` also holds: requests over it wait.
    pub max_streams_per_connection: u32,
    /// A PING every this many milliseconds on each connection, busy or
    /// idle (0: none) ...
    pub ping_interval_ms: u64,
    /// ... and a connection whose PING is not answered within this long is
    /// closed, failing its requests.
    pub ping_timeout_ms: u64,
}

impl Default for H2Config {
    fn default() -> Self {
        H2Config {
            max_streams_per_connection: 100,
            ping_interval_ms: 30_000,
            ping_timeout_ms: 10_000,
        }
    }
}

impl H2Config {
    /// The PING interval; none when 0.
    pub fn ping_interval(&self) -> Option<Duration> {
        (self.ping_interval_ms > 0).then(|| Duration::from_millis(self.ping_interval_ms))
    }

    /// The wait for a PING's answer.
    pub fn ping_timeout(&self) -> Duration {
        Duration::from_millis(self.ping_timeout_ms)
    }
}

impl Checker<'_> {
    /// `protocol` agrees with `tls`; the `h2` table's values are bounded.
    pub(super) fn protocol(
        &self,
        at: &Place<'_>,
        name: &str,
        upstream: &UpstreamConfig,
    ) -> Result<(), ConfigError> {
        let tls = upstream.tls.is_some();
        match upstream.protocol {
            UpstreamProtocol::H2 if !tls => {
                return Err(self.fail(
                    &at.key("protocol"),
                    format!(
                        "upstream {name}: protocol \"h2\" is HTTP/2 over TLS and needs [upstreams.{name}.tls]; \"h2c\" is HTTP/2 without TLS"
                    ),
                ));
            }
            UpstreamProtocol::H2c if tls => {
                return Err(self.fail(
                    &at.key("protocol"),
                    format!(
                        "upstream {name}: protocol \"h2c\" is HTTP/2 without TLS, but [upstreams.{name}.tls] is set; use \"h2\""
                    ),
                ));
            }
            _ => {}
        }
        let h2 = at.key("h2");
        let what = |key| format!("upstream {name}: h2.{key}");
        let streams = u64::from(upstream.h2.max_streams_per_connection);
        let key = "max_streams_per_connection";
        self.within(streams, 1..=10_000, &h2.key(key), &what(key))?;
        let key = "ping_interval_ms";
        let interval = upstream.h2.ping_interval_ms;
        self.bounded(
            interval,
            0..=MAX_TIMEOUT_MS,
            &h2.key(key),
            &what(key),
            " (1 day)",
        )?;
        let key = "ping_timeout_ms";
        let timeout = upstream.h2.ping_timeout_ms;
        self.bounded(
            timeout,
            1..=MAX_TIMEOUT_MS,
            &h2.key(key),
            &what(key),
            " (1 day)",
        )
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{GOOD, assert_refused_at, parse};
    use super::*;

    fn web_with(lines: &str) -> String {
        GOOD.replace("[upstreams.web]\n", &format!("[upstreams.web]\n{lines}\n"))
    }

    #[test]
    fn the_protocol_defaults_to_http1_and_takes_h2c_and_h2() {
        let config = parse(GOOD).unwrap();
        assert_eq!(config.upstreams["web"].protocol, UpstreamProtocol::Http1);
        assert_eq!(config.upstreams["web"].h2, H2Config::default());
        let config = parse(&web_with(
            "protocol = \"h2c\"\nh2 = { max_streams_per_connection = 7, ping_interval_ms = 0 }",
        ))
        .unwrap();
        let web = &config.upstreams["web"];
        assert_eq!(web.protocol, UpstreamProtocol::H2c);
        assert_eq!(web.h2.max_streams_per_connection, 7);
        assert_eq!(web.h2.ping_interval(), None);
        let config = parse(&web_with("protocol = \"h2\"\ntls = {}")).unwrap();
        assert_eq!(config.upstreams["web"].protocol, UpstreamProtocol::H2);
    }

    #[test]
    fn a_protocol_that_disagrees_with_tls_points_at_its_line() {
        let line = "protocol = \"h2\"";
        assert_refused_at(&web_with(line), line, &["needs [upstreams.web.tls]"]);
        let text = web_with("protocol = \"h2c\"\ntls = {}");
        assert_refused_at(&text, "protocol = \"h2c\"", &["use \"h2\""]);
        let line = "protocol = \"http2\"";
        assert_refused_at(&web_with(line), line, &["unknown variant `http2`"]);
    }

    #[test]
    fn the_h2_values_are_bounded() {
        for (line, rule) in [
            (
                "max_streams_per_connection = 0",
                "h2.max_streams_per_connection must be within 1..=10000",
            ),
            (
                "ping_timeout_ms = 0",
                "h2.ping_timeout_ms must be at least 1",
            ),
            (
                "ping_interval_ms = 86400001",
                "h2.ping_interval_ms must be at most",
            ),
        ] {
            let text = web_with(&format!("protocol = \"h2c\"\nh2 = {{ {line} }}"));
            assert_refused_at(&text, line, &[rule]);
        }
    }
}
