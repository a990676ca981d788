//! The immutable set of an upstream's backends a policy chooses from.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Backend, BackendId, Health};

/// The backends of an upstream at one moment. Immutable: any change builds a
/// new set with a new generation, so a plugin instance learns of it once.
#[derive(Debug)]
pub struct BackendSet {
    generation: u64,
    backends: Vec<Arc<Backend>>,
    by_id: HashMap<BackendId, usize, BuildHasherDefault<IdHasher>>,
    eligible: Vec<Arc<Backend>>,
}

/// Hashes a [`BackendId`] as itself. Ids are weir's own small counters,
/// never chosen by a client or a plugin, so there is no flooding to defend
/// against, and every request looks one up (the policy's answer is checked
/// against the set): SipHash there cost about 15 ns a request.
#[derive(Default)]
struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Not reached for `u32` keys; kept correct for any key all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u32(&mut self, id: u32) {
        // Spread the bits: hashbrown takes its control bytes from the top.
        self.0 = u64::from(id).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
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
mod tests {
    use super::*;
    use crate::backend::tests::backend;

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
}
