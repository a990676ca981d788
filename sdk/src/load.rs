//! Live backend load.

use crate::BackendId;
use crate::wit::weir::plugin::{load, types as wit};

/// Live load of one backend, as weir measures it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct BackendLoad {
    /// Requests sent to the backend that have not completed yet.
    pub in_flight: u32,
    /// Exponentially weighted moving average of response-header latency, in
    /// microseconds; 0 before the first response.
    pub ewma_latency_us: u32,
    /// Failed requests (connect errors, timeouts) in the recent window.
    pub recent_failures: u32,
}

impl From<wit::BackendLoad> for BackendLoad {
    fn from(load: wit::BackendLoad) -> Self {
        Self {
            in_flight: load.in_flight,
            ewma_latency_us: load.ewma_latency_us,
            recent_failures: load.recent_failures,
        }
    }
}

/// The current load of backend `id`; `None` for an id the upstream does not
/// have.
///
/// One cheap host call, read fresh each time (load changes between calls).
/// Only works inside weir: natively it panics.
pub fn backend_load(id: BackendId) -> Option<BackendLoad> {
    load::backend_load(id).map(BackendLoad::from)
}
