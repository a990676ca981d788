//! weir's native round robin: the policy of upstreams without a plugin, and
//! weir's own pick for any request whose plugin call failed or whose
//! plugin's answers could not be taken.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use crate::backend::{Backend, BackendSet};
use crate::policy::{ChosenBy, Pick, Policy, Selection};
use crate::view::RequestView;

/// Lock-free round robin over the eligible backends of a set.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: AtomicUsize,
}

impl RoundRobin {
    /// The next eligible backend, or none when no backend is eligible.
    pub fn select(&self, set: &BackendSet) -> Option<Arc<Backend>> {
        self.select_where(set, |_| true)
    }

    /// The next eligible backend for which `usable` holds, or none.
    pub fn select_where(
        &self,
        set: &BackendSet,
        usable: impl Fn(&Backend) -> bool,
    ) -> Option<Arc<Backend>> {
        let eligible = set.eligible();
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        (0..eligible.len())
            .map(|i| &eligible[(n + i) % eligible.len()])
            .find(|b| usable(b))
            .cloned()
    }
}

/// The policy of an upstream without a plugin: it honours `usable`, so it
/// is asked once per request.
impl Policy for RoundRobin {
    fn select(
        &self,
        set: &Arc<BackendSet>,
        _: &mut RequestView,
        usable: &dyn Fn(&Backend) -> bool,
    ) -> Selection {
        Selection::native(match self.select_where(set, usable) {
            Some(backend) => Pick::Backend(backend),
            None => Pick::NoneUsable,
        })
    }

    fn chosen_by(&self) -> ChosenBy {
        ChosenBy::RoundRobin
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::Health;
    use crate::backend::tests::backend;

    #[test]
    fn cycles_over_eligible_backends_only() {
        let set = BackendSet::new(vec![
            backend(0, Health::Healthy),
            backend(1, Health::Unhealthy),
            backend(2, Health::Healthy),
        ]);
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..4).map(|_| rr.select(&set).unwrap().id).collect();
        assert_eq!(picks, vec![0, 2, 0, 2]);
    }

    #[test]
    fn select_where_skips_unusable_backends() {
        let set = BackendSet::new((0..4).map(|id| backend(id, Health::Healthy)).collect());
        let rr = RoundRobin::default();
        let picks: Vec<_> = (0..4)
            .map(|_| rr.select_where(&set, |b| b.id % 2 == 1).unwrap().id)
            .collect();
        assert_eq!(picks, vec![1, 1, 3, 3]);
        assert!(rr.select_where(&set, |_| false).is_none());
    }

    #[test]
    fn no_eligible_backend_means_none() {
        let set = BackendSet::new(vec![backend(0, Health::Draining)]);
        assert!(RoundRobin::default().select(&set).is_none());
        assert!(
            RoundRobin::default()
                .select(&BackendSet::new(vec![]))
                .is_none()
        );
    }
}
