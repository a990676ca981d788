//! Upstreams: a named group of backends, the policy that chooses among them,
//! and the client that reaches them.
//!
//! - [`choose`](Upstream::choose) (`choose.rs`): a backend per request,
//!   through the upstream's [`Policy`], with weir's round robin as fallback.
//! - [`observe`](Upstream::observe) (`outlier.rs`): outlier detection.
//! - `membership.rs`: backends from the config, rebuilding the set, the
//!   maintenance task; `admin.rs`: the operator's changes; `check.rs`:
//!   active health checks.
//! - [`UpstreamClient`] (`client.rs`): the connection pool, over the
//!   connector (`connector.rs`: TCP, then TLS) the health checks share.
//!
//! The backend types are in [`crate::backend`] and re-exported here.

mod admin;
mod balancer;
mod check;
mod choose;
mod client;
mod connector;
mod fallback;
mod membership;
mod outlier;
mod retry;
mod stats;
#[cfg(test)]
pub(crate) mod testing;

use std::any::Any;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use tokio::sync::Notify;

pub use crate::backend::{
    Backend, BackendId, BackendSet, BackendSpec, BackendState, BackendStats, CheckError, Health,
    InFlight,
};
pub use crate::policy::{ChosenBy, Policy, PolicyError};
pub use admin::{AdminError, InvalidChange, NewBackend};
pub use balancer::PluginBalancer;
pub use choose::{ASKS, Choice};
pub use client::{
    BackendBody, BackendUpgrade, BodyError, H1Stats, H2Stats, Protocol, SendError, UpstreamClient,
    take_upgrade,
};
pub use connector::{BackendStream, ConnectError, Origination};
pub use fallback::RoundRobin;
pub use retry::RetryBudget;
pub use stats::{TlsFailures, UpstreamStats};

use crate::config::{BackendConfig, OutlierConfig, RetryConfig, UpstreamConfig};

/// The target of the upstream's health and ejection log lines, kept from
/// before the module was split (operators filter and match on it).
const LOG_TARGET: &str = "weir::upstream";

/// Body type of requests weir sends to backends; its error is the
/// client's body failing (framing, a limit, a timeout).
pub type UpstreamBody = BoxBody<Bytes, Box<dyn std::error::Error + Send + Sync>>;

/// A named group of backends with its policy and connection pool.
pub struct Upstream {
    name: Arc<str>,
    backends: ArcSwap<BackendSet>,
    /// Chooses backends: the plugin, or weir's round robin.
    policy: Box<dyn Policy>,
    /// weir's own pick when the policy's cannot be taken.
    fallback: RoundRobin,
    client: UpstreamClient,
    request_timeout: Duration,
    /// In-flight limit of backends without their own (0: none).
    max_in_flight: u32,
    slow_start: Duration,
    probe: Option<Arc<check::Probe>>,
    outlier: Option<OutlierConfig>,
    retry: RetryConfig,
    /// The config's backend list this upstream was built from, to tell
    /// whether a reload changed it.
    configured: Vec<BackendConfig>,
    /// Counters carried across reloads.
    stats: Arc<UpstreamStats>,
    /// Serialises rebuilding the backend set (checks, ejections, admin).
    update: Mutex<()>,
    /// Wakes the maintenance task when a timed change was scheduled.
    wake: Arc<Notify>,
    /// Set when a reload replaced this upstream: its tasks stop.
    retired: AtomicBool,
    /// Backends were changed through the admin API since the config.
    edited: AtomicBool,
}

impl Upstream {
    /// Builds an upstream from its config; `balancer` is its plugin, already
    /// loaded and initialised, if it names one.
    pub fn new(name: &str, config: &UpstreamConfig, balancer: Option<PluginBalancer>) -> Upstream {
        Upstream::succeed(name, config, balancer, None)
    }

    /// Builds the upstream that replaces `previous` after a reload, balanced
    /// by `balancer` or, without one, by weir's round robin (see
    /// [`Upstream::with_policy`]).
    pub fn succeed(
        name: &str,
        config: &UpstreamConfig,
        balancer: Option<PluginBalancer>,
        previous: Option<&Upstream>,
    ) -> Upstream {
        let policy: Box<dyn Policy> = match balancer {
            Some(balancer) => Box::new(balancer),
            None => Box::new(RoundRobin::default()),
        };
        Upstream::with_policy(name, config, policy, previous)
    }

    /// Builds an upstream balanced by `policy`, replacing `previous` if
    /// given. What did not change carries over: a backend with the same
    /// name and address keeps its id (as the WIT contract promises
    /// plugins), its live counters and its health state, and the keep-alive
    /// pool is kept when the connection settings are the same. When the
    /// config's backend list is unchanged, the previous backends are kept as
    /// they are, with any changes made through the admin API.
    pub fn with_policy(
        name: &str,
        config: &UpstreamConfig,
        policy: Box<dyn Policy>,
        previous: Option<&Upstream>,
    ) -> Upstream {
        let keep = previous.filter(|p| p.configured == config.backends);
        if let Some(previous) = previous
            && keep.is_none()
            && previous.edited.load(Ordering::Relaxed)
        {
            tracing::warn!(
                upstream = name,
                "the config changed this upstream's backends: changes made through the admin API are replaced by the file's list"
            );
        }
        let members = match keep {
            Some(previous) => previous.backends().iter().cloned().collect(),
            None => membership::from_config(config, previous.map(|p| p.backends()).as_deref()),
        };
        let stats = match previous {
            Some(previous) if previous.retry == config.retry => previous.stats.clone(),
            _ => Arc::new(UpstreamStats::new(
                &config.retry,
                previous.map(|p| &*p.stats),
            )),
        };
        let set = Arc::new(BackendSet::new(members));
        policy.update(&set);
        let client = UpstreamClient::succeed(name, config, previous.map(|p| &p.client));
        let upstream = Upstream {
            name: name.into(),
            backends: ArcSwap::new(set),
            policy,
            fallback: RoundRobin::default(),
            probe: config
                .health_check
                .as_ref()
                .map(|c| Arc::new(check::Probe::new(c, &client))),
            client,
            request_timeout: config.request_timeout(),
            max_in_flight: config.max_in_flight_per_backend,
            slow_start: Duration::from_millis(config.slow_start_ms),
            outlier: config.outlier_detection.clone(),
            retry: config.retry.clone(),
            configured: config.backends.clone(),
            stats,
            update: Mutex::new(()),
            wake: Arc::new(Notify::new()),
            retired: AtomicBool::new(false),
            edited: AtomicBool::new(keep.is_some_and(|p| p.edited.load(Ordering::Relaxed))),
        };
        upstream.refresh();
        upstream
    }

    /// Starts the upstream's background work: the health checks, if it has
    /// them, and the task that ends ejections and steps slow-start weights.
    /// Both stop when the upstream is retired or dropped.
    pub fn start_tasks(self: &Arc<Self>) {
        tokio::spawn(membership::maintain(
            Arc::downgrade(self),
            self.wake.clone(),
        ));
        if let Some(probe) = &self.probe {
            tokio::spawn(check::run(Arc::downgrade(self), probe.clone()));
        }
    }

    /// Stops the upstream's background work: a reload replaced it.
    pub fn retire(&self) {
        self.retired.store(true, Ordering::Relaxed);
        self.wake.notify_one();
    }

    fn is_retired(&self) -> bool {
        self.retired.load(Ordering::Relaxed)
    }

    /// The upstream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The current backend set.
    pub fn backends(&self) -> Arc<BackendSet> {
        self.backends.load_full()
    }

    /// The policy choosing this upstream's backends.
    pub fn policy(&self) -> &dyn Policy {
        &*self.policy
    }

    /// The plugin balancing this upstream, if its policy is one.
    pub fn balancer(&self) -> Option<&PluginBalancer> {
        (&*self.policy as &dyn Any).downcast_ref()
    }

    /// The keep-alive client to this upstream's backends.
    pub fn client(&self) -> &UpstreamClient {
        &self.client
    }

    /// Longest wait for a backend's response headers.
    pub fn request_timeout(&self) -> Duration {
        self.request_timeout
    }

    /// Counters of this upstream (and of those it succeeded).
    pub fn stats(&self) -> &UpstreamStats {
        &self.stats
    }

    /// The in-flight limit of `backend` (0: none).
    pub fn max_in_flight(&self, backend: &Backend) -> u32 {
        backend.max_in_flight.unwrap_or(self.max_in_flight)
    }

    /// Retries allowed after a first attempt.
    pub fn retries(&self) -> u32 {
        self.retry.retries
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Lets the maintenance task see that the upstream is gone.
        self.wake.notify_one();
    }
}
