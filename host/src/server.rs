//! The running weir: loads the config's plugins into the first snapshot,
//! starts its listeners (see [`crate::listener`]) and the admin API, and
//! reloads and shuts down.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::config::{Config, ConfigError, FrontLimits, Scheduler};
use crate::listener::{
    Acceptor, BindError, Bound, HandshakeStats, Serve, TlsAcceptor, accept_loop, bind, bind_copies,
};
use crate::plugin::{PluginError, PluginLimits, PluginRuntime, PluginStore};
use crate::proxy::{RefusedRequests, Shared, Tunnels};
use crate::reload::{ReloadError, ReloadKind, Reloader, Signatures, WatchMode};
use crate::snapshot::Snapshot;
use crate::termination::ListenerAt;
use crate::workers::Workers;

/// Why weir could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration or a plugin it names is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The plugin runtime could not be created.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The access log could not be started.
    #[error(transparent)]
    AccessLog(crate::access_log::AccessLogError),
    /// The worker threads could not be started.
    #[error("cannot start the worker threads")]
    Workers(#[source] std::io::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

impl From<BindError> for StartError {
    fn from(error: BindError) -> Self {
        StartError::Bind {
            addr: error.addr,
            source: error.source,
        }
    }
}

/// A running weir: its listeners, current snapshot and plugin runtime.
/// Dropping it stops accepting connections.
pub struct Server {
    addrs: Vec<SocketAddr>,
    admin_addr: Option<SocketAddr>,
    state: Arc<ArcSwap<Snapshot>>,
    reloader: Arc<Reloader>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
    /// The accept loops of the listeners' copies on the other workers.
    remote: Vec<tokio::task::JoinHandle<()>>,
    /// Dropped after `remote`'s handles: ends the worker threads.
    _workers: Workers,
    tunnels: Arc<Tunnels>,
}

impl Server {
    /// Loads every plugin `config` names, binds its listeners and starts
    /// serving. Health checks, reloads and the admin API run on the
    /// calling runtime, and so do the listeners with the default
    /// `[runtime] scheduler = "shared"`; with `"per-worker"`, each of the
    /// `workers` is a thread of its own with its own copy of every
    /// listener.
    ///
    /// When the config came from a file ([`Config::load`]), that file is
    /// watched and re-read on [`Server::reload`]; the plugin files it names
    /// are watched too, unless `plugins.watch = false`.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let runtime = runtime_for(&config)?;
        // Per worker: every worker a thread of its own; shared: the
        // calling runtime's pool serves the listeners.
        let scheduler = config.runtime.effective_scheduler();
        let worker_count = config.runtime.workers.resolve();
        let own_threads = match scheduler {
            Scheduler::Shared => 0,
            Scheduler::PerWorker => worker_count,
        };
        tracing::info!(
            workers = worker_count,
            ?scheduler,
            configured = ?config.runtime.scheduler,
            "serving client connections"
        );
        let workers = Workers::start(own_threads).map_err(StartError::Workers)?;
        let access_log = AccessLog::open(&config)
            .map_err(StartError::AccessLog)?
            .map(Arc::new);
        let admin_config = config.admin.clone().zip(config.admin_addr());
        let store = Arc::new(PluginStore::new(runtime));
        let listeners: Vec<(SocketAddr, FrontLimits, Option<ListenerAt>)> = config
            .listeners
            .iter()
            .enumerate()
            .filter_map(|(i, l)| {
                let addr = l.address.get_ref().parse().ok()?;
                let tls = l.tls.is_some().then(|| ListenerAt::of(&config, i));
                Some((addr, l.limits(), tls))
            })
            .collect();
        // The file the config came from, or the config itself in memory.
        let source = crate::source::for_config(&config);
        // Before the first load, so no change announced after it is missed.
        let changes = source.changes();
        let watch_interval = config
            .plugins
            .watch
            .then(|| Duration::from_millis(config.plugins.watch_interval_ms));
        // Taken before the plugins are read, so a write during startup is
        // picked up by the watcher rather than missed.
        let watched = crate::reload::watched_files(&config, &*source);
        let (baseline, snapshot) = {
            let store = store.clone();
            tokio::task::spawn_blocking(move || {
                let baseline = Signatures::read(&watched);
                Snapshot::build(config, &store).map(|snapshot| (baseline, snapshot))
            })
            .await
            .map_err(|e| PluginError::runtime("loading plugins", e))??
        };
        snapshot.start_tasks();
        let state = Arc::new(ArcSwap::from_pointee(snapshot));
        let reloader = Arc::new(Reloader::new(source, state.clone(), store));
        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        if let Some(interval) = watch_interval {
            tasks.spawn(crate::reload::watch(
                reloader.clone(),
                interval,
                WatchMode::from_env(),
                baseline,
                shutdown.subscribe(),
            ));
        }
        tasks.spawn(crate::reload::follow(
            reloader.clone(),
            changes,
            shutdown.subscribe(),
        ));
        let refused = Arc::new(RefusedRequests::default());
        let tunnels = Tunnels::new();
        let mut bound_addrs = Vec::new();
        let mut handshakes = Vec::new();
        let mut remote = Vec::new();
        for (addr, limits, tls) in listeners {
            let bound = bind_copies(addr, workers.handles().len().max(1))?;
            tracing::info!(addr = %bound.local, tls = tls.is_some(), copies = 1 + bound.copies.len(), "listening");
            bound_addrs.push(bound.local);
            let shared = Arc::new(Shared {
                state: state.clone(),
                access_log: access_log.clone(),
                refused: refused.clone(),
                body_read_timeout: limits.body_read_timeout,
                tunnels: tunnels.clone(),
            });
            // Boxed once per request: the request's future (about 5 KB)
            // then stays where it is, instead of being copied into each
            // wrapper on its way to hyper (the service's future, hyper's
            // slot for it), which cost ~4% of weir's CPU in memmove.
            let handler =
                move |request, conn| Box::pin(crate::proxy::handle(shared.clone(), request, conn));
            let serve = Serve::new(handler, false, limits, Some(refused.clone()));
            let accepting = Accepting {
                tasks: &mut tasks,
                remote: &mut remote,
                workers: &workers,
                shutdown: &shutdown,
            };
            if let Some(configured) = tls {
                let stats = Arc::new(HandshakeStats::default());
                handshakes.push((bound.local.to_string(), stats.clone()));
                let acceptor = TlsAcceptor::new(state.clone(), configured, stats);
                accepting.spawn(bound, serve.with_acceptor(acceptor))?;
            } else {
                accepting.spawn(bound, serve)?;
            }
        }
        let mut admin_addr = None;
        if let Some((admin, addr)) = admin_config {
            let (listener, local) = bind(addr).await.map_err(StartError::from)?;
            if !local.ip().is_loopback() && admin.token().is_none() {
                tracing::warn!(addr = %local, "the admin API listens beyond loopback without a token");
            }
            tracing::info!(addr = %local, "admin API listening");
            admin_addr = Some(local);
            let admin = Arc::new(Admin {
                reloader: reloader.clone(),
                access_log,
                token: admin.token(),
                refused,
                handshakes,
            });
            let handler = move |request, _conn| {
                let admin = admin.clone();
                async move { admin.handle(request).await }
            };
            let serve = Serve::new(handler, true, FrontLimits::default(), None);
            tasks.spawn(accept_loop(listener, Arc::new(serve), shutdown.subscribe()));
        }
        Ok(Server {
            addrs: bound_addrs,
            admin_addr,
            state,
            reloader,
            shutdown,
            tasks,
            remote,
            _workers: workers,
            tunnels,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The admin API's address, when it has one.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.admin_addr
    }

    /// The snapshot serving new requests now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Re-reads the config file (if weir runs from one) and picks up changed
    /// plugin files: what SIGHUP does. On error the running configuration
    /// keeps serving.
    pub async fn reload(&self) -> Result<(), ReloadError> {
        self.reloader.reload(ReloadKind::Config).await
    }

    /// Snapshots swapped in by reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloader.reloads()
    }

    /// Stops accepting, asks open connections to finish their current
    /// requests and open tunnels to close after their upstream's
    /// `tunnel_drain_grace_ms`, and waits up to `grace` for them.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        self.tunnels.shut_down();
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
            for accepting in &mut self.remote {
                let _ = accepting.await;
            }
            self.tunnels.closed().await;
        })
        .await;
    }

    /// Tunnels (upgraded connections such as WebSockets) open now.
    pub fn open_tunnels(&self) -> usize {
        self.tunnels.open()
    }
}

/// Where a listener's accept loops go: on the calling runtime when there
/// are no worker threads, else one copy on each worker.
struct Accepting<'a> {
    tasks: &'a mut JoinSet<()>,
    remote: &'a mut Vec<tokio::task::JoinHandle<()>>,
    workers: &'a Workers,
    shutdown: &'a watch::Sender<bool>,
}

impl Accepting<'_> {
    fn spawn<A, H, F>(self, bound: Bound, serve: Serve<A, H>) -> Result<(), BindError>
    where
        A: Acceptor,
        H: Fn(http::Request<hyper::body::Incoming>, Arc<crate::connection::ConnectionInfo>) -> F
            + Clone
            + Send
            + Sync
            + 'static,
        F: std::future::Future<Output = http::Response<crate::proxy::ProxyBody>> + Send + 'static,
    {
        let serve = Arc::new(serve);
        let local = bound.local;
        if self.workers.handles().is_empty() {
            let stop = self.shutdown.subscribe();
            self.tasks.spawn(accept_loop(bound.first, serve, stop));
            return Ok(());
        }
        let first = bound.first.into_std().map_err(|source| BindError {
            addr: local,
            source,
        })?;
        let copies = std::iter::once(first).chain(bound.copies);
        for (copy, worker) in copies.zip(self.workers.handles()) {
            let (serve, stop) = (serve.clone(), self.shutdown.subscribe());
            self.remote.push(worker.spawn(async move {
                match tokio::net::TcpListener::from_std(copy) {
                    Ok(listener) => accept_loop(listener, serve, stop).await,
                    Err(error) => {
                        tracing::error!(addr = %local, %error, "a worker cannot accept on its copy of the listener");
                    }
                }
            }));
        }
        Ok(())
    }
}

/// The plugin runtime for `config`, with the compiled-code cache when one
/// can be set up (weir runs without it, and says so, when it cannot).
pub fn runtime_for(config: &Config) -> Result<Arc<PluginRuntime>, PluginError> {
    let limits = PluginLimits::from_config(&config.plugins);
    let Some(dir) = config.cache_dir() else {
        return PluginRuntime::new(limits);
    };
    match PluginRuntime::with_cache(limits, Some(&dir)) {
        Ok(runtime) => Ok(runtime),
        Err(error) => {
            let error = crate::error::chain(&error);
            tracing::warn!("running without a compiled-code cache: {error}");
            PluginRuntime::new(limits)
        }
    }
}
