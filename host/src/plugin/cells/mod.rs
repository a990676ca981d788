//! The `shared` import's integer cells: shared by every instance of one
//! plugin, with compare-and-swap and expiry, and held to caps on key length,
//! bytes and count so a plugin keyed by anything a client sends cannot grow
//! memory without bound.
//!
//! The cells are split into [`SHARDS`] shards by key hash, each behind its
//! own lock: writes to different keys rarely wait for each other, and no
//! operation holds more than one shard. Each shard keeps its cells' expiry
//! times in a min-heap, and every operation first forgets at most
//! [`EXPIRE_PER_OP`] cells the heap says have expired (at a cap, at most
//! [`EXPIRE_AT_CAP`] more before refusing). There is never a sweep over all
//! cells: each operation is O(log n) plus a constant bound on extra work.
//! Every operation takes `now`, so tests choose the time.

mod shard;

use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use super::journal::{CallJournal, Write};
use shard::Shard;

/// Longest key, in bytes. A longer key is refused: `get` answers none,
/// `add` answers as if the cell were fresh without storing it,
/// `compare-and-swap` answers false.
pub const MAX_KEY_BYTES: usize = 256;

/// What each cell counts against [`MAX_CELL_BYTES`] besides its key: about
/// what the host spends on it (map entry, key allocation, expiry heap entry).
pub const CELL_OVERHEAD_BYTES: usize = 128;

/// Most bytes one plugin's cells may count (each its key's length plus
/// [`CELL_OVERHEAD_BYTES`]); past it, writes of new keys are refused as for
/// a long key. With short keys this cap comes before [`MAX_CELLS`].
pub const MAX_CELL_BYTES: usize = 64 << 20;

/// Most cells one plugin may hold; past it, writes of new keys are refused.
pub const MAX_CELLS: usize = 1 << 20;

/// Shards per plugin, each with its own lock.
pub const SHARDS: usize = 16;

/// Most expired cells one operation forgets on its way. More than one, so
/// the heap drains faster than writes (at most one entry each) fill it.
const EXPIRE_PER_OP: usize = 4;

/// Most further expired cells a write at a cap forgets before refusing.
const EXPIRE_AT_CAP: usize = 64;

/// The caps one plugin's cells are held to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CellLimits {
    /// Longest key, in bytes.
    pub key_bytes: usize,
    /// Most bytes, counted as key length plus [`CELL_OVERHEAD_BYTES`].
    pub total_bytes: usize,
    /// Most cells.
    pub cells: usize,
}

impl Default for CellLimits {
    fn default() -> Self {
        CellLimits {
            key_bytes: MAX_KEY_BYTES,
            total_bytes: MAX_CELL_BYTES,
            cells: MAX_CELLS,
        }
    }
}

/// Why the host refused a cell operation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The key is longer than [`CellLimits::key_bytes`].
    KeyTooLong,
    /// A new key, with the plugin at its byte or cell cap.
    Full,
    /// One call already wrote [`super::journal::MAX_CALL_WRITES`] cells.
    TooManyWrites,
}

impl Refusal {
    /// Every reason, in the order [`SharedCells::refusals`] gives them.
    pub const ALL: [Refusal; 3] = [Refusal::KeyTooLong, Refusal::Full, Refusal::TooManyWrites];

    /// The reason as `/metrics` labels it.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::KeyTooLong => "key_too_long",
            Refusal::Full => "full",
            Refusal::TooManyWrites => "too_many_writes",
        }
    }
}

/// How much of its caps a plugin's cells use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CellUsage {
    /// Cells held, counting expired ones not yet forgotten.
    pub cells: usize,
    /// Bytes counted against [`CellLimits::total_bytes`].
    pub bytes: usize,
}

/// One plugin's integer cells with expiry.
pub struct SharedCells {
    plugin: Arc<str>,
    limits: CellLimits,
    hasher: RandomState,
    shards: [Mutex<Shard>; SHARDS],
    cells: AtomicUsize,
    bytes: AtomicUsize,
    refusals: [AtomicU64; Refusal::ALL.len()],
}

impl SharedCells {
    /// Empty cells for `plugin` (named in refusal warnings), under the
    /// default caps.
    pub fn new(plugin: &str) -> Self {
        Self::with_limits(plugin, CellLimits::default())
    }

    /// Empty cells for `plugin` under `limits`.
    pub fn with_limits(plugin: &str, limits: CellLimits) -> Self {
        SharedCells {
            plugin: plugin.into(),
            limits,
            hasher: RandomState::new(),
            shards: std::array::from_fn(|_| Mutex::default()),
            cells: AtomicUsize::new(0),
            bytes: AtomicUsize::new(0),
            refusals: Default::default(),
        }
    }

    /// The value at `key`, unless absent or expired.
    pub fn get(&self, key: &str, now: Instant) -> Option<i64> {
        let shard = self.open(key, now)?;
        shard.live(key, now).map(|cell| cell.value)
    }

    /// Adds `delta` (absent counts as 0) and returns the new value; refused,
    /// answers `delta`, as if the cell were fresh, and stores nothing.
    pub(crate) fn add(
        &self,
        key: &str,
        delta: i64,
        ttl: Duration,
        now: Instant,
        journal: &mut CallJournal,
    ) -> i64 {
        let Some(mut shard) = self.open(key, now) else {
            return delta;
        };
        let value = shard
            .live(key, now)
            .map_or(0, |cell| cell.value)
            .saturating_add(delta);
        if self.write(&mut shard, key, value, now + ttl, now, journal) {
            value
        } else {
            delta
        }
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: absent); false if
    /// it did not, or the write was refused.
    pub(crate) fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<i64>,
        new: i64,
        ttl: Duration,
        now: Instant,
        journal: &mut CallJournal,
    ) -> bool {
        let Some(mut shard) = self.open(key, now) else {
            return false;
        };
        shard.live(key, now).map(|cell| cell.value) == expected
            && self.write(&mut shard, key, new, now + ttl, now, journal)
    }

    /// Takes back `write` if the cell still holds exactly what it wrote
    /// (see [`CallJournal::undo`]).
    pub(crate) fn undo(&self, write: &Write, now: Instant) {
        if self.lock(&write.key).undo(write, now) {
            self.release(&write.key);
        }
    }

    /// How much of the caps the cells use.
    pub fn usage(&self) -> CellUsage {
        CellUsage {
            cells: self.cells.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
        }
    }

    /// The caps these cells are held to.
    pub fn limits(&self) -> CellLimits {
        self.limits
    }

    /// Operations refused so far, by reason, in [`Refusal::ALL`]'s order.
    pub fn refusals(&self) -> [(Refusal, u64); Refusal::ALL.len()] {
        Refusal::ALL.map(|reason| {
            (
                reason,
                self.refusals[reason as usize].load(Ordering::Relaxed),
            )
        })
    }

    /// The shard of `key`, locked, after forgetting a few expired cells;
    /// `None` (refused) for a key that is too long.
    fn open(&self, key: &str, now: Instant) -> Option<MutexGuard<'_, Shard>> {
        if key.len() > self.limits.key_bytes {
            self.refuse(Refusal::KeyTooLong);
            return None;
        }
        let mut shard = self.lock(key);
        shard.expire(now, EXPIRE_PER_OP, |key| self.release(key));
        Some(shard)
    }

    fn lock(&self, key: &str) -> MutexGuard<'_, Shard> {
        let index = (self.hasher.hash_one(key) % SHARDS as u64) as usize;
        self.shards[index].lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `value` until `expires` at `key` and records the write in
    /// `journal`; false if refused (the call's journal is full, or `key` is
    /// new and the cells are at a cap even after forgetting what expired).
    fn write(
        &self,
        shard: &mut Shard,
        key: &str,
        value: i64,
        expires: Instant,
        now: Instant,
        journal: &mut CallJournal,
    ) -> bool {
        if journal.is_full() {
            self.refuse(Refusal::TooManyWrites);
            return false;
        }
        let previous = shard.live(key, now);
        let written = match shard.overwrite(key, value, expires) {
            Some(written) => written,
            None => {
                if !self.reserve(key) {
                    shard.expire(now, EXPIRE_AT_CAP, |key| self.release(key));
                    if !self.reserve(key) {
                        self.refuse(Refusal::Full);
                        return false;
                    }
                }
                shard.insert(key, value, expires)
            }
        };
        journal.record(Write {
            key: written.0,
            previous,
            written: written.1,
        });
        true
    }

    /// What one cell with `key` counts against the byte cap.
    fn size(key: &str) -> usize {
        key.len() + CELL_OVERHEAD_BYTES
    }

    /// Counts a new cell for `key` against the caps; false, counting
    /// nothing, if it does not fit. Concurrent reservations may refuse each
    /// other near a cap, but never admit more than it.
    fn reserve(&self, key: &str) -> bool {
        let size = Self::size(key);
        if self.cells.fetch_add(1, Ordering::Relaxed) >= self.limits.cells {
            self.cells.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        if self.bytes.fetch_add(size, Ordering::Relaxed) + size > self.limits.total_bytes {
            self.bytes.fetch_sub(size, Ordering::Relaxed);
            self.cells.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        true
    }

    /// Stops counting a cell for `key`.
    fn release(&self, key: &str) {
        self.cells.fetch_sub(1, Ordering::Relaxed);
        self.bytes.fetch_sub(Self::size(key), Ordering::Relaxed);
    }

    /// Counts a refusal and warns: the first, then every power of two, so a
    /// plugin refused on every request cannot flood the log.
    fn refuse(&self, reason: Refusal) {
        let refusals = self.refusals[reason as usize].fetch_add(1, Ordering::Relaxed) + 1;
        if refusals.is_power_of_two() {
            let limits = self.limits;
            let why = match reason {
                Refusal::KeyTooLong => format!("key longer than {} bytes", limits.key_bytes),
                Refusal::Full => format!(
                    "the plugin's cells are at their cap ({} bytes or {} cells)",
                    limits.total_bytes, limits.cells
                ),
                Refusal::TooManyWrites => format!(
                    "more than {} cell writes in one call",
                    super::journal::MAX_CALL_WRITES
                ),
            };
            tracing::warn!(
                plugin = &*self.plugin,
                reason = reason.as_str(),
                refusals,
                "shared cell refused: {why}"
            );
        }
    }
}

impl std::fmt::Debug for SharedCells {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedCells")
            .field("plugin", &self.plugin)
            .field("usage", &self.usage())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests;
