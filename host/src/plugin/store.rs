//! The versions of each plugin: the newest file on disk, and the last version
//! that loaded and initialised, which keeps serving when a newer file is
//! broken or deleted.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};

use super::{LoadedPlugin, PluginError, PluginRuntime, digest, read_plugin};

/// Loads plugins by name, remembering the last good version of each and the
/// files already rejected, so a broken file is compiled and logged once, not
/// on every reload.
pub struct PluginStore {
    runtime: Arc<PluginRuntime>,
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    /// The newest version of each plugin that loaded and initialised.
    good: HashMap<String, Arc<LoadedPlugin>>,
    /// Files rejected so far (each distinct file once).
    rejections: u64,
    /// Digest of the newest file of each plugin that was rejected (0 for a
    /// missing file).
    rejected: HashMap<String, u64>,
}

impl PluginStore {
    /// A store loading through `runtime`.
    pub fn new(runtime: Arc<PluginRuntime>) -> PluginStore {
        PluginStore {
            runtime,
            state: Mutex::default(),
        }
    }

    /// The runtime plugins are loaded into.
    pub fn runtime(&self) -> &PluginRuntime {
        &self.runtime
    }

    /// Plugin files rejected so far, each distinct file counted once.
    pub fn rejections(&self) -> u64 {
        self.state().rejections
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The version of `name` to use now: the file in `dir` if it changed and
    /// compiles, else the last good version. Without a last good version
    /// (first load) a broken file is an error.
    pub fn load(&self, dir: &Path, name: &str) -> Result<Arc<LoadedPlugin>, PluginError> {
        let path = dir.join(format!("{name}.wasm"));
        let last_good = self.last_good(name);
        let bytes = match read_plugin(name, &path) {
            Ok(bytes) => bytes,
            Err(error) => return self.keep_last_good(name, 0, last_good, error),
        };
        let digest = digest(&bytes);
        if let Some(good) = &last_good
            && good.digest() == digest
        {
            return Ok(good.clone());
        }
        if let Some(good) = &last_good
            && self.state().rejected.get(name) == Some(&digest)
        {
            return Ok(good.clone());
        }
        match self.runtime.load_bytes(name, &path, &bytes) {
            Ok(plugin) => Ok(plugin),
            Err(error) => self.keep_last_good(name, digest, last_good, error),
        }
    }

    /// The last version of `name` that loaded and initialised.
    pub fn last_good(&self, name: &str) -> Option<Arc<LoadedPlugin>> {
        self.state().good.get(name).cloned()
    }

    /// Records that `plugin` initialised: it becomes the last good version.
    pub fn accept(&self, plugin: &Arc<LoadedPlugin>) {
        let mut state = self.state();
        let previous = state.good.insert(plugin.name().to_string(), plugin.clone());
        state.rejected.remove(plugin.name());
        match previous {
            Some(old) if old.digest() != plugin.digest() => tracing::info!(
                plugin = plugin.name(),
                digest = %format_args!("{:016x}", plugin.digest()),
                previous = %format_args!("{:016x}", old.digest()),
                "plugin reloaded"
            ),
            Some(_) => {}
            None => tracing::info!(
                plugin = plugin.name(),
                path = %plugin.path().display(),
                digest = %format_args!("{:016x}", plugin.digest()),
                "plugin loaded"
            ),
        }
    }

    /// Records that `plugin` failed to initialise; logs why and that the last
    /// good version keeps serving. Returns that version, if any.
    pub fn reject(&self, plugin: &LoadedPlugin, error: &PluginError) -> Option<Arc<LoadedPlugin>> {
        let last_good = self.last_good(plugin.name());
        if last_good.is_some() {
            self.log_rejection(plugin.name(), plugin.digest(), error);
        }
        last_good
    }

    fn keep_last_good(
        &self,
        name: &str,
        digest: u64,
        last_good: Option<Arc<LoadedPlugin>>,
        error: PluginError,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        match last_good {
            Some(good) => {
                self.log_rejection(name, digest, &error);
                Ok(good)
            }
            None => Err(error),
        }
    }

    fn log_rejection(&self, name: &str, digest: u64, error: &PluginError) {
        let first_time = self.state().rejected.insert(name.to_string(), digest) != Some(digest);
        if first_time {
            self.state().rejections += 1;
            tracing::warn!(
                plugin = name,
                "plugin rejected, the last good version keeps serving: {}",
                crate::error::chain(error)
            );
        }
    }
}
