//! Reloading without a restart. A [`Reloader`] builds a whole new
//! [`Snapshot`] off the request path from whatever its config [`Source`]
//! yields, and swaps it in atomically; requests already running finish on
//! the snapshot they started with. What asks for a reload:
//!
//! - the file [`Watcher`] ([`watch`]), when the config file or a plugin
//!   file the config names changed and settled;
//! - the source itself ([`follow`]), when it announces a new revision;
//! - SIGHUP and `POST /reload` ([`Reloader::reload`]).

mod signatures;
mod watch;

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use arc_swap::ArcSwap;

use crate::config::{Config, ConfigError};
use crate::plugin::{PluginLimits, PluginStore};
use crate::snapshot::Snapshot;
use crate::source::{Revision, Source, SourceError};

pub use signatures::Signatures;
pub use watch::{SETTLE, WatchMode, Watcher};

/// What to reload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReloadKind {
    /// Load the config from its source again, then rebuild.
    Config,
    /// Keep the running config; pick up changed plugin files.
    Plugins,
}

/// A reload that did not take effect; the running snapshot keeps serving.
#[derive(Debug, thiserror::Error)]
pub enum ReloadError {
    /// The source gave no valid config (a file with an error at a line).
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The new config names a plugin that does not load, and has no last
    /// good version.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The blocking task that builds the snapshot panicked or was cancelled.
    #[error("reload task failed: {0}")]
    Task(#[source] tokio::task::JoinError),
}

/// Builds and swaps in new snapshots, one at a time.
pub struct Reloader {
    source: Arc<dyn Source>,
    state: Arc<ArcSwap<Snapshot>>,
    store: Arc<PluginStore>,
    lock: tokio::sync::Mutex<()>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl Reloader {
    /// A reloader for `state`, loading configs from `source` on config
    /// reloads.
    pub fn new(
        source: Arc<dyn Source>,
        state: Arc<ArcSwap<Snapshot>>,
        store: Arc<PluginStore>,
    ) -> Reloader {
        Reloader {
            source,
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

    /// The source configs are loaded from.
    pub fn source(&self) -> &Arc<dyn Source> {
        &self.source
    }

    /// Builds a new snapshot (loading the config and compiling plugins on a
    /// blocking thread) and swaps it in. On error the running snapshot
    /// stays, and the error is logged with the file, line and reason.
    pub async fn reload(&self, kind: ReloadKind) -> Result<(), ReloadError> {
        let _one_at_a_time = self.lock.lock().await;
        let current = self.state.load_full();
        let (store, source) = (self.store.clone(), self.source.clone());
        let built = tokio::task::spawn_blocking(move || -> Result<Snapshot, ReloadError> {
            let config = match kind {
                ReloadKind::Config => source.load()?,
                ReloadKind::Plugins => Config::clone(current.config()),
            };
            Ok(Snapshot::succeed(config, &store, Some(&current))?)
        })
        .await
        .map_err(ReloadError::Task)
        .and_then(|built| built);
        match built {
            Ok(snapshot) => {
                warn_of_restart_only_changes(self.state.load().config(), snapshot.config());
                let snapshot = Arc::new(snapshot);
                snapshot.start_tasks();
                let previous = self.state.swap(snapshot.clone());
                previous.retire();
                previous.mark_removed(&snapshot);
                let n = self.reloads.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::info!(?kind, reloads = n, "reloaded");
                Ok(())
            }
            Err(error) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    ?kind,
                    source = %self.source.describe(),
                    "reload rejected, the running configuration keeps serving: {error}"
                );
                Err(error)
            }
        }
    }

    /// The files whose changes reload: the plugin files the running config
    /// names, and the source's own files.
    pub fn watched_files(&self) -> Vec<PathBuf> {
        watched_files(self.state.load().config(), &*self.source)
    }
}

/// The files a reloader serving `config` from `source` watches.
pub fn watched_files(config: &Config, source: &dyn Source) -> Vec<PathBuf> {
    let mut files = crate::snapshot::plugin_files(config);
    files.extend(crate::termination::files(config));
    files.extend(config_files(config, source));
    files
}

/// The watched files whose change reloads the config, not just plugins:
/// the source's own, and the upstreams' TLS files (read with the config).
fn config_files(config: &Config, source: &dyn Source) -> Vec<PathBuf> {
    let mut files = source.files();
    files.extend(config.upstream_tls_files());
    files
}

/// Logs the settings a reload cannot apply to a running weir.
fn warn_of_restart_only_changes(running: &Config, next: &Config) {
    let limits = |c: &Config| PluginLimits::from_config(&c.plugins);
    if limits(running) != limits(next) {
        tracing::warn!(
            "plugin limits (timeout_ms, memory_mib, max_instances, quarantine and CPU budget, log_lines_per_second) changed: they take effect at the next restart"
        );
    }
    if running.runtime != next.runtime {
        tracing::warn!("[runtime] changed: it takes effect at the next restart");
    }
    if running.listen_addrs() != next.listen_addrs() {
        tracing::warn!("listener addresses changed: they take effect at the next restart");
    }
    let tls = |c: &Config| {
        c.listeners
            .iter()
            .map(|l| l.tls.is_some())
            .collect::<Vec<_>>()
    };
    if tls(running) != tls(next) {
        tracing::warn!(
            "a listener gained or lost [listeners.tls]: that takes effect at the next restart (certificates and TLS settings of TLS listeners apply now)"
        );
    }
    let admin = |c: &Config| c.admin.as_ref().map(|a| (c.admin_addr(), a.token()));
    if admin(running) != admin(next) || running.access_log != next.access_log {
        tracing::warn!("[admin] or [access_log] changed: they take effect at the next restart");
    }
}

/// Watches the reloader's files (see [`Watcher`]) until `shutdown` fires,
/// and reloads once per settled change: the config when one of the
/// source's files or an upstream TLS file changed, else the plugins.
///
/// `applied` is what the files held before the running snapshot read them,
/// so a change made while it was being built is still seen.
pub async fn watch(
    reloader: Arc<Reloader>,
    interval: Duration,
    mode: WatchMode,
    mut applied: Signatures,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let mut watcher = Watcher::new(reloader.watched_files(), interval, mode);
    loop {
        let now = tokio::select! {
            now = watcher.changed(&applied) => now,
            _ = shutdown.changed() => return,
        };
        let config_files = config_files(reloader.current().config(), &*reloader.source);
        let kind = if now.differ_in(&applied, &config_files) {
            ReloadKind::Config
        } else {
            ReloadKind::Plugins
        };
        let _ = reloader.reload(kind).await;
        // What the reload read; anything written since shows up as a change
        // next time. Files the new config names for the first time show up
        // as changes too, and cost one more (idempotent) reload.
        applied = now;
        watcher.set_paths(reloader.watched_files());
    }
}

/// Reloads the config each time `changes` (the source's
/// [`Source::changes`], taken before the running snapshot's config was
/// loaded, so no change in between is missed) announces one, until
/// `shutdown` fires; returns at once for a source that announces none.
pub async fn follow(
    reloader: Arc<Reloader>,
    changes: Option<tokio::sync::watch::Receiver<Revision>>,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) {
    let Some(mut changes) = changes else {
        return;
    };
    loop {
        tokio::select! {
            changed = changes.changed() => if changed.is_err() { return },
            _ = shutdown.changed() => return,
        }
        let revision = *changes.borrow_and_update();
        tracing::info!(source = %reloader.source.describe(), revision, "config source changed");
        let _ = reloader.reload(ReloadKind::Config).await;
    }
}

#[cfg(test)]
mod tests;
