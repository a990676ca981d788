//! Where a running weir's configuration comes from: a [`Source`] loads the
//! whole configuration, and then says when it changed.
//!
//! Two sources exist: [`FileSource`] (the TOML file weir was started with,
//! whose changes the file watcher sees and SIGHUP asks for) and
//! [`MemorySource`] (a [`Config`] handed to [`crate::Server::start`] without
//! a file, replaced through [`MemorySource::replace`]). Whatever the source,
//! the [`crate::reload::Reloader`] turns what it loads into a snapshot the
//! same way, and a rejected config leaves the running snapshot serving.
//!
//! A config store (the cluster issue) is a third implementation: it keeps
//! the newest revision it was sent, returns it from [`Source::load`], and
//! bumps the revision its [`Source::changes`] channel carries.

mod file;
mod memory;

use std::path::PathBuf;
use std::sync::Arc;

use tokio::sync::watch;

use crate::config::{Config, ConfigError};

pub use file::FileSource;
pub use memory::MemorySource;

/// A source's revision counter: it goes up by at least one per change.
pub type Revision = u64;

/// A configuration source: a full config on request, and a way to hear that
/// it changed.
pub trait Source: Send + Sync + 'static {
    /// What the source is, for log lines (`file /etc/weir.toml`, `memory`).
    fn describe(&self) -> String;

    /// The whole configuration as the source holds it now. May block (a
    /// file read, a parse, a request to a store): the reloader calls it on a
    /// blocking thread.
    fn load(&self) -> Result<Config, SourceError>;

    /// Files the source is read from. The reloader's file watcher watches
    /// them, and a change to one reloads the config. Default: none.
    fn files(&self) -> Vec<PathBuf> {
        Vec::new()
    }

    /// Changes the source announces itself, as a revision that goes up with
    /// each one; many changes before the reloader looks are loaded once, as
    /// the newest. Default: none (a file's changes are seen on the file).
    fn changes(&self) -> Option<watch::Receiver<Revision>> {
        None
    }
}

/// A source that could not give a configuration.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The configuration it holds is invalid (with file, line and reason).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The source could not be reached or read (a store that is down).
    #[error("config source {what}: {cause}")]
    Unavailable {
        /// The source, as [`Source::describe`] says it.
        what: String,
        /// Why.
        #[source]
        cause: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// The source for a config [`Server::start`](crate::Server::start) was
/// given: the file it was loaded from when there is one
/// ([`Config::load`]), else the config itself, in memory.
pub fn for_config(config: &Config) -> Arc<dyn Source> {
    let path = &config.source.path;
    match path.is_file().then(|| std::path::absolute(path).ok()) {
        Some(Some(path)) => Arc::new(FileSource::new(path)),
        _ => Arc::new(MemorySource::new(config.clone())),
    }
}
