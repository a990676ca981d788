//! Everything a request needs, built from one configuration and swapped in
//! whole: routes, upstreams, and their loaded plugins.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::{Config, ConfigError};
use crate::plugin::{BalancerPool, LoadedPlugin, PluginStore};
use crate::router::Router;
use crate::upstream::{PluginBalancer, Upstream};

/// One consistent view of the configuration, built off the request path.
pub struct Snapshot {
    config: Arc<Config>,
    router: Router,
    upstreams: BTreeMap<String, Arc<Upstream>>,
}

impl Snapshot {
    /// Builds upstreams and routes from `config`, loading every plugin it
    /// names from the plugin directory through `store` (each file compiled
    /// once) and initialising it with its upstream's settings.
    ///
    /// A plugin file that does not load or initialise is replaced by its last
    /// good version when there is one (the store logs the rejection); without
    /// one it fails the whole build, with the config line that named it.
    pub fn build(config: Config, store: &PluginStore) -> Result<Snapshot, ConfigError> {
        Snapshot::succeed(config, store, None)
    }

    /// Like [`Snapshot::build`], for the snapshot that replaces `previous`:
    /// upstreams of the same name carry over their backends' ids and live
    /// counters and, when its settings are unchanged, their connection pool
    /// (see [`Upstream::succeed`]).
    pub fn succeed(
        config: Config,
        store: &PluginStore,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, ConfigError> {
        let plugin_dir = config.plugin_dir();
        let mut loaded: HashMap<String, Arc<LoadedPlugin>> = HashMap::new();
        let mut upstreams = BTreeMap::new();
        for (name, upstream) in &config.upstreams {
            let balancer = match &upstream.balancer {
                None => None,
                Some(balancer) => {
                    let plugin_name = balancer.plugin.get_ref();
                    let at = |e: crate::plugin::PluginError| {
                        config.error(balancer.plugin.span(), format!("upstream {name}: {e}"))
                    };
                    let plugin = match loaded.get(plugin_name) {
                        Some(plugin) => plugin.clone(),
                        None => {
                            let plugin = store.load(&plugin_dir, plugin_name).map_err(at)?;
                            loaded.insert(plugin_name.clone(), plugin.clone());
                            plugin
                        }
                    };
                    let settings = balancer.settings_json();
                    let pool = match BalancerPool::new(plugin.clone(), name, settings.clone()) {
                        Ok(pool) => {
                            store.accept(&plugin);
                            pool
                        }
                        Err(error) => match store.reject(&plugin, &error) {
                            Some(good) if !Arc::ptr_eq(&good, &plugin) => {
                                loaded.insert(plugin_name.clone(), good.clone());
                                BalancerPool::new(good, name, settings).map_err(at)?
                            }
                            _ => return Err(at(error)),
                        },
                    };
                    Some(PluginBalancer {
                        pool,
                        on_failure: balancer.on_failure,
                    })
                }
            };
            upstreams.insert(
                name.clone(),
                Arc::new(Upstream::succeed(
                    name,
                    upstream,
                    balancer,
                    previous.and_then(|p| p.upstream(name)).map(|u| &**u),
                )),
            );
        }
        let router = Router::new(
            config
                .routes
                .iter()
                .map(|r| {
                    (
                        r.host.clone(),
                        r.path_prefix.get_ref().clone(),
                        upstreams[r.upstream.get_ref()].clone(),
                    )
                })
                .collect(),
        );
        Ok(Snapshot {
            config: Arc::new(config),
            router,
            upstreams,
        })
    }

    /// Starts every upstream's background work (health checks, ejection
    /// timers). Call once the snapshot serves.
    pub fn start_tasks(&self) {
        for upstream in self.upstreams.values() {
            upstream.start_tasks();
        }
    }

    /// Stops the background work of upstreams: a newer snapshot serves.
    pub fn retire(&self) {
        for upstream in self.upstreams.values() {
            upstream.retire();
        }
    }

    /// The plugin files this snapshot's config names, for the watcher.
    pub fn plugin_files(&self) -> Vec<std::path::PathBuf> {
        plugin_files(&self.config)
    }

    /// The configuration this snapshot was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The upstream serving a request for `host` and `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<Arc<Upstream>> {
        self.router.route(host, path).cloned()
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// Every upstream, by name.
    pub fn upstreams(&self) -> impl Iterator<Item = (&String, &Arc<Upstream>)> {
        self.upstreams.iter()
    }
}

/// The plugin files `config` names, sorted, each once.
pub fn plugin_files(config: &Config) -> Vec<std::path::PathBuf> {
    let dir = config.plugin_dir();
    let mut files: Vec<_> = config
        .upstreams
        .values()
        .filter_map(|u| u.balancer.as_ref())
        .map(|b| dir.join(format!("{}.wasm", b.plugin.get_ref())))
        .collect();
    files.sort();
    files.dedup();
    files
}
