//! The epoch ticker: the thread that cuts off plugin calls that run past
//! their deadline.
//!
//! Every call (and instantiation) first [`Ticker::arm`]s: it writes its
//! wall-clock deadline into its thread's slot (`deadline`), sets its store
//! to check that deadline at the next epoch change, and wakes the ticker if
//! it is parked. The ticker sleeps until the earliest deadline of a call
//! under way, and at the latest one call timeout after it last looked (a
//! call that starts meanwhile cannot be due any sooner). When it finds a
//! call past its deadline it advances the engine's epoch: each store then
//! in wasm runs its deadline check, which traps the call that is overdue and
//! lets the others go on. So a call is cut off once its timeout has passed,
//! plus the ticker's wake-up latency, and under a steady stream of short
//! calls the ticker wakes once per call timeout (200 times a second at the
//! default 5 ms; the fixed tick of half the timeout it replaced woke 400
//! times, each a context switch on a loaded worker's CPU).
//!
//! After the longest deadline has passed without a call, it parks: an idle
//! weir wakes it once a second (to notice the engine was dropped).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::{Duration, Instant};

use wasmtime::EngineWeak;

use super::deadline;
pub(crate) use super::deadline::Armed;

/// How long a parked ticker sleeps before checking that its engine is
/// still alive.
const PARKED_CHECK: Duration = Duration::from_secs(1);

/// How soon the ticker looks again at a call it found overdue (it traps at
/// its next epoch check, unless it is in a host call).
const OVERDUE_RECHECK: Duration = Duration::from_millis(1);

/// The handle calls arm their deadlines through.
#[derive(Debug)]
pub(crate) struct Ticker {
    /// A call started since the ticker last looked.
    active: AtomicBool,
    /// The ticker is parked (or about to park) until woken.
    parked: AtomicBool,
    /// Wake-ups so far, for tests and benchmarks.
    ticks: AtomicU64,
    /// Epoch advances so far (overdue calls found).
    advances: AtomicU64,
    thread: Thread,
}

impl Ticker {
    /// Starts the thread: while calls are made it wakes at the earliest
    /// deadline under way and at least every `timeout` (the shortest any
    /// call gets), advancing `engine`'s epoch when a call is overdue; it
    /// parks after `keep` without a call, and stops once the engine is
    /// dropped.
    pub(crate) fn start(
        engine: EngineWeak,
        timeout: Duration,
        keep: Duration,
    ) -> std::io::Result<Arc<Ticker>> {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Arc<Ticker>>(1);
        let handle = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                let Ok(ticker) = receiver.recv() else { return };
                ticker.run(&engine, timeout, keep);
            })?;
        let ticker = Arc::new(Ticker {
            // Awake at first: the first instances are made right away.
            active: AtomicBool::new(true),
            parked: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            advances: AtomicU64::new(0),
            thread: handle.thread().clone(),
        });
        // The thread waits for its handle; it cannot have gone.
        let _ = sender.send(ticker.clone());
        Ok(ticker)
    }

    fn run(&self, weak: &EngineWeak, timeout: Duration, keep: Duration) {
        let mut last_seen = Instant::now();
        loop {
            let now = Instant::now();
            let earliest = deadline::earliest();
            if self.active.swap(false, Ordering::SeqCst) || earliest.is_some() {
                last_seen = now;
            }
            let Some(engine) = weak.upgrade() else {
                return;
            };
            if earliest.is_some_and(|at| at <= now) {
                // Stores in wasm check their own deadlines: only the
                // overdue call traps.
                engine.increment_epoch();
                self.advances.fetch_add(1, Ordering::Relaxed);
            }
            drop(engine);
            if now.duration_since(last_seen) > keep {
                self.park(weak);
                last_seen = Instant::now();
                continue;
            }
            let next = match earliest {
                Some(at) if at > now => at.min(now + timeout),
                Some(_) => now + OVERDUE_RECHECK,
                None => now + timeout,
            };
            std::thread::sleep(next.saturating_duration_since(now));
            self.ticks.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Parks until a call wakes the ticker. Every call that started before
    /// `active` was last cleared has ended or had its whole deadline. A
    /// wake between the check and the park leaves the thread's token set,
    /// so the park returns at once.
    fn park(&self, weak: &EngineWeak) {
        self.parked.store(true, Ordering::SeqCst);
        while !self.active.load(Ordering::SeqCst) {
            if weak.upgrade().is_none() {
                break;
            }
            std::thread::park_timeout(PARKED_CHECK);
        }
        self.parked.store(false, Ordering::SeqCst);
    }

    /// Tells the ticker a call is about to start under a deadline. Cheap
    /// while the ticker is awake and has already seen a call since it last
    /// looked.
    #[inline]
    pub(crate) fn wake(&self) {
        if !self.active.load(Ordering::Relaxed) {
            self.active.store(true, Ordering::SeqCst);
            if self.parked.load(Ordering::SeqCst) {
                self.thread.unpark();
            }
        }
    }

    /// Arms a call on this thread that must end by `deadline`: the ticker
    /// will cut it off once that has passed. The deadline holds until the
    /// returned guard is dropped.
    #[inline]
    pub(crate) fn arm(&self, deadline: Instant) -> Armed {
        let armed = Armed::new(deadline);
        self.wake();
        armed
    }

    /// Whether the ticker is parked, waiting for a call.
    pub(crate) fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// Wake-ups so far.
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
    }

    /// Times the epoch was advanced, to cut off an overdue call.
    #[cfg(test)]
    pub(crate) fn advances(&self) -> u64 {
        self.advances.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `(module (func (export "spin") (loop (br 0))))`: never returns.
    const SPIN: &[u8] = &[
        0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00, // magic, version
        0x01, 0x04, 0x01, 0x60, 0x00, 0x00, // type: () -> ()
        0x03, 0x02, 0x01, 0x00, // one function of that type
        0x07, 0x08, 0x01, 0x04, b's', b'p', b'i', b'n', 0x00, 0x00, // export
        0x0a, 0x09, 0x01, 0x07, 0x00, 0x03, 0x40, 0x0c, 0x00, 0x0b, 0x0b, // code
    ];

    fn wait_until(what: &str, mut done: impl FnMut() -> bool) {
        let started = std::time::Instant::now();
        while !done() {
            assert!(
                started.elapsed() < Duration::from_secs(30),
                "waited 30 s for {what}"
            );
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    /// A store whose deadline is the `Instant` it holds, checked at each
    /// epoch change as weir's stores do.
    fn store(engine: &wasmtime::Engine, at: Instant) -> wasmtime::Store<Instant> {
        let mut store = wasmtime::Store::new(engine, at);
        store.epoch_deadline_callback(|ctx| {
            Ok(if Instant::now() >= *ctx.data() {
                wasmtime::UpdateDeadline::Interrupt
            } else {
                wasmtime::UpdateDeadline::Continue(1)
            })
        });
        store.set_epoch_deadline(1);
        store
    }

    /// Runs `spin` in a store armed for `allowed` on this thread; returns
    /// the trap and whether it came no sooner than the deadline.
    fn spin_for(
        engine: &wasmtime::Engine,
        ticker: &Ticker,
        allowed: Duration,
    ) -> (wasmtime::Error, bool) {
        let module = wasmtime::Module::new(engine, SPIN).unwrap();
        let armed = ticker.arm(Instant::now() + allowed);
        let mut store = store(engine, armed.at());
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        let error = spin.call(&mut store, ()).unwrap_err();
        (error, Instant::now() >= armed.at())
    }

    fn is_interrupt(error: &wasmtime::Error) -> bool {
        error.downcast_ref::<wasmtime::Trap>() == Some(&wasmtime::Trap::Interrupt)
    }

    #[test]
    fn parks_when_idle_and_still_cuts_off_a_spinning_call() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let ticker = Ticker::start(
            engine.weak(),
            Duration::from_millis(2),
            Duration::from_millis(5),
        )
        .unwrap();
        wait_until("the idle ticker to park", || ticker.is_parked());
        let parked_at = ticker.ticks();
        wait_until("a few wake-up checks", || {
            std::thread::sleep(Duration::from_millis(10));
            true
        });
        assert_eq!(ticker.ticks(), parked_at, "a parked ticker ticked");

        let (error, not_early) = spin_for(&engine, &ticker, Duration::from_millis(3));
        assert!(is_interrupt(&error), "{error:?}");
        assert!(not_early, "cut off before its deadline");
        assert!(ticker.advances() >= 1, "woken to advance the epoch");
        // Idle again, it parks again.
        wait_until("the ticker to park again", || ticker.is_parked());
    }

    #[test]
    fn an_overdue_call_is_cut_off_and_a_call_beside_it_keeps_its_own_deadline() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let ticker = Ticker::start(
            engine.weak(),
            Duration::from_millis(3),
            Duration::from_secs(1),
        )
        .unwrap();
        let (short, long) = std::thread::scope(|s| {
            let long = s.spawn(|| spin_for(&engine, &ticker, Duration::from_millis(300)));
            let short = s.spawn(|| spin_for(&engine, &ticker, Duration::from_millis(3)));
            (short.join().unwrap(), long.join().unwrap())
        });
        for (name, (error, not_early)) in [("short", short), ("long", long)] {
            assert!(is_interrupt(&error), "{name}: {error:?}");
            // The epoch advanced for the short call while the long one ran:
            // its own check let it go on until its deadline.
            assert!(not_early, "the {name} call was cut off before its deadline");
        }
        assert!(
            ticker.advances() >= 2,
            "one advance per overdue call at least"
        );
    }

    #[test]
    fn stops_when_the_engine_is_dropped() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let ticker = Ticker::start(
            engine.weak(),
            Duration::from_millis(1),
            Duration::from_secs(1_000),
        )
        .unwrap();
        wait_until("a tick", || ticker.ticks() > 0);
        drop(engine);
        let mut last = ticker.ticks();
        // One tick may be under way; after that, none.
        wait_until("the ticker to stop", || {
            std::thread::sleep(Duration::from_millis(5));
            let now = ticker.ticks();
            std::mem::replace(&mut last, now) == now
        });
    }
}
