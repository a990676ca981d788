//! `[[upstreams.NAME.backends]]` and `[upstreams.NAME.balancer]`: the
//! servers of an upstream and the plugin that chooses among them, and their
//! checks.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::validate::{Checker, Place};

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

impl Checker<'_> {
    /// Each backend on `ip:port`, with a weight that fits, under a name no
    /// other backend of the upstream uses.
    pub(super) fn backends(
        &self,
        at: &Place<'_>,
        upstream: &str,
        backends: &[BackendConfig],
    ) -> Result<(), ConfigError> {
        let mut names = std::collections::HashSet::new();
        for (index, backend) in backends.iter().enumerate() {
            let at = at.index(index);
            let address = backend.address.get_ref();
            if address.parse::<std::net::SocketAddr>().is_err() {
                return Err(self.config.error(
                    backend.address.span(),
                    format!("upstream {upstream}: backend address {address:?} is not ip:port"),
                ));
            }
            self.ensure(
                backend.weight <= u32::from(u16::MAX),
                &at.key("weight"),
                || {
                    format!(
                        "upstream {upstream}: backend {address} weight must be within 0..=65535"
                    )
                },
            )?;
            let name = backend.display_name();
            let key = if backend.name.is_some() {
                "name"
            } else {
                "address"
            };
            self.ensure(!names.contains(&name), &at.key(key), || {
                format!("upstream {upstream}: backend name {name:?} is used twice")
            })?;
            names.insert(name);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{GOOD, assert_refused_at, good_with};

    #[test]
    fn a_backend_weight_points_at_the_weight() {
        let text = GOOD.replace("weight = 2", "weight = 65536");
        assert_refused_at(
            &text,
            "weight = 65536",
            &["backend 127.0.0.1:9001 weight must be within 0..=65535"],
        );
        let text = GOOD.replace("weight = 2", "weight = -1");
        assert_refused_at(&text, "weight = -1", &["invalid value"]);
    }

    #[test]
    fn a_name_used_twice_points_at_the_second_backend() {
        let text = good_with(
            "[[upstreams.web.backends]]\naddress = \"127.0.0.1:9002\"\nname = \"127.0.0.1:9001\"",
        );
        assert_refused_at(
            &text,
            "name = \"127.0.0.1:9001\"",
            &["backend name \"127.0.0.1:9001\" is used twice"],
        );
        let again = "address = \"127.0.0.1:9001\" # again";
        let text = good_with(&format!("[[upstreams.web.backends]]\n{again}"));
        assert_refused_at(
            &text,
            again,
            &["backend name \"127.0.0.1:9001\" is used twice"],
        );
    }

    #[test]
    fn a_bad_balancer_plugin_name_points_at_it() {
        let text = GOOD.replace("plugin = \"round-robin\"", "plugin = \"../evil\"");
        assert_refused_at(
            &text,
            "plugin = \"../evil\"",
            &["upstream web: plugin name \"../evil\" must be letters"],
        );
        let text = GOOD.replace("plugin = \"round-robin\"\n", "");
        assert_refused_at(
            &text,
            "[upstreams.web.balancer]",
            &["missing field `plugin`"],
        );
    }
}
