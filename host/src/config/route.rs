//! `[[routes]]` and their `[[routes.filters]]`, and their checks.

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::validate::{Checker, Place};

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
    /// The largest request body this route forwards, in bytes: a declared
    /// `Content-Length` over it gets `413` before anything is forwarded; a
    /// streamed body is cut when it passes it (`413` if no response has
    /// started). Absent: no limit.
    pub max_request_body_bytes: Option<u64>,
    /// Answer plain-HTTP requests with `308` to the same host and path
    /// over `https` (before filters run); TLS requests pass.
    #[serde(default)]
    pub redirect_https: bool,
    /// The port the redirect names, when HTTPS is not on 443.
    pub redirect_https_port: Option<u16>,
}

/// What a route enforces at the front: its body limit and its redirect.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RouteLimits {
    /// `max_request_body_bytes`.
    pub max_request_body_bytes: Option<u64>,
    /// `redirect_https`: `Some(port)` when set (`None` for 443, left out
    /// of the `Location`).
    pub redirect_https: Option<Option<u16>>,
}

impl RouteConfig {
    /// The route's front-end limits.
    pub fn limits(&self) -> RouteLimits {
        RouteLimits {
            max_request_body_bytes: self.max_request_body_bytes,
            redirect_https: self
                .redirect_https
                .then_some(self.redirect_https_port.filter(|port| *port != 443)),
        }
    }
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

impl Checker<'_> {
    /// The route's upstream exists, its filters name plugins, and its
    /// prefix is a path.
    pub(super) fn route(&self, at: &Place<'_>, route: &RouteConfig) -> Result<(), ConfigError> {
        let upstreams = &self.config.upstreams;
        if !upstreams.contains_key(route.upstream.get_ref()) {
            return Err(self.config.error(
                route.upstream.span(),
                format!(
                    "route names upstream {:?}, which is not defined (defined: {})",
                    route.upstream.get_ref(),
                    upstreams.keys().cloned().collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        for filter in &route.filters {
            self.plugin_name("route filter", &filter.plugin)?;
        }
        self.ensure(
            route.redirect_https || route.redirect_https_port.is_none(),
            &at.key("redirect_https_port"),
            || "redirect_https_port needs redirect_https = true".to_string(),
        )?;
        let prefix = route.path_prefix.get_ref();
        self.ensure(prefix.starts_with('/'), &at.key("path_prefix"), || {
            format!("path_prefix {prefix:?} must start with '/'")
        })
    }

    /// Plugin names become file names: letters, digits, `-` and `_` only.
    pub(super) fn plugin_name(
        &self,
        what: &str,
        plugin: &Spanned<String>,
    ) -> Result<(), ConfigError> {
        let name = plugin.get_ref();
        let valid = !name.is_empty()
            && name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            return Ok(());
        }
        Err(self.config.error(
            plugin.span(),
            format!("{what} plugin name {name:?} must be letters, digits, '-' or '_' (weir loads NAME.wasm)"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{GOOD, assert_refused_at, good_with};

    #[test]
    fn a_route_prefix_points_at_its_value() {
        let text = GOOD.replace(
            "upstream = \"web\"",
            "upstream = \"web\"\npath_prefix = \"api\"",
        );
        assert_refused_at(
            &text,
            "path_prefix = \"api\"",
            &["path_prefix \"api\" must start with '/'"],
        );
    }

    #[test]
    fn the_front_limits_of_a_route() {
        let with = |extra: &str| {
            let text = GOOD.replace(
                "upstream = \"web\"",
                &format!("upstream = \"web\"\n{extra}"),
            );
            super::super::testing::parse(&text).map(|c| c.routes[0].limits())
        };
        assert_eq!(with("").unwrap(), super::RouteLimits::default());
        let limits = with("max_request_body_bytes = 10\nredirect_https = true").unwrap();
        assert_eq!(limits.max_request_body_bytes, Some(10));
        assert_eq!(limits.redirect_https, Some(None));
        let port = with("redirect_https = true\nredirect_https_port = 8443").unwrap();
        assert_eq!(port.redirect_https, Some(Some(8443)));
        let port = with("redirect_https = true\nredirect_https_port = 443").unwrap();
        assert_eq!(port.redirect_https, Some(None));
        let text = GOOD.replace(
            "upstream = \"web\"",
            "upstream = \"web\"\nredirect_https_port = 8443",
        );
        assert_refused_at(
            &text,
            "redirect_https_port = 8443",
            &["redirect_https_port needs redirect_https = true"],
        );
    }

    #[test]
    fn the_second_route_is_told_apart_from_the_first() {
        let text = good_with("[[routes]]\nupstream = \"web\"\npath_prefix = \"x\"");
        assert_refused_at(&text, "path_prefix = \"x\"", &["path_prefix \"x\""]);
    }

    #[test]
    fn a_filter_plugin_name_points_at_it() {
        let text = good_with("[[routes.filters]]\nplugin = \"a/b\"");
        assert_refused_at(
            &text,
            "plugin = \"a/b\"",
            &["route filter plugin name \"a/b\" must be letters"],
        );
        let text = GOOD.replace(
            "upstream = \"web\"",
            "upstream = \"web\"\non_filter_failure = \"maybe\"",
        );
        assert_refused_at(
            &text,
            "on_filter_failure = \"maybe\"",
            &["unknown variant `maybe`"],
        );
    }
}
