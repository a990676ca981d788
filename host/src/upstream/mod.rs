//! Upstreams: a named group of backends, the policy that chooses among them,
//! and the connection pool that reaches them.

mod admin;
mod backend;
mod check;
mod fallback;
mod retry;
mod state;
mod stats;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

// tokio's clock for health timing: it follows paused time in tests.
use tokio::time::Instant;

use arc_swap::ArcSwap;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

pub use admin::{AdminError, NewBackend};
pub use backend::{Backend, BackendId, BackendSet, BackendSpec, BackendStats, Health, InFlight};
pub use fallback::RoundRobin;
pub use retry::RetryBudget;
pub use state::BackendState;
pub use stats::UpstreamStats;
use tokio::sync::Notify;

use crate::config::{BackendConfig, FailurePolicy, OutlierConfig, RetryConfig, UpstreamConfig};
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
    /// weir's native round robin, because the plugin's answers were tried
    /// already or at their in-flight limit.
    Reroute,
}

impl ChosenBy {
    /// A short word for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ChosenBy::Plugin => "plugin",
            ChosenBy::RoundRobin => "round-robin",
            ChosenBy::Fallback => "fallback",
            ChosenBy::Reroute => "reroute",
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
    /// address keeps its id (as the WIT contract promises plugins), its live
    /// counters and its health state, and the keep-alive pool is kept when
    /// the connection settings are the same. When the config's backend list
    /// is unchanged, the previous backends are kept as they are, with any
    /// changes made through the admin API.
    pub fn succeed(
        name: &str,
        config: &UpstreamConfig,
        balancer: Option<PluginBalancer>,
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
            None => members_from_config(config, previous.map(|p| p.backends()).as_deref()),
        };
        let settings = ClientSettings::of(config);
        let client = match previous {
            Some(previous) if previous.client_settings == settings => previous.client.clone(),
            _ => settings.client(),
        };
        let stats = match previous {
            Some(previous) if previous.retry == config.retry => previous.stats.clone(),
            _ => Arc::new(UpstreamStats::new(
                &config.retry,
                previous.map(|p| &*p.stats),
            )),
        };
        let upstream = Upstream {
            name: name.into(),
            backends: ArcSwap::from_pointee(BackendSet::new(members)),
            balancer,
            fallback: RoundRobin::default(),
            client,
            client_settings: settings,
            request_timeout: config.request_timeout(),
            max_in_flight: config.max_in_flight_per_backend,
            slow_start: Duration::from_millis(config.slow_start_ms),
            probe: config
                .health_check
                .as_ref()
                .map(|c| Arc::new(check::Probe::new(c))),
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
        tokio::spawn(maintain(Arc::downgrade(self), self.wake.clone()));
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

    /// Chooses the backend for one request: the plugin if there is one,
    /// native round robin otherwise or when the plugin fails (unless the
    /// upstream's failure policy is `fail`).
    ///
    /// Backends in `tried` (earlier attempts of this request) and backends
    /// at their in-flight limit are not taken: the plugin is asked again,
    /// and after [`ASKS`] answers that cannot be taken weir's round robin
    /// picks among the rest.
    pub fn choose(&self, request: &mut RequestView, tried: &[BackendId]) -> Choice {
        let set = self.backends.load();
        if set.eligible().is_empty() {
            self.stats.no_backend.fetch_add(1, Ordering::Relaxed);
            return Choice::Unavailable("no healthy backend");
        }
        let usable = |b: &Backend| !tried.contains(&b.id) && !self.is_full(b);
        let mut by = ChosenBy::RoundRobin;
        if let Some(balancer) = &self.balancer {
            by = ChosenBy::Reroute;
            for _ in 0..ASKS {
                let (result, took) = balancer.pool.select_timed(&set, request);
                self.stats.plugin_calls.observe(took);
                match result {
                    Ok(Some(backend)) if usable(&backend) => {
                        return Choice::Backend(backend, ChosenBy::Plugin);
                    }
                    Ok(Some(_)) => continue,
                    Ok(None) => {
                        self.stats.no_backend.fetch_add(1, Ordering::Relaxed);
                        return Choice::Unavailable("the balancer plugin chose no backend");
                    }
                    Err(error) => {
                        self.stats.plugin_failures.fetch_add(1, Ordering::Relaxed);
                        match balancer.on_failure {
                            FailurePolicy::Fallback => {
                                by = ChosenBy::Fallback;
                                break;
                            }
                            FailurePolicy::Fail => return Choice::PluginFailed(error),
                        }
                    }
                }
            }
        }
        // weir's own pick: headers a plugin asked for with a backend it did
        // not get (tried, or full) must not reach the client.
        request.response_headers.clear();
        if let Some(backend) = self.fallback.select_where(&set, usable) {
            return Choice::Backend(backend, by);
        }
        if set.eligible().iter().all(|b| tried.contains(&b.id)) {
            Choice::Unavailable("every healthy backend was tried")
        } else {
            self.stats.saturated.fetch_add(1, Ordering::Relaxed);
            Choice::Unavailable("every backend is at its max_in_flight")
        }
    }

    fn is_full(&self, backend: &Backend) -> bool {
        let limit = self.max_in_flight(backend);
        limit != 0 && backend.stats.in_flight() >= limit
    }

    /// Records the outcome of one request to `backend` for outlier
    /// detection: `failure` is why it failed (connect error, timeout, 5xx),
    /// none when it succeeded.
    pub fn observe(&self, backend: &Backend, failure: Option<&dyn Fn() -> String>) {
        let Some(outlier) = &self.outlier else {
            return;
        };
        let in_a_row = backend.state.record_outcome(failure.is_some());
        let Some(why) = failure else { return };
        if in_a_row < outlier.consecutive_failures {
            return;
        }
        let _one_at_a_time = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let set = self.backends.load();
        if backend.state.is_ejected(now) {
            return;
        }
        let ejected = set.iter().filter(|b| b.state.is_ejected(now)).count();
        if (ejected + 1) * 100 > outlier.max_ejection_percent as usize * set.len() {
            if in_a_row == outlier.consecutive_failures {
                tracing::warn!(
                    upstream = %self.name,
                    backend = backend.name,
                    ejected,
                    "not ejecting: {in_a_row} failures in a row, but max_ejection_percent = {} is reached",
                    outlier.max_ejection_percent
                );
            }
            return;
        }
        let reason = format!("{in_a_row} failures in a row, last: {}", why());
        let length = backend.state.eject(
            reason.clone(),
            Duration::from_millis(outlier.base_ejection_ms),
            Duration::from_millis(outlier.max_ejection_ms),
            now,
        );
        tracing::warn!(
            upstream = %self.name,
            backend = backend.name,
            addr = %backend.addr,
            ejection = backend.state.ejections(),
            "ejecting backend for {length:?}: {reason}"
        );
        drop(_one_at_a_time);
        self.refresh();
    }

    /// Rebuilds the backend set from the backends' health state (checks,
    /// ejections, drain, slow start) if that changed anything, logging each
    /// backend whose health changed.
    pub fn refresh(&self) {
        let _ = self.edit(|_| Ok(()));
    }

    /// Applies `change` to the backend list, rebuilds the set (see
    /// [`Upstream::rebuild`]) and wakes the maintenance task when a timed
    /// change is due, so it sleeps until the right time.
    fn edit(
        &self,
        change: impl FnOnce(&mut Vec<Arc<Backend>>) -> Result<(), AdminError>,
    ) -> Result<Option<Instant>, AdminError> {
        let next = self.rebuild(change)?;
        if next.is_some() {
            self.wake.notify_one();
        }
        Ok(next)
    }

    /// Applies `change` to the backend list, then rebuilds the set from the
    /// backends' health state. Returns when the next timed change is due.
    fn rebuild(
        &self,
        change: impl FnOnce(&mut Vec<Arc<Backend>>) -> Result<(), AdminError>,
    ) -> Result<Option<Instant>, AdminError> {
        let _one_at_a_time = self.update.lock().unwrap_or_else(|e| e.into_inner());
        let current = self.backends.load_full();
        let mut members: Vec<Arc<Backend>> = current.iter().cloned().collect();
        let before = members.len();
        change(&mut members)?;
        let mut changed = members.len() != before
            || !members
                .iter()
                .zip(current.iter())
                .all(|(a, b)| Arc::ptr_eq(a, b));
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        for member in &mut members {
            let (health, reason) = member.state.health(now);
            let weight = match health {
                Health::Healthy => {
                    member
                        .state
                        .effective_weight(member.base_weight, self.slow_start, now)
                }
                _ => member.base_weight,
            };
            if let Some(at) = member.state.next_change(self.slow_start, now) {
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            if health == member.health && weight == member.weight && reason == member.reason {
                continue;
            }
            if health != member.health {
                match &reason {
                    Some(why) => {
                        tracing::warn!(upstream = %self.name, backend = member.name, addr = %member.addr, "backend {}: {why}", health.as_str())
                    }
                    None => {
                        tracing::info!(upstream = %self.name, backend = member.name, addr = %member.addr, "backend {}", health.as_str())
                    }
                }
            }
            *member = Arc::new(member.with(health, weight, reason));
            changed = true;
        }
        if changed {
            self.backends.store(Arc::new(BackendSet::new(members)));
        }
        Ok(next)
    }
}

impl Drop for Upstream {
    fn drop(&mut self) {
        // Lets the maintenance task see that the upstream is gone.
        self.wake.notify_one();
    }
}

/// How many times a request's plugin is asked before weir picks a backend
/// itself, when its answers were tried already or at their limit.
pub const ASKS: usize = 3;

/// Ends ejections and steps slow-start weights on time, until the upstream
/// is retired or dropped.
async fn maintain(upstream: Weak<Upstream>, wake: Arc<Notify>) {
    loop {
        let next = match upstream.upgrade() {
            // Not `refresh`: that wakes this task, which would then spin.
            Some(live) if !live.is_retired() => live.rebuild(|_| Ok(())).ok().flatten(),
            _ => return,
        };
        match next {
            Some(at) => {
                tokio::select! {
                    _ = tokio::time::sleep_until(at) => {}
                    _ = wake.notified() => {}
                }
            }
            None => wake.notified().await,
        }
    }
}

/// The backends `config` lists; one with the same name and address as a
/// backend of `previous` keeps its id, stats and health state.
fn members_from_config(
    config: &UpstreamConfig,
    previous: Option<&BackendSet>,
) -> Vec<Arc<Backend>> {
    let mut next_id = previous
        .and_then(|set| set.iter().map(|b| b.id).max())
        .map_or(0, |max| max + 1);
    config
        .backends
        .iter()
        .map(|b| {
            let addr: SocketAddr = b.address.get_ref().parse().expect("validated by config");
            let name = b.display_name();
            let same =
                previous.and_then(|set| set.iter().find(|o| o.name == name && o.addr == addr));
            let (id, stats, state) = match same {
                Some(same) => (same.id, same.stats.clone(), same.state.clone()),
                None => {
                    next_id += 1;
                    (next_id - 1, Arc::default(), Arc::default())
                }
            };
            let spec = BackendSpec {
                name,
                addr,
                weight: b.weight,
                metadata: b
                    .metadata
                    .iter()
                    .map(|(k, v)| (k.clone(), v.clone()))
                    .collect(),
                max_in_flight: b.max_in_flight,
            };
            Arc::new(Backend::new(id, spec, stats, state))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    /// An upstream `web` of `n` backends `b1`.. with `extra` upstream keys.
    fn upstream(n: usize, extra: &str) -> Arc<Upstream> {
        let mut text =
            format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n[upstreams.web]\n{extra}\n");
        for i in 1..=n {
            text.push_str(&format!(
                "[[upstreams.web.backends]]\nname = \"b{i}\"\naddress = \"127.0.0.1:{}\"\nweight = 10\n",
                9000 + i
            ));
        }
        let config = Config::parse(std::path::Path::new("t.toml"), &text).unwrap();
        Arc::new(Upstream::new("web", &config.upstreams["web"], None))
    }

    fn backend(upstream: &Upstream, name: &str) -> Arc<Backend> {
        upstream
            .backends()
            .iter()
            .find(|b| b.name == name)
            .unwrap()
            .clone()
    }

    fn fail(upstream: &Upstream, name: &str, times: usize) {
        let b = backend(upstream, name);
        for _ in 0..times {
            upstream.observe(&b, Some(&|| "status 500".to_string()));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn an_ejection_ends_on_time_by_itself() {
        let web = upstream(
            2,
            "[upstreams.web.outlier_detection]\nconsecutive_failures = 2\nbase_ejection_ms = 1000\n",
        );
        web.start_tasks();
        fail(&web, "b1", 1);
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
        fail(&web, "b1", 1);
        let ejected = backend(&web, "b1");
        assert_eq!(ejected.health, Health::Unhealthy);
        assert_eq!(
            ejected.reason.as_deref(),
            Some("ejected: 2 failures in a row, last: status 500")
        );
        tokio::time::sleep(Duration::from_millis(999)).await;
        assert_eq!(backend(&web, "b1").health, Health::Unhealthy);
        // The maintenance task, not a request, brings it back.
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
        // A second ejection lasts twice as long.
        fail(&web, "b1", 2);
        tokio::time::sleep(Duration::from_millis(1999)).await;
        assert_eq!(backend(&web, "b1").health, Health::Unhealthy);
        tokio::time::sleep(Duration::from_millis(2)).await;
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
    }

    #[tokio::test(start_paused = true)]
    async fn successes_reset_the_failure_count() {
        let web = upstream(
            2,
            "[upstreams.web.outlier_detection]\nconsecutive_failures = 3\n",
        );
        fail(&web, "b1", 2);
        web.observe(&backend(&web, "b1"), None);
        fail(&web, "b1", 2);
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
        fail(&web, "b1", 1);
        assert_eq!(backend(&web, "b1").health, Health::Unhealthy);
    }

    #[tokio::test(start_paused = true)]
    async fn no_more_than_the_max_share_is_ejected() {
        let web = upstream(
            5,
            "[upstreams.web.outlier_detection]\nconsecutive_failures = 1\nmax_ejection_percent = 40\n",
        );
        for name in ["b1", "b2", "b3", "b4", "b5"] {
            fail(&web, name, 1);
        }
        let out: Vec<_> = web
            .backends()
            .iter()
            .filter(|b| b.health != Health::Healthy)
            .map(|b| b.name.clone())
            .collect();
        assert_eq!(out, ["b1", "b2"]);
        assert_eq!(web.backends().eligible().len(), 3);
    }

    #[tokio::test(start_paused = true)]
    async fn slow_start_ramps_the_weight_plugins_see() {
        let web = upstream(
            2,
            "slow_start_ms = 1000\n[upstreams.web.outlier_detection]\nconsecutive_failures = 1\nbase_ejection_ms = 100\n",
        );
        web.start_tasks();
        fail(&web, "b1", 1);
        let generation = web.backends().generation();
        tokio::time::sleep(Duration::from_millis(101)).await;
        assert_eq!(backend(&web, "b1").health, Health::Healthy);
        assert_eq!(backend(&web, "b1").weight, 1);
        tokio::time::sleep(Duration::from_millis(500)).await;
        let halfway = backend(&web, "b1").weight;
        assert!((4..=6).contains(&halfway), "{halfway}");
        tokio::time::sleep(Duration::from_millis(600)).await;
        assert_eq!(backend(&web, "b1").weight, 10);
        assert_eq!(backend(&web, "b1").base_weight, 10);
        // Each step was a new set, so plugins were told.
        assert!(web.backends().generation() > generation);
        assert_eq!(backend(&web, "b2").weight, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn admin_changes_build_new_sets() {
        let web = upstream(2, "");
        let generation = web.backends().generation();
        web.add_backend(
            serde_json::from_str(r#"{"name": "b3", "address": "127.0.0.1:9003"}"#).unwrap(),
        )
        .unwrap();
        assert_eq!(backend(&web, "b3").id, 2);
        web.set_draining("b1", true).unwrap();
        assert_eq!(backend(&web, "b1").health, Health::Draining);
        web.set_weight("b2", 7).unwrap();
        assert_eq!(
            (backend(&web, "b2").weight, backend(&web, "b2").base_weight),
            (7, 7)
        );
        web.remove_backend("b3").unwrap();
        let names: Vec<_> = web.backends().iter().map(|b| b.name.clone()).collect();
        assert_eq!(names, ["b1", "b2"]);
        assert!(web.backends().generation() > generation);
        assert_eq!(
            web.remove_backend("b3"),
            Err(AdminError::NoSuchBackend {
                upstream: "web".into(),
                backend: "b3".into()
            })
        );
        assert!(matches!(
            web.set_weight("b1", 70_000),
            Err(AdminError::Invalid(_))
        ));
        web.set_draining("b1", false).unwrap();
        assert_eq!(web.backends().eligible().len(), 2);
    }
}
