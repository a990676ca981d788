//! A tunnel: the bytes of an upgraded connection (a WebSocket) carried both
//! ways between client and backend after a `101`, until either side
//! closes, no byte passes for the upstream's `tunnel_idle_timeout_ms`, or
//! its grace (`tunnel_drain_grace_ms`) runs out after its backend was
//! drained or removed or weir began to shut down. It counts in flight for
//! its backend all along, and writes its access-log line when it ends.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU8, AtomicU64, AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use hyper::upgrade::OnUpgrade;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, watch};
use tokio::time::Instant;

use super::log::RequestLog;
use crate::access_log::TunnelFacts;
use crate::backend::{Backend, InFlight, TunnelEnd};
use crate::upstream::BackendUpgrade;

/// Every open tunnel of one server, so shutdown can tell them and wait for
/// them: they outlive the client connections they came on.
#[derive(Debug)]
pub struct Tunnels {
    open: AtomicUsize,
    closing: watch::Sender<bool>,
    all_closed: Notify,
}

impl Tunnels {
    /// No tunnels yet.
    pub fn new() -> Arc<Tunnels> {
        Arc::new(Tunnels {
            open: AtomicUsize::new(0),
            closing: watch::Sender::new(false),
            all_closed: Notify::new(),
        })
    }

    /// Tunnels open now.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// weir is shutting down: every tunnel, open or opening, closes after
    /// its grace.
    pub fn shut_down(&self) {
        self.closing.send_replace(true);
    }

    /// Waits until no tunnel is open.
    pub async fn closed(&self) {
        loop {
            let notice = self.all_closed.notified();
            tokio::pin!(notice);
            notice.as_mut().enable();
            if self.open() == 0 {
                return;
            }
            notice.await;
        }
    }
}

/// One tunnel, counted open in [`Tunnels`] until dropped.
struct Registered(Arc<Tunnels>);

impl Registered {
    fn new(tunnels: &Arc<Tunnels>) -> Registered {
        tunnels.open.fetch_add(1, Ordering::Relaxed);
        Registered(tunnels.clone())
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        if self.0.open.fetch_sub(1, Ordering::Relaxed) == 1 {
            self.0.all_closed.notify_waiters();
        }
    }
}

/// How long a tunnel may be silent, and how long it goes on once told to
/// close.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) idle: Duration,
    pub(crate) grace: Duration,
}

/// A switched connection about to become a tunnel.
pub(crate) struct Tunnel {
    /// The client's side, once hyper has sent it the `101`.
    pub(crate) client: OnUpgrade,
    /// The backend's side.
    pub(crate) backend: BackendUpgrade,
    /// The backend, for its counters and its drain.
    pub(crate) to: Arc<Backend>,
    /// Counts the tunnel in flight for its backend until it ends.
    pub(crate) in_flight: InFlight,
    /// Its access-log line, when there is an access log.
    pub(crate) log: Option<RequestLog>,
    /// The protocol switched to.
    pub(crate) upgrade: String,
    pub(crate) timing: Timing,
    pub(crate) tunnels: Arc<Tunnels>,
}

impl Tunnel {
    /// Runs the tunnel on its own task: it outlives the request.
    pub(crate) fn spawn(self) {
        let registered = Registered::new(&self.tunnels);
        self.to.stats.tunnels.opened();
        tokio::spawn(self.run(registered));
    }

    async fn run(self, _registered: Registered) {
        let Tunnel {
            client,
            backend,
            to,
            in_flight,
            log,
            upgrade,
            timing,
            tunnels,
        } = self;
        let meter = Meter::new(Instant::now());
        let ended = carry(&to, &tunnels, timing, (client, backend), &meter).await;
        let (to_backend, to_client) = meter.totals();
        to.stats.tunnels.closed(ended);
        tracing::debug!(
            backend = to.name,
            upgrade,
            to_backend,
            to_client,
            "tunnel ended: {}",
            ended.as_str()
        );
        drop(in_flight);
        if let Some(log) = log {
            log.finish_tunnel(
                to_client,
                TunnelFacts {
                    upgrade: &upgrade,
                    bytes_received: to_backend,
                    ended: ended.as_str(),
                },
            );
        }
    }
}

/// Waits for both sides to switch, then carries bytes between them until
/// the tunnel ends; says why it did.
async fn carry(
    to: &Backend,
    tunnels: &Tunnels,
    Timing { idle, grace }: Timing,
    (client, backend): (OnUpgrade, BackendUpgrade),
    meter: &Meter,
) -> TunnelEnd {
    let mut closing = tunnels.closing.subscribe();
    let leaving = async {
        let why = to.state.left().await;
        tokio::time::sleep(grace).await;
        why
    };
    let shutdown = async {
        let _ = closing.wait_for(|closing| *closing).await;
        tokio::time::sleep(grace).await;
    };
    let stats = &to.stats.tunnels;
    let tunnel = async {
        let client = match tokio::time::timeout(idle, client).await {
            Ok(Ok(client)) => TokioIo::new(client),
            Ok(Err(error)) => {
                tracing::debug!(backend = to.name, "tunnel not opened: {error}");
                return TunnelEnd::Error;
            }
            Err(_) => return TunnelEnd::Idle,
        };
        let mut client = Metered::new(client, meter, Side::Client, stats);
        let mut backend = Metered::new(backend, meter, Side::Backend, stats);
        match tokio::io::copy_bidirectional(&mut client, &mut backend).await {
            Ok(_) => meter.first_closed(),
            Err(error) => {
                tracing::debug!(backend = to.name, "tunnel failed: {error}");
                TunnelEnd::Error
            }
        }
    };
    tokio::select! {
        why = tunnel => why,
        () = meter.silent(idle) => TunnelEnd::Idle,
        why = leaving => why,
        () = shutdown => TunnelEnd::Shutdown,
    }
}

/// Which side of the tunnel bytes came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Side {
    Client = 1,
    Backend = 2,
}

/// What one tunnel carried, and when it last carried anything.
struct Meter {
    started: Instant,
    /// Since `started`, when a byte last went either way.
    last_nanos: AtomicU64,
    from_client: AtomicU64,
    from_backend: AtomicU64,
    /// The side that closed first (0 while neither has).
    first_eof: AtomicU8,
}

impl Meter {
    fn new(started: Instant) -> Meter {
        Meter {
            started,
            last_nanos: AtomicU64::new(0),
            from_client: AtomicU64::new(0),
            from_backend: AtomicU64::new(0),
            first_eof: AtomicU8::new(0),
        }
    }

    fn read(&self, side: Side, n: usize) {
        if n == 0 {
            let _ = self.first_eof.compare_exchange(
                0,
                side as u8,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
            return;
        }
        let count = match side {
            Side::Client => &self.from_client,
            Side::Backend => &self.from_backend,
        };
        count.fetch_add(n as u64, Ordering::Relaxed);
        let now = self.started.elapsed().as_nanos() as u64;
        self.last_nanos.store(now, Ordering::Relaxed);
    }

    fn last(&self) -> Instant {
        self.started + Duration::from_nanos(self.last_nanos.load(Ordering::Relaxed))
    }

    /// (to the backend, to the client).
    fn totals(&self) -> (u64, u64) {
        (
            self.from_client.load(Ordering::Relaxed),
            self.from_backend.load(Ordering::Relaxed),
        )
    }

    /// Both sides closed: which did first.
    fn first_closed(&self) -> TunnelEnd {
        if self.first_eof.load(Ordering::Relaxed) == Side::Backend as u8 {
            TunnelEnd::BackendClosed
        } else {
            TunnelEnd::ClientClosed
        }
    }

    /// Returns once no byte has passed either way for `idle`.
    async fn silent(&self, idle: Duration) {
        loop {
            let last = self.last();
            tokio::time::sleep_until(last + idle).await;
            if self.last() == last {
                return;
            }
        }
    }
}

/// One side of a tunnel, its reads counted into the tunnel's [`Meter`] and
/// its backend's byte counters.
struct Metered<'a, T> {
    inner: T,
    meter: &'a Meter,
    side: Side,
    stats: &'a crate::backend::TunnelStats,
}

impl<'a, T> Metered<'a, T> {
    fn new(
        inner: T,
        meter: &'a Meter,
        side: Side,
        stats: &'a crate::backend::TunnelStats,
    ) -> Metered<'a, T> {
        Metered {
            inner,
            meter,
            side,
            stats,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Metered<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let poll = Pin::new(&mut self.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = poll {
            // Nothing read into room for something: the side closed.
            let n = buf.filled().len() - before;
            self.meter.read(self.side, n);
            match self.side {
                Side::Client => self.stats.carried(n as u64, 0),
                Side::Backend => self.stats.carried(0, n as u64),
            }
        }
        poll
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Metered<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn silence_is_measured_from_the_last_byte_either_way() {
        let meter = Meter::new(Instant::now());
        let idle = Duration::from_secs(10);
        let silent = meter.silent(idle);
        tokio::pin!(silent);
        tokio::select! {
            () = &mut silent => panic!("silent before the timeout"),
            () = tokio::time::sleep(Duration::from_secs(6)) => {}
        }
        meter.read(Side::Backend, 3);
        let from = Instant::now();
        silent.await;
        assert_eq!(from.elapsed(), Duration::from_secs(10));
        assert_eq!(meter.totals(), (0, 3));
    }

    #[test]
    fn the_first_side_to_close_is_the_one_that_ended_it() {
        let meter = Meter::new(Instant::now());
        meter.read(Side::Client, 5);
        assert_eq!(meter.first_closed(), TunnelEnd::ClientClosed);
        meter.read(Side::Backend, 0);
        meter.read(Side::Client, 0);
        assert_eq!(meter.first_closed(), TunnelEnd::BackendClosed);
        assert_eq!(meter.totals(), (5, 0));
    }

    #[tokio::test(start_paused = true)]
    async fn shutdown_waits_for_the_last_tunnel() {
        let tunnels = Tunnels::new();
        tunnels.closed().await;
        let one = Registered::new(&tunnels);
        let two = Registered::new(&tunnels);
        let waiting = {
            let tunnels = tunnels.clone();
            tokio::spawn(async move { tunnels.closed().await })
        };
        drop(one);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished());
        assert_eq!(tunnels.open(), 1);
        drop(two);
        waiting.await.unwrap();
        assert_eq!(tunnels.open(), 0);
    }
}
