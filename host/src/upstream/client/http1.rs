//! The HTTP/1.1 pool of one upstream: per backend address, a LIFO stack of
//! idle keep-alive connections. A request takes the most recently used
//! connection that is ready, or dials a new one; its connection goes back
//! when the response body has ended and both sides kept it alive (no
//! `Connection: close`, no upgrade), and is closed instead when the body
//! failed or was dropped before its end. Each connection has one driver
//! task (hyper's, with upgrades); one reaper task per pool, running only
//! while connections are idle, closes those idle past `idle_timeout_ms`.
//! A request a pooled connection closed before taking (the backend hung up
//! while it sat idle) is sent once more on a new connection: it never
//! reached the backend.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use http::header::{CONNECTION, HeaderMap};
use http::{Method, Request, Response, StatusCode, Uri, Version};
use hyper::client::conn::http1;
use tokio::time::Instant;
use tower_service::Service;

use super::body::BackendBody;
use super::error::SendError;
use crate::upstream::UpstreamBody;
use crate::upstream::connector::Connector;

type Sender = http1::SendRequest<UpstreamBody>;

/// The HTTP/1.1 connections of one upstream, by backend address.
pub(super) struct H1Pool {
    connector: Connector,
    builder: http1::Builder,
    shared: Arc<Shared>,
}

/// What the pool's requests, bodies and reaper share.
struct Shared {
    max_idle: usize,
    idle_timeout: Duration,
    idle: Mutex<Idle>,
    counts: H1Counts,
}

/// The idle connections, and whether the reaper runs.
#[derive(Default)]
struct Idle {
    hosts: HashMap<SocketAddr, Vec<Parked>>,
    reaping: bool,
}

/// An idle connection and since when.
struct Parked {
    sender: Sender,
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
    /// Requests a pooled connection closed before taking, sent again.
    pub resent: u64,
}

/// A connection lent to a response: back to the pool when its body ends.
pub(crate) struct Lent {
    sender: Sender,
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Lent {
    /// Gives the connection back to the pool, unless it closed meanwhile.
    pub(crate) fn give_back(self) {
        if self.sender.is_closed() {
            return;
        }
        self.shared.park(self.addr, self.sender, &self.shared);
    }
}

impl Shared {
    /// `sender` idle for `addr`, the oldest dropped past `max_idle`; starts
    /// the reaper if it is not running.
    fn park(&self, addr: SocketAddr, sender: Sender, this: &Arc<Shared>) {
        if self.max_idle == 0 {
            return;
        }
        let now = Instant::now();
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let stack = idle.hosts.entry(addr).or_default();
        if stack.len() >= self.max_idle {
            // The oldest is at the bottom; dropping its sender closes it.
            stack.remove(0);
        }
        stack.push(Parked { sender, since: now });
        if !idle.reaping {
            idle.reaping = true;
            tokio::spawn(reap(Arc::downgrade(this)));
        }
    }

    /// The most recently parked connection to `addr` ready for a request;
    /// closed ones are forgotten, ones not ready yet (a request body still
    /// going out) left where they are.
    fn checkout(&self, addr: SocketAddr) -> Option<Sender> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let stack = idle.hosts.get_mut(&addr)?;
        let mut at = stack.len();
        while at > 0 {
            at -= 1;
            let parked = &stack[at];
            if parked.sender.is_closed() {
                stack.remove(at);
            } else if parked.sender.is_ready() {
                return Some(stack.remove(at).sender);
            }
        }
        None
    }

    /// Closes what has been idle for `idle_timeout` (and what closed);
    /// when the next connection would be due, or none if none is idle.
    fn sweep(&self, now: Instant) -> Option<Instant> {
        let mut idle = self.idle.lock().unwrap_or_else(PoisonError::into_inner);
        let mut next: Option<Instant> = None;
        idle.hosts.retain(|_, stack| {
            stack.retain(|p| {
                now.saturating_duration_since(p.since) < self.idle_timeout && !p.sender.is_closed()
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
            builder: http1::Builder::new(),
            shared: Arc::new(Shared {
                max_idle,
                idle_timeout,
                idle: Mutex::default(),
                counts: H1Counts::default(),
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
        }
    }

    /// Sends `request` (its URI absolute, its authority `addr`) to the
    /// backend at `addr` in origin form, and waits for the response head.
    pub(super) async fn send(
        &self,
        addr: SocketAddr,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<BackendBody>, SendError> {
        if request.method() != Method::CONNECT {
            origin_form(request.uri_mut());
        }
        let counts = &self.shared.counts;
        let (mut sender, mut pooled) = match self.shared.checkout(addr) {
            Some(sender) => (sender, true),
            None => (self.dial(addr).await?, false),
        };
        loop {
            if pooled {
                counts.reused.fetch_add(1, Ordering::Relaxed);
            }
            let keep = keep_alive(request.headers(), request.version());
            match sender.try_send_request(request).await {
                Ok(response) => return Ok(self.lend(addr, sender, keep, response)),
                Err(mut failed) => match failed.take_message() {
                    Some(unsent) if pooled => {
                        tracing::debug!(%addr, "pooled HTTP/1.1 connection closed before taking a request, sending it on a new one: {}", failed.error());
                        counts.resent.fetch_add(1, Ordering::Relaxed);
                        request = unsent;
                        (sender, pooled) = (self.dial(addr).await?, false);
                    }
                    _ => return Err(SendError::from(failed.into_error())),
                },
            }
        }
    }

    /// The response with its body holding the connection until it ends,
    /// when both sides keep it alive; closed after this response otherwise.
    fn lend(
        &self,
        addr: SocketAddr,
        sender: Sender,
        request_keeps: bool,
        response: Response<hyper::body::Incoming>,
    ) -> Response<BackendBody> {
        let reusable = request_keeps
            && response.status() != StatusCode::SWITCHING_PROTOCOLS
            && keep_alive(response.headers(), response.version());
        let lent = reusable.then(|| Lent {
            sender,
            addr,
            shared: self.shared.clone(),
        });
        response.map(|body| BackendBody::http1(body, lent))
    }

    /// A new connection to `addr`, its driver spawned.
    async fn dial(&self, addr: SocketAddr) -> Result<Sender, SendError> {
        let counts = &self.shared.counts;
        let failed = |error: SendError| {
            counts.failed.fetch_add(1, Ordering::Relaxed);
            error
        };
        let uri = Uri::try_from(format!("http://{addr}/")).expect("an address is a URI");
        let stream = self
            .connector
            .clone()
            .call(uri)
            .await
            .map_err(|e| failed(e.into()))?;
        let (sender, connection) = self
            .builder
            .handshake(stream)
            .await
            .map_err(|e| failed(e.into()))?;
        counts.opened.fetch_add(1, Ordering::Relaxed);
        counts.open.fetch_add(1, Ordering::Relaxed);
        tracing::debug!(%addr, "HTTP/1.1 connection to the backend opened");
        let shared = self.shared.clone();
        tokio::spawn(async move {
            match connection.with_upgrades().await {
                Ok(()) => tracing::debug!(%addr, "HTTP/1.1 connection to the backend closed"),
                Err(error) => {
                    tracing::debug!(%addr, "HTTP/1.1 connection to the backend ended: {}", crate::error::chain(&error))
                }
            }
            shared.counts.open.fetch_sub(1, Ordering::Relaxed);
        });
        Ok(sender)
    }
}

/// Whether a message with `headers` keeps its connection open: HTTP/1.1
/// unless `Connection: close`, HTTP/1.0 only with `Connection: keep-alive`.
fn keep_alive(headers: &HeaderMap, version: Version) -> bool {
    let mut tokens = headers
        .get_all(CONNECTION)
        .iter()
        .flat_map(|v| v.to_str().unwrap_or("").split(','))
        .map(str::trim);
    if version == Version::HTTP_11 {
        !tokens.any(|t| t.eq_ignore_ascii_case("close"))
    } else {
        version == Version::HTTP_10 && tokens.any(|t| t.eq_ignore_ascii_case("keep-alive"))
    }
}

/// `uri` as an HTTP/1.1 request target: its path and query only.
fn origin_form(uri: &mut Uri) {
    if uri.scheme().is_none() {
        return;
    }
    *uri = match uri.path_and_query() {
        Some(path) if path.as_str() != "/" => {
            let mut parts = http::uri::Parts::default();
            parts.path_and_query = Some(path.clone());
            Uri::from_parts(parts).expect("a path is a URI")
        }
        _ => Uri::from_static("/"),
    };
}

#[cfg(test)]
mod tests;
