//! Test plugin: a balancer that attacks weir in the way its `mode` setting
//! names, to prove each attack is contained:
//!
//! - `header`: adds the response header `name: value` (a framing header,
//!   say), then picks the first eligible backend;
//! - `add-then-trap`: adds `set-cookie: pinned=1`, then panics;
//! - `bad-header`: adds a header with an invalid name, then picks;
//! - `slow-set-backends`: every `set-backends` spins for `burn_ms`, then
//!   panics (so every request builds an instance again);
//! - `cpu-hog`: every `select` spins for `burn_ms`, then picks.

use serde::Deserialize;
use weir_sdk::{BackendId, Backends, Balancer, Request};

#[derive(Deserialize)]
struct Settings {
    mode: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    burn_ms: u64,
}

struct Hostile(Settings);

/// Spins for `ms` milliseconds of wall time.
fn burn(ms: u64) {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(ms) {
        std::hint::black_box(0u64);
    }
}

impl Balancer for Hostile {
    fn init(config: &str) -> Result<Self, String> {
        serde_json::from_str(config)
            .map(Hostile)
            .map_err(|e| e.to_string())
    }

    fn backends_changed(&mut self, _backends: &Backends) {
        if self.0.mode == "slow-set-backends" {
            burn(self.0.burn_ms);
            panic!(
                "hostile-balancer: set-backends traps after {} ms",
                self.0.burn_ms
            );
        }
    }

    fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
        let s = &self.0;
        match s.mode.as_str() {
            "header" => weir_sdk::response::add_header(&s.name, &s.value),
            "add-then-trap" => {
                weir_sdk::response::add_header("set-cookie", "pinned=1");
                panic!("hostile-balancer: trapping after adding a header");
            }
            "bad-header" => weir_sdk::response::add_header("bad name", "v"),
            "cpu-hog" => burn(s.burn_ms),
            _ => {}
        }
        backends.eligible().first().map(|b| b.id)
    }
}

weir_sdk::export_balancer!(Hostile);
