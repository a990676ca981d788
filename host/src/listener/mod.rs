//! Listeners: bind, accept connections through an [`Acceptor`], and serve
//! HTTP on each (HTTP/1.1 and HTTP/2, as the connection allows) until
//! shutdown, handing every request with its connection's
//! [`ConnectionInfo`] to a handler.

mod acceptor;
mod tls;

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
pub use tls::{HandshakeFailure, HandshakeStats, TlsAcceptor};

use crate::connection::{ConnectionInfo, Protocols};
use crate::proxy::{ProxyBody, RefusedRequests};

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
    /// The largest HTTP/1.1 request head read (at least 8192): over it the
    /// client gets 431, or 414 for the request line.
    pub max_head_bytes: usize,
    /// Where heads refused for their size are counted, if anywhere.
    pub refused: Option<Arc<RefusedRequests>>,
}

impl<A, H> Serve<A, H> {
    /// The same, accepting with `acceptor` instead.
    pub fn with_acceptor<B>(self, acceptor: B) -> Serve<B, H> {
        Serve {
            acceptor,
            handler: self.handler,
            http1_only: self.http1_only,
            max_head_bytes: self.max_head_bytes,
            refused: self.refused,
        }
    }
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
    let refused = serve.refused.as_deref();
    serve_http(
        stream,
        client,
        service,
        protocols,
        (serve.max_head_bytes, refused),
        shutdown,
    )
    .await;
}

/// Serves HTTP on `stream` until it closes or `shutdown` fires, with
/// the largest request head to read and where heads refused for size are
/// counted.
async fn serve_http<S, IO>(
    stream: IO,
    client: SocketAddr,
    service: S,
    protocols: Protocols,
    (max_head_bytes, refused): (usize, Option<&RefusedRequests>),
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
        .header_read_timeout(HEADER_READ_TIMEOUT)
        // hyper answers a head over the buffer with 431 (414 for the line).
        .max_buf_size(max_head_bytes.max(8192));
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
                let too_large = error
                    .downcast_ref::<hyper::Error>()
                    .is_some_and(hyper::Error::is_parse_too_large);
                if too_large && let Some(refused) = refused {
                    refused.count_head_too_large();
                }
                tracing::debug!(%client, error = %error, "client connection ended with an error");
            }
        }
        _ = shutdown.changed() => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, Ordering};

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    /// Refuses the first connection it is handed, as a TLS acceptor refuses
    /// a failed handshake, and passes the rest through.
    #[derive(Default)]
    struct RefuseFirst(AtomicBool);

    impl Acceptor for RefuseFirst {
        type Stream = tokio::net::TcpStream;

        async fn accept(
            &self,
            tcp: tokio::net::TcpStream,
            info: ConnectionInfo,
        ) -> std::io::Result<(tokio::net::TcpStream, ConnectionInfo)> {
            if !self.0.swap(true, Ordering::SeqCst) {
                return Err(std::io::Error::other("handshake refused"));
            }
            Ok((tcp, info))
        }
    }

    async fn exchange(addr: SocketAddr, request: &[u8]) -> (SocketAddr, String) {
        let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
        let me = stream.local_addr().unwrap();
        stream.write_all(request).await.unwrap();
        let mut answer = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut answer));
        // A connection dropped with our request unread is reset: no answer.
        let _ = read.await.expect("the server closes the connection");
        (me, String::from_utf8_lossy(&answer).into_owned())
    }

    #[tokio::test]
    async fn a_refused_connection_costs_only_itself_and_requests_see_their_connection() {
        let (listener, local) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let handler = |_request, conn: Arc<ConnectionInfo>| async move {
            let body = format!("{} {} {:?}", conn.client, conn.local, conn.scheme());
            crate::proxy::text(http::StatusCode::OK, body)
        };
        let serve = Serve {
            acceptor: RefuseFirst::default(),
            handler,
            http1_only: false,
            max_head_bytes: 8192,
            refused: None,
        };
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(listener, serve, stopped));
        let request = b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n";
        let (_, refused) = exchange(local, request).await;
        assert_eq!(refused, "", "the refused connection is closed unanswered");
        let (me, answer) = exchange(local, request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(
            answer.ends_with(&format!("{me} {local} \"http\"")),
            "{answer}"
        );
        stop.send(true).unwrap();
        tokio::time::timeout(Duration::from_secs(30), task)
            .await
            .expect("the loop stops at shutdown")
            .unwrap();
    }

    #[tokio::test]
    async fn an_http1_only_listener_refuses_the_http2_preface() {
        let (listener, local) = bind("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let handler = |_request, _conn| async { crate::proxy::text(http::StatusCode::OK, "") };
        let serve = Serve {
            acceptor: PlainTcp,
            handler,
            http1_only: true,
            max_head_bytes: 8192,
            refused: None,
        };
        let (_stop, stopped) = watch::channel(false);
        tokio::spawn(accept_loop(listener, serve, stopped));
        let (_, answer) = exchange(local, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n").await;
        assert!(!answer.contains("HTTP/2"), "{answer}");
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }
}
