//! The weir configuration file: its TOML schema, defaults, and validation.
//!
//! Parsing is strict (`deny_unknown_fields`), and every error names the file,
//! the line and column, and the reason, so `weir check` and a rejected reload
//! point straight at the mistake.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

/// A configuration that failed to load.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read at all.
    #[error("{path}: cannot read: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file was read but is not a valid weir configuration.
    #[error("{path}:{line}:{column}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// 1-based line of the offending value.
        line: usize,
        /// 1-based column of the offending value.
        column: usize,
        /// What is wrong, in words.
        message: String,
    },
}

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

/// One listening socket.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerConfig {
    /// `ip:port` to bind; port 0 picks a free port.
    pub address: Spanned<String>,
}

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
    /// How often the watcher looks, in milliseconds. A change is applied once
    /// the file has stayed the same for one interval.
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
    /// together, with a burst of [`crate::plugin::BURST_SECONDS`] seconds'
    /// worth; lines over it are dropped and counted. Within
    /// 1..=[`crate::plugin::MAX_LINES_PER_SECOND`].
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
            log_lines_per_second: crate::plugin::DEFAULT_LINES_PER_SECOND,
        }
    }
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

/// The access log: one line per request.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AccessLogConfig {
    /// Write it at all.
    pub enabled: bool,
    /// `json` (one object per line) or `text`.
    pub format: AccessLogFormat,
    /// File to append to, relative to the config file; `-` is stdout.
    pub path: PathBuf,
}

impl Default for AccessLogConfig {
    fn default() -> Self {
        AccessLogConfig {
            enabled: true,
            format: AccessLogFormat::Json,
            path: PathBuf::from("-"),
        }
    }
}

/// How access log lines are written.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AccessLogFormat {
    /// One JSON object per line.
    #[default]
    Json,
    /// `key=value` pairs, for reading by eye.
    Text,
}

/// A routing rule: requests for `host` whose path starts with `path_prefix`
/// go to `upstream`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteConfig {
    /// Host to match (case-insensitive, port ignored); `*.example.com`
    /// matches any subdomain. Absent: any host.
    pub host: Option<String>,
    /// Path prefix to match; defaults to `/` (everything).
    #[serde(default = "default_prefix")]
    pub path_prefix: Spanned<String>,
    /// Name of the upstream that serves matching requests.
    pub upstream: Spanned<String>,
    /// Filters every matching request passes through, in order, before the
    /// balancer (`[[routes.filters]]`).
    #[serde(default)]
    pub filters: Vec<FilterConfig>,
    /// What a failed filter call does, for filters that do not say:
    /// `closed` (answer 503, the default) or `open` (skip the filter).
    #[serde(default)]
    pub on_filter_failure: FilterFailure,
}

/// One filter in a route's chain.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilterConfig {
    /// Plugin name: weir loads `NAME.wasm` from the plugin directory.
    pub plugin: Spanned<String>,
    /// The filter's own settings, handed to its `init` as JSON.
    #[serde(default)]
    pub settings: toml::Table,
    /// What a failed call of this filter does; default the route's
    /// `on_filter_failure`.
    pub on_failure: Option<FilterFailure>,
}

impl FilterConfig {
    /// The settings as the JSON text a filter's `init` receives.
    pub fn settings_json(&self) -> String {
        serde_json::to_string(&self.settings).unwrap_or_else(|_| "{}".to_string())
    }
}

/// What a failed filter call (trap, timeout, nonsense answer) does.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FilterFailure {
    /// Answer 503: the request does not get past a filter that failed.
    #[default]
    Closed,
    /// Skip the filter and go on.
    Open,
}

fn default_prefix() -> Spanned<String> {
    Spanned::new(0..0, "/".to_string())
}

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
}

/// How an upstream's backends are probed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HealthCheckConfig {
    /// `http` (a request whose answer is checked) or `tcp` (a connect).
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
}

/// Longest health-check interval or timeout, and slow-start window.
pub const MAX_PERIOD_MS: u64 = 3_600_000;
/// Longest connect, request or idle timeout.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;
/// Longest ejection.
pub const MAX_EJECTION_MS: u64 = 7 * 24 * 3_600_000;

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
}

/// The plugin that balances an upstream, and its settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BalancerConfig {
    /// Plugin name: weir loads `NAME.wasm` from the plugin directory.
    pub plugin: Spanned<String>,
    /// The plugin's own settings, handed to its `init` as JSON.
    #[serde(default)]
    pub settings: toml::Table,
    /// What a failed plugin call (trap, timeout, nonsense answer) does to
    /// the request: `fallback` routes it with native round robin, `fail`
    /// answers 503.
    #[serde(default)]
    pub on_failure: FailurePolicy,
}

impl BalancerConfig {
    /// The settings as the JSON text a plugin's `init` receives.
    pub fn settings_json(&self) -> String {
        serde_json::to_string(&self.settings).unwrap_or_else(|_| "{}".to_string())
    }
}

/// What happens to a request whose plugin call failed.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FailurePolicy {
    /// Route the request with weir's native round robin.
    #[default]
    Fallback,
    /// Answer 503.
    Fail,
}

/// One backend server.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BackendConfig {
    /// `ip:port` of the backend.
    pub address: Spanned<String>,
    /// A name for logs, metrics and plugins; defaults to the address.
    pub name: Option<String>,
    /// Relative weight for weight-aware policies (0 to 65535).
    #[serde(default = "default_weight")]
    pub weight: u32,
    /// Free-form labels handed to plugins.
    #[serde(default)]
    pub metadata: BTreeMap<String, String>,
    /// Most requests in flight to this backend at once; default the
    /// upstream's `max_in_flight_per_backend`.
    pub max_in_flight: Option<u32>,
}

fn default_weight() -> u32 {
    1
}

impl BackendConfig {
    /// The backend's display name.
    pub fn display_name(&self) -> String {
        self.name
            .clone()
            .unwrap_or_else(|| self.address.get_ref().clone())
    }
}

impl Config {
    /// Reads, parses and validates the file at `path`.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        Config::parse(path, &text)
    }

    /// Parses and validates `text`, naming it `path` in errors.
    pub fn parse(path: &Path, text: &str) -> Result<Config, ConfigError> {
        let source = ConfigSource {
            path: path.to_path_buf(),
            text: text.to_string(),
        };
        let mut config: Config = toml::from_str(text)
            .map_err(|e| source.error(e.span().unwrap_or(0..0), e.message().trim().to_string()))?;
        config.source = source;
        config.validate()?;
        Ok(config)
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

    /// An error pointing at `span` in this configuration's file.
    pub fn error(&self, span: Range<usize>, message: impl Into<String>) -> ConfigError {
        self.source.error(span, message.into())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.listeners.is_empty() {
            return Err(self.error(0..0, "no [[listeners]]: weir needs at least one"));
        }
        for listener in &self.listeners {
            if listener.address.get_ref().parse::<SocketAddr>().is_err() {
                return Err(self.error(
                    listener.address.span(),
                    format!(
                        "listener address {:?} is not ip:port",
                        listener.address.get_ref()
                    ),
                ));
            }
        }
        if self.plugins.timeout_ms == 0 {
            return Err(self.error(0..0, "plugins.timeout_ms must be at least 1"));
        }
        if self.plugins.memory_mib == 0 || self.plugins.memory_mib > 4096 {
            return Err(self.error(0..0, "plugins.memory_mib must be within 1..=4096"));
        }
        if self.plugins.watch_interval_ms == 0 {
            return Err(self.error(0..0, "plugins.watch_interval_ms must be at least 1"));
        }
        if self.plugins.max_instances == 0 {
            return Err(self.error(0..0, "plugins.max_instances must be at least 1"));
        }
        let plugins = &self.plugins;
        if plugins.quarantine_ms == 0 || plugins.quarantine_ms > MAX_PERIOD_MS {
            return Err(self.error(
                0..0,
                format!("plugins.quarantine_ms must be within 1..={MAX_PERIOD_MS}"),
            ));
        }
        if plugins.quarantine_max_ms < plugins.quarantine_ms
            || plugins.quarantine_max_ms > MAX_TIMEOUT_MS
        {
            return Err(self.error(
                0..0,
                format!(
                    "plugins.quarantine_max_ms must be within quarantine_ms..={MAX_TIMEOUT_MS}"
                ),
            ));
        }
        if plugins.cpu_budget_percent > 100 {
            return Err(self.error(0..0, "plugins.cpu_budget_percent must be within 0..=100"));
        }
        if plugins.slow_call_percent > 100 {
            return Err(self.error(0..0, "plugins.slow_call_percent must be within 0..=100"));
        }
        let max_rate = crate::plugin::MAX_LINES_PER_SECOND;
        if !(1..=max_rate).contains(&self.plugins.log_lines_per_second) {
            return Err(self.error(
                0..0,
                format!("plugins.log_lines_per_second must be within 1..={max_rate}"),
            ));
        }
        for route in &self.routes {
            if !self.upstreams.contains_key(route.upstream.get_ref()) {
                return Err(self.error(
                    route.upstream.span(),
                    format!(
                        "route names upstream {:?}, which is not defined (defined: {})",
                        route.upstream.get_ref(),
                        self.upstreams
                            .keys()
                            .cloned()
                            .collect::<Vec<_>>()
                            .join(", ")
                    ),
                ));
            }
            for filter in &route.filters {
                validate_plugin_name(
                    self,
                    "route filter",
                    filter.plugin.get_ref(),
                    filter.plugin.span(),
                )?;
            }
            if !route.path_prefix.get_ref().starts_with('/') {
                return Err(self.error(
                    route.path_prefix.span(),
                    format!(
                        "path_prefix {:?} must start with '/'",
                        route.path_prefix.get_ref()
                    ),
                ));
            }
        }
        for (name, upstream) in &self.upstreams {
            self.validate_upstream(name, upstream)?;
        }
        if let Some(admin) = &self.admin {
            if admin.address.get_ref().parse::<SocketAddr>().is_err() {
                return Err(self.error(
                    admin.address.span(),
                    format!("admin address {:?} is not ip:port", admin.address.get_ref()),
                ));
            }
            if let Some(var) = &admin.token_env
                && std::env::var(var.get_ref()).is_err()
            {
                return Err(self.error(
                    var.span(),
                    format!(
                        "admin token_env names {:?}, which is not set",
                        var.get_ref()
                    ),
                ));
            }
        }
        Ok(())
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

    fn validate_upstream(&self, name: &str, upstream: &UpstreamConfig) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for backend in &upstream.backends {
            let address = backend.address.get_ref();
            if address.parse::<SocketAddr>().is_err() {
                return Err(self.error(
                    backend.address.span(),
                    format!("upstream {name}: backend address {address:?} is not ip:port"),
                ));
            }
            if backend.weight > u16::MAX as u32 {
                return Err(self.error(
                    backend.address.span(),
                    format!("upstream {name}: backend {address} weight must be within 0..=65535"),
                ));
            }
            if !names.insert(backend.display_name()) {
                return Err(self.error(
                    backend.address.span(),
                    format!(
                        "upstream {name}: backend name {:?} is used twice",
                        backend.display_name()
                    ),
                ));
            }
        }
        for (value, what) in [
            (upstream.connect_timeout_ms, "connect_timeout_ms"),
            (upstream.request_timeout_ms, "request_timeout_ms"),
            (upstream.idle_timeout_ms, "idle_timeout_ms"),
        ] {
            if value == 0 {
                return Err(self.error(0..0, format!("upstream {name}: {what} must be at least 1")));
            }
            if value > MAX_TIMEOUT_MS {
                return Err(self.error(
                    0..0,
                    format!("upstream {name}: {what} must be at most {MAX_TIMEOUT_MS} (1 day)"),
                ));
            }
        }
        if let Some(check) = &upstream.health_check {
            self.validate_health_check(name, check)?;
        }
        if let Some(outlier) = &upstream.outlier_detection {
            if outlier.consecutive_failures == 0 || outlier.base_ejection_ms == 0 {
                return Err(self.error(
                    0..0,
                    format!(
                        "upstream {name}: outlier_detection consecutive_failures and base_ejection_ms must be at least 1"
                    ),
                ));
            }
            if outlier.max_ejection_percent > 100 {
                return Err(self.error(
                    0..0,
                    format!("upstream {name}: outlier_detection max_ejection_percent must be within 0..=100"),
                ));
            }
            for (value, what) in [
                (outlier.base_ejection_ms, "base_ejection_ms"),
                (outlier.max_ejection_ms, "max_ejection_ms"),
            ] {
                if value > MAX_EJECTION_MS {
                    return Err(self.error(
                        0..0,
                        format!("upstream {name}: outlier_detection {what} must be at most {MAX_EJECTION_MS} (7 days)"),
                    ));
                }
            }
        }
        if upstream.slow_start_ms > MAX_PERIOD_MS {
            return Err(self.error(
                0..0,
                format!("upstream {name}: slow_start_ms must be at most {MAX_PERIOD_MS} (1 hour)"),
            ));
        }
        if upstream.retry.retries > 10 {
            return Err(self.error(
                0..0,
                format!("upstream {name}: retry.retries must be within 0..=10"),
            ));
        }
        if let Some(balancer) = &upstream.balancer {
            validate_plugin_name(
                self,
                &format!("upstream {name}:"),
                balancer.plugin.get_ref(),
                balancer.plugin.span(),
            )?;
        }
        Ok(())
    }
}

impl Config {
    fn validate_health_check(
        &self,
        name: &str,
        check: &HealthCheckConfig,
    ) -> Result<(), ConfigError> {
        for status in &check.expect_status {
            if parse_status_range(status.get_ref()).is_none() {
                return Err(self.error(
                    status.span(),
                    format!(
                        "upstream {name}: health_check expect_status {:?} is not a status or a range like \"200-399\"",
                        status.get_ref()
                    ),
                ));
            }
        }
        if http::Method::from_bytes(check.method.as_bytes()).is_err() {
            return Err(self.error(
                0..0,
                format!(
                    "upstream {name}: health_check method {:?} is not an HTTP method",
                    check.method
                ),
            ));
        }
        if !check.path.starts_with('/') || check.path.parse::<http::uri::PathAndQuery>().is_err() {
            return Err(self.error(
                0..0,
                format!(
                    "upstream {name}: health_check path {:?} must be a path starting with '/'",
                    check.path
                ),
            ));
        }
        for (value, what) in [
            (check.interval_ms, "interval_ms"),
            (check.timeout_ms, "timeout_ms"),
            (check.rise as u64, "rise"),
            (check.fall as u64, "fall"),
        ] {
            if value == 0 {
                return Err(self.error(
                    0..0,
                    format!("upstream {name}: health_check {what} must be at least 1"),
                ));
            }
            if what.ends_with("_ms") && value > MAX_PERIOD_MS {
                return Err(self.error(
                    0..0,
                    format!("upstream {name}: health_check {what} must be at most {MAX_PERIOD_MS} (1 hour)"),
                ));
            }
        }
        if check.jitter_percent > 100 {
            return Err(self.error(
                0..0,
                format!("upstream {name}: health_check jitter_percent must be within 0..=100"),
            ));
        }
        Ok(())
    }
}

/// Plugin names become file names: letters, digits, `-` and `_` only.
fn validate_plugin_name(
    config: &Config,
    what: &str,
    plugin: &str,
    span: Range<usize>,
) -> Result<(), ConfigError> {
    let valid = !plugin.is_empty()
        && plugin
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
    if valid {
        return Ok(());
    }
    Err(config.error(
        span,
        format!("{what} plugin name {plugin:?} must be letters, digits, '-' or '_' (weir loads NAME.wasm)"),
    ))
}

impl ConfigSource {
    fn error(&self, span: Range<usize>, message: String) -> ConfigError {
        let (line, column) = line_column(&self.text, span.start);
        ConfigError::Invalid {
            path: self.path.clone(),
            line,
            column,
            message,
        }
    }
}

/// 1-based line and column of byte `offset` in `text`.
fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let column = before.rfind('\n').map_or(offset, |nl| offset - nl - 1) + 1;
    (line, column)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[[listeners]]
address = "127.0.0.1:0"

[[routes]]
upstream = "web"

[upstreams.web]
[upstreams.web.balancer]
plugin = "round-robin"
settings = { answer = 42 }

[[upstreams.web.backends]]
address = "127.0.0.1:9001"
weight = 2
"#;

    fn parse(text: &str) -> Result<Config, ConfigError> {
        Config::parse(Path::new("weir.toml"), text)
    }

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

    #[test]
    fn plugin_log_rate_is_bounded() {
        assert_eq!(parse(GOOD).unwrap().plugins.log_lines_per_second, 100);
        for rate in [0, crate::plugin::MAX_LINES_PER_SECOND + 1] {
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

    #[test]
    fn line_column_counts_from_one() {
        assert_eq!(line_column("ab\ncd", 0), (1, 1));
        assert_eq!(line_column("ab\ncd", 4), (2, 2));
        assert_eq!(line_column("ab", 99), (1, 3));
    }
}
