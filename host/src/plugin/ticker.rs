//! The epoch ticker: the thread that advances wasmtime's epoch, which every
//! plugin deadline is counted in.
//!
//! It ticks only while plugins are being called. Each call (and each
//! instantiation) first [`Ticker::wake`]s it, which costs one relaxed load
//! while it is awake. It keeps ticking for as many ticks as the longest
//! deadline after the last call it saw start, so no call under way can
//! outlive its deadline, then parks: an idle weir wakes it once a second
//! (to notice the engine was dropped), not once per tick.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::Thread;
use std::time::Duration;

use wasmtime::EngineWeak;

/// How long a parked ticker sleeps before checking that its engine is
/// still alive.
const PARKED_CHECK: Duration = Duration::from_secs(1);

/// The handle calls wake the ticker through.
#[derive(Debug)]
pub(crate) struct Ticker {
    /// A call started since the ticker last looked.
    active: AtomicBool,
    /// The ticker is parked (or about to park) until woken.
    parked: AtomicBool,
    /// Ticks so far, for tests and benchmarks.
    ticks: AtomicU64,
    thread: Thread,
}

impl Ticker {
    /// Starts the thread: it advances `engine`'s epoch every `tick` while
    /// calls are made, parks after `keep_ticks` ticks without a call
    /// starting, and stops once the engine is dropped.
    pub(crate) fn start(
        engine: EngineWeak,
        tick: Duration,
        keep_ticks: u64,
    ) -> std::io::Result<Arc<Ticker>> {
        let (sender, receiver) = std::sync::mpsc::sync_channel::<Arc<Ticker>>(1);
        let handle = std::thread::Builder::new()
            .name("weir-epoch".into())
            .spawn(move || {
                let Ok(ticker) = receiver.recv() else { return };
                ticker.run(&engine, tick, keep_ticks);
            })?;
        let ticker = Arc::new(Ticker {
            // Awake at first: the first instances are made right away.
            active: AtomicBool::new(true),
            parked: AtomicBool::new(false),
            ticks: AtomicU64::new(0),
            thread: handle.thread().clone(),
        });
        // The thread waits for its handle; it cannot have gone.
        let _ = sender.send(ticker.clone());
        Ok(ticker)
    }

    fn run(&self, weak: &EngineWeak, tick: Duration, keep_ticks: u64) {
        let mut quiet = 0u64;
        loop {
            std::thread::sleep(tick);
            let Some(engine) = weak.upgrade() else {
                return;
            };
            engine.increment_epoch();
            drop(engine);
            self.ticks.fetch_add(1, Ordering::Relaxed);
            if self.active.swap(false, Ordering::SeqCst) {
                quiet = 0;
                continue;
            }
            quiet += 1;
            if quiet <= keep_ticks {
                continue;
            }
            // Every call that started before `active` was last cleared has
            // had its whole deadline: nothing is left to interrupt. Park
            // until a call wakes us; a wake between the check and the park
            // leaves the thread's token set, so the park returns at once.
            self.parked.store(true, Ordering::SeqCst);
            while !self.active.load(Ordering::SeqCst) {
                if weak.upgrade().is_none() {
                    return;
                }
                std::thread::park_timeout(PARKED_CHECK);
            }
            self.parked.store(false, Ordering::SeqCst);
            quiet = 0;
        }
    }

    /// Tells the ticker a call is about to start under a deadline. Cheap
    /// while the ticker is awake and has already seen a call this tick.
    #[inline]
    pub(crate) fn wake(&self) {
        if !self.active.load(Ordering::Relaxed) {
            self.active.store(true, Ordering::SeqCst);
            if self.parked.load(Ordering::SeqCst) {
                self.thread.unpark();
            }
        }
    }

    /// Whether the ticker is parked, waiting for a call.
    pub(crate) fn is_parked(&self) -> bool {
        self.parked.load(Ordering::SeqCst)
    }

    /// Ticks so far.
    pub(crate) fn ticks(&self) -> u64 {
        self.ticks.load(Ordering::Relaxed)
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

    #[test]
    fn parks_when_idle_and_still_cuts_off_a_spinning_call() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let ticker = Ticker::start(engine.weak(), Duration::from_millis(1), 5).unwrap();
        wait_until("the idle ticker to park", || ticker.is_parked());
        let parked_at = ticker.ticks();
        wait_until("a few wake-up checks", || {
            std::thread::sleep(Duration::from_millis(10));
            true
        });
        assert_eq!(ticker.ticks(), parked_at, "a parked ticker ticked");

        let module = wasmtime::Module::new(&engine, SPIN).unwrap();
        let mut store = wasmtime::Store::new(&engine, ());
        store.epoch_deadline_trap();
        ticker.wake();
        store.set_epoch_deadline(3);
        let instance = wasmtime::Instance::new(&mut store, &module, &[]).unwrap();
        let spin = instance
            .get_typed_func::<(), ()>(&mut store, "spin")
            .unwrap();
        let error = spin.call(&mut store, ()).unwrap_err();
        assert_eq!(
            error.downcast_ref::<wasmtime::Trap>(),
            Some(&wasmtime::Trap::Interrupt),
            "{error:?}"
        );
        assert!(ticker.ticks() >= parked_at + 2, "woken to tick");
        // Idle again, it parks again.
        wait_until("the ticker to park again", || ticker.is_parked());
    }

    #[test]
    fn stops_when_the_engine_is_dropped() {
        let mut config = wasmtime::Config::new();
        config.epoch_interruption(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let ticker = Ticker::start(engine.weak(), Duration::from_millis(1), 1_000).unwrap();
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
