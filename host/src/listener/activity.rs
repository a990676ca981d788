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

use std::pin::Pin;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::framing::NOT_CALLED;
use crate::proxy::ProxyBody;

/// Requests a connection must have seen before its premature resets can
/// close it, and the share of them that must have been reset: Envoy's
/// defaults (`premature_reset_total_stream_count` 500, half reset).
const FLOOD_MIN_REQUESTS: u64 = 500;

/// The phase a connection is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// A request head is owed since then.
    Head(Instant),
    /// This many requests are open.
    Busy(usize),
    /// Idle since then.
    Idle(Instant),
}

#[derive(Debug)]
struct State {
    phase: Phase,
    /// Requests started, and those the client abandoned before their
    /// answer (an HTTP/2 stream reset).
    started: u64,
    abandoned: u64,
}

/// What the connection's clock fires for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Expiry {
    /// The owed head did not arrive in time.
    Header,
    /// The connection was idle too long.
    Idle,
    /// The connection has been idle long enough to hibernate.
    Hibernate,
}

/// One connection's activity, shared by its stream, its requests and the
/// task serving it.
#[derive(Debug)]
pub(crate) struct Activity {
    state: Mutex<State>,
    /// Woken when the phase changes (the deadline moves) or a flood is
    /// seen.
    changed: Notify,
    /// The body framing the service's last call saw (see
    /// [`super::framing`]), until the stream takes it.
    called: AtomicU64,
    /// The stream is asked to end hyper's connection at its next read, if
    /// it is still between requests then.
    hibernate: AtomicBool,
}

impl Activity {
    /// A connection just accepted: it owes a request head.
    pub(crate) fn new() -> Arc<Activity> {
        Arc::new(Activity {
            state: Mutex::new(State {
                phase: Phase::Head(Instant::now()),
                started: 0,
                abandoned: 0,
            }),
            changed: Notify::new(),
            called: AtomicU64::new(NOT_CALLED),
            hibernate: AtomicBool::new(false),
        })
    }

    fn update(&self, change: impl FnOnce(&mut State)) {
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let before = state.phase;
        change(&mut state);
        if std::mem::discriminant(&before) != std::mem::discriminant(&state.phase) {
            self.changed.notify_one();
        }
    }

    /// Bytes arrived: an idle connection now owes a head.
    pub(super) fn received(&self) {
        self.update(|state| {
            if let Phase::Idle(_) = state.phase {
                state.phase = Phase::Head(Instant::now());
            }
        });
    }

    /// A request began, its body framed as `framing` says (see
    /// [`super::framing::body_framing`]); the guard ends it when dropped.
    pub(crate) fn begin(self: &Arc<Self>, framing: u64) -> RequestGuard {
        self.called.store(framing, Ordering::Relaxed);
        self.hibernate.store(false, Ordering::Relaxed);
        self.update(|state| {
            state.started += 1;
            state.phase = match state.phase {
                Phase::Busy(open) => Phase::Busy(open + 1),
                _ => Phase::Busy(1),
            };
        });
        RequestGuard {
            activity: self.clone(),
            answered: false,
        }
    }

    fn end(&self, answered: bool) {
        self.update(|state| {
            if !answered {
                state.abandoned += 1;
            }
            state.phase = match state.phase {
                Phase::Busy(open) if open > 1 => Phase::Busy(open - 1),
                _ => Phase::Idle(Instant::now()),
            };
        });
    }

    /// Whether the client has abandoned so many requests before their
    /// answers that it is flooding (the HTTP/2 rapid reset attack,
    /// CVE-2023-44487): at least [`FLOOD_MIN_REQUESTS`], half of them
    /// reset.
    pub(crate) fn flooding(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        state.started >= FLOOD_MIN_REQUESTS && state.abandoned * 2 >= state.started
    }

    /// What the service's call since the stream last asked said about the
    /// body ([`NOT_CALLED`] if it was not called).
    pub(super) fn take_called(&self) -> u64 {
        self.called.swap(NOT_CALLED, Ordering::Relaxed)
    }

    /// Whether no request is open and nothing arrived since the last ended.
    pub(super) fn is_idle(&self) -> bool {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        matches!(state.phase, Phase::Idle(_))
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
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.phase {
            Phase::Idle(since) => Some(since),
            _ => None,
        }
    }

    /// When the clock fires next and for what; none while busy.
    fn deadline(&self, clock: Clock) -> Option<(Instant, Expiry)> {
        let state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        match state.phase {
            Phase::Head(since) => Some((since + clock.header, Expiry::Header)),
            Phase::Idle(since) => match clock.hibernate {
                Some(after) if clock.tried != Some(since) && after < clock.idle => {
                    Some((since + after, Expiry::Hibernate))
                }
                _ => Some((since + clock.idle, Expiry::Idle)),
            },
            Phase::Busy(_) => None,
        }
    }

    /// Waits until the connection's clock fires (the head or idle timeout
    /// passed in its phase, or the idle spell is long enough to
    /// hibernate), or until a flood is seen (`None`).
    pub(crate) async fn expired(&self, clock: Clock) -> Option<Expiry> {
        loop {
            if self.flooding() {
                return None;
            }
            match self.deadline(clock) {
                Some((deadline, expiry)) => {
                    tokio::select! {
                        _ = tokio::time::sleep_until(deadline) => {
                            // The phase may have moved on while we slept.
                            if self.deadline(clock) == Some((deadline, expiry)) {
                                return Some(expiry);
                            }
                        }
                        _ = self.changed.notified() => {}
                    }
                }
                None => self.changed.notified().await,
            }
        }
    }
}

/// A connection's timeouts, for [`Activity::expired`].
#[derive(Debug, Clone, Copy)]
pub(crate) struct Clock {
    /// How long an owed head may take.
    pub(crate) header: Duration,
    /// How long the connection may idle.
    pub(crate) idle: Duration,
    /// How long an idle spell lasts before the connection hibernates;
    /// none if it never does.
    pub(crate) hibernate: Option<Duration>,
    /// The idle spell (by its start) hibernation was tried in: not again
    /// in it.
    pub(crate) tried: Option<Instant>,
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
            self.activity.changed.notify_one();
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

    const HEAD: Duration = Duration::from_secs(30);
    const IDLE: Duration = Duration::from_secs(60);
    const CLOCK: Clock = Clock {
        header: HEAD,
        idle: IDLE,
        hibernate: None,
        tried: None,
    };

    #[tokio::test(start_paused = true)]
    async fn an_idle_spell_hibernates_once_then_times_out() {
        let activity = Activity::new();
        drop(activity.begin(0).answered(crate::proxy::full("")));
        let since = activity.idle_since().expect("idle");
        let spell = Duration::from_secs(1);
        let clock = Clock {
            hibernate: Some(spell),
            ..CLOCK
        };
        assert_eq!(activity.expired(clock).await, Some(Expiry::Hibernate));
        assert_eq!(since.elapsed(), spell);
        let tried = Clock {
            tried: Some(since),
            ..clock
        };
        assert_eq!(activity.expired(tried).await, Some(Expiry::Idle));
        assert_eq!(since.elapsed(), IDLE);
        activity.ask_to_hibernate(true);
        assert!(activity.hibernation_asked());
        drop(activity.begin(0));
        assert!(!activity.hibernation_asked(), "a request withdraws the ask");
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_connection_owes_its_head_within_the_header_timeout() {
        let activity = Activity::new();
        let started = Instant::now();
        assert_eq!(activity.expired(CLOCK).await, Some(Expiry::Header));
        assert_eq!(started.elapsed(), HEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_between_requests_then_a_head_owed_from_the_first_byte() {
        let activity = Activity::new();
        let request = activity.begin(0);
        let clock = {
            let activity = activity.clone();
            tokio::spawn(async move { activity.expired(CLOCK).await })
        };
        // Busy for longer than both timeouts: no clock runs.
        tokio::time::sleep(IDLE * 2).await;
        assert!(!clock.is_finished());
        let idle_from = Instant::now();
        drop(request.answered(crate::proxy::full("")));
        assert_eq!(clock.await.unwrap(), Some(Expiry::Idle));
        assert_eq!(idle_from.elapsed(), IDLE);
        // A byte after idling starts the head clock, from that byte.
        let activity = Activity::new();
        drop(activity.begin(0).answered(crate::proxy::full("")));
        tokio::time::sleep(IDLE / 2).await;
        activity.received();
        let owed_from = Instant::now();
        assert_eq!(activity.expired(CLOCK).await, Some(Expiry::Header));
        assert_eq!(owed_from.elapsed(), HEAD);
    }

    #[tokio::test(start_paused = true)]
    async fn abandoned_requests_are_a_flood_past_the_threshold_and_half() {
        let activity = Activity::new();
        for _ in 0..FLOOD_MIN_REQUESTS / 2 {
            drop(activity.begin(0).answered(crate::proxy::full("")));
        }
        for _ in 0..FLOOD_MIN_REQUESTS / 2 - 1 {
            drop(activity.begin(0));
        }
        assert!(!activity.flooding(), "under the threshold");
        drop(activity.begin(0));
        assert!(activity.flooding());
        assert_eq!(activity.expired(CLOCK).await, None);
    }
}
