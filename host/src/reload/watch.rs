//! Watching a set of files for changes: filesystem events (inotify on
//! Linux) on the directories that hold them, or polling when events cannot
//! be had. Anyone can hand it paths: the config file and plugin files now,
//! certificates next.
//!
//! Directories are watched, not files, so a file replaced by rename (editors,
//! `mv`), written over (`cp`), or deleted and created again is seen; a
//! directory that is itself removed is watched for through its nearest
//! existing parent until it is back.
//!
//! Either way a change is reported once it has settled: with events, when no
//! event arrived for [`SETTLE`], no watched file is still open for writing
//! (for at most two seconds), and the content then held still for another
//! [`SETTLE`]; when polling, when the content held still for one interval.
//! A burst of writes is loaded once and whole.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use notify::RecursiveMode;

use self::inbox::Inbox;

use super::signatures::Signatures;

mod inbox;

/// How long the files must be quiet (no event) before they are read, and
/// then how long their content must hold still. 50 ms: a `cp` of a plugin,
/// or an editor's write-temp-then-rename save, is a burst of events a few
/// milliseconds long, and a second quiet period catches a writer that
/// paused between pieces; it keeps a dropped plugin serving in about a tenth
/// of a second plus its compile time.
pub const SETTLE: Duration = Duration::from_millis(50);

/// How the files are watched.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WatchMode {
    /// Filesystem events, polling as the fallback when they fail.
    Events,
    /// Look at every file each interval.
    Polling,
}

impl WatchMode {
    /// The mode asked for by `WEIR_WATCH_MODE` (`events`, the default, or
    /// `poll` for filesystems whose changes raise no events, such as some
    /// network mounts).
    pub fn from_env() -> WatchMode {
        match std::env::var("WEIR_WATCH_MODE").as_deref() {
            Ok("poll" | "polling") => WatchMode::Polling,
            Ok("" | "events") | Err(_) => WatchMode::Events,
            Ok(other) => {
                tracing::warn!(
                    "WEIR_WATCH_MODE={other:?} is neither `events` nor `poll`: using events"
                );
                WatchMode::Events
            }
        }
    }
}

/// A filesystem event source: the real one is notify's recommended watcher.
type Backend = Box<dyn notify::Watcher + Send>;

/// Events on the directories holding the watched files.
struct Events {
    backend: Backend,
    inbox: Arc<Inbox>,
    /// Each directory watched, with its inode when the watch was set (a
    /// directory deleted and made again is a new one, watched again).
    watching: BTreeMap<PathBuf, Option<u64>>,
}

/// Watches a set of files and says when their content changed.
pub struct Watcher {
    paths: Vec<PathBuf>,
    interval: Duration,
    events: Option<Events>,
    /// Look without waiting for an event: at the start, after new watches,
    /// and to confirm that a change held still.
    look: bool,
    seen: Signatures,
}

impl Watcher {
    /// Watches `paths` in `mode`; with events, falls back to polling every
    /// `interval` (and logs it) when they cannot be set up.
    pub fn new(paths: Vec<PathBuf>, interval: Duration, mode: WatchMode) -> Watcher {
        let backend = match mode {
            WatchMode::Events => Some(|inbox: Arc<Inbox>| -> notify::Result<Backend> {
                let watcher = notify::recommended_watcher(move |e| inbox.event(e))?;
                Ok(Box::new(watcher))
            }),
            WatchMode::Polling => None,
        };
        Watcher::with_backend(paths, interval, backend)
    }

    /// Like [`Watcher::new`] with events made by `backend` (tests hand it
    /// one that fails).
    fn with_backend(
        paths: Vec<PathBuf>,
        interval: Duration,
        backend: Option<impl FnOnce(Arc<Inbox>) -> notify::Result<Backend>>,
    ) -> Watcher {
        let mut watcher = Watcher {
            paths,
            interval,
            events: None,
            look: true,
            seen: Signatures::default(),
        };
        let Some(backend) = backend else {
            tracing::info!(
                files = watcher.paths.len(),
                interval_ms = interval.as_millis() as u64,
                "watching files by polling"
            );
            return watcher;
        };
        let inbox = Arc::new(Inbox::default());
        match backend(inbox.clone()) {
            Ok(backend) => {
                inbox.set_files(&watcher.paths);
                watcher.events = Some(Events {
                    backend,
                    inbox,
                    watching: BTreeMap::new(),
                });
                watcher.sync_watches();
                if watcher.events.is_some() {
                    tracing::info!(
                        files = watcher.paths.len(),
                        "watching files with filesystem events"
                    );
                }
            }
            Err(error) => watcher.fall_back(&error),
        }
        watcher
    }

    /// The mode in use now (events fall back to polling on error).
    pub fn mode(&self) -> WatchMode {
        match self.events {
            Some(_) => WatchMode::Events,
            None => WatchMode::Polling,
        }
    }

    /// The files watched.
    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    /// Watches `paths` from now on instead.
    pub fn set_paths(&mut self, paths: Vec<PathBuf>) {
        if paths != self.paths {
            if let Some(events) = &self.events {
                events.inbox.set_files(&paths);
            }
            self.paths = paths;
            self.sync_watches();
        }
    }

    /// Waits until the watched files differ from `applied` and have
    /// settled, and returns what they hold now.
    pub async fn changed(&mut self, applied: &Signatures) -> Signatures {
        let mut pending: Option<Signatures> = None;
        loop {
            self.settle().await;
            let now = self.seen.update(&self.paths, self.events.is_some());
            self.seen = now.clone();
            if now == *applied {
                pending = None;
                continue;
            }
            if pending.as_ref() == Some(&now) {
                return now;
            }
            tracing::debug!("watched files changed; waiting for them to settle");
            pending = Some(now);
            self.look = true;
        }
    }

    /// Waits for the next moment to look: an interval when polling; with
    /// events, an event (unless `look`) and then [`SETTLE`] without one.
    async fn settle(&mut self) {
        let Some(events) = &self.events else {
            tokio::time::sleep(self.interval).await;
            return;
        };
        let inbox = events.inbox.clone();
        if !std::mem::take(&mut self.look) {
            inbox.wake.notified().await;
        }
        // Quiet for SETTLE, and no watched file still open for writing.
        loop {
            tokio::select! {
                _ = inbox.wake.notified() => {}
                _ = tokio::time::sleep(SETTLE) => if !inbox.writing() { break },
            }
        }
        if let Some(error) = inbox.failure() {
            self.fall_back(&error);
            return;
        }
        // Directories may have gone or come back: follow them, and look once
        // more, since a file written before its new watch raised no event.
        if self.sync_watches() {
            self.look = true;
        }
    }

    /// Points a watch at each directory holding a watched file (or its
    /// nearest existing parent while it is missing). Returns whether a new
    /// watch was set; on an error falls back to polling.
    fn sync_watches(&mut self) -> bool {
        let Some(events) = &mut self.events else {
            return false;
        };
        // A directory removed and made again can get the old one's inode
        // number back, while the old watch died with the old directory: after
        // any removal that is not a watched file, every watch is set anew.
        let renew = events.inbox.take_removed_other();
        let wanted: BTreeMap<PathBuf, Option<u64>> = self
            .paths
            .iter()
            .filter_map(|p| p.parent())
            .map(nearest_existing)
            .map(|dir| {
                let inode = inode(&dir);
                (dir, inode)
            })
            .collect();
        if wanted == events.watching && !renew {
            return false;
        }
        for (dir, inode) in &events.watching {
            if renew || wanted.get(dir) != Some(inode) {
                let _ = events.backend.unwatch(dir);
            }
        }
        let mut added = false;
        let mut failed = None;
        for (dir, inode) in &wanted {
            if !renew && events.watching.get(dir) == Some(inode) {
                continue;
            }
            if let Err(error) = events.backend.watch(dir, RecursiveMode::NonRecursive) {
                failed = Some(error);
                break;
            }
            tracing::debug!(dir = %dir.display(), "watching directory");
            added = true;
        }
        match failed {
            Some(error) => {
                self.fall_back(&error);
                false
            }
            None => {
                events.watching = wanted;
                added
            }
        }
    }

    fn fall_back(&mut self, error: &notify::Error) {
        self.events = None;
        tracing::warn!(
            files = self.paths.len(),
            interval_ms = self.interval.as_millis() as u64,
            "filesystem events unavailable ({error}); watching files by polling"
        );
    }
}

/// `dir` if it exists, else its nearest parent that does.
fn nearest_existing(dir: &Path) -> PathBuf {
    dir.ancestors()
        .find(|d| d.is_dir())
        .unwrap_or(dir)
        .to_path_buf()
}

fn inode(dir: &Path) -> Option<u64> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata(dir).ok().map(|m| m.ino())
    }
    #[cfg(not(unix))]
    {
        std::fs::metadata(dir).ok().map(|_| 0)
    }
}

#[cfg(test)]
mod tests;
