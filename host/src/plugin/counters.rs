//! What the `metrics` import gives filters: counters that `/metrics` shows.
//! They live as long as the runtime, so they survive reloads of the plugin
//! (as the `shared` import's cells do, in [`super::cells`]).

use std::collections::BTreeMap;
use std::sync::Mutex;

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
