//! The HTTP connection one client connection is served as: HTTP/1.1 (with
//! upgrades, so a WebSocket handshake can switch protocols), HTTP/2, or
//! either as the client's first bytes say. hyper-util's upgradeable
//! connection ignores `http1_only`, so an HTTP/1.1-only connection (the
//! admin API, ALPN `http/1.1`) is served by hyper's HTTP/1.1 builder.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::Protocols;
use crate::proxy::ProxyBody;

/// What a served connection ends with.
pub(super) type Ended = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A connection being served, that can be asked to finish.
pub(super) trait Serving: Future<Output = Ended> + Send {
    /// Stops taking new requests (GOAWAY on HTTP/2), finishing those open.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// A boxed [`Serving`].
pub(super) type Served<'a> = Pin<Box<dyn Serving + 'a>>;

/// Serves `io` with `service` as `protocols` allows: `builder` for HTTP/2
/// and for a connection that may be either, `max_buf_size` the HTTP/1.1
/// head buffer of an HTTP/1.1-only one.
pub(super) fn serve<'a, IO, S>(
    builder: &'a auto::Builder<TokioExecutor>,
    max_buf_size: usize,
    io: IO,
    service: S,
    protocols: Protocols,
) -> Served<'a>
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    S: hyper::service::Service<
            Request<Incoming>,
            Response = Response<ProxyBody>,
            Error = Infallible,
        > + Send
        + 'static,
    S::Future: Send + 'static,
{
    let io = TokioIo::new(io);
    match protocols {
        Protocols::Auto => Box::pin(builder.serve_connection_with_upgrades(io, service)),
        Protocols::Http2 => Box::pin(builder.serve_connection(io, service)),
        Protocols::Http1 => {
            let connection = http1::Builder::new()
                .timer(TokioTimer::new())
                // The connection's own clock times heads and idle spells.
                .header_read_timeout(None)
                .max_buf_size(max_buf_size)
                .serve_connection(io, service)
                .with_upgrades();
            Box::pin(Http1(Box::pin(connection)))
        }
    }
}

impl<I, S, E> Serving for auto::UpgradeableConnection<'_, I, S, E>
where
    Self: Future<Output = Ended> + Send,
    S: hyper::service::Service<Request<Incoming>, Response = Response<ProxyBody>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, ProxyBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::UpgradeableConnection::graceful_shutdown(self);
    }
}

impl<I, S, E> Serving for auto::Connection<'_, I, S, E>
where
    Self: Future<Output = Ended> + Send,
    S: hyper::service::Service<Request<Incoming>, Response = Response<ProxyBody>>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
    E: hyper_util::server::conn::auto::HttpServerConnExec<S::Future, ProxyBody>,
{
    fn graceful_shutdown(self: Pin<&mut Self>) {
        auto::Connection::graceful_shutdown(self);
    }
}

/// hyper's HTTP/1.1 connection, its error boxed like the others'.
struct Http1<I, S: hyper::service::HttpService<Incoming>>(
    Pin<Box<http1::UpgradeableConnection<I, S>>>,
);

impl<I, S> Future for Http1<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    type Output = Ended;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        self.0.as_mut().poll(cx).map_err(Into::into)
    }
}

impl<I, S> Serving for Http1<I, S>
where
    Self: Send,
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    fn graceful_shutdown(mut self: Pin<&mut Self>) {
        self.0.as_mut().graceful_shutdown();
    }
}
