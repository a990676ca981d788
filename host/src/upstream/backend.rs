//! Backends, their live statistics, and the immutable set a policy chooses
//! from.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use super::state::BackendState;
use crate::metrics::histogram::{Histogram, REQUEST_SECONDS};

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

/// Live load of one backend, updated by the proxy and read by plugins
/// through the `load` import and by `/metrics`.
#[derive(Debug)]
pub struct BackendStats {
    in_flight: AtomicU32,
    ewma_latency_us: AtomicU32,
    consecutive_failures: AtomicU32,
    requests: AtomicU64,
    failures: AtomicU64,
    /// Responses by status class: 1xx to 5xx.
    responses: [AtomicU64; 5],
    /// Time to the response headers of answered requests.
    pub duration: Histogram,
}

impl Default for BackendStats {
    fn default() -> Self {
        BackendStats {
            in_flight: AtomicU32::new(0),
            ewma_latency_us: AtomicU32::new(0),
            consecutive_failures: AtomicU32::new(0),
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            responses: Default::default(),
            duration: Histogram::new(REQUEST_SECONDS),
        }
    }
}

/// Weight of a new sample in the latency EWMA.
const EWMA_ALPHA: f64 = 0.3;

impl BackendStats {
    /// Requests sent and not yet finished.
    pub fn in_flight(&self) -> u32 {
        self.in_flight.load(Ordering::Relaxed)
    }

    /// Moving average of response-header latency in microseconds.
    pub fn ewma_latency_us(&self) -> u32 {
        self.ewma_latency_us.load(Ordering::Relaxed)
    }

    /// Failures since the last success.
    pub fn consecutive_failures(&self) -> u32 {
        self.consecutive_failures.load(Ordering::Relaxed)
    }

    /// Requests sent in all.
    pub fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }

    /// Requests that failed in all.
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Counts a request as started; dropping the guard counts it finished.
    pub fn start(self: &Arc<Self>) -> InFlight {
        self.requests.fetch_add(1, Ordering::Relaxed);
        self.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(self.clone())
    }

    /// Responses answered by the backend with a status of class `class`
    /// (1 to 5).
    pub fn responses(&self, class: u16) -> u64 {
        self.responses
            .get(usize::from(class).wrapping_sub(1))
            .map_or(0, |c| c.load(Ordering::Relaxed))
    }

    /// Records a response's status and header latency.
    pub fn record_response(&self, status: u16, latency: Duration) {
        if let Some(counter) = self
            .responses
            .get(usize::from(status / 100).wrapping_sub(1))
        {
            counter.fetch_add(1, Ordering::Relaxed);
        }
        self.duration.observe(latency);
        self.record_success(latency);
    }

    /// Records a response's header latency.
    pub fn record_success(&self, latency: Duration) {
        if self.consecutive_failures.load(Ordering::Relaxed) != 0 {
            self.consecutive_failures.store(0, Ordering::Relaxed);
        }
        let sample = latency.as_micros().min(u32::MAX as u128) as f64;
        let old = self.ewma_latency_us.load(Ordering::Relaxed);
        let new = if old == 0 {
            sample
        } else {
            old as f64 + EWMA_ALPHA * (sample - old as f64)
        };
        self.ewma_latency_us
            .store(new.round().max(1.0) as u32, Ordering::Relaxed);
    }

    /// Records a failed request (connect error, timeout).
    pub fn record_failure(&self) {
        self.failures.fetch_add(1, Ordering::Relaxed);
        self.consecutive_failures.fetch_add(1, Ordering::Relaxed);
    }
}

/// A request in flight to a backend; counted until dropped, which for a
/// proxied response is when its body has been sent or abandoned.
#[derive(Debug)]
pub struct InFlight(Arc<BackendStats>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
    }
}

/// The backends of an upstream at one moment. Immutable: any change builds a
/// new set with a new generation, so a plugin instance learns of it once.
#[derive(Debug)]
pub struct BackendSet {
    generation: u64,
    backends: Vec<Arc<Backend>>,
    by_id: HashMap<BackendId, usize>,
    eligible: Vec<Arc<Backend>>,
}

static NEXT_GENERATION: AtomicU64 = AtomicU64::new(1);

impl BackendSet {
    /// A set of `backends`, with a generation no other set has had.
    pub fn new(backends: Vec<Arc<Backend>>) -> BackendSet {
        let by_id = backends
            .iter()
            .enumerate()
            .map(|(i, b)| (b.id, i))
            .collect();
        let eligible = backends
            .iter()
            .filter(|b| b.health == Health::Healthy)
            .cloned()
            .collect();
        BackendSet {
            generation: NEXT_GENERATION.fetch_add(1, Ordering::Relaxed),
            backends,
            by_id,
            eligible,
        }
    }

    /// Unique per set; changes whenever the set does.
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// The backend with `id`.
    pub fn get(&self, id: BackendId) -> Option<&Arc<Backend>> {
        self.by_id.get(&id).map(|&i| &self.backends[i])
    }

    /// Every backend, in config order.
    pub fn iter(&self) -> impl Iterator<Item = &Arc<Backend>> {
        self.backends.iter()
    }

    /// Backends that may receive new requests.
    pub fn eligible(&self) -> &[Arc<Backend>] {
        &self.eligible
    }

    /// Number of backends, eligible or not.
    pub fn len(&self) -> usize {
        self.backends.len()
    }

    /// True when the set has no backends at all.
    pub fn is_empty(&self) -> bool {
        self.backends.is_empty()
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

    #[test]
    fn sets_index_by_id_and_filter_eligible() {
        let set = BackendSet::new(vec![
            backend(7, Health::Healthy),
            backend(3, Health::Draining),
            backend(5, Health::Healthy),
        ]);
        assert_eq!(set.get(3).unwrap().name, "b3");
        assert!(set.get(4).is_none());
        let eligible: Vec<_> = set.eligible().iter().map(|b| b.id).collect();
        assert_eq!(eligible, vec![7, 5]);
        assert_ne!(set.generation(), BackendSet::new(vec![]).generation());
    }

    #[test]
    fn in_flight_counts_until_the_guard_drops() {
        let stats = Arc::new(BackendStats::default());
        let a = stats.start();
        let b = stats.start();
        assert_eq!(stats.in_flight(), 2);
        drop(a);
        assert_eq!(stats.in_flight(), 1);
        drop(b);
        assert_eq!((stats.in_flight(), stats.requests()), (0, 2));
    }

    #[test]
    fn ewma_starts_at_first_sample_and_moves_toward_new_ones() {
        let stats = BackendStats::default();
        stats.record_success(Duration::from_micros(1000));
        assert_eq!(stats.ewma_latency_us(), 1000);
        stats.record_success(Duration::from_micros(2000));
        assert_eq!(stats.ewma_latency_us(), 1300);
        stats.record_failure();
        stats.record_failure();
        assert_eq!(stats.consecutive_failures(), 2);
        stats.record_success(Duration::from_micros(1300));
        assert_eq!(stats.consecutive_failures(), 0);
    }
}
