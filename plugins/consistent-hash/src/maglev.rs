//! Maglev hashing (Eisenbud et al., NSDI 2016) and the stable hash it runs
//! on.
//!
//! Each backend, identified by a string (its name), gets a permutation of
//! the `size` slots of a lookup table from two hashes of that string:
//! `offset` and `skip`, the permutation being `offset, offset + skip, ...`
//! modulo `size`. `size` is prime, so every `skip` visits every slot. The
//! backends then take turns claiming the next free slot of their own
//! permutation until the table is full. Each backend ends up with
//! `size / n` slots give or take one, and removing one backend moves little
//! more than that backend's own share of the keys.
//!
//! Building costs a few probes per slot (4.4 on average for 5 backends,
//! more as the table fills up): about 0.2 ms natively and 0.5 ms as wasm for
//! 16381 slots, 1 ms and 2 to 3 ms for 65537. A lookup is one hash and one
//! index.

/// Seed of the hash placing a backend's permutation start.
const OFFSET_SEED: u64 = 0x6f66_6673_6574_0001;
/// Seed of the hash choosing a backend's permutation step.
const SKIP_SEED: u64 = 0x736b_6970_0000_0002;

/// A 64-bit hash that is the same on every platform, in every process and
/// in every release: FNV-1a 64 over `bytes` (its offset basis XORed with
/// `seed`), then the MurmurHash3 64-bit finalizer, so that keys differing
/// only in their last byte still land far apart.
pub fn stable_hash(seed: u64, bytes: &[u8]) -> u64 {
    fmix64(fnv1a(seed, bytes))
}

/// FNV-1a 64 with its offset basis XORed with `seed`.
fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    const FNV_OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;
    bytes.iter().fold(FNV_OFFSET_BASIS ^ seed, |hash, &byte| {
        (hash ^ u64::from(byte)).wrapping_mul(FNV_PRIME)
    })
}

/// MurmurHash3's 64-bit finalizer: every input bit affects every output bit.
fn fmix64(mut hash: u64) -> u64 {
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xff51_afd7_ed55_8ccd);
    hash ^= hash >> 33;
    hash = hash.wrapping_mul(0xc4ce_b9fe_1a85_ec53);
    hash ^ (hash >> 33)
}

/// Whether `n` is prime (trial division; table sizes are small).
pub fn is_prime(n: u32) -> bool {
    if n < 2 {
        return false;
    }
    let n = u64::from(n);
    (2..).take_while(|d| d * d <= n).all(|d| n % d != 0)
}

/// A filled Maglev lookup table.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Maglev {
    /// The identities the table was built from, in the order given.
    identities: Vec<String>,
    /// Slot to index into `identities`; empty when there are none.
    slots: Vec<u32>,
}

impl Maglev {
    /// Fills a table of `size` slots (a prime, at least 2) for `identities`.
    /// Which backend owns which slot depends only on the identity strings
    /// and their order; callers sort them so it depends on the set alone.
    /// With more identities than slots, the last ones get no slot.
    pub fn build(identities: Vec<String>, size: u32) -> Self {
        debug_assert!(is_prime(size), "Maglev table size {size} is not prime");
        if identities.is_empty() {
            return Self::default();
        }
        let m = u64::from(size);
        let skips: Vec<u64> = identities
            .iter()
            .map(|id| stable_hash(SKIP_SEED, id.as_bytes()) % (m - 1) + 1)
            .collect();
        // Next position of each identity's permutation.
        let mut next: Vec<u64> = identities
            .iter()
            .map(|id| stable_hash(OFFSET_SEED, id.as_bytes()) % m)
            .collect();
        let mut slots = vec![0u32; size as usize];
        // Which slots are taken, one bit each: the probing below reads this
        // (8 KiB for 65537 slots, so it stays in cache) and not `slots`.
        let mut taken = vec![0u64; (size as usize).div_ceil(64)];
        let is_taken =
            |taken: &[u64], slot: u64| taken[(slot / 64) as usize] & (1 << (slot % 64)) != 0;
        let mut filled = 0u64;
        'fill: loop {
            for (owner, (position, &skip)) in next.iter_mut().zip(&skips).enumerate() {
                // At least one slot is free and the permutation visits them
                // all, so this ends.
                let mut slot = *position;
                while is_taken(&taken, slot) {
                    slot += skip;
                    if slot >= m {
                        slot -= m;
                    }
                }
                taken[(slot / 64) as usize] |= 1 << (slot % 64);
                slots[slot as usize] = owner as u32;
                slot += skip;
                *position = if slot >= m { slot - m } else { slot };
                filled += 1;
                if filled == m {
                    break 'fill;
                }
            }
        }
        Self { identities, slots }
    }

    /// The identities, in the order the table was built from.
    pub fn identities(&self) -> &[String] {
        &self.identities
    }

    /// The number of slots (0 for an empty table).
    pub fn size(&self) -> usize {
        self.slots.len()
    }

    /// The slot `hash` lands on; `None` for an empty table.
    pub fn slot(&self, hash: u64) -> Option<usize> {
        let size = self.slots.len() as u64;
        (size > 0).then(|| (hash % size) as usize)
    }

    /// The index into [`identities`](Self::identities) owning `slot`
    /// (which must be below [`size`](Self::size)).
    pub fn owner(&self, slot: usize) -> usize {
        self.slots[slot] as usize
    }

    /// The owners of the slots from `hash`'s slot onward, wrapping around
    /// once: the deterministic fallback sequence for a key whose first
    /// choice may not be used.
    pub fn owners_from(&self, hash: u64) -> impl Iterator<Item = usize> + '_ {
        let start = self.slot(hash).unwrap_or(0);
        let (after, before) = self.slots.split_at(start.min(self.slots.len()));
        before.iter().chain(after).map(|&owner| owner as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("backend-{i}")).collect()
    }

    fn owner_name(table: &Maglev, key: &str) -> String {
        let slot = table.slot(stable_hash(0, key.as_bytes())).unwrap();
        table.identities()[table.owner(slot)].clone()
    }

    #[test]
    fn stable_hash_is_fixed() {
        // Pinned: changing these reshuffles every deployment's keys.
        // FNV-1a's published test vector, then values of the whole hash.
        assert_eq!(fnv1a(0, b"a"), 0xaf63_dc4c_8601_ec8c);
        assert_eq!(stable_hash(0, b""), 0xefd0_1f60_ba99_2926);
        assert_eq!(stable_hash(0, b"user-1"), 0x41a2_fca5_c684_01c5);
        assert_ne!(stable_hash(0, b"user-1"), stable_hash(0, b"user-2"));
        assert_ne!(stable_hash(0, b"a"), stable_hash(1, b"a"));
    }

    #[test]
    fn primes() {
        let small: Vec<u32> = (0..30).filter(|&n| is_prime(n)).collect();
        assert_eq!(small, [2, 3, 5, 7, 11, 13, 17, 19, 23, 29]);
        assert!(is_prime(65_537));
        assert!(!is_prime(65_535));
        assert!(is_prime(4_294_967_291));
    }

    #[test]
    fn every_slot_is_owned_and_shares_are_even() {
        for n in [1, 2, 3, 5, 10, 33] {
            let table = Maglev::build(names(n), 65_537);
            let mut counts = vec![0usize; n];
            for slot in 0..table.size() {
                counts[table.owner(slot)] += 1;
            }
            let (min, max) = (counts.iter().min(), counts.iter().max());
            // Backends claim slots in turns, one each per turn.
            assert!(max.unwrap() - min.unwrap() <= 1, "n = {n}: {counts:?}");
        }
    }

    #[test]
    fn same_identities_same_table() {
        assert_eq!(
            Maglev::build(names(7), 65_537),
            Maglev::build(names(7), 65_537)
        );
    }

    #[test]
    fn keys_spread_evenly() {
        let table = Maglev::build(names(5), 65_537);
        let mut counts = std::collections::BTreeMap::new();
        for key in 0..50_000 {
            *counts
                .entry(owner_name(&table, &format!("user-{key}")))
                .or_insert(0) += 1;
        }
        assert_eq!(counts.len(), 5);
        for &count in counts.values() {
            assert!((9_400..=10_600).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn removing_one_of_five_moves_about_a_fifth() {
        let before = Maglev::build(names(5), 65_537);
        let four: Vec<String> = names(5).into_iter().filter(|n| n != "backend-3").collect();
        let after = Maglev::build(four, 65_537);
        let keys = 20_000;
        let (mut moved, mut on_removed) = (0, 0);
        for key in 0..keys {
            let key = format!("user-{key}");
            let (was, now) = (owner_name(&before, &key), owner_name(&after, &key));
            on_removed += usize::from(was == "backend-3");
            moved += usize::from(was != now);
        }
        let moved_fraction = moved as f64 / keys as f64;
        assert!(moved_fraction <= 1.4 / 5.0, "moved {moved_fraction}");
        // Every key of the removed backend had to move; few others did.
        assert!(moved >= on_removed);
        assert!(
            moved - on_removed < keys / 50,
            "{moved} moved, {on_removed} forced"
        );
    }

    #[test]
    fn adding_a_sixth_moves_about_a_sixth() {
        let before = Maglev::build(names(5), 65_537);
        let after = Maglev::build(names(6), 65_537);
        let moved = (0..20_000)
            .filter(|key| {
                let key = format!("user-{key}");
                owner_name(&before, &key) != owner_name(&after, &key)
            })
            .count();
        assert!(moved <= 20_000 * 14 / 60, "moved {moved} of 20000");
    }

    #[test]
    fn owners_from_walks_every_slot_once_from_the_keys_slot() {
        let table = Maglev::build(names(3), 13);
        let hash = 20; // slot 7
        let walk: Vec<usize> = table.owners_from(hash).collect();
        assert_eq!(walk.len(), 13);
        assert_eq!(walk[0], table.owner(7));
        assert_eq!(walk[6], table.owner(0));
        assert_eq!(walk[12], table.owner(6));
    }

    #[test]
    fn more_identities_than_slots_still_fills_the_table() {
        let table = Maglev::build(names(20), 7);
        assert_eq!(table.size(), 7);
        assert!((0..7).all(|slot| table.owner(slot) < 20));
    }

    #[test]
    fn empty_table() {
        let table = Maglev::build(Vec::new(), 65_537);
        assert_eq!(table.size(), 0);
        assert_eq!(table.slot(5), None);
        assert_eq!(table.owners_from(5).count(), 0);
    }
}
