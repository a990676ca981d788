//! Reloading without a restart: the config file and the plugin files it
//! names are watched, and SIGHUP asks for a reload too. Every reload builds
//! a whole new [`Snapshot`] off the request path and swaps it in atomically;
//! requests already running finish on the snapshot they started with.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use tokio::sync::watch;

use crate::config::{Config, ConfigError};
use crate::plugin::{PluginLimits, PluginStore};
use crate::snapshot::Snapshot;

/// What to reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadKind {
    /// Read the config file again (when weir runs from one), then rebuild.
    Config,
    /// Keep the running config; pick up changed plugin files.
    Plugins,
}

/// A reload that did not take effect; the running snapshot keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The new config, or a plugin it names without a last good version, is
    /// invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The reload task itself failed.
    #[error("reload task failed: {0}")]
    Task(String),
}

/// Builds and swaps in new snapshots, one at a time.
pub struct Reloader {
    config_path: Option<PathBuf>,
    state: Arc<ArcSwap<Snapshot>>,
    store: Arc<PluginStore>,
    lock: tokio::sync::Mutex<()>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl Reloader {
    /// A reloader for `state`, re-reading `config_path` on config reloads
    /// (none: the config did not come from a file and stays as it is).
    pub fn new(
        config_path: Option<PathBuf>,
        state: Arc<ArcSwap<Snapshot>>,
        store: Arc<PluginStore>,
    ) -> Reloader {
        Reloader {
            config_path,
            state,
            store,
            lock: tokio::sync::Mutex::new(()),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }
    }

    /// Snapshots swapped in so far by reloads.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// The snapshot serving new requests now.
    pub fn current(&self) -> Arc<Snapshot> {
        self.state.load_full()
    }

    /// Reloads rejected so far.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// The plugin store reloads load through.
    pub fn store(&self) -> &PluginStore {
        &self.store
    }

    /// Builds a new snapshot (compiling plugins on a blocking thread) and
    /// swaps it in. On error the running snapshot stays, and the error is
    /// logged with the file, line and reason.
    pub async fn reload(&self, kind: ReloadKind) -> Result<(), ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        let path = match kind {
            ReloadKind::Config => self.config_path.clone(),
            ReloadKind::Plugins => None,
        };
        let current = self.state.load_full();
        let store = self.store.clone();
        let built = tokio::task::spawn_blocking(move || -> Result<Snapshot, ConfigError> {
            let config = match &path {
                Some(path) => Config::load(path)?,
                None => Config::clone(current.config()),
            };
            Snapshot::succeed(config, &store, Some(&current))
        })
        .await
        .map_err(|e| ReloadError::Task(e.to_string()))?;
        match built {
            Ok(snapshot) => {
                let running = self.state.load();
                let limits = |c: &Config| PluginLimits::from_config(&c.plugins);
                if limits(running.config()) != limits(snapshot.config()) {
                    tracing::warn!(
                        "plugin limits (timeout_ms, memory_mib, max_instances, quarantine and CPU budget, log_lines_per_second) changed: they take effect at the next restart"
                    );
                }
                if running.config().listen_addrs() != snapshot.config().listen_addrs() {
                    tracing::warn!(
                        "listener addresses changed: they take effect at the next restart"
                    );
                }
                let admin = |c: &Config| c.admin.as_ref().map(|a| (c.admin_addr(), a.token()));
                if admin(running.config()) != admin(snapshot.config())
                    || running.config().access_log != snapshot.config().access_log
                {
                    tracing::warn!(
                        "[admin] or [access_log] changed: they take effect at the next restart"
                    );
                }
                let snapshot = Arc::new(snapshot);
                snapshot.start_tasks();
                self.state.swap(snapshot).retire();
                let n = self.reloads.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(?kind, reloads = n, "reloaded");
                Ok(())
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    ?kind,
                    "reload rejected, the running configuration keeps serving: {error}"
                );
                Err(error.into())
            }
        }
    }

    /// The watched files as they look now.
    fn signatures(&self) -> Signatures {
        let mut files = self.state.load().plugin_files();
        files.extend(self.config_path.clone());
        signatures(files)
    }
}

/// What each watched file looks like: size and modification time, or none
/// when it is missing.
pub(crate) type Signatures = BTreeMap<PathBuf, Option<(u64, SystemTime)>>;

/// The signatures of `files` now.
pub(crate) fn signatures(files: Vec<PathBuf>) -> Signatures {
    files
        .into_iter()
        .map(|path| {
            let signature = std::fs::metadata(&path)
                .ok()
                .and_then(|m| Some((m.len(), m.modified().ok()?)));
            (path, signature)
        })
        .collect()
}

/// Polls the watched files every `interval` until `shutdown` fires. A change
/// is applied once the files have stayed the same for a whole interval, so a
/// file still being written, or a burst of editor saves, is loaded once and
/// whole.
///
/// `applied` is what the files looked like before the running snapshot read
/// them, so a change made while it was being built is still seen.
pub(crate) async fn watch(
    reloader: Arc<Reloader>,
    interval: Duration,
    mut applied: Signatures,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut pending = None;
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = shutdown.changed() => return,
        }
        let now = reloader.signatures();
        if now == applied {
            pending = None;
            continue;
        }
        if pending.as_ref() != Some(&now) {
            tracing::debug!("watched files changed; waiting for them to settle");
            pending = Some(now);
            continue;
        }
        let config_changed = reloader
            .config_path
            .as_ref()
            .is_some_and(|path| now.get(path) != applied.get(path));
        let kind = if config_changed {
            ReloadKind::Config
        } else {
            ReloadKind::Plugins
        };
        let _ = reloader.reload(kind).await;
        // What the reload read; anything written since shows up as a change
        // at the next poll. Files the new config names for the first time
        // show up as changes too, and cost one more (idempotent) reload.
        applied = now;
        pending = None;
    }
}
