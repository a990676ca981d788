//! Upstreams: a named group of backends, the policy that chooses among them,
//! and the connection pool that reaches them.

mod backend;
mod fallback;

use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use backend::{Backend, BackendId, BackendSet, BackendStats, Health, InFlight};
pub use fallback::RoundRobin;

use crate::config::{FailurePolicy, UpstreamConfig};
use crate::plugin::{BalancerPool, CallError, RequestView};

/// Body type of requests weir sends to backends.
pub type UpstreamBody = BoxBody<Bytes, hyper::Error>;

/// The HTTP/1.1 keep-alive client of one upstream.
pub type UpstreamClient = Client<HttpConnector, UpstreamBody>;

/// A balancing plugin attached to an upstream.
pub struct PluginBalancer {
    /// Ready instances of the plugin.
    pub pool: BalancerPool,
    /// What a failed call does to the request.
    pub on_failure: FailurePolicy,
}

/// Who chose the backend for a request: shown in logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChosenBy {
    /// The upstream's plugin.
    Plugin,
    /// weir's native round robin, because the upstream has no plugin.
    RoundRobin,
    /// weir's native round robin, because the plugin call failed.
    Fallback,
}

impl ChosenBy {
    /// A short word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ChosenBy::Plugin => "plugin",
            ChosenBy::RoundRobin => "round-robin",
            ChosenBy::Fallback => "fallback",
        }
    }
}

/// The outcome of choosing a backend for one request.
pub enum Choice {
    /// Send the request to this backend.
    Backend(Arc<Backend>, ChosenBy),
    /// No backend can take the request; the string says why (503).
    Unavailable(&'static str),
    /// The plugin call failed and the upstream's policy is `fail` (503).
    PluginFailed(CallError),
}

/// A named group of backends with its policy and connection pool.
pub struct Upstream {
    name: Arc<str>,
    backends: ArcSwap<BackendSet>,
    balancer: Option<PluginBalancer>,
    fallback: RoundRobin,
    client: UpstreamClient,
    client_settings: ClientSettings,
    request_timeout: Duration,
}

/// What the connection pool is built from; a reload keeps the pool when
/// these are unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ClientSettings {
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_backend: usize,
}

impl ClientSettings {
    fn of(config: &UpstreamConfig) -> Self {
        ClientSettings {
            connect_timeout: config.connect_timeout(),
            idle_timeout: config.idle_timeout(),
            max_idle_per_backend: config.max_idle_per_backend,
        }
    }

    fn client(self) -> UpstreamClient {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(self.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(Duration::from_secs(60)));
        Client::builder(TokioExecutor::new())
            .pool_idle_timeout(self.idle_timeout)
            .pool_max_idle_per_host(self.max_idle_per_backend)
            .pool_timer(hyper_util::rt::TokioTimer::new())
            .set_host(false)
            .build(connector)
    }
}

impl Upstream {
    /// Builds an upstream from its config; `balancer` is its plugin, already
    /// loaded and initialised, if it names one.
    pub fn new(name: &str, config: &UpstreamConfig, balancer: Option<PluginBalancer>) -> Upstream {
        Upstream::succeed(name, config, balancer, None)
    }

    /// Builds the upstream that replaces `previous` after a reload. What
    /// did not change carries over: a backend with the same name and
    /// address keeps its id (as the WIT contract promises plugins) and its
    /// live counters (in-flight, latency, failures), and the keep-alive pool
    /// is kept when the connection settings are the same.
    pub fn succeed(
        name: &str,
        config: &UpstreamConfig,
        balancer: Option<PluginBalancer>,
        previous: Option<&Upstream>,
    ) -> Upstream {
        let old = previous.map(|p| p.backends());
        let mut next_id = old
            .as_ref()
            .and_then(|set| set.iter().map(|b| b.id).max())
            .map_or(0, |max| max + 1);
        let backends = config
            .backends
            .iter()
            .map(|b| {
                let addr: std::net::SocketAddr =
                    b.address.get_ref().parse().expect("validated by config");
                let name = b.display_name();
                let same = old
                    .as_ref()
                    .and_then(|set| set.iter().find(|o| o.name == name && o.addr == addr));
                let (id, stats) = match same {
                    Some(same) => (same.id, same.stats.clone()),
                    None => {
                        next_id += 1;
                        (next_id - 1, Arc::default())
                    }
                };
                Arc::new(Backend {
                    id,
                    name,
                    authority: addr
                        .to_string()
                        .parse()
                        .expect("an ip:port is an authority"),
                    addr,
                    weight: b.weight,
                    metadata: b
                        .metadata
                        .iter()
                        .map(|(k, v)| (k.clone(), v.clone()))
                        .collect(),
                    health: Health::Healthy,
                    stats,
                })
            })
            .collect();
        let settings = ClientSettings::of(config);
        let client = match previous {
            Some(previous) if previous.client_settings == settings => previous.client.clone(),
            _ => settings.client(),
        };
        Upstream {
            name: name.into(),
            backends: ArcSwap::from_pointee(BackendSet::new(backends)),
            balancer,
            fallback: RoundRobin::default(),
            client,
            client_settings: settings,
            request_timeout: config.request_timeout(),
        }
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current backend set.
    pub fn backends(&self) -> Arc<BackendSet> {
        self.backends.load_full()
    }

    /// The plugin balancing this upstream, if any.
    pub fn balancer(&self) -> Option<&PluginBalancer> {
        self.balancer.as_ref()
    }

    /// The keep-alive client to this upstream's backends.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Longest wait for a backend's response headers.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Chooses the backend for one request: the plugin if there is one,
    /// native round robin otherwise or when the plugin fails (unless the
    /// upstream's failure policy is `fail`).
    pub fn choose(&self, request: &mut RequestView) -> Choice {
        let set = self.backends.load();
        if set.eligible().is_empty() {
            return Choice::Unavailable("no healthy backend");
        }
        let Some(balancer) = &self.balancer else {
            return self.round_robin(&set, ChosenBy::RoundRobin);
        };
        match balancer.pool.select(&set, request) {
            Ok(Some(backend)) => Choice::Backend(backend, ChosenBy::Plugin),
            Ok(None) => Choice::Unavailable("the balancer plugin chose no backend"),
            Err(error) => match balancer.on_failure {
                FailurePolicy::Fallback => self.round_robin(&set, ChosenBy::Fallback),
                FailurePolicy::Fail => Choice::PluginFailed(error),
            },
        }
    }

    fn round_robin(&self, set: &BackendSet, by: ChosenBy) -> Choice {
        match self.fallback.select(set) {
            Some(backend) => Choice::Backend(backend, by),
            None => Choice::Unavailable("no healthy backend"),
        }
    }
}
