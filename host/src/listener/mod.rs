//! Listeners: bind, accept connections through an [`Acceptor`], and serve
//! HTTP on each (HTTP/1.1 and HTTP/2, as the connection allows) until
//! shutdown, handing every request with its connection's
//! [`ConnectionInfo`] to a handler.

mod acceptor;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinSet;

pub use acceptor::{Acceptor, PlainTcp};

use crate::connection::{ConnectionInfo, Protocols};
use crate::proxy::ProxyBody;

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(30);

/// A listener's socket could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("cannot listen on {addr}: {source}")]
pub struct BindError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr`; returns the listener and the address actually bound (port
/// 0 resolved).
pub async fn bind(addr: SocketAddr) -> Result<(TcpListener, SocketAddr), BindError> {
    let listener = TcpListener::bind(addr)
        .await
        .map_err(|source| BindError { addr, source })?;
    let local = listener
        .local_addr()
        .map_err(|source| BindError { addr, source })?;
    Ok((listener, local))
}

/// What serves the requests of one listener.
pub struct Serve<A, H> {
    /// Completes each accepted connection.
    pub acceptor: A,
    /// Answers each request.
    pub handler: H,
    /// HTTP/1.1 only, whatever the connection could do (the admin API).
    pub http1_only: bool,
}

/// Accepts connections on `listener` and serves them with `serve` until
/// `shutdown` fires; then stops accepting and waits for open connections to
/// finish their current requests.
pub async fn accept_loop<A, H, F>(
    listener: TcpListener,
    serve: Serve<A, H>,
    mut shutdown: watch::Receiver<bool>,
) where
    A: Acceptor,
    H: Fn(Request<Incoming>, Arc<ConnectionInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let local = listener.local_addr().ok();
    let serve = Arc::new(serve);
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, client)) => {
                    let _ = stream.set_nodelay(true);
                    let info = ConnectionInfo::plain(client, local.unwrap_or(client));
                    connections.spawn(connection(stream, info, serve.clone(), shutdown.clone()));
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

/// One client connection: the acceptor's part, then HTTP until it closes or
/// shutdown asks it to finish.
async fn connection<A, H, F>(
    tcp: tokio::net::TcpStream,
    info: ConnectionInfo,
    serve: Arc<Serve<A, H>>,
    shutdown: watch::Receiver<bool>,
) where
    A: Acceptor,
    H: Fn(Request<Incoming>, Arc<ConnectionInfo>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<ProxyBody>> + Send + 'static,
{
    let client = info.client;
    let (stream, info) = match serve.acceptor.accept(tcp, info).await {
        Ok(accepted) => accepted,
        Err(error) => {
            tracing::debug!(%client, %error, "connection refused by its acceptor");
            return;
        }
    };
    let protocols = if serve.http1_only {
        Protocols::Http1
    } else {
        info.protocols()
    };
    let info = Arc::new(info);
    let handler = serve.handler.clone();
    let service = service_fn(move |request| {
        let answer = handler(request, info.clone());
        async move { Ok::<_, Infallible>(answer.await) }
    });
    serve_http(stream, client, service, protocols, shutdown).await;
}

async fn serve_http<S, IO>(
    stream: IO,
    client: SocketAddr,
    service: S,
    protocols: Protocols,
    mut shutdown: watch::Receiver<bool>,
) where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
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
    builder = match protocols {
        Protocols::Auto => builder,
        Protocols::Http1 => builder.http1_only(),
        Protocols::Http2 => builder.http2_only(),
    };
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
