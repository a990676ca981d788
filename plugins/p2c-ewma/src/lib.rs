//! Power of two random choices on latency: each request draws two distinct
//! eligible backends at random and goes to the cheaper one.
//!
//! A backend's cost is `latency * (in_flight + 1) / weight`, where `latency`
//! is weir's moving average of its response-header latency
//! (`ewma_latency_us`) or, for a backend that has not answered yet (0), the
//! `default_latency_us` setting. Costs are compared by cross-multiplication
//! in 128-bit integers: no division, no rounding, no overflow.
//!
//! The average is weir's own: each response moves it 30% of the way to the
//! new sample (alpha 0.3 per response, not per unit of time). The plugin
//! keeps no latency state of its own, so there is no decay setting: a
//! backend that stops getting traffic keeps its last average until it is
//! drawn and chosen again, which happens as soon as the other backend of a
//! pair carries enough requests in flight to cost more.
//!
//! O(1) per pick: two random numbers and two host calls, whatever the number
//! of backends.

use serde::Deserialize;
use weir_sdk::{BackendId, BackendLoad, Backends, Balancer, Request};

use weir_sdk::rng::Rng;

/// Latency assumed for a backend without a measurement, unless configured.
const DEFAULT_LATENCY_US: u32 = 1_000;

/// `[upstreams.NAME.balancer] settings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Latency assumed for a backend weir has no measurement for yet, in
    /// microseconds.
    #[serde(default = "default_latency_us")]
    default_latency_us: u32,
}

fn default_latency_us() -> u32 {
    DEFAULT_LATENCY_US
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            default_latency_us: DEFAULT_LATENCY_US,
        }
    }
}

/// The generator that draws the pairs, and the latency assumed when unknown.
#[derive(Debug)]
pub struct P2cEwma {
    rng: Rng,
    default_latency_us: u32,
}

/// Two distinct indices below `len`, uniformly among all ordered pairs;
/// `len` must be at least 2.
pub fn distinct_pair(rng: &mut Rng, len: usize) -> (usize, usize) {
    debug_assert!(len >= 2, "distinct_pair needs two candidates");
    let first = rng.index(len);
    // Draw from the len - 1 others: skip over `first`.
    let mut second = rng.index(len - 1);
    if second >= first {
        second += 1;
    }
    (first, second)
}

impl P2cEwma {
    /// A policy drawing with `rng`, assuming `default_latency_us` (at least
    /// 1) for backends without a measurement.
    pub fn new(rng: Rng, default_latency_us: u32) -> Self {
        Self {
            rng,
            default_latency_us: default_latency_us.max(1),
        }
    }

    /// `latency * (in_flight + 1)` for `load`.
    fn cost(&self, load: BackendLoad) -> u128 {
        let latency = match load.ewma_latency_us {
            0 => self.default_latency_us,
            measured => measured,
        };
        u128::from(latency) * (u128::from(load.in_flight) + 1)
    }

    /// The cheaper of two distinct random eligible backends (the only one
    /// when there is one); `None` when no backend is eligible. `load` reads a
    /// backend's live load; a backend it knows nothing of loses the pair.
    pub fn pick(
        &mut self,
        backends: &Backends,
        mut load: impl FnMut(BackendId) -> Option<BackendLoad>,
    ) -> Option<BackendId> {
        let eligible = backends.eligible();
        match eligible.len() {
            0 => return None,
            1 => return Some(eligible[0].id),
            _ => {}
        }
        let (a, b) = distinct_pair(&mut self.rng, eligible.len());
        let (a, b) = (&eligible[a], &eligible[b]);
        let (load_a, load_b) = match (load(a.id), load(b.id)) {
            (Some(load_a), Some(load_b)) => (load_a, load_b),
            (None, Some(_)) => return Some(b.id),
            _ => return Some(a.id),
        };
        // cost_a / weight_a <= cost_b / weight_b, without dividing. `a` is a
        // random draw, so keeping it on a tie favours no backend.
        let a_per_weight = self.cost(load_a) * u128::from(b.weight);
        let b_per_weight = self.cost(load_b) * u128::from(a.weight);
        Some(if a_per_weight <= b_per_weight {
            a.id
        } else {
            b.id
        })
    }
}

/// Parses and checks the settings JSON (`{}` or an empty string: defaults).
fn parse_settings(config: &str) -> Result<Settings, String> {
    let settings: Settings = if config.trim().is_empty() {
        Settings::default()
    } else {
        serde_json::from_str(config).map_err(|e| {
            format!(
                r#"p2c-ewma: invalid settings {config}: {e} (expected {{ "default_latency_us": 1 to 4294967295 }})"#
            )
        })?
    };
    if settings.default_latency_us == 0 {
        return Err("p2c-ewma: default_latency_us must be at least 1".into());
    }
    Ok(settings)
}

impl Balancer for P2cEwma {
    /// Settings: `{ "default_latency_us": u32 }`, default 1000.
    fn init(config: &str) -> Result<Self, String> {
        let settings = parse_settings(config)?;
        Ok(Self::new(Rng::from_entropy(), settings.default_latency_us))
    }

    fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        self.pick(backends, weir_sdk::backend_load)
    }
}

weir_sdk::export_balancer!(P2cEwma);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::Health;

    const OK: Health = Health::Healthy;

    fn backends(rows: &[(BackendId, Health, u32)]) -> Backends {
        Backends::from_table(rows)
    }

    /// Loads by id (index = id), as (in_flight, ewma_latency_us).
    fn loads(list: &[(u32, u32)]) -> impl FnMut(BackendId) -> Option<BackendLoad> + '_ {
        |id| {
            list.get(id as usize)
                .map(|&(in_flight, ewma_latency_us)| BackendLoad {
                    in_flight,
                    ewma_latency_us,
                    recent_failures: 0,
                })
        }
    }

    fn policy(seed: u64) -> P2cEwma {
        P2cEwma::new(Rng::from_seed(seed), DEFAULT_LATENCY_US)
    }

    /// Property: for every size from 2 to 64 and many seeds, the two draws
    /// are distinct and in range (a hand-rolled property test: the workspace
    /// has no proptest).
    #[test]
    fn property_pairs_are_always_distinct_and_in_range() {
        for seed in 0..200u64 {
            let mut rng = Rng::from_seed(seed);
            for len in 2..=64 {
                for _ in 0..20 {
                    let (a, b) = distinct_pair(&mut rng, len);
                    assert_ne!(a, b, "seed {seed}, len {len}");
                    assert!(a < len && b < len, "seed {seed}, len {len}: {a}, {b}");
                }
            }
        }
    }

    #[test]
    fn every_ordered_pair_is_equally_likely() {
        let mut rng = Rng::from_seed(11);
        let mut counts = [[0u32; 4]; 4];
        for _ in 0..60_000 {
            let (a, b) = distinct_pair(&mut rng, 4);
            counts[a][b] += 1;
        }
        for (a, row) in counts.iter().enumerate() {
            for (b, &count) in row.iter().enumerate() {
                if a == b {
                    assert_eq!(count, 0);
                } else {
                    assert!((4_600..=5_400).contains(&count), "{counts:?}");
                }
            }
        }
    }

    #[test]
    fn two_backends_always_compare_both() {
        // With two backends every pair is {0, 1}: the cheaper always wins.
        let set = backends(&[(0, OK, 1), (1, OK, 1)]);
        let mut p2c = policy(1);
        for _ in 0..200 {
            assert_eq!(p2c.pick(&set, loads(&[(0, 50_000), (3, 500)])), Some(1));
        }
    }

    #[test]
    fn cost_is_latency_times_in_flight_plus_one() {
        let set = backends(&[(0, OK, 1), (1, OK, 1)]);
        let mut p2c = policy(2);
        // 1000 * 5 = 5000 against 2000 * 2 = 4000.
        let picks: Vec<_> = (0..50)
            .map(|_| p2c.pick(&set, loads(&[(4, 1_000), (1, 2_000)])))
            .collect();
        assert!(picks.iter().all(|&p| p == Some(1)), "{picks:?}");
        // 1000 * 3 = 3000 against 2000 * 2 = 4000.
        let picks: Vec<_> = (0..50)
            .map(|_| p2c.pick(&set, loads(&[(2, 1_000), (1, 2_000)])))
            .collect();
        assert!(picks.iter().all(|&p| p == Some(0)), "{picks:?}");
    }

    #[test]
    fn unmeasured_backends_cost_the_default_latency() {
        let set = backends(&[(0, OK, 1), (1, OK, 1)]);
        // Unknown at default 1000 beats a measured 1500...
        let mut p2c = P2cEwma::new(Rng::from_seed(5), 1_000);
        assert_eq!(p2c.pick(&set, loads(&[(0, 0), (0, 1_500)])), Some(0));
        // ...and loses to it at default 2000.
        let mut p2c = P2cEwma::new(Rng::from_seed(5), 2_000);
        assert_eq!(p2c.pick(&set, loads(&[(0, 0), (0, 1_500)])), Some(1));
    }

    #[test]
    fn weight_divides_the_cost() {
        let set = backends(&[(0, OK, 1), (1, OK, 3)]);
        let mut p2c = policy(6);
        // 1000 * 2 / 1 = 2000 against 1000 * 5 / 3 = 1667.
        assert_eq!(p2c.pick(&set, loads(&[(1, 1_000), (4, 1_000)])), Some(1));
    }

    #[test]
    fn slow_backend_gets_only_what_its_pairs_force() {
        // Backend 2 is 50 times slower: it only wins a pair it is in when the
        // other carries 50 times its load, which never happens here.
        let set = backends(&[(0, OK, 1), (1, OK, 1), (2, OK, 1)]);
        let mut p2c = policy(9);
        let mut counts = [0u32; 3];
        for _ in 0..3_000 {
            let id = p2c
                .pick(&set, loads(&[(2, 1_000), (2, 1_000), (0, 50_000)]))
                .unwrap();
            counts[id as usize] += 1;
        }
        assert_eq!(counts[2], 0, "{counts:?}");
        assert!(counts[0].abs_diff(counts[1]) < 300, "{counts:?}");
    }

    #[test]
    fn equal_costs_are_shared() {
        let set = backends(&[(0, OK, 1), (1, OK, 1), (2, OK, 1)]);
        let mut p2c = policy(10);
        let mut counts = [0u32; 3];
        for _ in 0..9_000 {
            counts[p2c.pick(&set, loads(&[(0, 0); 3])).unwrap() as usize] += 1;
        }
        for count in counts {
            assert!((2_700..=3_300).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn only_eligible_backends_are_drawn() {
        let set = backends(&[
            (0, Health::Unhealthy, 1),
            (1, OK, 1),
            (2, OK, 0),
            (3, Health::Draining, 1),
        ]);
        let mut p2c = policy(4);
        // Backend 1 is the only eligible one, however loaded.
        for _ in 0..50 {
            assert_eq!(p2c.pick(&set, loads(&[(0, 1); 4])), Some(1));
        }
        let none = backends(&[(0, Health::Unhealthy, 1), (1, OK, 0)]);
        assert_eq!(p2c.pick(&none, loads(&[(0, 1); 2])), None);
        assert_eq!(p2c.pick(&Backends::default(), loads(&[])), None);
    }

    #[test]
    fn a_backend_without_load_loses_the_pair() {
        let set = backends(&[(0, OK, 1), (1, OK, 1)]);
        let mut p2c = policy(8);
        for _ in 0..20 {
            let only_1 = |id| (id == 1).then_some(BackendLoad::default());
            assert_eq!(p2c.pick(&set, only_1), Some(1));
        }
    }

    #[test]
    fn settings() {
        assert_eq!(P2cEwma::init("{}").unwrap().default_latency_us, 1_000);
        assert_eq!(P2cEwma::init("").unwrap().default_latency_us, 1_000);
        let p2c = P2cEwma::init(r#"{"default_latency_us": 250}"#).unwrap();
        assert_eq!(p2c.default_latency_us, 250);
        let err = P2cEwma::init(r#"{"default_latency_us": 0}"#).unwrap_err();
        assert!(err.contains("at least 1"), "{err}");
        let err = P2cEwma::init(r#"{"default_latency_us": -5}"#).unwrap_err();
        assert!(err.contains("invalid value"), "{err}");
        let err = P2cEwma::init(r#"{"decay_ms": 10}"#).unwrap_err();
        assert!(err.contains("unknown field `decay_ms`"), "{err}");
    }
}
