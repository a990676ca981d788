//! The HTTP/2 pool of one upstream: per backend, a few connections, each
//! carrying up to `h2.max_streams_per_connection` requests at once. A
//! request takes a place on the oldest connection with room; when none has
//! room one new connection is made, and every request that found none waits
//! for it (one dial per backend at a time: a burst opens one connection, and
//! a failed dial fails its waiters with its own error instead of each
//! dialling again). Connections are kept alive with PINGs, closed after
//! `idle_timeout_ms` without a stream, and dropped from the pool when they
//! end (GOAWAY, reset, a PING unanswered).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use http::{Request, Response, Uri};
use hyper::client::conn::http2;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::time::Instant;
use tower_service::Service;

use super::body::BackendBody;
use super::error::SendError;
use crate::config::H2Config;
use crate::upstream::UpstreamBody;
use crate::upstream::connector::Connector;

/// Largest response header list a backend may send (hyper's default for
/// HTTP/2 is 16 KiB; HTTP/1.1 backends may send about as much as this).
const MAX_HEADER_LIST: u32 = 64 * 1024;

/// The HTTP/2 connections of one upstream, by backend address.
pub(super) struct H2Pool {
    connector: Connector,
    /// `h2` in ALPN is required (TLS); prior knowledge otherwise.
    tls: bool,
    builder: http2::Builder<TokioExecutor>,
    max_streams: usize,
    idle_timeout: Duration,
    hosts: Mutex<HashMap<SocketAddr, Arc<Host>>>,
}

/// One backend's connections.
#[derive(Default)]
struct Host {
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Held while a connection is made, so one is made at a time.
    dial: tokio::sync::Mutex<()>,
    /// Dials that failed, and the last one's error: a request that waited
    /// while a dial failed fails with that error.
    failures: AtomicU64,
    last_failure: Mutex<Option<Arc<SendError>>>,
}

/// One connection and how many requests it carries now.
struct Conn {
    sender: http2::SendRequest<UpstreamBody>,
    streams: AtomicUsize,
    /// When the last stream ended, in milliseconds after `opened`.
    idle_since: AtomicU64,
    opened: Instant,
    /// Its driver ended: closed by either side, or failed.
    closed: AtomicBool,
}

impl Conn {
    fn is_usable(&self) -> bool {
        !self.closed.load(Ordering::Acquire) && !self.sender.is_closed()
    }

    /// How long it has carried no stream; zero while it carries one.
    fn idle_for(&self, now: Instant) -> Duration {
        if self.streams.load(Ordering::Acquire) > 0 {
            return Duration::ZERO;
        }
        let since = Duration::from_millis(self.idle_since.load(Ordering::Acquire));
        now.saturating_duration_since(self.opened + since)
    }
}

/// A request's place on a connection, given back when dropped (the
/// response body holds it until it ends).
pub(crate) struct Stream {
    conn: Arc<Conn>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        let conn = &self.conn;
        let millis = conn.opened.elapsed().as_millis() as u64;
        conn.idle_since.store(millis, Ordering::Release);
        conn.streams.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Host {
    /// A place on the oldest usable connection with room; forgets the
    /// connections that ended.
    fn checkout(&self, max: usize) -> Option<Stream> {
        let mut conns = self.conns.lock().unwrap_or_else(PoisonError::into_inner);
        conns.retain(|c| c.is_usable());
        conns.iter().find_map(|conn| {
            conn.streams
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                    (n < max).then_some(n + 1)
                })
                .ok()
                .map(|_| Stream { conn: conn.clone() })
        })
    }
}

impl H2Pool {
    /// A pool making its connections with `connector` (`tls`: over TLS,
    /// where the backend must choose `h2` in ALPN).
    pub(super) fn new(
        connector: Connector,
        tls: bool,
        h2: &H2Config,
        idle_timeout: Duration,
    ) -> H2Pool {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        builder
            .timer(TokioTimer::new())
            .max_header_list_size(MAX_HEADER_LIST)
            .keep_alive_interval(h2.ping_interval())
            .keep_alive_timeout(h2.ping_timeout())
            .keep_alive_while_idle(true);
        H2Pool {
            connector,
            tls,
            builder,
            max_streams: h2.max_streams_per_connection as usize,
            idle_timeout,
            hosts: Mutex::default(),
        }
    }

    /// Sends `request` to the backend at `addr` on a shared connection and
    /// waits for the response head. A request the connection closed before
    /// taking (GOAWAY, a connection found dead) is sent once more on
    /// another; it never reached the backend.
    pub(super) async fn send(
        &self,
        addr: SocketAddr,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<BackendBody>, SendError> {
        let host = self.host(addr);
        let mut again = true;
        loop {
            let stream = match host.checkout(self.max_streams) {
                Some(stream) => stream,
                None => self.dial(&host, addr).await?,
            };
            let mut sender = stream.conn.sender.clone();
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(response.map(|body| BackendBody::h2(body, stream))),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if again => {
                        stream.conn.closed.store(true, Ordering::Release);
                        tracing::debug!(%addr, "HTTP/2 connection closed before taking a request: {}", failed.error());
                        (request, again) = (unsent, false);
                    }
                    _ => return Err(SendError::from(failed.into_error())),
                },
            }
        }
    }

    /// The backend's connections, made on first use. Backends gone from
    /// the config leave an entry until the next new backend, which sweeps
    /// those without connections.
    fn host(&self, addr: SocketAddr) -> Arc<Host> {
        let mut hosts = self.hosts.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(host) = hosts.get(&addr) {
            return host.clone();
        }
        hosts.retain(|_, host| {
            Arc::strong_count(host) > 1
                || !host
                    .conns
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .is_empty()
        });
        hosts.entry(addr).or_default().clone()
    }

    /// A place on a new connection to `addr`, or on one another request
    /// made while this one waited its turn.
    async fn dial(&self, host: &Host, addr: SocketAddr) -> Result<Stream, SendError> {
        let failures = host.failures.load(Ordering::Acquire);
        let _turn = host.dial.lock().await;
        if let Some(stream) = host.checkout(self.max_streams) {
            return Ok(stream);
        }
        if host.failures.load(Ordering::Acquire) != failures {
            let last = host
                .last_failure
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(error) = last.as_ref() {
                return Err(SendError::Waited(error.clone()));
            }
        }
        match self.connect(addr).await {
            Ok(conn) => {
                let mut conns = host.conns.lock().unwrap_or_else(PoisonError::into_inner);
                conns.push(conn.clone());
                Ok(Stream { conn })
            }
            Err(error) => {
                let error = Arc::new(error);
                *host
                    .last_failure
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(error.clone());
                host.failures.fetch_add(1, Ordering::AcqRel);
                Err(SendError::Waited(error))
            }
        }
    }

    /// A new connection to `addr`, carrying one stream (the caller's), with
    /// its driver spawned.
    async fn connect(&self, addr: SocketAddr) -> Result<Arc<Conn>, SendError> {
        let uri = Uri::try_from(format!("http://{addr}/")).expect("an address is a URI");
        let stream = self.connector.clone().call(uri).await?;
        if self.tls && stream.alpn() != Some(b"h2") {
            let chose = match stream.alpn() {
                Some(other) => String::from_utf8_lossy(other).into_owned(),
                None => "none".to_string(),
            };
            return Err(SendError::NotHttp2 { chose });
        }
        let (sender, connection) = self.builder.handshake(stream).await?;
        let conn = Arc::new(Conn {
            sender,
            streams: AtomicUsize::new(1),
            idle_since: AtomicU64::new(0),
            opened: Instant::now(),
            closed: AtomicBool::new(false),
        });
        tracing::debug!(%addr, "HTTP/2 connection to the backend opened");
        tokio::spawn(drive(connection, conn.clone(), addr, self.idle_timeout));
        Ok(conn)
    }
}

/// Runs a connection until it ends or has carried no stream for
/// `idle_timeout`; then marks it closed (dropping it closes the socket).
async fn drive<F>(connection: F, conn: Arc<Conn>, addr: SocketAddr, idle_timeout: Duration)
where
    F: std::future::Future<Output = Result<(), hyper::Error>>,
{
    let mut connection = std::pin::pin!(connection);
    loop {
        let wait = idle_timeout.saturating_sub(conn.idle_for(Instant::now()));
        tokio::select! {
            ended = &mut connection => {
                match ended {
                    Ok(()) => tracing::debug!(%addr, "HTTP/2 connection to the backend closed"),
                    Err(error) => tracing::debug!(%addr, "HTTP/2 connection to the backend ended: {}", crate::error::chain(&error)),
                }
                break;
            }
            () = tokio::time::sleep(wait.max(Duration::from_millis(1))) => {
                if conn.idle_for(Instant::now()) >= idle_timeout {
                    tracing::debug!(%addr, "HTTP/2 connection to the backend idle: closed");
                    break;
                }
            }
        }
    }
    conn.closed.store(true, Ordering::Release);
}

#[cfg(test)]
mod tests;
