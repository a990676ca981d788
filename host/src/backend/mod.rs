//! Backends: what a policy chooses among. A leaf of the crate: it knows
//! nothing of plugins or upstreams, so both can use it.
//!
//! [`Backend`] is one server as of one [`BackendSet`]; its live
//! [`BackendStats`] and health inputs ([`BackendState`]) are shared by every
//! set it appears in.

mod check_error;
mod set;
mod state;
mod stats;
mod tunnels;

use std::net::SocketAddr;
use std::sync::Arc;

pub use check_error::CheckError;
pub use set::BackendSet;
pub use state::{BackendState, CheckTransition};
pub use stats::{BackendStats, InFlight};
pub use tunnels::{TunnelEnd, TunnelStats};

/// Identifies a backend within its upstream (see the WIT `backend-id`).
pub type BackendId = u32;

/// Whether a backend may receive new requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Eligible for traffic.
    Healthy,
    /// Failing checks or ejected.
    Unhealthy,
    /// Taken out by an operator: in-flight requests finish, no new ones.
    Draining,
}

impl Health {
    /// The word used in logs, metrics and the admin API.
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
            Health::Draining => "draining",
        }
    }
}

/// One backend server of an upstream.
#[derive(Debug, Clone)]
pub struct Backend {
    /// Stable id within the upstream.
    pub id: BackendId,
    /// Name for logs and plugins.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// `addr` as a URI authority, made once for every request's URI.
    pub authority: http::uri::Authority,
    /// Relative weight as policies see it now (ramped during slow start).
    pub weight: u32,
    /// Relative weight as configured (or set through the admin API).
    pub base_weight: u32,
    /// This backend's own in-flight limit, if it has one.
    pub max_in_flight: Option<u32>,
    /// Labels from the config.
    pub metadata: Vec<(String, String)>,
    /// Health as of this backend set.
    pub health: Health,
    /// Live counters, shared by every set the backend appears in.
    pub stats: Arc<BackendStats>,
    /// Health inputs (checks, ejection, drain), shared like `stats`.
    pub state: Arc<BackendState>,
    /// Why it is not healthy, when it is not.
    pub reason: Option<String>,
}

/// What a backend is made from: a `[[backends]]` entry or an admin API
/// request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BackendSpec {
    /// Name for logs, metrics and plugins.
    pub name: String,
    /// Where to connect.
    pub addr: SocketAddr,
    /// Relative weight.
    pub weight: u32,
    /// Labels handed to plugins.
    pub metadata: Vec<(String, String)>,
    /// Own in-flight limit.
    pub max_in_flight: Option<u32>,
}

impl Backend {
    /// A healthy backend made from `spec`, with `id` and the live state it
    /// carries over (fresh for a new backend).
    pub fn new(
        id: BackendId,
        spec: BackendSpec,
        stats: Arc<BackendStats>,
        state: Arc<BackendState>,
    ) -> Backend {
        Backend {
            id,
            authority: spec
                .addr
                .to_string()
                .parse()
                .expect("an ip:port is an authority"),
            name: spec.name,
            addr: spec.addr,
            weight: spec.weight,
            base_weight: spec.weight,
            max_in_flight: spec.max_in_flight,
            metadata: spec.metadata,
            health: Health::Healthy,
            stats,
            state,
            reason: None,
        }
    }

    /// A copy with a new health and weight (for a new set).
    pub fn with(&self, health: Health, weight: u32, reason: Option<String>) -> Backend {
        Backend {
            health,
            weight,
            reason,
            ..self.clone()
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub(crate) fn backend(id: BackendId, health: Health) -> Arc<Backend> {
        let spec = BackendSpec {
            name: format!("b{id}"),
            addr: SocketAddr::from(([127, 0, 0, 1], 9000 + id as u16)),
            weight: 1,
            metadata: vec![],
            max_in_flight: None,
        };
        let healthy = Backend::new(id, spec, Arc::default(), Arc::default());
        Arc::new(Backend { health, ..healthy })
    }
}
