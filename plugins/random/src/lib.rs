//! Random: each request goes to an eligible backend drawn at random,
//! uniformly, or in proportion to weight with `{ "weighted": true }`.
//!
//! Uniform: O(1) per pick. Weighted: the cumulative weights of the eligible
//! backends are computed when the backend set changes, and each pick is one
//! random number and a binary search over them, O(log n). Randomness comes
//! from a small PRNG seeded once per instance (see [`rng`]).

use serde::Deserialize;
use weir_sdk::{BackendId, Backends, Balancer, Request};

use weir_sdk::rng::Rng;

/// `[upstreams.NAME.balancer] settings`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Draw in proportion to weight instead of uniformly.
    #[serde(default)]
    weighted: bool,
}

/// The generator, and for weighted draws the running weight totals.
#[derive(Debug)]
pub struct Random {
    rng: Rng,
    weighted: bool,
    /// `cumulative[i]` is the sum of the weights of `eligible()[..=i]`; only
    /// kept when `weighted`.
    cumulative: Vec<u64>,
}

impl Random {
    /// A policy drawing from `rng`, in proportion to weight if `weighted`.
    pub fn new(rng: Rng, weighted: bool) -> Self {
        Self {
            rng,
            weighted,
            cumulative: Vec::new(),
        }
    }

    /// Recomputes the weight totals for a new backend set.
    pub fn update(&mut self, backends: &Backends) {
        self.cumulative.clear();
        if self.weighted {
            let mut total = 0u64;
            self.cumulative.extend(backends.eligible().iter().map(|b| {
                total += u64::from(b.weight);
                total
            }));
        }
    }

    /// A random eligible backend, or `None` when no backend is eligible.
    /// `backends` must be the set last given to [`update`](Self::update).
    pub fn pick(&mut self, backends: &Backends) -> Option<BackendId> {
        let eligible = backends.eligible();
        if eligible.is_empty() {
            return None;
        }
        let index = match self.cumulative.last() {
            Some(&total) if self.weighted && self.cumulative.len() == eligible.len() => {
                // The first backend whose running total exceeds the draw.
                let draw = self.rng.below(total);
                self.cumulative.partition_point(|&sum| sum <= draw)
            }
            _ => self.rng.index(eligible.len()),
        };
        Some(eligible[index].id)
    }
}

/// Parses the settings JSON (`{}` or an empty string: uniform).
fn parse_settings(config: &str) -> Result<Settings, String> {
    if config.trim().is_empty() {
        return Ok(Settings::default());
    }
    serde_json::from_str(config).map_err(|e| {
        format!(
            r#"random: invalid settings {config}: {e} (expected {{ "weighted": true | false }})"#
        )
    })
}

impl Balancer for Random {
    /// Settings: `{ "weighted": bool }`, default `false`.
    fn init(config: &str) -> Result<Self, String> {
        let settings = parse_settings(config)?;
        Ok(Self::new(Rng::from_entropy(), settings.weighted))
    }

    fn backends_changed(&mut self, backends: &Backends) {
        self.update(backends);
    }

    fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        self.pick(backends)
    }
}

weir_sdk::export_balancer!(Random);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::Health;

    const OK: Health = Health::Healthy;

    fn backends(rows: &[(BackendId, Health, u32)]) -> Backends {
        Backends::from_table(rows)
    }

    /// How many of `n` picks went to each id (index = id).
    fn counts(policy: &mut Random, set: &Backends, n: usize) -> Vec<usize> {
        let mut counts = vec![0; 16];
        for _ in 0..n {
            counts[policy.pick(set).unwrap() as usize] += 1;
        }
        counts
    }

    fn policy(set: &Backends, weighted: bool) -> Random {
        let mut random = Random::new(Rng::from_seed(42), weighted);
        random.update(set);
        random
    }

    #[test]
    fn uniform_ignores_weights() {
        let set = backends(&[(1, OK, 1), (2, OK, 5), (3, OK, 100)]);
        let got = counts(&mut policy(&set, false), &set, 30_000);
        for id in 1..=3 {
            assert!((9_400..=10_600).contains(&got[id]), "{got:?}");
        }
    }

    #[test]
    fn weighted_follows_weights() {
        let set = backends(&[(1, OK, 1), (2, OK, 2), (3, OK, 3), (4, OK, 4)]);
        let got = counts(&mut policy(&set, true), &set, 50_000);
        for id in 1..=4 {
            let want = 5_000 * id;
            let share = got[id] as f64 / want as f64;
            assert!((0.95..=1.05).contains(&share), "{got:?}");
        }
    }

    #[test]
    fn never_picks_ineligible_or_drained() {
        let set = backends(&[
            (1, Health::Unhealthy, 9),
            (2, OK, 1),
            (3, OK, 0),
            (4, Health::Draining, 9),
            (5, OK, 1),
        ]);
        for weighted in [false, true] {
            let got = counts(&mut policy(&set, weighted), &set, 2_000);
            assert_eq!(got[2] + got[5], 2_000, "{got:?}");
            assert!(got[2] > 800 && got[5] > 800, "{got:?}");
        }
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let set = backends(&[(1, Health::Unhealthy, 1), (2, OK, 0)]);
        for weighted in [false, true] {
            assert_eq!(policy(&set, weighted).pick(&set), None);
            assert_eq!(policy(&set, weighted).pick(&Backends::default()), None);
        }
    }

    #[test]
    fn single_backend_always_wins() {
        let set = backends(&[(9, OK, 3)]);
        for weighted in [false, true] {
            let mut random = policy(&set, weighted);
            assert!((0..100).all(|_| random.pick(&set) == Some(9)));
        }
    }

    #[test]
    fn settings() {
        assert!(!Random::init("{}").unwrap().weighted);
        assert!(!Random::init("").unwrap().weighted);
        assert!(Random::init(r#"{"weighted": true}"#).unwrap().weighted);
        let err = Random::init(r#"{"weighted": "yes"}"#).unwrap_err();
        assert!(err.contains("invalid type"), "{err}");
        let err = Random::init(r#"{"wieghted": true}"#).unwrap_err();
        assert!(err.contains("unknown field `wieghted`"), "{err}");
    }
}
