//! Consistent hashing with Maglev: requests with the same key go to the
//! same backend, and a change of backends moves few keys.
//!
//! The key comes from the request as the `key` setting says ([`KeySource`]).
//! It is hashed with a fixed hash ([`maglev::stable_hash`]: the same in
//! every process, instance and release) onto a Maglev lookup table
//! ([`maglev::Maglev`]).
//!
//! The table is built from **every** backend of the upstream, healthy or
//! not, identified by **name** (sorted, so neither config order nor weir's
//! ids matter). It is rebuilt only when the set of names changes: health
//! changes, draining and re-weighting leave it as it is. At selection, a key
//! whose backend may not take new requests (unhealthy, draining or weight 0)
//! walks the table forward from its slot to the first slot owned by one that
//! may: a fixed sequence per key, so while a backend is out its keys spread
//! over the others, and they come back when it does. Every other key stays
//! where it was. Weights other than 0 are not used: each backend owns an
//! equal share of the table.
//!
//! A request without a key (header or cookie absent or empty) is sent round
//! robin over the eligible backends instead of piling onto whichever backend
//! the empty key hashes to.
//!
//! Per request: one hash of the key and, usually, one table read; the walk
//! past ineligible backends is bounded by the table size.

pub mod key;
pub mod maglev;

use serde::Deserialize;
use weir_sdk::{BackendId, Backends, Balancer, Request};

pub use key::KeySource;
use maglev::{Maglev, is_prime, stable_hash};

/// Default number of slots in the lookup table: a prime above 100 × the
/// backends of any usual upstream (Maglev's shares then differ by under 1%),
/// and small enough to build well inside weir's default 5 ms per-call limit
/// (about 0.5 ms as wasm; 65537 takes 2 to 3 ms, and much more on a busy
/// machine).
pub const DEFAULT_TABLE_SIZE: u32 = 16_381;
/// Largest accepted table size. The table is built inside a plugin call, so
/// under weir's per-call time limit: large sizes need a larger
/// `[plugins] timeout_ms`.
pub const MAX_TABLE_SIZE: u32 = 131_071;
/// Seed of the hash of request keys.
const KEY_SEED: u64 = 0;

/// `[upstreams.NAME.balancer] settings`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    /// Where the key comes from: `client-ip`, `path`, `header:NAME` or
    /// `cookie:NAME`.
    #[serde(default = "default_key")]
    key: String,
    /// Slots in the Maglev table; a prime.
    #[serde(default = "default_table_size")]
    table_size: u32,
}

fn default_key() -> String {
    "client-ip".into()
}

fn default_table_size() -> u32 {
    DEFAULT_TABLE_SIZE
}

/// One backend as the table knows it, in the table's identity order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Member {
    id: BackendId,
    /// May take new requests now ([`weir_sdk::Backend::is_eligible`]).
    eligible: bool,
}

/// The lookup table and the current state of its backends.
#[derive(Debug)]
pub struct ConsistentHash {
    key: KeySource,
    table_size: u32,
    table: Maglev,
    /// Parallel to `table.identities()`.
    members: Vec<Member>,
    /// Round-robin position for requests without a key.
    next: usize,
}

impl ConsistentHash {
    /// A policy reading keys from `key`, with a table of `table_size` slots
    /// (a prime).
    pub fn new(key: KeySource, table_size: u32) -> Self {
        Self {
            key,
            table_size,
            table: Maglev::default(),
            members: Vec::new(),
            next: 0,
        }
    }

    /// Takes in a new backend set: rebuilds the table if the set of names
    /// changed, and refreshes ids and eligibility either way.
    pub fn update(&mut self, backends: &Backends) {
        let mut all: Vec<_> = backends.all().iter().collect();
        all.sort_by(|a, b| a.name.cmp(&b.name).then_with(|| a.address.cmp(&b.address)));
        // A name shared by several backends is told apart by address.
        let shared = |i: usize| {
            (i > 0 && all[i - 1].name == all[i].name)
                || all.get(i + 1).is_some_and(|next| next.name == all[i].name)
        };
        let identities: Vec<String> = (0..all.len())
            .map(|i| match shared(i) {
                true => format!("{}\u{0}{}", all[i].name, all[i].address),
                false => all[i].name.clone(),
            })
            .collect();
        if self.table.identities() != identities.as_slice() {
            self.table = Maglev::build(identities, self.table_size);
        }
        self.members = all
            .iter()
            .map(|b| Member {
                id: b.id,
                eligible: b.is_eligible(),
            })
            .collect();
    }

    /// The backend for `key`: the owner of its slot, or the first eligible
    /// owner after it. `None` only if no backend in the table is eligible.
    pub fn pick_for_key(&self, key: &str) -> Option<BackendId> {
        self.table
            .owners_from(stable_hash(KEY_SEED, key.as_bytes()))
            .map(|owner| self.members[owner])
            .find(|member| member.eligible)
            .map(|member| member.id)
    }

    /// The backend for a request with `key` (`None`: the request has none,
    /// so round robin); `None` when no backend is eligible. `backends` must
    /// be the set last given to [`update`](Self::update).
    pub fn pick(&mut self, key: Option<&str>, backends: &Backends) -> Option<BackendId> {
        let eligible = backends.eligible();
        if eligible.is_empty() {
            return None;
        }
        if let Some(id) = key.and_then(|key| self.pick_for_key(key)) {
            return Some(id);
        }
        // No key (or, with more backends than slots, no eligible owner).
        if self.next >= eligible.len() {
            self.next = 0;
        }
        self.next += 1;
        Some(eligible[self.next - 1].id)
    }
}

/// Parses and checks the settings JSON (`{}` or an empty string: defaults).
fn parse_settings(config: &str) -> Result<(KeySource, u32), String> {
    let config = if config.trim().is_empty() {
        "{}"
    } else {
        config
    };
    let settings: Settings = serde_json::from_str(config).map_err(|e| {
        format!(
            r#"consistent-hash: invalid settings {config}: {e} (expected {{ "key": "client-ip" | "path" | "header:NAME" | "cookie:NAME", "table_size": prime }})"#
        )
    })?;
    let key = settings
        .key
        .parse()
        .map_err(|e| format!("consistent-hash: {e}"))?;
    let size = settings.table_size;
    if !(3..=MAX_TABLE_SIZE).contains(&size) || !is_prime(size) {
        return Err(format!(
            "consistent-hash: table_size {size} must be a prime from 3 to {MAX_TABLE_SIZE} (default {DEFAULT_TABLE_SIZE})"
        ));
    }
    Ok((key, size))
}

impl Balancer for ConsistentHash {
    /// Settings: `{ "key": string, "table_size": prime }`, defaults
    /// `"client-ip"` and 16381.
    fn init(config: &str) -> Result<Self, String> {
        let (key, table_size) = parse_settings(config)?;
        Ok(Self::new(key, table_size))
    }

    fn backends_changed(&mut self, backends: &Backends) {
        self.update(backends);
    }

    fn select(&mut self, request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        let key = self.key.extract(request);
        self.pick(key.as_deref(), backends)
    }
}

weir_sdk::export_balancer!(ConsistentHash);

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use weir_sdk::{Backend, Health};

    /// Backends `(id, name, health, weight)`.
    fn backends(list: &[(BackendId, &str, Health, u32)]) -> Backends {
        Backends::new(
            list.iter()
                .map(|&(id, name, health, weight)| Backend {
                    name: name.into(),
                    health,
                    weight,
                    ..Backend::new(id, format!("10.0.0.{id}:80"))
                })
                .collect(),
        )
    }

    fn healthy(names: &[&str]) -> Backends {
        let list: Vec<_> = names
            .iter()
            .enumerate()
            .map(|(i, &name)| (i as BackendId, name, Health::Healthy, 1))
            .collect();
        backends(&list)
    }

    fn policy(set: &Backends) -> ConsistentHash {
        let mut ch = ConsistentHash::new(KeySource::ClientIp, DEFAULT_TABLE_SIZE);
        ch.update(set);
        ch
    }

    /// The backend name each of `keys` keys lands on.
    fn mapping(ch: &mut ConsistentHash, set: &Backends, keys: usize) -> Vec<String> {
        (0..keys)
            .map(|k| {
                let id = ch.pick(Some(&format!("user-{k}")), set).unwrap();
                set.get(id).unwrap().name.clone()
            })
            .collect()
    }

    const NAMES: [&str; 5] = ["web-a", "web-b", "web-c", "web-d", "web-e"];

    #[test]
    fn same_key_same_backend() {
        let set = healthy(&NAMES);
        let mut ch = policy(&set);
        let first = mapping(&mut ch, &set, 2_000);
        assert_eq!(first, mapping(&mut ch, &set, 2_000));
        assert_eq!(
            first,
            mapping(&mut policy(&set), &set, 2_000),
            "new instance"
        );
    }

    #[test]
    fn keys_spread_over_all_backends() {
        let set = healthy(&NAMES);
        let mut counts = BTreeMap::new();
        for name in mapping(&mut policy(&set), &set, 10_000) {
            *counts.entry(name).or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 5);
        assert!(
            counts.values().all(|&n| (1_800..=2_200).contains(&n)),
            "{counts:?}"
        );
    }

    #[test]
    fn ids_and_config_order_do_not_matter_only_names() {
        let set = healthy(&NAMES);
        let reversed: Vec<_> = NAMES
            .iter()
            .rev()
            .enumerate()
            .map(|(i, &name)| (100 + i as BackendId, name, Health::Healthy, 1))
            .collect();
        let other = backends(&reversed);
        assert_eq!(
            mapping(&mut policy(&set), &set, 2_000),
            mapping(&mut policy(&other), &other, 2_000)
        );
    }

    #[test]
    fn removing_one_of_five_moves_about_a_fifth() {
        let five = healthy(&NAMES);
        let four = healthy(&["web-a", "web-b", "web-d", "web-e"]);
        let keys = 10_000;
        let before = mapping(&mut policy(&five), &five, keys);
        let after = mapping(&mut policy(&four), &four, keys);
        let moved = before.iter().zip(&after).filter(|(b, a)| b != a).count();
        let forced = before.iter().filter(|&b| b == "web-c").count();
        assert!(
            moved as f64 / keys as f64 <= 1.4 / 5.0,
            "moved {moved} of {keys}"
        );
        assert!(moved - forced < keys / 50, "moved {moved}, forced {forced}");
    }

    #[test]
    fn an_unhealthy_backend_moves_only_its_own_keys_and_they_come_back() {
        let up = healthy(&NAMES);
        let mut ch = policy(&up);
        let before = mapping(&mut ch, &up, 5_000);

        let mut list: Vec<_> = NAMES
            .iter()
            .enumerate()
            .map(|(i, &name)| (i as BackendId, name, Health::Healthy, 1))
            .collect();
        list[2].2 = Health::Unhealthy;
        let down = backends(&list);
        ch.update(&down);
        let during = mapping(&mut ch, &down, 5_000);
        let mut spread = BTreeMap::new();
        for (b, d) in before.iter().zip(&during) {
            assert_ne!(d, "web-c");
            if b == "web-c" {
                *spread.entry(d.clone()).or_insert(0) += 1;
            } else {
                assert_eq!(b, d, "a key of a healthy backend moved");
            }
        }
        assert_eq!(spread.len(), 4, "its keys spread over the rest: {spread:?}");

        ch.update(&up);
        assert_eq!(before, mapping(&mut ch, &up, 5_000));
    }

    #[test]
    fn draining_and_weight_zero_are_skipped_like_unhealthy() {
        let set = backends(&[
            (0, "web-a", Health::Draining, 1),
            (1, "web-b", Health::Healthy, 0),
            (2, "web-c", Health::Healthy, 1),
        ]);
        let mut ch = policy(&set);
        assert!(
            mapping(&mut ch, &set, 500)
                .iter()
                .all(|name| name == "web-c")
        );
    }

    #[test]
    fn health_changes_do_not_rebuild_the_table() {
        let up = healthy(&NAMES);
        let mut ch = policy(&up);
        let table = ch.table.clone();
        let mut list: Vec<_> = NAMES
            .iter()
            .enumerate()
            .map(|(i, &name)| (i as BackendId, name, Health::Draining, 7))
            .collect();
        list[0].2 = Health::Healthy;
        ch.update(&backends(&list));
        assert_eq!(ch.table, table);
    }

    #[test]
    fn no_key_goes_round_robin() {
        let set = healthy(&["a", "b", "c"]);
        let mut ch = policy(&set);
        let picks: Vec<_> = (0..6).map(|_| ch.pick(None, &set)).collect();
        assert_eq!(picks, [0, 1, 2, 0, 1, 2].map(Some));
    }

    #[test]
    fn none_when_nothing_is_eligible() {
        let set = backends(&[(0, "a", Health::Unhealthy, 1), (1, "b", Health::Healthy, 0)]);
        let mut ch = policy(&set);
        assert_eq!(ch.pick(Some("k"), &set), None);
        assert_eq!(ch.pick(None, &set), None);
        let empty = Backends::default();
        let mut ch = policy(&empty);
        assert_eq!(ch.pick(Some("k"), &empty), None);
    }

    #[test]
    fn duplicate_names_are_told_apart_by_address() {
        let set = healthy(&["same", "same", "same"]);
        let mut ch = policy(&set);
        let mut ids = std::collections::BTreeSet::new();
        for k in 0..300 {
            ids.insert(ch.pick(Some(&format!("k{k}")), &set).unwrap());
        }
        assert_eq!(ids.len(), 3);
    }

    #[test]
    fn settings() {
        assert!(is_prime(DEFAULT_TABLE_SIZE) && is_prime(MAX_TABLE_SIZE));
        let ch = ConsistentHash::init("{}").unwrap();
        assert_eq!((ch.key, ch.table_size), (KeySource::ClientIp, 16_381));
        let ch = ConsistentHash::init(r#"{"key": "header:x-user-id", "table_size": 101}"#).unwrap();
        assert_eq!(ch.key, KeySource::Header("x-user-id".into()));
        assert_eq!(ch.table_size, 101);
        let ch = ConsistentHash::init(r#"{"key": "cookie:session"}"#).unwrap();
        assert_eq!(ch.key, KeySource::Cookie("session".into()));

        for (bad, want) in [
            (r#"{"key": "query:id"}"#, "unknown key"),
            (r#"{"key": "header:"}"#, "not a valid token"),
            (r#"{"key": 5}"#, "invalid type"),
            (r#"{"table_size": 65536}"#, "must be a prime"),
            (r#"{"table_size": 1}"#, "must be a prime"),
            (
                r#"{"table_size": 262139}"#,
                "must be a prime from 3 to 131071",
            ),
            (r#"{"keys": "path"}"#, "unknown field `keys`"),
        ] {
            let err = ConsistentHash::init(bad).unwrap_err();
            assert!(err.contains(want), "{bad}: {err}");
        }
    }
}
