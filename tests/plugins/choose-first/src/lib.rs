//! Test plugin: always picks the first eligible backend, so the host's tests
//! can check that it honours the plugin's choice.

use weir_sdk::{BackendId, Backends, Balancer, Request};

struct ChooseFirst;

impl Balancer for ChooseFirst {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        backends.eligible().first().map(|backend| backend.id)
    }
}

weir_sdk::export_balancer!(ChooseFirst);
