//! When the plugin call under way on each thread must end: one slot per
//! thread that calls plugins, which the epoch ticker reads to sleep until
//! the earliest deadline instead of waking on a fixed tick.
//!
//! A call writes its deadline into its thread's slot before it enters the
//! plugin and clears it when it returns ([`Armed`]): two relaxed stores to a
//! cache line only that thread writes. The ticker takes the registry's lock
//! once per wake-up to read every slot.

use std::marker::PhantomData;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant};

/// One thread's deadline, in nanoseconds since [`base`] plus one; 0 while
/// the thread is in no call.
#[derive(Debug, Default)]
struct Slot(AtomicU64);

/// Every live thread's slot (a thread's slot goes with it: its weak
/// reference dies and is pruned on the next read).
static SLOTS: Mutex<Vec<Weak<Slot>>> = Mutex::new(Vec::new());

thread_local! {
    static SLOT: Arc<Slot> = register();
}

fn register() -> Arc<Slot> {
    let slot = Arc::new(Slot::default());
    SLOTS
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(Arc::downgrade(&slot));
    slot
}

/// The instant slot values count from.
fn base() -> Instant {
    static BASE: OnceLock<Instant> = OnceLock::new();
    *BASE.get_or_init(Instant::now)
}

fn encode(at: Instant) -> u64 {
    u64::try_from(at.saturating_duration_since(base()).as_nanos())
        .unwrap_or(u64::MAX - 1)
        .saturating_add(1)
}

fn decode(value: u64) -> Instant {
    base() + Duration::from_nanos(value - 1)
}

/// A deadline written in this thread's slot, cleared when dropped (if no
/// later call on the thread replaced it). Stays on the thread that armed
/// it.
#[derive(Debug)]
#[must_use = "the deadline is cleared when this is dropped"]
pub(crate) struct Armed {
    value: u64,
    at: Instant,
    _thread: PhantomData<*const ()>,
}

impl Armed {
    /// Writes `at` as this thread's deadline.
    pub(crate) fn new(at: Instant) -> Armed {
        let value = encode(at);
        SLOT.with(|slot| slot.0.store(value, Ordering::Release));
        Armed {
            value,
            at,
            _thread: PhantomData,
        }
    }

    /// The deadline.
    pub(crate) fn at(&self) -> Instant {
        self.at
    }
}

impl Drop for Armed {
    fn drop(&mut self) {
        // A thread being torn down has no slot left to clear.
        let _ = SLOT.try_with(|slot| {
            let _ = (slot.0).compare_exchange(self.value, 0, Ordering::Release, Ordering::Relaxed);
        });
    }
}

/// The earliest deadline of a call under way on any thread.
pub(crate) fn earliest() -> Option<Instant> {
    let mut slots = SLOTS.lock().unwrap_or_else(|e| e.into_inner());
    let mut earliest = u64::MAX;
    slots.retain(|slot| match slot.upgrade() {
        Some(slot) => {
            let value = slot.0.load(Ordering::Acquire);
            if value != 0 {
                earliest = earliest.min(value);
            }
            true
        }
        None => false,
    });
    (earliest != u64::MAX).then(|| decode(earliest))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_seen_while_armed_and_gone_after() {
        let at = Instant::now() + Duration::from_secs(3_600);
        let armed = Armed::new(at);
        assert!(earliest().is_some_and(|e| e <= at));
        // Another thread's deadline, earlier than this one, is the earliest.
        let sooner = at - Duration::from_secs(60);
        std::thread::scope(|s| {
            s.spawn(|| {
                let _other = Armed::new(sooner);
                let seen = earliest().unwrap();
                assert!(seen <= sooner && seen + Duration::from_micros(1) >= sooner);
            });
        });
        drop(armed);
        // Other tests' calls may be under way; this thread's is not.
        assert!(SLOT.with(|slot| slot.0.load(Ordering::Relaxed)) == 0);
    }

    #[test]
    fn a_later_arm_on_the_thread_is_not_cleared_by_an_earlier_guard() {
        let first = Armed::new(Instant::now() + Duration::from_secs(10));
        let second = Armed::new(Instant::now() + Duration::from_secs(20));
        drop(first);
        assert_eq!(
            SLOT.with(|slot| slot.0.load(Ordering::Relaxed)),
            second.value
        );
        drop(second);
        assert_eq!(SLOT.with(|slot| slot.0.load(Ordering::Relaxed)), 0);
    }
}
