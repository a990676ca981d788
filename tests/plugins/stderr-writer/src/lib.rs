//! Test plugin: `select` writes to stderr with `eprintln!`, a blocking WASI
//! call weir does not support. The host must contain the failed call and
//! route the request with its fallback policy.

use weir_sdk::{BackendId, Backends, Balancer, Request};

struct StderrWriter;

impl Balancer for StderrWriter {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        eprintln!("stderr-writer: choosing");
        backends.eligible().first().map(|b| b.id)
    }
}

weir_sdk::export_balancer!(StderrWriter);
