//! One shard of a plugin's cells: a map from key to cell and a min-heap of
//! when they expire, both behind one lock in [`super::SharedCells`].

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::Arc;
use std::time::Instant;

use super::super::journal::{Stored, Write};

/// Stale heap entries a shard tolerates beyond one per cell before it
/// rebuilds its heap from its map.
pub(super) const HEAP_SLACK: usize = 64;

/// One shard: its cells, and a min-heap of when they expire.
///
/// The heap deletes lazily: an entry whose time is not its cell's `queued`
/// is stale and skipped when it comes up. Every cell has an entry at its
/// `queued` time, which is never later than its expiry: a write that moves
/// the expiry later leaves the entry (it is queued again at the new expiry
/// when it comes up), one that moves it earlier adds an entry.
#[derive(Default)]
pub(super) struct Shard {
    pub(super) map: HashMap<Arc<str>, Cell>,
    pub(super) heap: BinaryHeap<Reverse<(Instant, Arc<str>)>>,
    /// The last write's number; an undo checks a cell still holds its write.
    seq: u64,
}

#[derive(Debug, Clone, Copy)]
pub(super) struct Cell {
    value: i64,
    expires: Instant,
    /// The time of this cell's current heap entry.
    queued: Instant,
    /// The number of the write that set `value` and `expires`.
    seq: u64,
}

impl Shard {
    /// The cell at `key` as it stands, unless absent or expired.
    pub(super) fn live(&self, key: &str, now: Instant) -> Option<Stored> {
        self.map
            .get(key)
            .filter(|cell| cell.expires > now)
            .map(|cell| Stored {
                value: cell.value,
                expires: cell.expires,
                seq: cell.seq,
            })
    }

    fn next_seq(&mut self) -> u64 {
        self.seq += 1;
        self.seq
    }

    /// Rewrites the cell at `key` if there is one (live or not); its key and
    /// the write's number.
    pub(super) fn overwrite(
        &mut self,
        key: &str,
        value: i64,
        expires: Instant,
    ) -> Option<(Arc<str>, u64)> {
        let key = self.map.get_key_value(key)?.0.clone();
        let seq = self.next_seq();
        let cell = self.map.get_mut(&key)?;
        *cell = Cell {
            value,
            expires,
            seq,
            ..*cell
        };
        if expires < cell.queued {
            cell.queued = expires;
            self.heap.push(Reverse((expires, key.clone())));
            self.bound_heap();
        }
        Some((key, seq))
    }

    /// Adds a cell the caps already count; its key and the write's number.
    pub(super) fn insert(&mut self, key: &str, value: i64, expires: Instant) -> (Arc<str>, u64) {
        let key: Arc<str> = key.into();
        let seq = self.next_seq();
        let cell = Cell {
            value,
            expires,
            queued: expires,
            seq,
        };
        self.map.insert(key.clone(), cell);
        self.heap.push(Reverse((expires, key.clone())));
        self.bound_heap();
        (key, seq)
    }

    /// Forgets at most `budget` cells the heap says have expired by `now`,
    /// calling `forget` with each one's key. Stale entries and cells whose
    /// expiry moved later (queued again) use up the budget too.
    pub(super) fn expire(&mut self, now: Instant, budget: usize, mut forget: impl FnMut(&str)) {
        for _ in 0..budget {
            if self.heap.peek().is_none_or(|Reverse((at, _))| *at > now) {
                return;
            }
            let Some(Reverse((at, key))) = self.heap.pop() else {
                return;
            };
            let Some(cell) = self.map.get_mut(&key).filter(|cell| cell.queued == at) else {
                continue;
            };
            if cell.expires <= now {
                self.map.remove(&key);
                forget(&key);
            } else {
                cell.queued = cell.expires;
                self.heap.push(Reverse((cell.expires, key)));
            }
        }
    }

    /// Takes back `write` if the cell still holds exactly what it wrote:
    /// the value before it comes back, or the cell goes (true) if there was
    /// none or it has expired since. A cell another write changed is left.
    pub(super) fn undo(&mut self, write: &Write, now: Instant) -> bool {
        let Some(cell) = self.map.get_mut(&write.key) else {
            return false;
        };
        if cell.seq != write.written {
            return false;
        }
        match write.previous {
            Some(previous) if previous.expires > now => {
                cell.value = previous.value;
                cell.expires = previous.expires;
                cell.seq = previous.seq;
                if previous.expires < cell.queued {
                    cell.queued = previous.expires;
                    self.heap
                        .push(Reverse((previous.expires, write.key.clone())));
                    self.bound_heap();
                }
                false
            }
            _ => {
                self.map.remove(&write.key);
                true
            }
        }
    }

    /// Rebuilds the heap from the map once stale entries outnumber the
    /// cells (plus [`HEAP_SLACK`]): O(cells), after at least as many
    /// pushes, so amortised O(1) per write, and the heap stays within about
    /// twice the map.
    fn bound_heap(&mut self) {
        if self.heap.len() > 2 * self.map.len() + HEAP_SLACK {
            self.heap = self
                .map
                .iter_mut()
                .map(|(key, cell)| {
                    cell.queued = cell.expires;
                    Reverse((cell.expires, key.clone()))
                })
                .collect();
        }
    }
}
