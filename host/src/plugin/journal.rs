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

#[cfg(test)]
mod tests {
    use super::super::bindings::shared::Host;
    use super::super::host::HostState;
    use super::*;

    #[test]
    fn a_failed_or_discarded_call_takes_back_its_writes() {
        let plugin = super::super::PluginState::new("test", 100);
        let cells = plugin.cells.clone();
        let state = || {
            let limits = wasmtime::StoreLimitsBuilder::new().build();
            HostState::new("test".into(), "route 1".into(), limits, plugin.clone())
        };
        let get = |key: &str| cells.get(key, Instant::now());
        let mut succeeded = state();
        assert_eq!(succeeded.add("kept".into(), 1, 60_000), 1);
        succeeded.end_call(true);

        let mut failed = state();
        assert_eq!(failed.add("kept".into(), 1, 60_000), 2);
        assert!(failed.compare_and_swap("gone".into(), None, 7, 60_000));
        failed.end_call(false);
        assert_eq!((get("kept"), get("gone")), (Some(1), None));

        let mut discarded = state();
        assert!(discarded.compare_and_swap("gone".into(), None, 7, 60_000));
        drop(discarded);
        drop(succeeded);
        assert_eq!((get("kept"), get("gone")), (Some(1), None));
        assert_eq!(cells.usage().cells, 1);
    }
}
