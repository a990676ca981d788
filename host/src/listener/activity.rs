//! What one client connection is doing, for its timeouts and its flood
//! check: owing a request head, busy with requests, or idle between them.
//! The stream is wrapped ([`Watched`]) to see bytes arrive; each request
//! holds a [`RequestGuard`] until its response body is dropped.
//!
//! hyper's own `header_read_timeout` starts when a response ends, so it
//! would cap the keep-alive idle time at the header timeout, and it does
//! nothing for HTTP/2; this one clock serves both protocols:
//! - owing a head (from accept, or from the first byte after an idle
//!   spell): closed after `header_read_timeout`;
//! - idle (no request open, nothing received since the last ended): closed
//!   after `idle_timeout` (HTTP/2 with a GOAWAY);
//! - busy: no clock here (the body read timeout and the upstream's request
//!   timeout apply to the request itself).
//!
//! The phase is one atomic word, changed without a lock; a change wakes
//! the clock ([`super::clock`]) only when it makes the deadline earlier
//! than the one the clock sleeps until, which a connection serving
//! requests never does: three phase changes a request cost no wake-up.
//!
//! [`Watched`]: super::watched::Watched

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Instant;

use super::clock::Bell;
use super::framing::NOT_CALLED;
use crate::proxy::ProxyBody;

/// Requests a connection must have seen before its premature resets can
/// close it, and the share of them that must have been reset: Envoy's
/// defaults (`premature_reset_total_stream_count` 500, half reset).
const FLOOD_MIN_REQUESTS: u64 = 500;

/// The phase a connection is in; times are nanoseconds since the
/// connection was accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// A request head is owed since then.
    Head(u64),
    /// This many requests are open.
    Busy(u64),
    /// Idle since then.
    Idle(u64),
}

/// The phase word's two top bits say which phase it is.
const KIND: u32 = 62;
const VALUE: u64 = (1 << KIND) - 1;

impl Phase {
    fn pack(self) -> u64 {
        match self {
            Phase::Head(at) => at & VALUE,
            Phase::Busy(open) => (1 << KIND) | (open & VALUE),
            Phase::Idle(at) => (2 << KIND) | (at & VALUE),
        }
    }

    pub(super) fn unpack(word: u64) -> Phase {
        let value = word & VALUE;
        match word >> KIND {
            0 => Phase::Head(value),
            1 => Phase::Busy(value),
            _ => Phase::Idle(value),
        }
    }
}

/// One connection's activity, shared by its stream, its requests and the
/// task serving it.
#[derive(Debug)]
pub(crate) struct Activity {
    /// When the connection was accepted: the phase's times count from it.
    pub(super) born: Instant,
    /// The [`Phase`], packed.
    pub(super) phase: AtomicU64,
    /// Requests started, and those the client abandoned before their
    /// answer (an HTTP/2 stream reset).
    pub(super) started: AtomicU64,
    abandoned: AtomicU64,
    /// The time the clock sleeps until (0: not armed): a phase change
    /// that may put the deadline before it rings the clock's bell.
    pub(super) armed: AtomicU64,
    /// The shortest span any phase's deadline lies after its start (the
    /// header, idle and hibernation times): a change at `t` has no
    /// deadline before `t + floor`.
    pub(super) floor: u64,
    /// Rung when a change moves the deadline earlier, or a flood is seen.
    pub(super) bell: Bell,
    /// The body framing the service's last call saw (see
    /// [`super::framing`]), until the stream takes it.
    called: AtomicU64,
    /// The stream is asked to end hyper's connection at its next read, if
    /// it is still between requests then.
    hibernate: AtomicBool,
}

/// Nanoseconds in `span`, as the phase word holds times.
pub(super) fn nanos(span: Duration) -> u64 {
    u64::try_from(span.as_nanos())
        .unwrap_or(u64::MAX)
        .min(VALUE)
}

impl Activity {
    /// A connection just accepted: it owes a request head. No deadline
    /// of its clock lies less than `floor` after the phase it ends began
    /// (the shortest of its timeouts).
    pub(crate) fn new(floor: Duration) -> Arc<Activity> {
        Arc::new(Activity {
            born: Instant::now(),
            phase: AtomicU64::new(Phase::Head(0).pack()),
            started: AtomicU64::new(0),
            abandoned: AtomicU64::new(0),
            armed: AtomicU64::new(0),
            floor: nanos(floor).max(nanos(Duration::from_millis(1))),
            bell: Bell::default(),
            called: AtomicU64::new(NOT_CALLED),
            hibernate: AtomicBool::new(false),
        })
    }

    /// Now, in the phase word's time.
    pub(super) fn now(&self) -> u64 {
        nanos(Instant::now().saturating_duration_since(self.born))
    }

    /// The instant `at` (in the phase word's time) stands for.
    pub(super) fn instant(&self, at: u64) -> Instant {
        self.born + Duration::from_nanos(at)
    }

    /// The phase now.
    pub(super) fn phase(&self) -> Phase {
        Phase::unpack(self.phase.load(Ordering::SeqCst))
    }

    /// Moves the phase as `change` says (none: it stays); whether it
    /// moved.
    fn update(&self, mut change: impl FnMut(Phase) -> Option<Phase>) -> bool {
        self.phase
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |word| {
                change(Phase::unpack(word)).map(Phase::pack)
            })
            .is_ok()
    }

    /// A phase with a deadline began `at`: if that deadline may come
    /// before the one the clock sleeps until, ring it.
    fn began_at(&self, at: u64) {
        if at.saturating_add(self.floor) < self.armed.load(Ordering::SeqCst) {
            self.bell.ring();
        }
    }

    /// Bytes arrived: an idle connection now owes a head.
    pub(super) fn received(&self) {
        if !matches!(self.phase(), Phase::Idle(_)) {
            return;
        }
        let now = self.now();
        let owed = |phase| match phase {
            Phase::Idle(_) => Some(Phase::Head(now)),
            _ => None,
        };
        if self.update(owed) {
            self.began_at(now);
        }
    }

    /// A request began, its body framed as `framing` says (see
    /// [`super::framing::body_framing`]); the guard ends it when dropped.
    /// Being busy has no deadline: the clock is not woken.
    pub(crate) fn begin(self: &Arc<Self>, framing: u64) -> RequestGuard {
        self.called.store(framing, Ordering::Relaxed);
        self.hibernate.store(false, Ordering::Relaxed);
        self.started.fetch_add(1, Ordering::Relaxed);
        self.update(|phase| {
            Some(match phase {
                Phase::Busy(open) => Phase::Busy(open + 1),
                _ => Phase::Busy(1),
            })
        });
        RequestGuard {
            activity: self.clone(),
            answered: false,
        }
    }

    fn end(&self, answered: bool) {
        if !answered {
            self.abandoned.fetch_add(1, Ordering::Relaxed);
        }
        let now = self.now();
        let mut idle = false;
        self.update(|phase| {
            idle = !matches!(phase, Phase::Busy(open) if open > 1);
            Some(match phase {
                Phase::Busy(open) if open > 1 => Phase::Busy(open - 1),
                _ => Phase::Idle(now),
            })
        });
        if idle {
            self.began_at(now);
        }
    }

    /// Whether the client has abandoned so many requests before their
    /// answers that it is flooding (the HTTP/2 rapid reset attack,
    /// CVE-2023-44487): at least [`FLOOD_MIN_REQUESTS`], half of them
    /// reset.
    pub(crate) fn flooding(&self) -> bool {
        let started = self.started.load(Ordering::Relaxed);
        started >= FLOOD_MIN_REQUESTS && self.abandoned.load(Ordering::Relaxed) * 2 >= started
    }

    /// What the service's call since the stream last asked said about the
    /// body ([`NOT_CALLED`] if it was not called).
    pub(super) fn take_called(&self) -> u64 {
        self.called.swap(NOT_CALLED, Ordering::Relaxed)
    }

    /// Whether no request is open and nothing arrived since the last ended.
    pub(super) fn is_idle(&self) -> bool {
        matches!(self.phase(), Phase::Idle(_))
    }

    /// Asks the stream to end hyper's connection at its next read, if it
    /// is between requests then (a request's beginning withdraws it), or
    /// withdraws the ask.
    pub(super) fn ask_to_hibernate(&self, ask: bool) {
        self.hibernate.store(ask, Ordering::Relaxed);
    }

    /// Whether hibernation is asked for.
    pub(super) fn hibernation_asked(&self) -> bool {
        self.hibernate.load(Ordering::Relaxed)
    }

    /// The idle spell the clock is in, if it is in one.
    pub(super) fn idle_since(&self) -> Option<Instant> {
        match self.phase() {
            Phase::Idle(since) => Some(self.instant(since)),
            _ => None,
        }
    }
}

/// One request on a connection, open until dropped: on the service's
/// future until it answers, then on its response body.
pub(crate) struct RequestGuard {
    activity: Arc<Activity>,
    answered: bool,
}

impl RequestGuard {
    /// The request is answered: `body` keeps it open until the body is
    /// done (sent or dropped).
    pub(crate) fn answered(mut self, body: ProxyBody) -> ProxyBody {
        use http_body_util::BodyExt;
        self.answered = true;
        GuardedBody {
            inner: body,
            _guard: self,
        }
        .boxed()
    }
}

impl Drop for RequestGuard {
    fn drop(&mut self) {
        self.activity.end(self.answered);
        if !self.answered && self.activity.flooding() {
            self.activity.bell.ring();
        }
    }
}

/// A response body that keeps its request open until it is dropped.
struct GuardedBody {
    inner: ProxyBody,
    _guard: RequestGuard,
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = crate::upstream::BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        Pin::new(&mut self.inner).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_phase_survives_its_word() {
        for phase in [
            Phase::Head(0),
            Phase::Head(VALUE),
            Phase::Busy(1),
            Phase::Busy(7),
            Phase::Idle(123_456_789),
        ] {
            assert_eq!(Phase::unpack(phase.pack()), phase);
        }
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_requests_are_a_flood_past_the_threshold_and_half() {
        let activity = Activity::new(Duration::from_secs(1));
        for _ in 0..FLOOD_MIN_REQUESTS / 2 {
            drop(activity.begin(0).answered(crate::proxy::full("")));
        }
        for _ in 0..FLOOD_MIN_REQUESTS / 2 - 1 {
            drop(activity.begin(0));
        }
        assert!(!activity.flooding(), "under the threshold");
        drop(activity.begin(0));
        assert!(activity.flooding());
    }

    #[tokio::test(start_paused = true)]
    async fn requests_nest_and_the_last_to_end_starts_the_idle_spell() {
        let activity = Activity::new(Duration::from_secs(1));
        let one = activity.begin(0);
        let two = activity.begin(0);
        assert_eq!(activity.phase(), Phase::Busy(2));
        drop(one);
        assert_eq!(activity.phase(), Phase::Busy(1));
        tokio::time::sleep(Duration::from_secs(3)).await;
        drop(two);
        assert_eq!(activity.idle_since(), Some(Instant::now()));
        activity.received();
        assert_eq!(activity.phase(), Phase::Head(activity.now()));
        assert!(!activity.is_idle());
    }
}
