//! The weir configuration file: its TOML schema, defaults, and validation.
//!
//! Parsing is strict (`deny_unknown_fields`), and every error names the file,
//! the line and column, and the reason, so `weir check` and a rejected reload
//! point straight at the mistake: a bad value's own line, or the header of
//! the table that lacks a key.
//!
//! The schema lives in one module per section (`listener`, `plugins`,
//! `route`, `upstream`, `h2`, `upstream_tls`, `backend`, `health`, `access_log`), each with the
//! checks of its values; `load` reads and parses a file, `validate` runs the
//! checks and turns a value's place in the document into a line.

mod access_log;
mod backend;
mod h2;
mod health;
mod listener;
mod load;
mod plugins;
mod route;
mod runtime;
mod spans;
mod tls;
mod upstream;
mod upstream_tls;
mod validate;

#[cfg(test)]
mod testing;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;

pub use access_log::{AccessLogConfig, AccessLogFormat};
pub use backend::{BackendConfig, BalancerConfig, FailurePolicy};
pub use h2::{H2Config, UpstreamProtocol};
pub use health::{HealthCheckConfig, HealthCheckKind};
pub use listener::{AdminConfig, DEFAULT_MAX_REQUEST_HEAD_BYTES, FrontLimits, ListenerConfig};
pub use load::{ConfigError, MAX_CONFIG_BYTES};
pub use plugins::{DEFAULT_LINES_PER_SECOND, MAX_LINES_PER_SECOND, PluginsConfig};
pub use route::{FilterConfig, FilterFailure, RouteConfig, RouteLimits};
pub use runtime::{MAX_WORKERS, RuntimeConfig, Scheduler, Workers};
pub use tls::{
    CertificateConfig, ClientAuthConfig, DEFAULT_HANDSHAKE_TIMEOUT_MS, ListenerTlsConfig,
};
pub use upstream::{OutlierConfig, RetryConfig, UpstreamConfig};
pub use upstream_tls::{TlsMaterial, UpstreamTlsConfig};

/// The whole configuration, as written in the TOML file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Where weir accepts client connections (`[[listeners]]`).
    #[serde(default)]
    pub listeners: Vec<ListenerConfig>,
    /// Plugin directory and sandbox limits (`[plugins]`).
    #[serde(default)]
    pub plugins: PluginsConfig,
    /// Request routing rules (`[[routes]]`), matched as described in
    /// [`crate::router`].
    #[serde(default)]
    pub routes: Vec<RouteConfig>,
    /// Named groups of backends (`[upstreams.NAME]`).
    #[serde(default)]
    pub upstreams: BTreeMap<String, UpstreamConfig>,
    /// The admin API and `/metrics` listener (`[admin]`); absent: none.
    pub admin: Option<AdminConfig>,
    /// One line per request (`[access_log]`).
    #[serde(default)]
    pub access_log: AccessLogConfig,
    /// The threads that serve client connections (`[runtime]`).
    #[serde(default)]
    pub runtime: RuntimeConfig,
    /// Where the file was read from; relative paths in it resolve against
    /// its directory. Not part of the TOML.
    #[serde(skip)]
    pub source: ConfigSource,
}

/// Where a configuration came from, to resolve relative paths and to name
/// the file in errors.
#[derive(Debug, Clone, Default)]
pub struct ConfigSource {
    /// The file, or a pseudo-name such as `<demo>`.
    pub path: PathBuf,
    /// The file's text, kept to turn byte offsets into lines.
    pub text: String,
}

/// Longest health-check interval or timeout, and slow-start window.
pub const MAX_PERIOD_MS: u64 = 3_600_000;
/// Longest connect, request or idle timeout.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Longest ejection.
pub const MAX_EJECTION_MS: u64 = 7 * 24 * 3_600_000;

impl Config {
    /// The directory relative paths in the config are resolved against:
    /// the config file's own (empty for a bare file name).
    pub fn base_dir(&self) -> PathBuf {
        self.source
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default()
    }

    /// The plugin directory, resolved against the config file's directory.
    pub fn plugin_dir(&self) -> PathBuf {
        if self.plugins.dir.is_absolute() {
            return self.plugins.dir.clone();
        }
        match self.source.path.parent() {
            Some(parent) if !parent.as_os_str().is_empty() => parent.join(&self.plugins.dir),
            _ => self.plugins.dir.clone(),
        }
    }

    /// The compiled-code cache directory, absolute, or none when caching is
    /// off or no directory can be found.
    pub fn cache_dir(&self) -> Option<PathBuf> {
        if !self.plugins.cache {
            return None;
        }
        let dir = match &self.plugins.cache_dir {
            Some(dir) if dir.is_absolute() => dir.clone(),
            Some(dir) => self.source.path.parent().unwrap_or(Path::new("")).join(dir),
            None => PathBuf::from(std::env::var_os("HOME")?).join(".cache/weir"),
        };
        std::path::absolute(dir).ok()
    }

    /// The listener addresses, already validated.
    pub fn listen_addrs(&self) -> Vec<SocketAddr> {
        self.listeners
            .iter()
            .filter_map(|l| l.address.get_ref().parse().ok())
            .collect()
    }

    /// The admin listener's address, if there is one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin
            .as_ref()
            .and_then(|a| a.address.get_ref().parse().ok())
    }

    /// The access log file, resolved against the config file's directory;
    /// none for stdout.
    pub fn access_log_path(&self) -> Option<PathBuf> {
        let path = &self.access_log.path;
        if path.as_os_str() == "-" {
            return None;
        }
        Some(match self.source.path.parent() {
            Some(parent) if path.is_relative() => parent.join(path),
            _ => path.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::testing::{GOOD, parse};
    use super::*;

    #[test]
    fn parses_a_complete_config_with_defaults() {
        let config = parse(GOOD).unwrap();
        let web = &config.upstreams["web"];
        assert_eq!(web.backends[0].weight, 2);
        assert_eq!(web.connect_timeout_ms, 1_000);
        let balancer = web.balancer.as_ref().unwrap();
        assert_eq!(balancer.plugin.get_ref(), "round-robin");
        assert_eq!(balancer.settings_json(), r#"{"answer":42}"#);
        assert_eq!(balancer.on_failure, FailurePolicy::Fallback);
        assert_eq!(config.routes[0].path_prefix.get_ref(), "/");
        assert_eq!(config.plugins.timeout_ms, 5);
    }

    #[test]
    fn unknown_field_names_file_and_line() {
        let text = GOOD.replace("weight = 2", "wieght = 2");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("weir.toml:15:"), "{err}");
        assert!(err.contains("wieght"), "{err}");
    }

    #[test]
    fn undefined_upstream_names_the_route_line() {
        let text = GOOD.replace("upstream = \"web\"", "upstream = \"api\"");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("weir.toml:6:12:"), "{err}");
        assert!(err.contains("\"api\", which is not defined"), "{err}");
    }

    #[test]
    fn bad_backend_address_names_its_line() {
        let text = GOOD.replace("127.0.0.1:9001", "localhost");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("weir.toml:14:"), "{err}");
        assert!(err.contains("not ip:port"), "{err}");
    }

    #[test]
    fn bad_failure_policy_is_rejected() {
        let text = GOOD.replace("settings =", "on_failure = \"retry\"\nsettings =");
        let err = parse(&text).unwrap_err().to_string();
        assert!(err.starts_with("weir.toml:11:14:"), "{err}");
        assert!(err.contains("unknown variant `retry`"), "{err}");
    }
}
