//! Listeners: accept client connections (HTTP/1.1 and cleartext HTTP/2) and
//! hand each request to the proxy with the current snapshot.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use arc_swap::ArcSwap;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

use http::{Request, Response};
use hyper::body::Incoming;

use crate::access_log::AccessLog;
use crate::admin::Admin;
use crate::config::{Config, ConfigError};
use crate::plugin::{PluginError, PluginLimits, PluginRuntime, PluginStore};
use crate::proxy::{ProxyBody, Shared};
use crate::reload::{ReloadError, ReloadKind, Reloader, Signatures, WatchMode};
use crate::snapshot::Snapshot;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// Why weir could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The configuration or a plugin it names is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The plugin runtime could not be created.
    #[error(transparent)]
    Plugin(#[from] PluginError),
    /// The access log file could not be opened.
    #[error("cannot open the access log: {0}")]
    AccessLog(#[source] std::io::Error),
    /// A listener could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
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
}

impl Server {
    /// Loads every plugin `config` names, binds its listeners and starts
    /// serving. Must run inside a multi-threaded tokio runtime.
    ///
    /// When the config came from a file ([`Config::load`]), that file is
    /// watched and re-read on [`Server::reload`]; the plugin files it names
    /// are watched too, unless `plugins.watch = false`.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let runtime = runtime_for(&config)?;
        let access_log = AccessLog::open(&config)
            .map_err(StartError::AccessLog)?
            .map(Arc::new);
        let admin_config = config.admin.clone().zip(config.admin_addr());
        let store = Arc::new(PluginStore::new(runtime));
        let addrs = config.listen_addrs();
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
            .map_err(|e| PluginError::Runtime(format!("loading plugins: {e}")))??
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
        let shared = Arc::new(Shared {
            state: state.clone(),
            access_log: access_log.clone(),
        });
        let mut bound = Vec::new();
        for addr in addrs {
            let (listener, local) = bind(addr).await?;
            tracing::info!(addr = %local, "listening");
            bound.push(local);
            let shared = shared.clone();
            let handler = move |request, client| {
                let shared = shared.clone();
                async move { crate::proxy::handle(&shared, request, client).await }
            };
            tasks.spawn(accept_loop(listener, handler, false, shutdown.subscribe()));
        }
        let mut admin_addr = None;
        if let Some((admin, addr)) = admin_config {
            let (listener, local) = bind(addr).await?;
            if !local.ip().is_loopback() && admin.token().is_none() {
                tracing::warn!(addr = %local, "the admin API listens beyond loopback without a token");
            }
            tracing::info!(addr = %local, "admin API listening");
            admin_addr = Some(local);
            let admin = Arc::new(Admin {
                reloader: reloader.clone(),
                access_log,
                token: admin.token(),
            });
            let handler = move |request, _client| {
                let admin = admin.clone();
                async move { admin.handle(request).await }
            };
            tasks.spawn(accept_loop(listener, handler, true, shutdown.subscribe()));
        }
        Ok(Server {
            addrs: bound,
            admin_addr,
            state,
            reloader,
            shutdown,
            tasks,
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
    /// requests, and waits up to `grace` for them.
    pub async fn shutdown(mut self, grace: Duration) {
        let _ = self.shutdown.send(true);
        let _ = tokio::time::timeout(grace, async {
            while self.tasks.join_next().await.is_some() {}
        })
        .await;
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
            tracing::warn!("running without a compiled-code cache: {error}");
            PluginRuntime::new(limits)
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), StartError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| StartError::Bind { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| StartError::Bind { addr, source })?;
    Ok((listener, local))
}

/// Accepts connections on `listener` and serves each request with
/// `handler` until shutdown; `http1_only` for the admin API.
async fn accept_loop<H, F>(
    listener: TcpListener,
    handler: H,
    http1_only: bool,
    mut shutdown: watch::Receiver<bool>,
) where
    H: Fn(Request<Incoming>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let _ = stream.set_nodelay(true);
                    let handler = handler.clone();
                    let service = service_fn(move |request| {
                        let answer = handler(request, client);
                        async move { Ok::<_, Infallible>(answer.await) }
                    });
                    connections.spawn(serve_connection(stream, client, service, http1_only, shutdown.clone()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: back off, keep serving.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
            _ = shutdown.changed() => break,
        }
    }
    drop(listener);
    while connections.join_next().await.is_some() {}
}

async fn serve_connection<S>(
    stream: tokio::net::TcpStream,
    client: SocketAddr,
    service: S,
    http1_only: bool,
    mut shutdown: watch::Receiver<bool>,
) where
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
    if http1_only {
        builder = builder.http1_only();
    }
    let connection = builder.serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(error) = result {
                tracing::debug!(%client, error = %error, "client connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}
