//! A configuration held in memory: what [`crate::Server::start`] serves
//! when its config came from no file (tests, the demo), and the model for a
//! store that pushes whole configs.

use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use super::{Revision, Source, SourceError};
use crate::config::Config;

/// A config in memory, replaced whole by [`MemorySource::replace`]; each
/// replacement is a change the reloader loads.
pub struct MemorySource {
    config: Mutex<Arc<Config>>,
    revision: watch::Sender<Revision>,
}

impl MemorySource {
    /// A source holding `config`, at revision 0.
    pub fn new(config: Config) -> MemorySource {
        MemorySource {
            config: Mutex::new(Arc::new(config)),
            revision: watch::Sender::new(0),
        }
    }

    /// Replaces the config and announces the change; returns the new
    /// revision. The reloader validates it as it builds the snapshot: an
    /// invalid one is rejected there and the running one keeps serving.
    pub fn replace(&self, config: Config) -> Revision {
        *self.config.lock().unwrap_or_else(|e| e.into_inner()) = Arc::new(config);
        let mut revision = 0;
        self.revision.send_modify(|r| {
            *r += 1;
            revision = *r;
        });
        revision
    }

    /// The revision of the config held now.
    pub fn revision(&self) -> Revision {
        *self.revision.borrow()
    }
}

impl Source for MemorySource {
    fn describe(&self) -> String {
        "memory".to_string()
    }

    fn load(&self) -> Result<Config, SourceError> {
        let config = self.config.lock().unwrap_or_else(|e| e.into_inner());
        Ok(Config::clone(&config))
    }

    fn changes(&self) -> Option<watch::Receiver<Revision>> {
        Some(self.revision.subscribe())
    }
}
