//! Hibernation: an HTTP/1.1 client connection idle between requests is
//! held as its socket alone, not as hyper's connection with its 8 KiB
//! read and write buffers (hyper keeps both for a connection's life).
//!
//! After [`HIBERNATE_AFTER`] idle, the stream ([`Watched`]) answers
//! hyper's next read with EOF if hyper provably holds nothing (see
//! [`super::framing`]); hyper, idle with an empty buffer, ends the
//! connection cleanly without writing anything, and weir takes back the
//! stream and the service, waits for the socket to become readable, and
//! serves it with a new hyper connection. The connection's clock runs on:
//! a hibernated connection still closes at `idle_timeout`, and its first
//! byte starts the head clock. Plain TCP only: a TLS stream's own buffers
//! (rustls') stay, so a TLS connection is not hibernated, nor is HTTP/2.

use std::any::Any;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::Instant;

use super::Refusal;
use super::activity::Activity;
use super::clock::{Clock, Expiry};
use super::spells::Resting;
use super::watched::Watched;

/// How long an HTTP/1.1 connection idles before it hibernates: long
/// against the gaps between a busy client's requests (microseconds on a
/// keep-alive connection under load), so a busy connection never pays
/// the teardown; short, so that a burst of new connections does not pile
/// up their buffers before the first of them sleeps (nginx and HAProxy
/// free an idle connection's buffers at once). The connection's clock
/// re-arms its timer at every idle spell anyway: this only moves it.
pub(super) const HIBERNATE_AFTER: Duration = Duration::from_millis(50);

/// Connections hibernated now, and hibernations ever.
static ASLEEP: AtomicU64 = AtomicU64::new(0);
static HIBERNATIONS: AtomicU64 = AtomicU64::new(0);

/// Client connections hibernated now, and hibernations since start, for
/// `/metrics`.
pub fn hibernation_counts() -> (u64, u64) {
    (
        ASLEEP.load(Ordering::Relaxed),
        HIBERNATIONS.load(Ordering::Relaxed),
    )
}

/// Counts one connection asleep for as long as it lives.
struct Asleep;

impl Asleep {
    fn new() -> Asleep {
        ASLEEP.fetch_add(1, Ordering::Relaxed);
        HIBERNATIONS.fetch_add(1, Ordering::Relaxed);
        Asleep
    }
}

impl Drop for Asleep {
    fn drop(&mut self) {
        ASLEEP.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The TCP socket under `stream`, if it is one weir can wait on alone.
pub(super) fn socket<IO: 'static>(stream: &Watched<IO>) -> Option<&TcpStream> {
    (stream.get_ref() as &dyn Any).downcast_ref::<TcpStream>()
}

/// When a connection going to sleep under `clock` is to be closed, and
/// why. Nothing reads the socket or serves a request while it sleeps: the
/// phase (an idle spell) holds, and so does its deadline, slept to without
/// the clock's loop (a smaller task to hold). Busy cannot be.
pub(super) fn due(activity: &Activity, clock: Clock) -> (Instant, Expiry) {
    let clock = Clock {
        hibernate: None,
        ..clock
    };
    activity
        .due(&clock)
        .unwrap_or((Instant::now() + clock.idle, Expiry::Idle))
}

/// Holds a hibernated connection until its client sends something (or
/// closes): true, serve it again; false if it is to be dropped instead
/// (at [`due`]'s deadline, or at shutdown). One borrow of the connection's
/// state, not one of each part, so that the wait holds as little as it
/// can (it is what each hibernated connection holds, with that state).
pub(super) async fn sleep<IO: 'static, S>(resting: &mut Resting<IO, S>) -> bool {
    let (deadline, expiry) = due(&resting.watch.activity, resting.clock());
    let Resting {
        stream,
        watch,
        shutdown,
        ..
    } = resting;
    let Some(socket) = socket(stream) else {
        return true;
    };
    let _asleep = Asleep::new();
    tokio::select! {
        // Polled in place: `readable()` would hold a 152-byte future.
        ready = std::future::poll_fn(|cx| socket.poll_read_ready(cx)) => ready.is_ok(),
        _ = tokio::time::sleep_until(deadline) => {
            let refusal = match expiry {
                Expiry::Header => Refusal::HeaderTimeout,
                _ => Refusal::IdleTimeout,
            };
            watch.count(refusal);
            tracing::debug!(client = %watch.client, "closing the hibernated connection: {}", refusal.why());
            false
        }
        _ = shutdown.changed() => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_a_hibernated_connection_holds_beside_its_task_is_small() {
        let stream = std::mem::size_of::<Watched<TcpStream>>();
        let framing = std::mem::size_of::<super::super::framing::Framing>();
        println!("a hibernated stream: {stream} bytes, its framing {framing}");
        assert!(stream <= 128, "{stream} bytes");
    }
}
