//! The connection's clock: it sleeps until the deadline of the phase the
//! connection is in (see [`super::activity`]), and when it wakes reads the
//! phase again, sleeping on if it moved on. Phase changes do not wake it:
//! every phase's deadline lies at least the `floor` (the shortest of the
//! header, idle and hibernation times) after its start, so a clock that
//! sleeps no longer than the floor past its last look is never late for a
//! change it did not see. Only a change that may put the deadline before
//! the one armed (after a long busy spell, or a byte that starts a head
//! near the end of a long idle spell) rings its [`Bell`].
//!
//! So the clock looks once per floor (50 ms on a hibernating connection)
//! while the phase keeps changing, however many requests go by, and
//! sleeps to the deadline once it does not: a steady phase costs one timer
//! firing, a long busy spell a look at doubling intervals (up to an hour)
//! and one ring when it ends. Timeouts fire when due (within tokio's 1 ms
//! timer tick), never before.

use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use tokio::time::Instant;

use super::activity::{Activity, Phase, nanos};
use super::hibernate::HIBERNATE_AFTER;
use crate::config::FrontLimits;

/// The longest a clock sleeps on a busy connection before it looks again.
const BUSY_LOOK_MAX: Duration = Duration::from_secs(3600);

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

impl Clock {
    /// The clock of a connection within `limits`.
    pub(crate) fn new(limits: &FrontLimits) -> Clock {
        Clock {
            header: limits.header_read_timeout,
            idle: limits.idle_timeout,
            hibernate: None,
            tried: None,
        }
    }

    /// The shortest span a deadline of this clock may lie after the start
    /// of its phase, hibernation included: the [`Activity`]'s floor.
    pub(crate) fn floor(&self) -> Duration {
        self.header.min(self.idle).min(HIBERNATE_AFTER)
    }
}

/// Wakes the clock: a flag and the waker of the task that waits, taken
/// when rung. Unlike `tokio::sync::Notify`, waiting on it takes no lock
/// once the waker is left (the task's waker does not change), so the
/// connection's every poll does not pay for it.
#[derive(Debug, Default)]
pub(super) struct Bell {
    rung: AtomicBool,
    waker: Mutex<Option<Waker>>,
    /// Rings so far, for tests to see that requests do not ring.
    #[cfg(test)]
    pub(super) rings: std::sync::atomic::AtomicU64,
}

impl Bell {
    /// Wakes the clock, or has its next wait end at once.
    pub(super) fn ring(&self) {
        #[cfg(test)]
        self.rings.fetch_add(1, Ordering::Relaxed);
        self.rung.store(true, Ordering::SeqCst);
        let waker = self.waker.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(waker) = waker {
            waker.wake();
        }
    }

    /// Waits for a ring.
    fn rung(&self) -> Rung<'_> {
        Rung {
            bell: self,
            left: None,
        }
    }
}

/// A wait for a [`Bell`]'s ring.
struct Rung<'a> {
    bell: &'a Bell,
    /// The waker left with the bell, unless a ring took it (which also
    /// sets the flag, seen at the next poll).
    left: Option<Waker>,
}

impl Future for Rung<'_> {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.bell.rung.swap(false, Ordering::SeqCst) {
            return Poll::Ready(());
        }
        if !self.left.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
            let waker = cx.waker().clone();
            *self.bell.waker.lock().unwrap_or_else(|p| p.into_inner()) = Some(waker.clone());
            self.left = Some(waker);
            // A ring between the first look and leaving the waker.
            if self.bell.rung.swap(false, Ordering::SeqCst) {
                return Poll::Ready(());
            }
        }
        Poll::Pending
    }
}

impl Activity {
    /// When `phase` expires under `clock` and for what; none while busy.
    fn deadline(&self, phase: Phase, clock: &Clock) -> Option<(u64, Expiry)> {
        match phase {
            Phase::Head(since) => Some((since.saturating_add(nanos(clock.header)), Expiry::Header)),
            Phase::Idle(since) => match clock.hibernate {
                Some(after) if clock.tried != Some(self.instant(since)) && after < clock.idle => {
                    Some((since.saturating_add(nanos(after)), Expiry::Hibernate))
                }
                _ => Some((since.saturating_add(nanos(clock.idle)), Expiry::Idle)),
            },
            Phase::Busy(_) => None,
        }
    }

    /// When the phase now expires under `clock` and for what; none while
    /// busy.
    pub(super) fn due(&self, clock: &Clock) -> Option<(Instant, Expiry)> {
        let (at, expiry) = self.deadline(self.phase(), clock)?;
        Some((self.instant(at), expiry))
    }

    /// Waits until the connection's clock fires (the head or idle timeout
    /// passed in its phase, or the idle spell is long enough to
    /// hibernate), or until a flood is seen (`None`).
    pub(crate) async fn expired(&self, clock: Clock) -> Option<Expiry> {
        let mut seen = None;
        let mut look = self.floor;
        let sleep = tokio::time::sleep_until(self.born);
        tokio::pin!(sleep);
        loop {
            if self.flooding() {
                return None;
            }
            let word = self.phase.load(Ordering::SeqCst);
            let due = self.deadline(Phase::unpack(word), &clock);
            let now = self.now();
            if let Some((at, expiry)) = due
                && at <= now
            {
                return Some(expiry);
            }
            // The same phase as at the last look: a steady one.
            let observed = (word, self.started.load(Ordering::Relaxed));
            let steady = seen == Some(observed);
            seen = Some(observed);
            look = match steady {
                true => look.saturating_mul(2).min(nanos(BUSY_LOOK_MAX)),
                false => self.floor,
            };
            let wake = match due {
                Some((at, _)) if steady => at,
                Some((at, _)) => at.min(now.saturating_add(look)),
                None => now.saturating_add(look),
            };
            self.armed.store(wake, Ordering::SeqCst);
            // A change before the store may have compared with the old
            // time: look again. One after it sees the new time.
            if self.phase.load(Ordering::SeqCst) != word {
                continue;
            }
            sleep.as_mut().reset(self.instant(wake));
            tokio::select! {
                _ = self.bell.rung() => {}
                _ = sleep.as_mut() => {}
            }
        }
    }
}

#[cfg(test)]
#[path = "clock_tests.rs"]
mod tests;
