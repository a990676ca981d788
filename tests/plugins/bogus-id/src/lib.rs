//! Test plugin: always answers an id no upstream has. The host must treat it
//! as a plugin failure and route the request with its fallback policy.

use weir_sdk::{BackendId, Backends, Balancer, Request};

/// The id `select` returns.
pub const BOGUS_ID: BackendId = 999_999;

struct BogusId;

impl Balancer for BogusId {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn select(&mut self, _request: &Request<'_>, _backends: &Backends) -> Option<BackendId> {
        Some(BOGUS_ID)
    }
}

weir_sdk::export_balancer!(BogusId);
