//! What the `shared` and `metrics` imports give filters: integer cells
//! shared by every instance of one plugin (with compare-and-swap and expiry),
//! and counters that `/metrics` shows. Both live as long as the runtime, so
//! they survive reloads of the plugin.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Most cells one plugin may hold; past it, writes of new keys fail (`add`
/// answers as if the cell were fresh, `compare-and-swap` answers false) so a
/// plugin keyed by client address cannot grow memory without bound.
pub const MAX_CELLS: usize = 1 << 20;

/// Integer cells with expiry.
#[derive(Debug, Default)]
pub struct SharedCells {
    cells: Mutex<Cells>,
}

#[derive(Debug, Default)]
struct Cells {
    map: HashMap<String, (i64, Instant)>,
    /// Writes since the last sweep of expired cells.
    writes: usize,
}

impl Cells {
    fn live(&self, key: &str, now: Instant) -> Option<i64> {
        self.map
            .get(key)
            .filter(|(_, expires)| *expires > now)
            .map(|(v, _)| *v)
    }

    fn write(&mut self, key: &str, value: i64, ttl: Duration, now: Instant) -> bool {
        self.writes += 1;
        if self.writes >= 4096 || self.map.len() >= MAX_CELLS {
            self.writes = 0;
            self.map.retain(|_, (_, expires)| *expires > now);
        }
        if self.map.len() >= MAX_CELLS && !self.map.contains_key(key) {
            return false;
        }
        match self.map.get_mut(key) {
            Some(cell) => *cell = (value, now + ttl),
            None => {
                self.map.insert(key.to_string(), (value, now + ttl));
            }
        }
        true
    }
}

impl SharedCells {
    fn lock(&self) -> std::sync::MutexGuard<'_, Cells> {
        self.cells.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The value at `key`, unless absent or expired.
    pub fn get(&self, key: &str, now: Instant) -> Option<i64> {
        self.lock().live(key, now)
    }

    /// Adds `delta` (absent counts as 0); returns the new value.
    pub fn add(&self, key: &str, delta: i64, ttl: Duration, now: Instant) -> i64 {
        let mut cells = self.lock();
        let value = cells.live(key, now).unwrap_or(0).saturating_add(delta);
        cells.write(key, value, ttl, now);
        value
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: absent).
    pub fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<i64>,
        new: i64,
        ttl: Duration,
        now: Instant,
    ) -> bool {
        let mut cells = self.lock();
        cells.live(key, now) == expected && cells.write(key, new, ttl, now)
    }
}

/// Most distinct counters one plugin may define.
pub const MAX_COUNTERS: usize = 256;

/// Counters a plugin defines, by name.
#[derive(Debug, Default)]
pub struct PluginCounters {
    counters: Mutex<BTreeMap<String, u64>>,
}

impl PluginCounters {
    /// Adds `delta` to counter `name`; false when the name is invalid or the
    /// plugin already has [`MAX_COUNTERS`] others.
    pub fn increment(&self, name: &str, delta: u64) -> bool {
        let valid = !name.is_empty()
            && name.len() <= 64
            && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return false;
        }
        let mut counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(value) = counters.get_mut(name) {
            *value = value.saturating_add(delta);
            return true;
        }
        if counters.len() >= MAX_COUNTERS {
            return false;
        }
        counters.insert(name.to_string(), delta);
        true
    }

    /// Every counter and its value, by name.
    pub fn snapshot(&self) -> Vec<(String, u64)> {
        let counters = self.counters.lock().unwrap_or_else(|e| e.into_inner());
        counters.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cells_add_swap_and_expire() {
        let cells = SharedCells::default();
        let now = Instant::now();
        let ttl = Duration::from_secs(1);
        assert_eq!(cells.get("a", now), None);
        assert_eq!(cells.add("a", 2, ttl, now), 2);
        assert_eq!(cells.add("a", 3, ttl, now), 5);
        assert!(!cells.compare_and_swap("a", Some(4), 9, ttl, now));
        assert!(cells.compare_and_swap("a", Some(5), 9, ttl, now));
        assert_eq!(cells.get("a", now), Some(9));
        assert!(cells.compare_and_swap("b", None, 1, ttl, now));
        assert!(!cells.compare_and_swap("b", None, 1, ttl, now));
        let later = now + ttl;
        assert_eq!(cells.get("a", later), None);
        assert_eq!(
            cells.add("a", 1, ttl, later),
            1,
            "expired cells start again"
        );
    }

    #[test]
    fn counters_take_only_sane_names() {
        let counters = PluginCounters::default();
        assert!(counters.increment("denied", 2));
        assert!(counters.increment("denied", 1));
        assert!(!counters.increment("bad name", 1));
        assert!(!counters.increment("", 1));
        assert_eq!(counters.snapshot(), vec![("denied".to_string(), 3)]);
        for i in 0..MAX_COUNTERS - 1 {
            assert!(counters.increment(&format!("c{i}"), 1));
        }
        assert!(!counters.increment("one_too_many", 1));
    }
}
