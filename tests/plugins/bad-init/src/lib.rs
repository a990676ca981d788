//! Test plugin: `init` always fails. The host must reject the plugin for the
//! upstream and log the message.

use weir_sdk::{BackendId, Backends, Balancer, Request};

/// What `init` answers; the host's tests look for it in the log.
pub const MESSAGE: &str = "bad-init refuses: this plugin never initialises";

struct BadInit;

impl Balancer for BadInit {
    fn init(_config: &str) -> Result<Self, String> {
        Err(MESSAGE.to_string())
    }

    fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        unreachable!(
            "init never succeeds, so select is never forwarded (had {} backends)",
            backends.len()
        )
    }
}

weir_sdk::export_balancer!(BadInit);
