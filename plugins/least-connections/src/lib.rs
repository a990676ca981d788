//! Least connections: each request goes to the eligible backend with the
//! fewest requests in flight relative to its weight.
//!
//! The load is `in_flight / weight`, read fresh from weir for every eligible
//! backend on every pick ([`weir_sdk::backend_load`]) and compared by
//! cross-multiplication (`a.in_flight * b.weight` against
//! `b.in_flight * a.weight`), so no division and no rounding. Ties, which are
//! the rule when traffic is light and every count is 0, are broken at random
//! in proportion to weight: no backend is favoured for coming first, and
//! weights still shape traffic that never overlaps.
//!
//! O(n) per pick in the number of eligible backends (one host call each),
//! which is inherent to the policy; nothing is allocated per pick.

use serde::Deserialize;
use weir_sdk::{BackendId, Backends, Balancer, Request};

use weir_sdk::rng::Rng;

/// The policy takes no settings; this only rejects unknown keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {}

/// The generator that breaks ties.
#[derive(Debug)]
pub struct LeastConnections {
    rng: Rng,
}

impl LeastConnections {
    /// A policy breaking ties with `rng`.
    pub fn new(rng: Rng) -> Self {
        Self { rng }
    }

    /// The eligible backend with the least `in_flight(id) / weight`, ties
    /// drawn at random in proportion to weight; `None` when no backend is
    /// eligible. Backends for which `in_flight` answers `None` are skipped.
    pub fn pick(
        &mut self,
        backends: &Backends,
        mut in_flight: impl FnMut(BackendId) -> Option<u32>,
    ) -> Option<BackendId> {
        // The least load seen so far as (in_flight, weight), the backend
        // chosen among those carrying it, and their total weight.
        let mut least: Option<(u64, u64)> = None;
        let mut chosen = None;
        let mut tied_weight = 0u64;
        for backend in backends.eligible() {
            let Some(load) = in_flight(backend.id) else {
                continue;
            };
            let (load, weight) = (u64::from(load), u64::from(backend.weight));
            let order = match least {
                None => std::cmp::Ordering::Less,
                Some((least_load, least_weight)) => {
                    (load * least_weight).cmp(&(least_load * weight))
                }
            };
            match order {
                std::cmp::Ordering::Less => {
                    least = Some((load, weight));
                    chosen = Some(backend.id);
                    tied_weight = weight;
                }
                std::cmp::Ordering::Equal => {
                    // Weighted reservoir sampling: after the scan, each tied
                    // backend has been kept with probability weight / total.
                    tied_weight += weight;
                    if self.rng.below(tied_weight) < weight {
                        chosen = Some(backend.id);
                    }
                }
                std::cmp::Ordering::Greater => {}
            }
        }
        chosen
    }
}

/// Parses the settings JSON: only `{}` (or an empty string) is accepted.
fn parse_settings(config: &str) -> Result<Settings, String> {
    if config.trim().is_empty() {
        return Ok(Settings::default());
    }
    serde_json::from_str(config).map_err(|e| {
        format!("least-connections: invalid settings {config}: {e} (this policy takes none)")
    })
}

impl Balancer for LeastConnections {
    /// Takes no settings; rejects any key.
    fn init(config: &str) -> Result<Self, String> {
        parse_settings(config)?;
        Ok(Self::new(Rng::from_entropy()))
    }

    fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        self.pick(backends, |id| {
            weir_sdk::backend_load(id).map(|load| load.in_flight)
        })
    }
}

weir_sdk::export_balancer!(LeastConnections);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::Health;

    const OK: Health = Health::Healthy;

    fn backends(rows: &[(BackendId, Health, u32)]) -> Backends {
        Backends::from_table(rows)
    }

    fn policy() -> LeastConnections {
        LeastConnections::new(Rng::from_seed(3))
    }

    /// In-flight counts by id (index = id).
    fn loads(counts: &[u32]) -> impl FnMut(BackendId) -> Option<u32> + '_ {
        |id| counts.get(id as usize).copied()
    }

    #[test]
    fn picks_the_fewest_in_flight() {
        let set = backends(&[(0, OK, 1), (1, OK, 1), (2, OK, 1)]);
        let mut lc = policy();
        assert_eq!(lc.pick(&set, loads(&[5, 2, 9])), Some(1));
        assert_eq!(lc.pick(&set, loads(&[0, 2, 9])), Some(0));
        assert_eq!(lc.pick(&set, loads(&[3, 3, 1])), Some(2));
    }

    #[test]
    fn load_is_relative_to_weight() {
        let set = backends(&[(0, OK, 1), (1, OK, 4)]);
        let mut lc = policy();
        // 2/1 > 7/4
        assert_eq!(lc.pick(&set, loads(&[2, 7])), Some(1));
        // 2/1 < 9/4
        assert_eq!(lc.pick(&set, loads(&[2, 9])), Some(0));
    }

    #[test]
    fn ties_are_shared_not_given_to_the_first() {
        let set = backends(&[(0, OK, 1), (1, OK, 1), (2, OK, 1), (3, OK, 1)]);
        let mut lc = policy();
        let mut counts = [0; 4];
        for _ in 0..8_000 {
            counts[lc.pick(&set, loads(&[1, 1, 1, 7])).unwrap() as usize] += 1;
        }
        assert_eq!(counts[3], 0);
        for count in &counts[..3] {
            assert!((2_400..=2_933).contains(count), "{counts:?}");
        }
    }

    #[test]
    fn ties_follow_weight_when_idle() {
        let set = backends(&[(0, OK, 1), (1, OK, 3)]);
        let mut lc = policy();
        let heavy = (0..8_000)
            .filter(|_| lc.pick(&set, loads(&[0, 0])) == Some(1))
            .count();
        assert!((5_700..=6_300).contains(&heavy), "{heavy} of 8000");
    }

    #[test]
    fn ineligible_and_drained_are_never_picked_even_when_idle() {
        let set = backends(&[
            (0, Health::Unhealthy, 1),
            (1, Health::Draining, 1),
            (2, OK, 0),
            (3, OK, 1),
        ]);
        let mut lc = policy();
        for _ in 0..100 {
            assert_eq!(lc.pick(&set, loads(&[0, 0, 0, 50])), Some(3));
        }
    }

    #[test]
    fn unknown_load_is_skipped_and_empty_is_none() {
        let set = backends(&[(0, OK, 1), (1, OK, 1)]);
        let mut lc = policy();
        assert_eq!(lc.pick(&set, |id| (id == 1).then_some(8)), Some(1));
        assert_eq!(lc.pick(&set, |_| None), None);
        assert_eq!(lc.pick(&Backends::default(), loads(&[])), None);
    }

    #[test]
    fn simulated_slow_backend_gets_little() {
        // Backends 0 and 1 answer at once; backend 2 finishes one request
        // every 50 picks, so its count stays up and traffic goes elsewhere.
        let set = backends(&[(0, OK, 1), (1, OK, 1), (2, OK, 1)]);
        let mut lc = policy();
        let mut in_flight = [0u32; 3];
        let mut counts = [0u32; 3];
        for step in 0..3_000 {
            let id = lc.pick(&set, loads(&in_flight)).unwrap() as usize;
            counts[id] += 1;
            in_flight[id] += 1;
            in_flight[0] = 0;
            in_flight[1] = 0;
            if step % 50 == 49 {
                in_flight[2] = in_flight[2].saturating_sub(1);
            }
        }
        assert!(counts[2] <= 3_000 / 50 + 1, "{counts:?}");
        assert!(counts[0].abs_diff(counts[1]) < 300, "{counts:?}");
    }

    #[test]
    fn settings_must_be_empty() {
        assert!(LeastConnections::init("{}").is_ok());
        let err = LeastConnections::init(r#"{"x": 1}"#).unwrap_err();
        assert!(err.contains("unknown field `x`"), "{err}");
    }
}
