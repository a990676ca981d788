//! Test plugin: `select` never returns. The host must interrupt it at its
//! time limit and route the request with its fallback policy.

use weir_sdk::{BackendId, Backends, Balancer, Request};

struct BusyLoop;

impl Balancer for BusyLoop {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn select(&mut self, _request: &Request<'_>, _backends: &Backends) -> Option<BackendId> {
        let mut spins = 0u64;
        loop {
            // black_box keeps the loop doing (unobservable) work.
            spins = std::hint::black_box(spins.wrapping_add(1));
        }
    }
}

weir_sdk::export_balancer!(BusyLoop);
