//! An HTTP/2 backend for the tests (hyper's server; prior knowledge, or TLS
//! with the ALPN list given): counts connections opened and closed and
//! requests, and answers by path:
//! - `/` : `NAME VERSION authority=A te=T xff=F` (what it was sent);
//! - `/trailers`: `data`, then trailers `x-checksum: abc`, `x-count: 2`;
//! - `/hold?ms=N`: waits N ms, then answers as `/`;
//! - `/echo`: the request body back, streamed.
//!
//! `goaway_after`: each connection is shut down gracefully (GOAWAY) after
//! that many requests.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, HeaderValue, Request, Response};
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::net::TcpListener;

use super::certs::Leaf;

/// How an [`H2Backend`] runs.
#[derive(Default, Clone)]
pub struct H2Options {
    /// Its `SETTINGS_MAX_CONCURRENT_STREAMS`.
    pub max_concurrent_streams: Option<u32>,
    /// Serve TLS with this certificate, offering these ALPN protocols.
    pub tls: Option<(Leaf, Vec<Vec<u8>>)>,
    /// GOAWAY after this many requests on a connection.
    pub goaway_after: Option<u64>,
    /// Speak HTTP/1.1 only (a backend that does not know HTTP/2).
    pub http1_only: bool,
}

/// The counts an [`H2Backend`] keeps.
#[derive(Default)]
pub struct H2Counts {
    pub opened: AtomicU64,
    pub closed: AtomicU64,
    pub requests: AtomicU64,
}

pub struct H2Backend {
    pub addr: SocketAddr,
    pub counts: Arc<H2Counts>,
    task: tokio::task::JoinHandle<()>,
}

type Body = BoxBody<Bytes, hyper::Error>;

impl H2Backend {
    pub async fn start(name: &str, options: H2Options) -> H2Backend {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let counts = Arc::new(H2Counts::default());
        let acceptor = options
            .tls
            .as_ref()
            .map(|(leaf, alpn)| acceptor(leaf, alpn));
        let (name, shared) = (name.to_string(), counts.clone());
        let task = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                let (name, counts, options) = (name.clone(), shared.clone(), options.clone());
                let acceptor = acceptor.clone();
                tokio::spawn(async move {
                    counts.opened.fetch_add(1, Ordering::SeqCst);
                    match acceptor {
                        Some(acceptor) => {
                            if let Ok(tls) = acceptor.accept(tcp).await {
                                serve(TokioIo::new(tls), name, counts.clone(), &options).await;
                            }
                        }
                        None => serve(TokioIo::new(tcp), name, counts.clone(), &options).await,
                    }
                    counts.closed.fetch_add(1, Ordering::SeqCst);
                });
            }
        });
        H2Backend { addr, counts, task }
    }

    pub fn opened(&self) -> u64 {
        self.counts.opened.load(Ordering::SeqCst)
    }

    pub fn closed(&self) -> u64 {
        self.counts.closed.load(Ordering::SeqCst)
    }

    pub fn requests(&self) -> u64 {
        self.counts.requests.load(Ordering::SeqCst)
    }
}

impl Drop for H2Backend {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn acceptor(leaf: &Leaf, alpn: &[Vec<u8>]) -> tokio_rustls::TlsAcceptor {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let certs = vec![CertificateDer::from_pem_slice(leaf.cert.as_bytes()).unwrap()];
    let key = PrivateKeyDer::from_pem_slice(leaf.key.as_bytes()).unwrap();
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .unwrap();
    config.alpn_protocols = alpn.to_vec();
    tokio_rustls::TlsAcceptor::from(Arc::new(config))
}

async fn serve<I>(io: I, name: String, counts: Arc<H2Counts>, options: &H2Options)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let served = Arc::new(AtomicU64::new(0));
    let (tx, mut goaway) = tokio::sync::mpsc::channel::<()>(1);
    let limit = options.goaway_after;
    let service = service_fn(move |request: Request<Incoming>| {
        let (name, counts, served, tx) = (name.clone(), counts.clone(), served.clone(), tx.clone());
        async move {
            counts.requests.fetch_add(1, Ordering::SeqCst);
            let n = served.fetch_add(1, Ordering::SeqCst) + 1;
            if limit.is_some_and(|limit| n >= limit) {
                let _ = tx.try_send(());
            }
            Ok::<_, Infallible>(answer(&name, request).await)
        }
    });
    let mut builder = hyper::server::conn::http2::Builder::new(TokioExecutor::new());
    builder
        .timer(TokioTimer::new())
        .max_concurrent_streams(options.max_concurrent_streams);
    // Not offering h2 in ALPN: serve HTTP/1.1, as such a backend would.
    let http1_only = options.http1_only
        || options
            .tls
            .as_ref()
            .is_some_and(|(_, alpn)| !alpn.iter().any(|p| p == b"h2"));
    if http1_only {
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, service)
            .await;
        return;
    }
    let connection = builder.serve_connection(io, service);
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        _ = &mut connection => return,
        _ = goaway.recv() => {}
    }
    connection.as_mut().graceful_shutdown();
    let _ = connection.await;
}

fn header(headers: &HeaderMap, name: &str) -> String {
    headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("-")
        .to_string()
}

async fn answer(name: &str, request: Request<Incoming>) -> Response<Body> {
    let path = request.uri().path().to_string();
    let query = request.uri().query().unwrap_or("").to_string();
    let describe = format!(
        "{name} {:?} authority={} te={} xff={}\n",
        request.version(),
        request
            .uri()
            .authority()
            .map_or("-".into(), |a| a.to_string()),
        header(request.headers(), "te"),
        header(request.headers(), "x-forwarded-for"),
    );
    let full = |text: String| Full::new(Bytes::from(text)).map_err(|n| match n {}).boxed();
    match path.as_str() {
        "/trailers" => {
            let mut trailers = HeaderMap::new();
            trailers.insert("x-checksum", HeaderValue::from_static("abc"));
            trailers.insert("x-count", HeaderValue::from_static("2"));
            let frames: Vec<Result<Frame<Bytes>, hyper::Error>> = vec![
                Ok(Frame::data(Bytes::from_static(b"da"))),
                Ok(Frame::data(Bytes::from_static(b"ta"))),
                Ok(Frame::trailers(trailers)),
            ];
            Response::new(Frames(frames.into()).boxed())
        }
        "/hold" => {
            let ms = query
                .strip_prefix("ms=")
                .and_then(|v| v.parse().ok())
                .unwrap_or(100);
            tokio::time::sleep(Duration::from_millis(ms)).await;
            Response::new(full(describe))
        }
        "/echo" => Response::new(request.into_body().boxed()),
        _ => Response::new(full(describe)),
    }
}

/// A body of frames given in advance, one per poll.
struct Frames(std::collections::VecDeque<Result<Frame<Bytes>, hyper::Error>>);

impl hyper::body::Body for Frames {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        std::task::Poll::Ready(self.0.pop_front())
    }
}
