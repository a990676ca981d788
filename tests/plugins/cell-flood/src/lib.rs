//! Test plugin: a filter that abuses the `shared` cells in the way its
//! settings choose, to show the host holds it to its limits.
//!
//! - `mode = "many-keys"`: each request writes `count` new keys, each
//!   `key_len` bytes long (numbered from a shared counter so instances do
//!   not collide), and answers `200` with `stored N` (writes that took).
//! - `mode = "long-keys"`: the same with keys of `key_len` bytes that are
//!   not numbered apart: the host should refuse them all.
//! - `mode = "write"`: adds 1 to cell `key`, then ends the call as `fail`
//!   says: `"none"` (lets the request pass), `"trap"` (panics), `"timeout"`
//!   (never returns) or `"invalid"` (answers status 99, which the host
//!   refuses).
//! - `mode = "read"`: answers `200` with the value of cell `key`, or `none`.

use serde::Deserialize;
use weir_sdk::filter::shared;
use weir_sdk::{Decision, Filter, Request, Response};

/// Long enough that nothing expires during a test.
const TTL_MS: u32 = 600_000;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Settings {
    mode: String,
    #[serde(default = "one")]
    count: u32,
    #[serde(default = "one")]
    key_len: u32,
    #[serde(default)]
    key: String,
    #[serde(default)]
    fail: String,
}

fn one() -> u32 {
    1
}

struct CellFlood(Settings);

impl CellFlood {
    /// Writes `count` keys of `key_len` bytes, numbered from `first`;
    /// returns how many the host stored.
    fn flood(&self, first: i64) -> usize {
        let width = self.0.key_len as usize;
        (0..i64::from(self.0.count))
            .filter(|i| {
                let key = format!("{:0>width$}", first + i);
                shared::compare_and_swap(&key, None, 1, TTL_MS)
            })
            .count()
    }
}

fn answer(body: &str) -> Decision {
    Decision::Respond(Response::new(200).text(body))
}

impl Filter for CellFlood {
    fn init(config: &str) -> Result<Self, String> {
        let settings: Settings = serde_json::from_str(config).map_err(|e| e.to_string())?;
        match settings.mode.as_str() {
            "many-keys" | "long-keys" | "read" => {}
            "write" if ["none", "trap", "timeout", "invalid"].contains(&settings.fail.as_str()) => {
            }
            other => return Err(format!("mode {other:?} (fail {:?}) unknown", settings.fail)),
        }
        Ok(CellFlood(settings))
    }

    fn on_request(&mut self, _request: &Request<'_>) -> Decision {
        match self.0.mode.as_str() {
            "many-keys" => {
                let count = i64::from(self.0.count);
                let first = shared::add("next", count, TTL_MS) - count;
                answer(&format!("stored {}", self.flood(first)))
            }
            "long-keys" => answer(&format!("stored {}", self.flood(0))),
            "read" => answer(&shared::get(&self.0.key).map_or("none".into(), |v| v.to_string())),
            _ => {
                shared::add(&self.0.key, 1, TTL_MS);
                match self.0.fail.as_str() {
                    "trap" => panic!("cell-flood: trap after writing"),
                    "timeout" => {
                        let mut spins = 0u64;
                        loop {
                            spins = std::hint::black_box(spins.wrapping_add(1));
                        }
                    }
                    "invalid" => Decision::Respond(Response::new(99)),
                    _ => Decision::pass(),
                }
            }
        }
    }
}

weir_sdk::export_filter!(CellFlood);
