//! `[[listeners]]` and `[admin]`: the sockets weir accepts on, and their
//! checks.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::tls::ListenerTlsConfig;
use super::validate::{Checker, Place};

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port` to bind; port 0 picks a free port.
    pub address: Spanned<String>,
    /// The largest HTTP/1.1 request head (request line and headers) a
    /// client may send, in bytes; over it the client gets `431`. (With a
    /// limit over 64 KiB, a request line over 64 KiB that fits gets `414`.)
    /// Within 8192..=1048576.
    #[serde(default = "default_max_request_head_bytes")]
    pub max_request_head_bytes: u64,
    /// Terminate TLS on this listener (see [`ListenerTlsConfig`]).
    pub tls: Option<ListenerTlsConfig>,
    /// How long a client may take to send a whole request head, from its
    /// connection (or its first byte after an idle spell); past it the
    /// connection is closed. Within 100..=3600000.
    #[serde(default = "default_header_read_timeout_ms")]
    pub header_read_timeout_ms: u64,
    /// How long a keep-alive connection may sit idle between requests (no
    /// request in progress, nothing received) before weir closes it (an
    /// HTTP/2 connection with a GOAWAY). Within 100..=86400000.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    /// How long a client may leave a request body waiting for its next
    /// bytes; past it the request fails with 408 (if no response started)
    /// and the backend connection it was going to is closed. Within
    /// 100..=3600000.
    #[serde(default = "default_body_read_timeout_ms")]
    pub body_read_timeout_ms: u64,
    /// The most client connections open at once on this listener; one
    /// over it is closed as soon as it is accepted. Within 1..=1000000.
    #[serde(default = "default_max_connections")]
    pub max_connections: u64,
    /// HTTP/2: the most streams a client may have open at once on one
    /// connection (`SETTINGS_MAX_CONCURRENT_STREAMS`). Within 1..=10000.
    #[serde(default = "default_h2_max_concurrent_streams")]
    pub h2_max_concurrent_streams: u64,
}

/// A listener's front-end limits as durations and counts, for the
/// listener and the request path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrontLimits {
    /// `max_request_head_bytes` (HTTP/1.1 head; HTTP/2 header list).
    pub max_head_bytes: usize,
    /// `header_read_timeout_ms`.
    pub header_read_timeout: Duration,
    /// `idle_timeout_ms`.
    pub idle_timeout: Duration,
    /// `body_read_timeout_ms`.
    pub body_read_timeout: Duration,
    /// `max_connections`.
    pub max_connections: usize,
    /// `h2_max_concurrent_streams`.
    pub h2_max_concurrent_streams: u32,
}

impl Default for FrontLimits {
    fn default() -> FrontLimits {
        FrontLimits {
            max_head_bytes: DEFAULT_MAX_REQUEST_HEAD_BYTES as usize,
            header_read_timeout: Duration::from_millis(DEFAULT_HEADER_READ_TIMEOUT_MS),
            idle_timeout: Duration::from_millis(DEFAULT_IDLE_TIMEOUT_MS),
            body_read_timeout: Duration::from_millis(DEFAULT_BODY_READ_TIMEOUT_MS),
            max_connections: DEFAULT_MAX_CONNECTIONS as usize,
            h2_max_concurrent_streams: DEFAULT_H2_MAX_CONCURRENT_STREAMS as u32,
        }
    }
}

impl ListenerConfig {
    /// The listener's front-end limits (validated within their bounds).
    pub fn limits(&self) -> FrontLimits {
        FrontLimits {
            max_head_bytes: self.max_request_head_bytes as usize,
            header_read_timeout: Duration::from_millis(self.header_read_timeout_ms),
            idle_timeout: Duration::from_millis(self.idle_timeout_ms),
            body_read_timeout: Duration::from_millis(self.body_read_timeout_ms),
            max_connections: self.max_connections as usize,
            h2_max_concurrent_streams: self.h2_max_concurrent_streams as u32,
        }
    }
}

/// The default request head limit: 64 KiB, like HAProxy's and Envoy's
/// default buffers and four of nginx's large header buffers over.
pub const DEFAULT_MAX_REQUEST_HEAD_BYTES: u64 = 64 * 1024;

/// The bounds of `max_request_head_bytes` (hyper's smallest read buffer,
/// and 1 MiB).
pub const REQUEST_HEAD_BYTES: std::ops::RangeInclusive<u64> = 8192..=1 << 20;

fn default_max_request_head_bytes() -> u64 {
    DEFAULT_MAX_REQUEST_HEAD_BYTES
}

/// The default header read timeout: 30 s, hyper's default and half of
/// nginx's `client_header_timeout` (HAProxy has none unless `timeout
/// http-request` is set; 10 s is its documented suggestion).
pub const DEFAULT_HEADER_READ_TIMEOUT_MS: u64 = 30_000;

/// The default keep-alive idle timeout: 60 s, under nginx's
/// `keepalive_timeout` (75 s) and far under Envoy's one-hour
/// `idle_timeout`; idle connections cost a descriptor each.
pub const DEFAULT_IDLE_TIMEOUT_MS: u64 = 60_000;

/// The default body read idle timeout: 30 s between body bytes (nginx's
/// `client_body_timeout` is 60 s, HAProxy's usual `timeout client` 30 s).
pub const DEFAULT_BODY_READ_TIMEOUT_MS: u64 = 30_000;

/// The default connection limit per listener: 10000, HAProxy's order of
/// magnitude (`maxconn` from the descriptor limit; nginx 512 per worker;
/// Envoy none).
pub const DEFAULT_MAX_CONNECTIONS: u64 = 10_000;

/// The default HTTP/2 stream limit: 100, HAProxy's
/// `tune.h2.max-concurrent-streams` and the RFC 9113 recommended floor
/// (nginx 128, hyper 200).
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u64 = 100;

fn default_header_read_timeout_ms() -> u64 {
    DEFAULT_HEADER_READ_TIMEOUT_MS
}

fn default_idle_timeout_ms() -> u64 {
    DEFAULT_IDLE_TIMEOUT_MS
}

fn default_body_read_timeout_ms() -> u64 {
    DEFAULT_BODY_READ_TIMEOUT_MS
}

fn default_max_connections() -> u64 {
    DEFAULT_MAX_CONNECTIONS
}

fn default_h2_max_concurrent_streams() -> u64 {
    DEFAULT_H2_MAX_CONCURRENT_STREAMS
}

/// The admin listener: JSON API over upstreams and backends, and
/// Prometheus metrics.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// `ip:port` to bind; loopback by default.
    #[serde(default = "default_admin_address")]
    pub address: Spanned<String>,
    /// A bearer token every request must carry (`Authorization: Bearer
    /// TOKEN`); absent: no authentication.
    pub token: Option<String>,
    /// Read the token from this environment variable instead.
    pub token_env: Option<Spanned<String>>,
}

fn default_admin_address() -> Spanned<String> {
    Spanned::new(0..0, "127.0.0.1:9901".to_string())
}

impl AdminConfig {
    /// The required token, if any (`token`, else the `token_env` variable).
    pub fn token(&self) -> Option<String> {
        self.token.clone().or_else(|| {
            self.token_env
                .as_ref()
                .and_then(|var| std::env::var(var.get_ref()).ok())
        })
    }
}

impl Checker<'_> {
    /// At least one listener, each on `ip:port`.
    pub(super) fn listeners(&self, listeners: &[ListenerConfig]) -> Result<(), ConfigError> {
        let at = Place::of(&["listeners"]);
        self.ensure(!listeners.is_empty(), &at, || {
            "no [[listeners]]: weir needs at least one".to_string()
        })?;
        for (index, listener) in listeners.iter().enumerate() {
            let bounds: [(u64, std::ops::RangeInclusive<u64>, &str); 6] = [
                (
                    listener.max_request_head_bytes,
                    REQUEST_HEAD_BYTES,
                    "max_request_head_bytes",
                ),
                (
                    listener.header_read_timeout_ms,
                    100..=3_600_000,
                    "header_read_timeout_ms",
                ),
                (
                    listener.idle_timeout_ms,
                    100..=86_400_000,
                    "idle_timeout_ms",
                ),
                (
                    listener.body_read_timeout_ms,
                    100..=3_600_000,
                    "body_read_timeout_ms",
                ),
                (listener.max_connections, 1..=1_000_000, "max_connections"),
                (
                    listener.h2_max_concurrent_streams,
                    1..=10_000,
                    "h2_max_concurrent_streams",
                ),
            ];
            for (value, range, key) in bounds {
                self.within(
                    value,
                    range,
                    &at.index(index).key(key),
                    &format!("listener {key}"),
                )?;
            }
            if let Some(tls) = &listener.tls {
                self.listener_tls(&at.index(index).key("tls"), tls)?;
            }
            let address = listener.address.get_ref();
            if address.parse::<SocketAddr>().is_err() {
                return Err(self.config.error(
                    listener.address.span(),
                    format!("listener address {address:?} is not ip:port"),
                ));
            }
        }
        Ok(())
    }

    /// The admin address is `ip:port`, and a `token_env` variable is set.
    pub(super) fn admin(&self, admin: &AdminConfig) -> Result<(), ConfigError> {
        if admin.address.get_ref().parse::<SocketAddr>().is_err() {
            return Err(self.fail(
                &Place::of(&["admin", "address"]),
                format!("admin address {:?} is not ip:port", admin.address.get_ref()),
            ));
        }
        if let Some(var) = &admin.token_env
            && std::env::var(var.get_ref()).is_err()
        {
            return Err(self.config.error(
                var.span(),
                format!(
                    "admin token_env names {:?}, which is not set",
                    var.get_ref()
                ),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{GOOD, assert_refused_at, good_with, parse};

    #[test]
    fn no_listeners_is_refused_at_the_file_or_the_empty_list() {
        let text = GOOD.replace("[[listeners]]\naddress = \"127.0.0.1:0\"\n", "");
        let err = parse(&text).unwrap_err().to_string();
        // No key to point at: the file itself.
        assert!(err.starts_with("weir.toml:1:1: no [[listeners]]"), "{err}");
        let text = format!("listeners = []\n{}", text);
        assert_refused_at(
            &text,
            "listeners = []",
            &["no [[listeners]]: weir needs at least one"],
        );
    }

    #[test]
    fn the_request_head_limit_is_bounded_at_its_line() {
        let listener = "[[listeners]]\naddress = \"127.0.0.1:0\"\n";
        for bad in ["4096", "2000000"] {
            let text = GOOD.replace(
                listener,
                &format!("{listener}max_request_head_bytes = {bad}\n"),
            );
            assert_refused_at(
                &text,
                &format!("max_request_head_bytes = {bad}"),
                &["listener max_request_head_bytes must be within 8192..=1048576"],
            );
        }
        let config = parse(GOOD).unwrap();
        assert_eq!(
            config.listeners[0].max_request_head_bytes,
            super::DEFAULT_MAX_REQUEST_HEAD_BYTES
        );
    }

    #[test]
    fn the_front_end_limits_are_bounded_at_their_lines() {
        let listener = "[[listeners]]\naddress = \"127.0.0.1:0\"\n";
        for (key, bad, range) in [
            ("header_read_timeout_ms", "0", "100..=3600000"),
            ("idle_timeout_ms", "99", "100..=86400000"),
            ("body_read_timeout_ms", "3600001", "100..=3600000"),
            ("max_connections", "0", "1..=1000000"),
            ("h2_max_concurrent_streams", "10001", "1..=10000"),
        ] {
            let text = GOOD.replace(listener, &format!("{listener}{key} = {bad}\n"));
            assert_refused_at(
                &text,
                &format!("{key} = {bad}"),
                &[&format!("listener {key} must be within {range}")],
            );
        }
        let limits = parse(GOOD).unwrap().listeners[0].limits();
        assert_eq!(limits, super::FrontLimits::default());
        let text = GOOD.replace(listener, &format!("{listener}idle_timeout_ms = 1500\n"));
        let limits = parse(&text).unwrap().listeners[0].limits();
        assert_eq!(limits.idle_timeout, std::time::Duration::from_millis(1500));
    }

    #[test]
    fn a_bad_listener_or_admin_address_points_at_it() {
        let text = GOOD.replace("127.0.0.1:0", "0.0.0.0");
        assert_refused_at(
            &text,
            "address = \"0.0.0.0\"",
            &["listener address \"0.0.0.0\" is not ip:port"],
        );
        let text = good_with("[admin]\naddress = \"localhost:9901\"");
        assert_refused_at(
            &text,
            "address = \"localhost:9901\"",
            &["admin address \"localhost:9901\" is not ip:port"],
        );
        let text = good_with("[admin]\ntoken_env = \"WEIR_UNIT_TEST_UNSET_VARIABLE\"");
        assert_refused_at(
            &text,
            "token_env = ",
            &["WEIR_UNIT_TEST_UNSET_VARIABLE", "which is not set"],
        );
        let text = good_with("[admin]\naddress = 9901");
        assert_refused_at(&text, "address = 9901", &["invalid type"]);
    }
}
