//! Smooth weighted round robin, NGINX's algorithm.
//!
//! Every eligible backend (healthy, weight above 0) carries a `current`
//! score. Each pick adds every backend's weight to its score, chooses the
//! highest score (the first one on a tie) and takes the total weight off the
//! winner's score. Over any run of `total` picks each backend is chosen
//! exactly `weight` times, and the picks are interleaved: weights 5:1:1 give
//! `a a b a c a a`, not `a a a a a b c`.
//!
//! O(n) per pick in the number of eligible backends, which is inherent to the
//! smooth variant; nothing is allocated per pick. The scores are reset
//! whenever the backend set changes (as NGINX does on reconfiguration).

use serde::Deserialize;
use weir_sdk::{BackendId, Backends, Balancer, Request};

/// The policy takes no settings; this only rejects unknown keys.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {}

/// One eligible backend and its running score.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Peer {
    id: BackendId,
    weight: i64,
    current: i64,
}

/// The scores of the eligible backends.
#[derive(Debug, Default)]
pub struct WeightedRoundRobin {
    peers: Vec<Peer>,
    total: i64,
}

impl WeightedRoundRobin {
    /// Starts a fresh rotation over the eligible backends of `backends`
    /// (weight 0 means drained: such a backend is never picked).
    pub fn update(&mut self, backends: &Backends) {
        self.peers = backends
            .eligible()
            .iter()
            .filter(|b| b.weight > 0)
            .map(|b| Peer {
                id: b.id,
                weight: i64::from(b.weight),
                current: 0,
            })
            .collect();
        self.total = self.peers.iter().map(|p| p.weight).sum();
    }

    /// The next backend, or `None` when no backend is eligible.
    pub fn pick(&mut self) -> Option<BackendId> {
        let mut best: Option<(usize, i64)> = None;
        for (index, peer) in self.peers.iter_mut().enumerate() {
            peer.current += peer.weight;
            if best.is_none_or(|(_, score)| peer.current > score) {
                best = Some((index, peer.current));
            }
        }
        let (index, _) = best?;
        let winner = &mut self.peers[index];
        winner.current -= self.total;
        Some(winner.id)
    }
}

/// Parses the settings JSON: only `{}` (or an empty string) is accepted.
fn parse_settings(config: &str) -> Result<Settings, String> {
    if config.trim().is_empty() {
        return Ok(Settings::default());
    }
    serde_json::from_str(config).map_err(|e| {
        format!("weighted-round-robin: invalid settings {config}: {e} (this policy takes none)")
    })
}

impl Balancer for WeightedRoundRobin {
    /// Takes no settings; rejects any key.
    fn init(config: &str) -> Result<Self, String> {
        parse_settings(config)?;
        Ok(Self::default())
    }

    fn backends_changed(&mut self, backends: &Backends) {
        self.update(backends);
    }

    fn select(&mut self, _request: &Request<'_>, _backends: &Backends) -> Option<BackendId> {
        self.pick()
    }
}

weir_sdk::export_balancer!(WeightedRoundRobin);

#[cfg(test)]
mod tests {
    use super::*;
    use weir_sdk::Health;

    const OK: Health = Health::Healthy;

    fn backends(rows: &[(BackendId, Health, u32)]) -> Backends {
        Backends::from_table(rows)
    }

    fn policy(set: &Backends) -> WeightedRoundRobin {
        let mut wrr = WeightedRoundRobin::default();
        wrr.update(set);
        wrr
    }

    fn picks(wrr: &mut WeightedRoundRobin, n: usize) -> Vec<BackendId> {
        (0..n).map(|_| wrr.pick().unwrap()).collect()
    }

    #[test]
    fn nginx_example_is_smooth() {
        // The sequence from NGINX's commit introducing smooth WRR.
        let set = backends(&[(1, OK, 5), (2, OK, 1), (3, OK, 1)]);
        let mut wrr = policy(&set);
        assert_eq!(picks(&mut wrr, 7), [1, 1, 2, 1, 3, 1, 1]);
        assert_eq!(picks(&mut wrr, 7), [1, 1, 2, 1, 3, 1, 1], "repeats");
    }

    #[test]
    fn each_cycle_gives_exact_shares() {
        let set = backends(&[(1, OK, 1), (2, OK, 2), (3, OK, 3), (4, OK, 10)]);
        let mut wrr = policy(&set);
        for _ in 0..50 {
            let mut counts = [0; 5];
            for id in picks(&mut wrr, 16) {
                counts[id as usize] += 1;
            }
            assert_eq!(counts, [0, 1, 2, 3, 10]);
        }
    }

    #[test]
    fn heavy_backend_is_never_picked_many_times_in_a_row_needlessly() {
        // 2:1 must alternate a a b, never a a a.
        let set = backends(&[(1, OK, 2), (2, OK, 1)]);
        let mut wrr = policy(&set);
        let got = picks(&mut wrr, 300);
        assert!(!got.windows(3).any(|w| w == [1, 1, 1]), "{got:?}");
        assert!(!got.windows(2).any(|w| w == [2, 2]), "{got:?}");
    }

    #[test]
    fn weight_zero_unhealthy_and_draining_get_nothing() {
        let set = backends(&[
            (1, OK, 0),
            (2, OK, 3),
            (3, Health::Unhealthy, 5),
            (4, Health::Draining, 5),
            (5, OK, 1),
        ]);
        let mut wrr = policy(&set);
        let got = picks(&mut wrr, 400);
        assert_eq!(got.iter().filter(|&&id| id == 2).count(), 300);
        assert_eq!(got.iter().filter(|&&id| id == 5).count(), 100);
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        assert_eq!(WeightedRoundRobin::default().pick(), None);
        let drained = backends(&[(1, OK, 0), (2, Health::Unhealthy, 1)]);
        assert_eq!(policy(&drained).pick(), None);
    }

    #[test]
    fn equal_weights_are_plain_round_robin() {
        let set = backends(&[(7, OK, 4), (8, OK, 4), (9, OK, 4)]);
        let mut wrr = policy(&set);
        assert_eq!(picks(&mut wrr, 6), [7, 8, 9, 7, 8, 9]);
    }

    #[test]
    fn a_new_set_restarts_the_rotation() {
        let mut wrr = policy(&backends(&[(1, OK, 1), (2, OK, 1)]));
        assert_eq!(picks(&mut wrr, 1), [1]);
        wrr.update(&backends(&[(3, OK, 1), (4, OK, 3)]));
        let got = picks(&mut wrr, 8);
        assert_eq!(got.iter().filter(|&&id| id == 4).count(), 6, "{got:?}");
        assert!(got.iter().all(|&id| id == 3 || id == 4), "{got:?}");
    }

    #[test]
    fn largest_weights_do_not_overflow() {
        let list: Vec<_> = (0..1000).map(|id| (id, OK, 65_535)).collect();
        let mut wrr = policy(&backends(&list));
        let got = picks(&mut wrr, 2000);
        assert_eq!(got[..1000], got[1000..]);
    }

    #[test]
    fn settings_must_be_empty() {
        assert!(WeightedRoundRobin::init("{}").is_ok());
        assert!(WeightedRoundRobin::init("").is_ok());
        let err = WeightedRoundRobin::init(r#"{"weights": [1]}"#).unwrap_err();
        assert!(err.contains("unknown field `weights`"), "{err}");
        assert!(WeightedRoundRobin::init("[1]").is_err());
    }
}
