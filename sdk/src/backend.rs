//! The backends a policy chooses from.

use crate::wit::weir::plugin::types as wit;

/// Identifies one backend within its upstream.
///
/// weir assigns ids; an id stays the same for as long as the backend stays in
/// the upstream (re-weighting or a health change keeps it), so a policy may
/// key its own state by id.
pub type BackendId = u32;

/// Whether weir currently considers a backend fit to receive traffic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Health {
    /// Passing its checks (or not checked at all).
    Healthy,
    /// Failing its checks or ejected: weir will not send it traffic, and
    /// turns a selection of it into a retry with its fallback policy.
    Unhealthy,
    /// Draining on an operator's request: in-flight requests finish, new ones
    /// should go elsewhere.
    Draining,
}

impl From<wit::Health> for Health {
    fn from(health: wit::Health) -> Self {
        match health {
            wit::Health::Healthy => Self::Healthy,
            wit::Health::Unhealthy => Self::Unhealthy,
            wit::Health::Draining => Self::Draining,
        }
    }
}

/// One backend of the upstream, as weir describes it to the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Backend {
    /// Stable id; what [`Balancer::select`](crate::Balancer::select) returns.
    pub id: BackendId,
    /// The operator's name for the backend (its address when it has none).
    pub name: String,
    /// `host:port` weir connects to.
    pub address: String,
    /// Relative weight from the config, 0 to 65535; 0 means "send nothing
    /// new".
    pub weight: u32,
    /// Current health as weir sees it.
    pub health: Health,
    /// Key/value labels from the backend's `metadata` table in the config
    /// (zone, version, ...), in config order.
    pub metadata: Vec<(String, String)>,
}

impl Backend {
    /// A healthy backend of weight 1, named after its address, without
    /// metadata. Handy in native tests; change fields with struct update
    /// syntax: `Backend { weight: 5, ..Backend::new(1, "10.0.0.1:80") }`.
    pub fn new(id: BackendId, address: impl Into<String>) -> Self {
        let address = address.into();
        Self {
            id,
            name: address.clone(),
            address,
            weight: 1,
            health: Health::Healthy,
            metadata: Vec::new(),
        }
    }

    /// Whether new requests may go to this backend: healthy (so not
    /// draining) and weight above 0.
    pub fn is_eligible(&self) -> bool {
        self.health == Health::Healthy && self.weight > 0
    }

    /// The value of metadata label `key`, if the backend has it.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.metadata
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }
}

impl From<wit::Backend> for Backend {
    fn from(backend: wit::Backend) -> Self {
        Self {
            id: backend.id,
            name: backend.name,
            address: backend.address,
            weight: backend.weight,
            health: backend.health.into(),
            metadata: backend.metadata,
        }
    }
}

/// The upstream's backend set, indexed once when it changes so that
/// per-request work never depends on its size.
///
/// The SDK builds one on every backend update and passes it to
/// [`Balancer::backends_changed`](crate::Balancer::backends_changed) and
/// [`Balancer::select`](crate::Balancer::select). Build your own with
/// [`Backends::new`] in native tests.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Backends {
    all: Vec<Backend>,
    eligible: Vec<Backend>,
    /// `(id, index into all)`, sorted by id.
    by_id: Vec<(BackendId, usize)>,
}

impl Backends {
    /// A set built from `(id, health, weight)` rows, each backend at
    /// `10.0.0.ID:80` and named after that address: a compact way to write
    /// the backend sets of a policy's native unit tests.
    pub fn from_table(rows: &[(BackendId, Health, u32)]) -> Backends {
        Backends::new(
            rows.iter()
                .map(|&(id, health, weight)| Backend {
                    health,
                    weight,
                    ..Backend::new(id, format!("10.0.0.{id}:80"))
                })
                .collect(),
        )
    }

    /// Indexes `backends`, kept in the given order.
    pub fn new(backends: Vec<Backend>) -> Self {
        let eligible = backends
            .iter()
            .filter(|b| b.is_eligible())
            .cloned()
            .collect();
        let mut by_id: Vec<_> = backends
            .iter()
            .enumerate()
            .map(|(index, b)| (b.id, index))
            .collect();
        by_id.sort_unstable();
        Self {
            all: backends,
            eligible,
            by_id,
        }
    }

    /// Every backend of the upstream, whatever its health or weight, in the
    /// order weir sent them.
    pub fn all(&self) -> &[Backend] {
        &self.all
    }

    /// The backends new requests may go to ([`Backend::is_eligible`]: healthy
    /// and weight above 0), in the order of [`all`](Self::all). Precomputed:
    /// calling this costs nothing.
    pub fn eligible(&self) -> &[Backend] {
        &self.eligible
    }

    /// The backend with id `id`, if the upstream has it (binary search).
    pub fn get(&self, id: BackendId) -> Option<&Backend> {
        let at = self.by_id.binary_search_by_key(&id, |&(id, _)| id).ok()?;
        self.all.get(self.by_id[at].1)
    }

    /// The number of backends, eligible or not.
    pub fn len(&self) -> usize {
        self.all.len()
    }

    /// Whether the upstream has no backends at all. An upstream can have
    /// backends none of which is eligible: check
    /// `eligible().is_empty()` for that.
    pub fn is_empty(&self) -> bool {
        self.all.is_empty()
    }
}

impl From<Vec<wit::Backend>> for Backends {
    fn from(backends: Vec<wit::Backend>) -> Self {
        Self::new(backends.into_iter().map(Backend::from).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Backends {
        Backends::new(vec![
            Backend::new(7, "a:1"),
            Backend {
                health: Health::Unhealthy,
                ..Backend::new(3, "b:1")
            },
            Backend {
                health: Health::Draining,
                ..Backend::new(9, "c:1")
            },
            Backend {
                weight: 0,
                ..Backend::new(1, "d:1")
            },
            Backend {
                weight: 5,
                ..Backend::new(4, "e:1")
            },
        ])
    }

    #[test]
    fn eligible_keeps_healthy_weighted_backends_in_order() {
        let backends = sample();
        let ids: Vec<_> = backends.eligible().iter().map(|b| b.id).collect();
        assert_eq!(ids, [7, 4]);
        assert_eq!(backends.len(), 5);
        assert!(!backends.is_empty());
    }

    #[test]
    fn get_finds_every_id_and_only_those() {
        let backends = sample();
        for backend in backends.all() {
            assert_eq!(backends.get(backend.id), Some(backend));
        }
        assert_eq!(backends.get(2), None);
        assert_eq!(backends.get(999_999), None);
    }

    #[test]
    fn empty_set() {
        let backends = Backends::new(Vec::new());
        assert!(backends.is_empty());
        assert!(backends.eligible().is_empty());
        assert_eq!(backends.get(0), None);
        assert_eq!(backends, Backends::default());
    }

    #[test]
    fn converts_from_generated_types() {
        let generated = vec![wit::Backend {
            id: 5,
            name: "web-1".into(),
            address: "10.0.0.1:8080".into(),
            weight: 2,
            health: wit::Health::Draining,
            metadata: vec![("zone".into(), "eu".into())],
        }];
        let backends = Backends::from(generated);
        let backend = backends.get(5).unwrap();
        assert_eq!(backend.name, "web-1");
        assert_eq!(backend.address, "10.0.0.1:8080");
        assert_eq!(backend.weight, 2);
        assert_eq!(backend.health, Health::Draining);
        assert_eq!(backend.metadata("zone"), Some("eu"));
        assert_eq!(backend.metadata("rack"), None);
        assert!(backends.eligible().is_empty());
    }
}
