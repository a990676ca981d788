//! What notify's event thread leaves for the [`super::Watcher`]: a wake-up,
//! the watched files still open for writing, and the first error.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use notify::EventKind;
use notify::event::{AccessKind, AccessMode, RemoveKind};
use tokio::sync::Notify;

/// Longest a watched file may stay open for writing before its content is
/// looked at anyway (a writer that never closes it).
pub(super) const OPEN_WRITE_LIMIT: Duration = Duration::from_secs(2);

/// Filled by the event thread, read by the watcher.
#[derive(Default)]
pub(super) struct Inbox {
    /// A wake-up; coalesced, so a flood of events is one permit.
    pub(super) wake: Notify,
    failure: Mutex<Option<notify::Error>>,
    files: Mutex<BTreeSet<PathBuf>>,
    /// Watched files written to and not closed since, with when the first
    /// write was seen.
    writing: Mutex<BTreeMap<PathBuf, Instant>>,
    /// Something other than a watched file was removed (a directory, most
    /// likely a watched one): its watches must be set again, even when a
    /// new directory of the same name has the old one's inode number.
    removed_other: std::sync::atomic::AtomicBool,
}

impl Inbox {
    /// Watches for writes to `files` from now on.
    pub(super) fn set_files(&self, files: &[PathBuf]) {
        *lock(&self.files) = files.iter().cloned().collect();
        lock(&self.writing).retain(|path, _| files.contains(path));
    }

    /// One event from notify's thread.
    pub(super) fn event(&self, event: notify::Result<notify::Event>) {
        let event = match event {
            Ok(event) => event,
            Err(error) => return self.fail(error),
        };
        let watched = {
            let files = lock(&self.files);
            event
                .paths
                .iter()
                .filter(|p| files.contains(*p))
                .cloned()
                .collect::<Vec<_>>()
        };
        match event.kind {
            // Written, or made: open for writing until closed.
            EventKind::Modify(notify::event::ModifyKind::Data(_)) | EventKind::Create(_) => {
                let mut writing = lock(&self.writing);
                for path in watched {
                    writing.entry(path).or_insert_with(Instant::now);
                }
            }
            EventKind::Access(AccessKind::Close(AccessMode::Write))
            | EventKind::Remove(RemoveKind::File | RemoveKind::Any) => {
                let mut writing = lock(&self.writing);
                for path in &watched {
                    writing.remove(path);
                }
                if matches!(event.kind, EventKind::Remove(_)) && watched.len() < event.paths.len() {
                    self.removed_other
                        .store(true, std::sync::atomic::Ordering::Relaxed);
                }
            }
            EventKind::Remove(_) => {
                self.removed_other
                    .store(true, std::sync::atomic::Ordering::Relaxed);
            }
            // Opening and reading (weir's own reads among them) change nothing.
            EventKind::Access(_) => return,
            _ => {}
        }
        self.wake.notify_one();
    }

    /// Whether something other than a watched file was removed since the
    /// last call.
    pub(super) fn take_removed_other(&self) -> bool {
        self.removed_other
            .swap(false, std::sync::atomic::Ordering::Relaxed)
    }

    /// The event thread failed (queue overflow, watch removed): the watcher
    /// falls back to polling.
    pub(super) fn fail(&self, error: notify::Error) {
        lock(&self.failure).get_or_insert(error);
        self.wake.notify_one();
    }

    /// The first failure since the last call.
    pub(super) fn failure(&self) -> Option<notify::Error> {
        lock(&self.failure).take()
    }

    /// Whether a watched file is open for writing, and has not been for
    /// longer than [`OPEN_WRITE_LIMIT`].
    pub(super) fn writing(&self) -> bool {
        lock(&self.writing)
            .values()
            .any(|since| since.elapsed() < OPEN_WRITE_LIMIT)
    }
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use notify::event::{CreateKind, DataChange, ModifyKind};

    use super::*;

    fn event(kind: EventKind, path: &str) -> notify::Result<notify::Event> {
        Ok(notify::Event::new(kind).add_path(PathBuf::from(path)))
    }

    #[test]
    fn a_watched_file_is_being_written_until_closed_or_removed() {
        let inbox = Inbox::default();
        inbox.set_files(&[PathBuf::from("/p/a.wasm")]);
        let write = EventKind::Modify(ModifyKind::Data(DataChange::Any));
        let close = EventKind::Access(AccessKind::Close(AccessMode::Write));
        inbox.event(event(write, "/p/other"));
        assert!(!inbox.writing(), "an unwatched file does not hold reloads");
        inbox.event(event(write, "/p/a.wasm"));
        assert!(inbox.writing());
        inbox.event(event(close, "/p/a.wasm"));
        assert!(!inbox.writing());
        inbox.event(event(EventKind::Create(CreateKind::File), "/p/a.wasm"));
        assert!(inbox.writing());
        inbox.event(event(EventKind::Remove(RemoveKind::File), "/p/a.wasm"));
        assert!(!inbox.writing());
        inbox.event(event(write, "/p/a.wasm"));
        inbox.set_files(&[]);
        assert!(!inbox.writing(), "a file no longer watched does not either");
    }

    #[test]
    fn a_removed_directory_asks_for_the_watches_to_be_set_again() {
        let inbox = Inbox::default();
        inbox.set_files(&[PathBuf::from("/p/a.wasm")]);
        inbox.event(event(EventKind::Remove(RemoveKind::File), "/p/a.wasm"));
        assert!(
            !inbox.take_removed_other(),
            "a watched file's removal is only a change"
        );
        inbox.event(event(EventKind::Remove(RemoveKind::Folder), "/p"));
        assert!(inbox.take_removed_other());
        assert!(!inbox.take_removed_other(), "taken once");
        inbox.event(event(EventKind::Remove(RemoveKind::Any), "/p"));
        assert!(inbox.take_removed_other());
    }

    #[test]
    fn reads_do_not_wake_the_watcher_and_errors_are_kept_once() {
        let inbox = Inbox::default();
        inbox.event(event(EventKind::Access(AccessKind::Read), "/p/a.wasm"));
        inbox.fail(notify::Error::generic("first"));
        inbox.fail(notify::Error::generic("second"));
        assert!(inbox.failure().unwrap().to_string().contains("first"));
        assert!(inbox.failure().is_none());
    }
}
