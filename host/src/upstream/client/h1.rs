//! The HTTP/1.1 pool of one upstream, over weir's own codec: per backend
//! address, a LIFO stack of idle keep-alive connections with no task of
//! their own. A request is written and its response head read in the
//! requesting task (`conn.rs`); its body is read by whoever polls it
//! (`body.rs`), and its connection goes back when the body ended cleanly
//! and both sides kept it alive. A parked connection is checked with a
//! non-blocking read when taken (bytes or the backend's close: closed,
//! the next one taken); one reaper task per pool, running only while
//! connections are idle, closes those idle past `idle_timeout_ms`.
//!
//! A request a pooled connection failed before any byte of a response
//! arrived is sent once more on a new connection when it can be replayed:
//! it had no body, or a body of at most [`BUFFERED_BODY`] bytes that was
//! all there before anything was sent. A streamed body is never sent twice.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{CONNECTION, UPGRADE};
use http::{HeaderMap, Request, Response, StatusCode, Uri};
use http_body::Body;
use tokio::time::Instant;
use tower_service::Service;

use super::body::BackendBody;
use super::error::SendError;
use crate::upstream::UpstreamBody;
use crate::upstream::connector::Connector;

mod body;
mod chunked;
mod conn;
mod encode;
mod out;
mod parse;
mod upgrade;

pub(crate) use body::H1Body;
use conn::{Conn, Outgoing};
pub use parse::Malformed;
pub use upgrade::{BackendUpgrade, take_upgrade};

/// A request body of a known length up to this, when all of it is there,
/// is sent with the head in one write, and is replayable.
pub const BUFFERED_BODY: u64 = 16 * 1024;

/// The HTTP/1.1 connections of one upstream, by backend address.
pub(super) struct H1Pool {
    connector: Connector,
    shared: Arc<Shared>,
}

/// What the pool's requests, bodies and reaper share.
struct Shared {
    max_idle: usize,
    idle_timeout: Duration,
    idle: Mutex<Idle>,
    counts: Arc<H1Counts>,
}

/// The idle connections, and whether the reaper runs.
#[derive(Default)]
struct Idle {
    /// Fx-hashed: the keys are the config's backend addresses, not a
    /// client's, and SipHash was two hashes of ~230 instructions per
    /// proxied request (one to take, one to park).
    hosts: rustc_hash::FxHashMap<SocketAddr, Vec<Parked>>,
    reaping: bool,
}

/// An idle connection and since when.
struct Parked {
    conn: Conn,
    since: Instant,
}

/// What an HTTP/1.1 pool has done, for `/metrics`.
#[derive(Debug, Default)]
struct H1Counts {
    open: AtomicU64,
    opened: AtomicU64,
    reused: AtomicU64,
    failed: AtomicU64,
    resent: AtomicU64,
    refused: AtomicU64,
}

/// Counts a connection open while it lives.
pub(crate) struct OpenGuard(Arc<H1Counts>);

impl OpenGuard {
    fn new(counts: &Arc<H1Counts>) -> OpenGuard {
        counts.opened.fetch_add(1, Ordering::Relaxed);
        counts.open.fetch_add(1, Ordering::Relaxed);
        OpenGuard(counts.clone())
    }
}

impl Drop for OpenGuard {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}

/// A snapshot of an HTTP/1.1 pool, for `/metrics`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H1Stats {
    /// Connections open now (idle or carrying a request).
    pub open: u64,
    /// Connections idle in the pool now.
    pub idle: u64,
    /// Connections ever opened.
    pub opened: u64,
    /// Requests sent on a connection taken from the pool.
    pub reused: u64,
    /// Dials that failed (connect, TLS).
    pub failed: u64,
    /// Requests a pooled connection failed before any response byte, sent
    /// again on a new connection.
    pub resent: u64,
    /// Responses refused as malformed or hostile (framing that reads two
    /// ways, oversized heads, a 1xx flood, bytes past the body's end).
    pub refused: u64,
}

/// Where a lent connection goes back to.
pub(crate) struct Home {
    shared: Arc<Shared>,
    addr: SocketAddr,
}

impl Home {
    /// The connection idle again.
    fn park(&self, conn: Conn) {
        self.shared.park(self.addr, conn, &self.shared);
    }

    /// The connection is closed: its backend broke the framing.
    fn poisoned(&self, why: Malformed) {
        self.shared.refused(self.addr, why);
    }
}

impl Shared {
    /// `conn` idle for `addr`, the oldest dropped past `max_idle`; starts
    /// the reaper if it is not running.
    fn park(&self, addr: SocketAddr, conn: Conn, this: &Arc<Shared>) {
        if self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let stack = idle.hosts.entry(addr).or_default();
        if stack.len() >= self.max_idle {
            // The oldest is at the bottom; dropping it closes it.
            stack.remove(0);
        }
        stack.push(Parked { conn, since: now });
        if !idle.reaping {
            idle.reaping = true;
            tokio::spawn(reap(Arc::downgrade(this)));
        }
    }

    /// The most recently parked connection to `addr` still open with
    /// nothing to read; the others on the way are closed.
    fn checkout(&self, addr: SocketAddr) -> Option<Conn> {
        loop {
            let mut conn = {
                let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
                idle.hosts.get_mut(&addr)?.pop()?.conn
            };
            if conn.idle_and_open() {
                return Some(conn);
            }
            if !conn.buf.is_empty() {
                self.refused(addr, Malformed::PastTheEnd);
            }
            tracing::debug!(%addr, "pooled HTTP/1.1 connection closed or sent bytes while idle: closed");
        }
    }

    /// Closes what has been idle for `idle_timeout`, and what the backend
    /// closed; when the next connection would be due, or none if none is
    /// idle.
    fn sweep(&self, now: Instant) -> Option<Instant> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next: Option<Instant> = None;
        idle.hosts.retain(|_, stack| {
            stack.retain_mut(|p| {
                now.saturating_duration_since(p.since) < self.idle_timeout && p.conn.idle_and_open()
            });
            if let Some(oldest) = stack.first() {
                let due = oldest.since + self.idle_timeout;
                next = Some(next.map_or(due, |n| n.min(due)));
            }
            !stack.is_empty()
        });
        if next.is_none() {
            idle.reaping = false;
        }
        next
    }

    fn idle_count(&self) -> u64 {
        let idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        idle.hosts.values().map(|s| s.len() as u64).sum()
    }

    /// A response refused, counted and logged (at most once a second per
    /// pool: a backend drives it).
    fn refused(&self, addr: SocketAddr, why: Malformed) {
        self.counts.refused.fetch_add(1, Ordering::Relaxed);
        static LAST_LOGGED: AtomicU64 = AtomicU64::new(0);
        let second = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        if LAST_LOGGED.swap(second, Ordering::Relaxed) != second {
            tracing::warn!(%addr, "HTTP/1.1 backend response refused, its connection closed: {why}");
        }
    }
}

/// The pool's reaper: one timer, due when the oldest idle connection is;
/// ends when nothing is idle (the next parked connection starts another)
/// or the pool is gone.
async fn reap(shared: Weak<Shared>) {
    let mut due = match shared.upgrade() {
        Some(shared) => Instant::now() + shared.idle_timeout,
        None => return,
    };
    loop {
        tokio::time::sleep_until(due).await;
        let Some(shared) = shared.upgrade() else {
            return;
        };
        match shared.sweep(Instant::now()) {
            Some(next) => due = next,
            None => return,
        }
    }
}

impl H1Pool {
    /// A pool dialling with `connector`, keeping up to `max_idle` idle
    /// connections per backend for `idle_timeout` each.
    pub(super) fn new(connector: Connector, max_idle: usize, idle_timeout: Duration) -> H1Pool {
        H1Pool {
            connector,
            shared: Arc::new(Shared {
                max_idle,
                idle_timeout,
                idle: Mutex::default(),
                counts: Arc::default(),
            }),
        }
    }

    /// Its connections now, and its counts.
    pub(super) fn stats(&self) -> H1Stats {
        let counts = &self.shared.counts;
        H1Stats {
            open: counts.open.load(Ordering::Relaxed),
            idle: self.shared.idle_count(),
            opened: counts.opened.load(Ordering::Relaxed),
            reused: counts.reused.load(Ordering::Relaxed),
            failed: counts.failed.load(Ordering::Relaxed),
            resent: counts.resent.load(Ordering::Relaxed),
            refused: counts.refused.load(Ordering::Relaxed),
        }
    }

    /// Sends `request` (its URI in origin form, or absolute) to the
    /// backend at `addr` and reads the response head.
    pub(super) async fn send(
        &self,
        addr: SocketAddr,
        request: Request<UpstreamBody>,
    ) -> Result<Response<BackendBody>, SendError> {
        let (parts, mut body) = request.into_parts();
        let upgrading = upgrade_request(&parts.headers);
        let keeps = !upgrading && parse::keep_alive(&parts.headers, http::Version::HTTP_11);
        let framing = encode::Framing::of(
            &parts.method,
            &parts.headers,
            body.is_end_stream(),
            body.size_hint().exact(),
        );
        // A small body already here is taken whole: one write, and
        // replayable. What is not here yet is not waited for (the backend
        // sees what came so far): it is streamed after what came.
        let mut prefix = Bytes::new();
        let mut buffered = match framing {
            encode::Framing::Length(n) if n <= BUFFERED_BODY => match ready(&mut body, n).await? {
                Ready::Whole(whole) => Some(Outgoing::Buffered(Some(whole))),
                Ready::Part(part) => {
                    prefix = part;
                    None
                }
            },
            encode::Framing::Empty { .. } => Some(Outgoing::Buffered(None)),
            _ => None,
        };
        let mut streamed = Some(body);
        let host = |out: &mut Vec<u8>| out.extend_from_slice(addr.to_string().as_bytes());
        let counts = &self.shared.counts;
        let (mut conn, mut pooled) = match self.shared.checkout(addr) {
            Some(conn) => (conn, true),
            None => (self.dial(addr).await?, false),
        };
        let answer = loop {
            if pooled {
                counts.reused.fetch_add(1, Ordering::Relaxed);
            }
            conn.encode(&parts, framing, &host);
            let outgoing = match &buffered {
                Some(Outgoing::Buffered(body)) => Outgoing::Buffered(body.clone()),
                _ => match streamed.take() {
                    Some(body) => Outgoing::Streamed(std::mem::take(&mut prefix), body, framing),
                    None => unreachable!("a streamed body is sent once"),
                },
            };
            let replayable = matches!(buffered, Some(Outgoing::Buffered(_)));
            match conn.exchange(&parts.method, outgoing).await {
                Ok(answer) => break answer,
                Err(failed) if pooled && replayable && failed.before_response => {
                    tracing::debug!(%addr, "pooled HTTP/1.1 connection failed before any response byte, sending the request on a new one: {}", crate::error::chain(&failed.error));
                    counts.resent.fetch_add(1, Ordering::Relaxed);
                    (conn, pooled) = (self.dial(addr).await?, false);
                }
                Err(failed) => {
                    if let conn::Error::Malformed(why) = failed.error {
                        self.shared.refused(addr, why);
                    }
                    return Err(SendError::connection(Box::new(failed.error)));
                }
            }
        };
        buffered.take();
        Ok(self.respond(addr, conn, answer, keeps, upgrading))
    }

    /// The response, its body holding the connection; `keeps` and
    /// `upgrading` say what the request asked.
    fn respond(
        &self,
        addr: SocketAddr,
        mut conn: Conn,
        answer: conn::Answer,
        keeps: bool,
        upgrading: bool,
    ) -> Response<BackendBody> {
        let conn::Answer { head, early } = answer;
        let mut response = Response::new(());
        *response.status_mut() = head.status;
        *response.version_mut() = head.version;
        *response.headers_mut() = head.headers;
        if head.status == StatusCode::SWITCHING_PROTOCOLS {
            if upgrading {
                let pending = conn.buf.split().freeze();
                let switched = upgrade::Switched::new(conn.into_io(), pending);
                response.extensions_mut().insert(switched);
                return response.map(|()| BackendBody::empty());
            }
            // Unasked: the caller refuses it; the connection is closed.
            return response.map(|()| BackendBody::empty());
        }
        let home = Home {
            shared: self.shared.clone(),
            addr,
        };
        let keep = keeps && head.keep_alive && !early;
        response.map(|()| BackendBody::h1(H1Body::new(conn, head.framing, home, keep)))
    }

    /// A new connection to `addr`.
    async fn dial(&self, addr: SocketAddr) -> Result<Conn, SendError> {
        let counts = &self.shared.counts;
        let uri = Uri::try_from(format!("http://{addr}/")).expect("an address is a URI");
        let stream = self.connector.clone().call(uri).await.map_err(|e| {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            SendError::from(e)
        })?;
        tracing::debug!(%addr, "HTTP/1.1 connection to the backend opened");
        Ok(Conn::new(stream, OpenGuard::new(counts)))
    }
}

/// Whether a request asks to switch protocols (`Connection: upgrade` and
/// an `Upgrade` header, as the upgrade phase sends them).
fn upgrade_request(headers: &HeaderMap) -> bool {
    headers.contains_key(UPGRADE)
        && headers
            .get_all(CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|&b| b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"upgrade"))
}

/// What of a request body was there without waiting.
enum Ready {
    /// All of it.
    Whole(Bytes),
    /// The first part; the rest is to come.
    Part(Bytes),
}

/// The frames of a body of `length` bytes that are ready now.
async fn ready(body: &mut UpstreamBody, length: u64) -> Result<Ready, SendError> {
    let mut whole = BytesMut::new();
    let mut first: Option<Bytes> = None;
    let ended = loop {
        let next = std::future::poll_fn(|cx| {
            std::task::Poll::Ready(std::pin::Pin::new(&mut *body).poll_frame(cx))
        })
        .await;
        let frame = match next {
            std::task::Poll::Pending => break false,
            std::task::Poll::Ready(None) => break true,
            std::task::Poll::Ready(Some(frame)) => frame.map_err(SendError::Connection)?,
        };
        let Ok(data) = frame.into_data() else {
            continue;
        };
        match first.take() {
            None if whole.is_empty() => first = Some(data),
            Some(earlier) => {
                whole.extend_from_slice(&earlier);
                whole.extend_from_slice(&data);
            }
            None => whole.extend_from_slice(&data),
        }
        let seen = (whole.len() + first.as_ref().map_or(0, Bytes::len)) as u64;
        if seen > length {
            return Err(SendError::Connection(Box::new(conn::Error::BodyLength)));
        }
        if seen == length && body.is_end_stream() {
            break true;
        }
    };
    let got = first.unwrap_or_else(|| whole.freeze());
    match (ended, got.len() as u64 == length) {
        (true, true) => Ok(Ready::Whole(got)),
        (true, false) => Err(SendError::Connection(Box::new(conn::Error::BodyLength))),
        (false, _) => Ok(Ready::Part(got)),
    }
}

#[cfg(test)]
mod tests;
