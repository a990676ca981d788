//! What one plugin call wrote to its shared cells, so that a call that
//! fails (traps, runs past its deadline, answers nonsense) leaves none of
//! its writes behind.

use std::sync::Arc;
use std::time::Instant;

use super::cells::SharedCells;

/// Most cell writes one call may make; further writes in the same call are
/// refused (as at a cap), which also bounds the journal.
pub const MAX_CALL_WRITES: usize = 64;

/// A cell as it stood: its value, expiry, and the number of the write that
/// set them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    pub(crate) value: i64,
    pub(crate) expires: Instant,
    pub(crate) seq: u64,
}

/// One write of a call.
#[derive(Debug, Clone)]
pub(crate) struct Write {
    /// The cell written.
    pub(crate) key: Arc<str>,
    /// The live cell it replaced; `None`: absent or expired.
    pub(crate) previous: Option<Stored>,
    /// The number of this write, which the cell keeps until written again.
    pub(crate) written: u64,
}

/// The writes of the call under way in one instance, oldest first.
#[derive(Debug, Default)]
pub(crate) struct CallJournal {
    writes: Vec<Write>,
}

impl CallJournal {
    /// Whether the call has made its [`MAX_CALL_WRITES`] writes.
    pub(crate) fn is_full(&self) -> bool {
        self.writes.len() >= MAX_CALL_WRITES
    }

    /// Records a write the call made (refused by the caller when full).
    pub(crate) fn record(&mut self, write: Write) {
        debug_assert!(!self.is_full());
        self.writes.push(write);
    }

    /// Writes recorded since the call began.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.writes.len()
    }

    /// The call succeeded: its writes stay.
    pub(crate) fn commit(&mut self) {
        self.writes.clear();
    }

    /// The call failed: takes its writes back, newest first, each only if
    /// its cell still holds exactly what the call wrote (another instance
    /// may have written it since: then its write stays).
    pub(crate) fn undo(&mut self, cells: &SharedCells, now: Instant) {
        while let Some(write) = self.writes.pop() {
            cells.undo(&write, now);
        }
    }
}
