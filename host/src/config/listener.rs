//! `[[listeners]]` and `[admin]`: the sockets weir accepts on, and their
//! checks.

use std::net::SocketAddr;

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
            self.within(
                listener.max_request_head_bytes,
                REQUEST_HEAD_BYTES,
                &at.index(index).key("max_request_head_bytes"),
                "listener max_request_head_bytes",
            )?;
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
