//! Test plugin: `select` always panics, which traps the instance. The host
//! must contain it and route the request with its fallback policy.

use weir_sdk::{BackendId, Backends, Balancer, Request};

struct Trap;

impl Balancer for Trap {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn select(&mut self, _request: &Request<'_>, _backends: &Backends) -> Option<BackendId> {
        panic!("trap plugin: select always traps")
    }
}

weir_sdk::export_balancer!(Trap);
