//! How a connection to a backend is made: TCP (nodelay, keep-alive), then,
//! for a TLS upstream, the handshake ([`Origination`]), the two bounded
//! together by the upstream's connect timeout. The pool's connector and the
//! health checks share it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper::rt::{Read, ReadBufCursor, Write};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

use crate::tls::client::{ClientTls, HandshakeError};

/// TLS to an upstream's backends: the client config and the name to verify.
#[derive(Debug, Clone)]
pub struct Origination {
    /// The rustls client.
    pub client: ClientTls,
    /// The configured `server_name`; none: the backend's address.
    pub server_name: Option<ServerName<'static>>,
}

impl Origination {
    /// The handshake on `tcp` to the backend at `host` (an IP from the
    /// backend's address), verifying `server_name` or that IP.
    pub async fn handshake(
        &self,
        tcp: TcpStream,
        host: std::net::IpAddr,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        let name = self
            .server_name
            .clone()
            .unwrap_or_else(|| ServerName::from(host));
        self.client.connect(tcp, name).await
    }

    /// The same TLS offering `alpn` instead.
    pub fn with_alpn(&self, alpn: &[&[u8]]) -> Origination {
        Origination {
            client: self.client.with_alpn(alpn),
            server_name: self.server_name.clone(),
        }
    }
}

/// Why a connection to a backend could not be made.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The TCP connect failed (refused, unreachable, timed out).
    #[error("tcp connect")]
    Tcp(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The TLS handshake failed or timed out.
    #[error("tls handshake")]
    Tls(#[source] HandshakeError),
}

/// The TLS handshake, if `tls`, on a connected `tcp`, within `left`, what
/// is left of the `whole` timeout (which a timeout error names).
pub async fn secure(
    tls: Option<&Origination>,
    tcp: TcpStream,
    addr: SocketAddr,
    left: Duration,
    whole: Duration,
) -> Result<BackendStream, HandshakeError> {
    let Some(tls) = tls else {
        return Ok(BackendStream::Plain(TokioIo::new(tcp)));
    };
    match tokio::time::timeout(left, tls.handshake(tcp, addr.ip())).await {
        Ok(Ok(stream)) => Ok(BackendStream::Tls(Box::new(TokioIo::new(stream)))),
        Ok(Err(error)) => Err(error),
        Err(_) => Err(HandshakeError::timed_out(whole)),
    }
}

/// The pool's connector: hyper-util's [`HttpConnector`] for TCP, then
/// [`secure`].
#[derive(Clone)]
pub struct Connector {
    http: HttpConnector,
    tls: Option<Arc<Origination>>,
    timeout: Duration,
}

impl Connector {
    /// A connector with `timeout` for TCP connect and TLS handshake
    /// together.
    pub fn new(timeout: Duration, tls: Option<Arc<Origination>>) -> Connector {
        let mut http = HttpConnector::new();
        http.set_connect_timeout(Some(timeout));
        http.set_nodelay(true);
        http.set_keepalive(Some(Duration::from_secs(60)));
        http.enforce_http(false);
        Connector { http, tls, timeout }
    }
}

impl tower_service::Service<Uri> for Connector {
    type Response = BackendStream;
    type Error = ConnectError;
    type Future = Pin<Box<dyn Future<Output = Result<BackendStream, ConnectError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), ConnectError>> {
        self.http
            .poll_ready(cx)
            .map_err(|e| ConnectError::Tcp(Box::new(e)))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let (mut http, tls, timeout) = (self.http.clone(), self.tls.clone(), self.timeout);
        Box::pin(async move {
            let started = tokio::time::Instant::now();
            let tcp = http
                .call(uri)
                .await
                .map_err(|e| ConnectError::Tcp(Box::new(e)))?
                .into_inner();
            let addr = tcp
                .peer_addr()
                .map_err(|e| ConnectError::Tcp(Box::new(e)))?;
            let left = timeout.saturating_sub(started.elapsed());
            (secure(tls.as_deref(), tcp, addr, left, timeout).await).map_err(ConnectError::Tls)
        })
    }
}

/// A connection to a backend: plain TCP or TLS over it.
#[derive(Debug)]
pub enum BackendStream {
    /// Plain HTTP.
    Plain(TokioIo<TcpStream>),
    /// TLS.
    Tls(Box<TokioIo<TlsStream<TcpStream>>>),
}

impl BackendStream {
    /// The protocol the backend chose in ALPN: none on plain TCP, or when
    /// it chose none.
    pub fn alpn(&self) -> Option<&[u8]> {
        match self {
            BackendStream::Plain(_) => None,
            BackendStream::Tls(tls) => tls.inner().get_ref().1.alpn_protocol(),
        }
    }
}

impl Read for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: ReadBufCursor<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            BackendStream::Tls(s) => Pin::new(&mut **s).poll_read(cx, buf),
        }
    }
}

impl Write for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            BackendStream::Tls(s) => Pin::new(&mut **s).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_flush(cx),
            BackendStream::Tls(s) => Pin::new(&mut **s).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            BackendStream::Tls(s) => Pin::new(&mut **s).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            BackendStream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            BackendStream::Tls(s) => Pin::new(&mut **s).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.is_write_vectored(),
            BackendStream::Tls(s) => s.is_write_vectored(),
        }
    }
}

/// The stream under either kind, for weir's own HTTP/1.1 codec, which
/// reads and writes it with tokio's traits.
macro_rules! inner {
    ($self:ident, $s:ident => $call:expr) => {
        match $self.get_mut() {
            BackendStream::Plain(s) => {
                let $s = Pin::new(s.inner_mut());
                $call
            }
            BackendStream::Tls(s) => {
                let $s = Pin::new(s.inner_mut());
                $call
            }
        }
    };
}

impl tokio::io::AsyncRead for BackendStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        inner!(self, s => s.poll_read(cx, buf))
    }
}

impl tokio::io::AsyncWrite for BackendStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        inner!(self, s => s.poll_write(cx, buf))
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(self, s => s.poll_flush(cx))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        inner!(self, s => s.poll_shutdown(cx))
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        inner!(self, s => s.poll_write_vectored(cx, bufs))
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            BackendStream::Plain(s) => s.inner().is_write_vectored(),
            BackendStream::Tls(s) => s.inner().is_write_vectored(),
        }
    }
}
