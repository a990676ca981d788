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

use crate::config::{Config, ConfigError};
use crate::plugin::{PluginError, PluginLimits, PluginRuntime};
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
    state: Arc<ArcSwap<Snapshot>>,
    runtime: Arc<PluginRuntime>,
    shutdown: watch::Sender<bool>,
    tasks: JoinSet<()>,
}

impl Server {
    /// Loads every plugin `config` names, binds its listeners and starts
    /// serving. Must run inside a multi-threaded tokio runtime.
    pub async fn start(config: Config) -> Result<Server, StartError> {
        let runtime = PluginRuntime::new(PluginLimits::from_config(&config.plugins))?;
        let addrs = config.listen_addrs();
        let snapshot = Snapshot::build(config, &runtime)?;
        let state = Arc::new(ArcSwap::from_pointee(snapshot));
        let (shutdown, _) = watch::channel(false);
        let mut tasks = JoinSet::new();
        let mut bound = Vec::new();
        for addr in addrs {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { addr, source })?;
            let local = listener
                .local_addr()
                .map_err(|source| StartError::Bind { addr, source })?;
            tracing::info!(addr = %local, "listening");
            bound.push(local);
            tasks.spawn(accept_loop(listener, state.clone(), shutdown.subscribe()));
        }
        Ok(Server {
            addrs: bound,
            state,
            runtime,
            shutdown,
            tasks,
        })
    }

    /// The addresses actually bound (port 0 resolved).
    pub fn local_addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The snapshot serving new requests now.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// The plugin runtime.
    pub fn runtime(&self) -> &Arc<PluginRuntime> {
        &self.runtime
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

async fn accept_loop(
    listener: TcpListener,
    state: Arc<ArcSwap<Snapshot>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(serve_connection(stream, client, state.clone(), shutdown.clone()));
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

async fn serve_connection(
    stream: tokio::net::TcpStream,
    client: SocketAddr,
    state: Arc<ArcSwap<Snapshot>>,
    mut shutdown: watch::Receiver<bool>,
) {
    let service = service_fn(move |request| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(crate::proxy::handle(&state, request, client).await) }
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT);
    builder.http2().timer(TokioTimer::new());
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
