//! The HTTP connection one client connection is served as: HTTP/1.1 (with
//! upgrades, so a WebSocket handshake can switch protocols) or HTTP/2,
//! from hyper's builders, built once per thread for each listener's
//! limits rather than per connection.

use std::cell::RefCell;
use std::future::Future;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};

use super::{H2_MAX_LOCAL_ERROR_RESETS, H2_MAX_PENDING_ACCEPT_RESETS};
use crate::config::FrontLimits;
use crate::proxy::ProxyBody;

/// What a served connection ends with.
pub(super) type Ended = Result<(), Box<dyn std::error::Error + Send + Sync>>;

/// A connection being served, that can be asked to finish.
pub(super) trait Serving: Future<Output = Ended> + Send {
    /// Stops taking new requests (GOAWAY on HTTP/2), finishing those open.
    fn graceful_shutdown(self: Pin<&mut Self>);
}

/// hyper's builders for one listener's limits.
pub(super) struct Builders {
    http1: http1::Builder,
    http2: http2::Builder<TokioExecutor>,
}

impl Builders {
    fn new(limits: &FrontLimits) -> Builders {
        let mut http1 = http1::Builder::new();
        http1
            .timer(TokioTimer::new())
            // The connection's own clock times heads and idle spells.
            .header_read_timeout(None)
            // hyper answers a head over the buffer with 431 (414 for the line).
            .max_buf_size(limits.max_head_bytes.max(8192));
        let mut http2 = http2::Builder::new(TokioExecutor::new());
        http2
            .timer(TokioTimer::new())
            .max_concurrent_streams(limits.h2_max_concurrent_streams)
            .max_header_list_size(limits.max_head_bytes as u32)
            .max_pending_accept_reset_streams(H2_MAX_PENDING_ACCEPT_RESETS)
            .max_local_error_reset_streams(H2_MAX_LOCAL_ERROR_RESETS);
        Builders { http1, http2 }
    }

    /// Runs `f` with the builders for `limits`: this thread's, made the
    /// first time these limits are seen on it.
    pub(super) fn with<R>(limits: &FrontLimits, f: impl FnOnce(&Builders) -> R) -> R {
        thread_local! {
            static BUILT: RefCell<Vec<(FrontLimits, Rc<Builders>)>> = const { RefCell::new(Vec::new()) };
        }
        let builders = BUILT.with_borrow_mut(|built| {
            if let Some((_, builders)) = built.iter().find(|(l, _)| l == limits) {
                return builders.clone();
            }
            let builders = Rc::new(Builders::new(limits));
            built.push((*limits, builders.clone()));
            builders
        });
        f(&builders)
    }

    /// Serves `io` as HTTP/1.1 with `service`.
    pub(super) fn http1<IO, S>(&self, io: IO, service: S) -> Http1<TokioIo<IO>, S>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
        S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        let connection = self
            .http1
            .serve_connection(TokioIo::new(io), service)
            .with_upgrades();
        Http1(Box::pin(connection))
    }

    /// Serves `io` as HTTP/2 with `service`.
    pub(super) fn http2<IO, S>(&self, io: IO, service: S) -> Http2<TokioIo<IO>, S>
    where
        IO: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
        S: hyper::service::Service<
                Request<Incoming>,
                Response = Response<ProxyBody>,
                Error = std::convert::Infallible,
            > + Send
            + 'static,
        S::Future: Send + 'static,
    {
        Http2(Box::pin(
            self.http2.serve_connection(TokioIo::new(io), service),
        ))
    }
}

/// hyper's HTTP/1.1 connection, its error boxed like the others'.
pub(super) struct Http1<I, S: hyper::service::HttpService<Incoming>>(
    Pin<Box<http1::UpgradeableConnection<I, S>>>,
);

impl<I, S> Http1<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    /// The stream, the bytes hyper read and did not use, and the service,
    /// of a connection that ended without switching protocols.
    pub(super) fn into_parts(self) -> Option<http1::Parts<I, S>> {
        Pin::into_inner(self.0).into_parts()
    }
}

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

/// hyper's HTTP/2 connection, its error boxed like the others'.
pub(super) struct Http2<I, S: hyper::service::HttpService<Incoming>>(
    Pin<Box<http2::Connection<I, S, TokioExecutor>>>,
);

impl<I, S> Future for Http2<I, S>
where
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    type Output = Ended;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Ended> {
        self.0.as_mut().poll(cx).map_err(Into::into)
    }
}

impl<I, S> Serving for Http2<I, S>
where
    Self: Send,
    S: hyper::service::HttpService<Incoming, ResBody = ProxyBody>,
    S::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
    S::Future: Send + 'static,
    I: hyper::rt::Read + hyper::rt::Write + Unpin + 'static,
{
    fn graceful_shutdown(mut self: Pin<&mut Self>) {
        self.0.as_mut().graceful_shutdown();
    }
}
