//! Round robin: each request goes to the next eligible backend in turn.
//!
//! O(1) per request: one index into the SDK's precomputed eligible list, no
//! allocation, no scan. Weights only matter as "0 = never"; health changes
//! re-shape the rotation without resetting it.

use weir_sdk::{BackendId, Backends, Balancer, Request};

/// The rotation's position: the index in `eligible()` of the next pick.
#[derive(Debug, Default)]
pub struct RoundRobin {
    next: usize,
}

impl RoundRobin {
    /// The next backend in turn, or `None` when no backend is eligible.
    pub fn pick(&mut self, backends: &Backends) -> Option<BackendId> {
        let eligible = backends.eligible();
        if self.next >= eligible.len() {
            // Wrapped around, or the set shrank under us.
            self.next = 0;
        }
        let backend = eligible.get(self.next)?;
        self.next += 1;
        Some(backend.id)
    }
}

impl Balancer for RoundRobin {
    /// Takes no settings; any config is accepted.
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self::default())
    }

    fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        self.pick(backends)
    }
}

weir_sdk::export_balancer!(RoundRobin);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::Health;

    fn backends(rows: &[(BackendId, Health, u32)]) -> Backends {
        Backends::from_table(rows)
    }

    fn picks(policy: &mut RoundRobin, backends: &Backends, n: usize) -> Vec<Option<BackendId>> {
        (0..n).map(|_| policy.pick(backends)).collect()
    }

    const OK: Health = Health::Healthy;

    #[test]
    fn cycles_through_eligible_backends_in_order() {
        let set = backends(&[(1, OK, 1), (2, OK, 1), (3, OK, 1)]);
        let mut rr = RoundRobin::default();
        let got = picks(&mut rr, &set, 7);
        let want = [1, 2, 3, 1, 2, 3, 1].map(Some);
        assert_eq!(got, want);
    }

    #[test]
    fn skips_unhealthy_draining_and_zero_weight() {
        let set = backends(&[
            (1, Health::Unhealthy, 1),
            (2, OK, 1),
            (3, Health::Draining, 1),
            (4, OK, 0),
            (5, OK, 3),
        ]);
        let mut rr = RoundRobin::default();
        assert_eq!(picks(&mut rr, &set, 4), [2, 5, 2, 5].map(Some));
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let mut rr = RoundRobin::default();
        assert_eq!(rr.pick(&Backends::default()), None);
        let all_down = backends(&[(1, Health::Unhealthy, 1), (2, Health::Draining, 1)]);
        assert_eq!(rr.pick(&all_down), None);
    }

    #[test]
    fn survives_the_set_shrinking_and_growing() {
        let mut rr = RoundRobin::default();
        let three = backends(&[(1, OK, 1), (2, OK, 1), (3, OK, 1)]);
        assert_eq!(picks(&mut rr, &three, 2), [1, 2].map(Some));
        let one = backends(&[(9, OK, 1)]);
        assert_eq!(picks(&mut rr, &one, 2), [9, 9].map(Some));
        assert_eq!(picks(&mut rr, &three, 3), [2, 3, 1].map(Some));
    }

    #[test]
    fn spreads_evenly() {
        let set = backends(&[(10, OK, 1), (20, OK, 1), (30, OK, 1), (40, OK, 1)]);
        let mut rr = RoundRobin::default();
        let mut counts = [0usize; 4];
        for pick in picks(&mut rr, &set, 4_000) {
            counts[(pick.unwrap() / 10 - 1) as usize] += 1;
        }
        assert_eq!(counts, [1_000; 4]);
    }

    #[test]
    fn init_accepts_any_config() {
        assert!(RoundRobin::init("{}").is_ok());
        assert!(RoundRobin::init(r#"{"ignored": true}"#).is_ok());
    }
}
