//! Everything a request needs, built from one configuration and swapped in
//! whole: routes, upstreams, and their loaded plugins.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::config::{Config, ConfigError, FilterFailure};
use crate::plugin::{BalancerPool, Calls, FilterPool, LoadedPlugin, PluginStore};
use crate::router::Router;
use crate::termination::ListenerTls;
use crate::upstream::{PluginBalancer, Upstream};

/// One consistent view of the configuration, built off the request path.
pub struct Snapshot {
    config: Arc<Config>,
    router: Router<Arc<Route>>,
    routes: Vec<Arc<Route>>,
    upstreams: BTreeMap<String, Arc<Upstream>>,
    listener_tls: ListenerTls,
}

/// Where a route leads: its filter chain, then its upstream.
pub struct Route {
    /// `route N` (1-based, in config order), for logs and metrics.
    pub name: String,
    /// The upstream that serves it unless a filter reroutes.
    pub upstream: Arc<Upstream>,
    /// The filters, in order.
    pub filters: Vec<FilterStage>,
    /// Its body limit and HTTPS redirect.
    pub limits: crate::config::RouteLimits,
}

/// One filter in a route's chain.
pub struct FilterStage {
    /// Ready instances of the filter.
    pub pool: FilterPool,
    /// What a failed call does.
    pub on_failure: FilterFailure,
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
        let listener_tls = ListenerTls::build(&config, previous.map(|p| &p.listener_tls))?;
        let plugin_dir = config.plugin_dir();
        let mut loaded: HashMap<String, Arc<LoadedPlugin>> = HashMap::new();
        // Loads each plugin file once per build; a file that does not load
        // falls back to its last good version inside the store.
        let mut load = |name: &str| -> Result<Arc<LoadedPlugin>, crate::plugin::PluginError> {
            if let Some(plugin) = loaded.get(name) {
                return Ok(plugin.clone());
            }
            let plugin = store.load(&plugin_dir, name)?;
            loaded.insert(name.to_string(), plugin.clone());
            Ok(plugin)
        };
        let mut upstreams = BTreeMap::new();
        for (name, upstream) in &config.upstreams {
            let balancer = match &upstream.balancer {
                None => None,
                Some(balancer) => {
                    let plugin_name = balancer.plugin.get_ref();
                    let at = |e: crate::plugin::PluginError| {
                        let e = crate::error::chain(&e);
                        config.error(balancer.plugin.span(), format!("upstream {name}: {e}"))
                    };
                    let plugin = load(plugin_name).map_err(at)?;
                    let settings = balancer.settings_json();
                    let pool = with_last_good(store, plugin, |plugin| {
                        BalancerPool::new(plugin, name, settings.clone())
                    })
                    .map_err(at)?;
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
        let mut routes = Vec::new();
        for (i, route) in config.routes.iter().enumerate() {
            let name = format!("route {}", i + 1);
            let mut filters = Vec::new();
            for (j, filter) in route.filters.iter().enumerate() {
                let owner = format!("{name} filter {}", j + 1);
                let at = |e: crate::plugin::PluginError| {
                    let e = crate::error::chain(&e);
                    config.error(filter.plugin.span(), format!("{owner}: {e}"))
                };
                let plugin = load(filter.plugin.get_ref()).map_err(at)?;
                let settings = filter.settings_json();
                let pool = with_last_good(store, plugin, |plugin| {
                    FilterPool::new(plugin, &owner, settings.clone())
                })
                .map_err(at)?;
                filters.push(FilterStage {
                    pool,
                    on_failure: filter.on_failure.unwrap_or(route.on_filter_failure),
                });
            }
            let target = Arc::new(Route {
                name,
                upstream: upstreams[route.upstream.get_ref()].clone(),
                filters,
                limits: route.limits(),
            });
            routes.push((
                route.host.clone(),
                route.path_prefix.get_ref().clone(),
                target,
            ));
        }
        let in_order = routes.iter().map(|(_, _, r)| r.clone()).collect();
        let router = Router::new(routes);
        Ok(Snapshot {
            config: Arc::new(config),
            router,
            routes: in_order,
            upstreams,
            listener_tls,
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

    /// Tells each backend of this snapshot that `successor` no longer has
    /// (its upstream or it left the config) that it is removed: its
    /// tunnels close after their grace.
    pub fn mark_removed(&self, successor: &Snapshot) {
        for (name, upstream) in self.upstreams() {
            let kept = successor.upstream(name).map(|u| u.backends());
            for backend in upstream.backends().iter() {
                let same =
                    |b: &Arc<crate::upstream::Backend>| Arc::ptr_eq(&b.state, &backend.state);
                if !kept.as_ref().is_some_and(|set| set.iter().any(same)) {
                    backend.state.set_removed();
                }
            }
        }
    }

    /// The plugin files this snapshot's config names, for the watcher.
    pub fn plugin_files(&self) -> Vec<std::path::PathBuf> {
        plugin_files(&self.config)
    }

    /// The TLS of each listener, in config order.
    pub fn listener_tls(&self) -> &ListenerTls {
        &self.listener_tls
    }

    /// The configuration this snapshot was built from.
    pub fn config(&self) -> &Arc<Config> {
        &self.config
    }

    /// The route serving a request for `host` and `path`.
    pub fn route(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.router.route(host, path)
    }

    /// Every route, in config order.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The upstream called `name`.
    pub fn upstream(&self, name: &str) -> Option<&Arc<Upstream>> {
        self.upstreams.get(name)
    }

    /// Every upstream, by name.
    pub fn upstreams(&self) -> impl Iterator<Item = (&String, &Arc<Upstream>)> {
        self.upstreams.iter()
    }

    /// Every plugin pool, balancers then filters: the plugin, its owner
    /// (`upstream NAME` or `route N filter M`) and its call counters.
    pub fn plugin_pools(&self) -> impl Iterator<Item = (&LoadedPlugin, String, &Calls)> {
        let balancers = self.upstreams().filter_map(|(name, u)| {
            let pool = &u.balancer()?.pool;
            Some((pool.plugin(), format!("upstream {name}"), pool.call_stats()))
        });
        let filters = self.routes.iter().flat_map(|route| {
            route.filters.iter().enumerate().map(move |(i, stage)| {
                let owner = format!("{} filter {}", route.name, i + 1);
                (stage.pool.plugin(), owner, stage.pool.call_stats())
            })
        });
        balancers.chain(filters)
    }
}

/// Makes a pool with `plugin`; when that fails (init refused or trapped),
/// the store logs the rejection and the pool is made with the plugin's last
/// good version instead, if there is a different one.
fn with_last_good<P>(
    store: &PluginStore,
    plugin: Arc<LoadedPlugin>,
    make: impl Fn(Arc<LoadedPlugin>) -> Result<P, crate::plugin::PluginError>,
) -> Result<P, crate::plugin::PluginError> {
    match make(plugin.clone()) {
        Ok(pool) => {
            store.accept(&plugin);
            Ok(pool)
        }
        Err(error) => match store.reject(&plugin, &error) {
            Some(good) if !Arc::ptr_eq(&good, &plugin) => make(good),
            _ => Err(error),
        },
    }
}

/// The plugin files `config` names (balancers and filters), sorted, each
/// once.
pub fn plugin_files(config: &Config) -> Vec<std::path::PathBuf> {
    let dir = config.plugin_dir();
    let balancers = config
        .upstreams
        .values()
        .filter_map(|u| u.balancer.as_ref())
        .map(|b| b.plugin.get_ref());
    let filters = config
        .routes
        .iter()
        .flat_map(|r| &r.filters)
        .map(|f| f.plugin.get_ref());
    let mut files: Vec<_> = balancers
        .chain(filters)
        .map(|name| dir.join(format!("{name}.wasm")))
        .collect();
    files.sort();
    files.dedup();
    files
}
