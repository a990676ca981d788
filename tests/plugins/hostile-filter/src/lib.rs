//! Test plugin: a filter that attacks weir in the way its `mode` setting
//! names, to prove each attack is contained:
//!
//! - `respond`: answers itself with `status`, the header `name: value` (a
//!   framing header, say) and `body`;
//! - `request`: lets the request pass with the header change `op` (`set`,
//!   `append` or `remove`) of `name: value`;
//! - `response`: lets it pass and makes that change to the response in
//!   `on-response`;
//! - `slow-init`: the first instance starts at once; every later `init`
//!   spins for `burn_ms`, then panics, and `on-request` always panics (so
//!   every call builds an instance again). Each `init` counts `inits`.
//! - `cpu-hog`: `on-request` spins for `burn_ms`, then lets it pass;
//! - `bad-counter`: counts a counter with an invalid name, lets it pass;
//! - `reroute`: reroutes to upstream `name` (one that does not exist).

use serde::Deserialize;
use weir_sdk::filter::{counter, shared};
use weir_sdk::{Changes, Decision, Filter, HeaderOp, Request, Response};

#[derive(Deserialize)]
struct Settings {
    mode: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    value: String,
    #[serde(default)]
    op: String,
    #[serde(default = "ok")]
    status: u16,
    #[serde(default)]
    body: String,
    #[serde(default)]
    burn_ms: u64,
}

fn ok() -> u16 {
    200
}

struct Hostile(Settings);

/// Spins for `ms` milliseconds of wall time.
fn burn(ms: u64) {
    let start = std::time::Instant::now();
    while start.elapsed() < std::time::Duration::from_millis(ms) {
        std::hint::black_box(0u64);
    }
}

impl Hostile {
    fn op(&self) -> HeaderOp {
        let (name, value) = (self.0.name.clone(), self.0.value.clone());
        match self.0.op.as_str() {
            "append" => HeaderOp::Append(name, value),
            "remove" => HeaderOp::Remove(name),
            _ => HeaderOp::Set(name, value),
        }
    }
}

impl Filter for Hostile {
    fn init(config: &str) -> Result<Self, String> {
        let settings: Settings = serde_json::from_str(config).map_err(|e| e.to_string())?;
        if settings.mode == "slow-init" {
            counter("inits", 1);
            if !shared::compare_and_swap("booted", None, 1, u32::MAX) {
                burn(settings.burn_ms);
                panic!("hostile-filter: init traps after {} ms", settings.burn_ms);
            }
        }
        Ok(Hostile(settings))
    }

    fn wants_response(&self) -> bool {
        self.0.mode == "response"
    }

    fn on_request(&mut self, _request: &Request<'_>) -> Decision {
        let s = &self.0;
        match s.mode.as_str() {
            "respond" => Decision::Respond(
                Response::new(s.status)
                    .header(&s.name, &s.value)
                    .text(&s.body),
            ),
            "request" => {
                let mut changes = Changes::new();
                changes.headers.push(self.op());
                Decision::Continue(changes)
            }
            "slow-init" => panic!("hostile-filter: on-request traps"),
            "cpu-hog" => {
                burn(s.burn_ms);
                Decision::pass()
            }
            "bad-counter" => {
                counter("not a valid name", 1);
                Decision::pass()
            }
            "reroute" => Decision::Route {
                upstream: s.name.clone(),
                changes: Changes::new(),
            },
            _ => Decision::pass(),
        }
    }

    fn on_response(
        &mut self,
        _request: &Request<'_>,
        _status: u16,
        _headers: &[(String, String)],
    ) -> Vec<HeaderOp> {
        vec![self.op()]
    }
}

weir_sdk::export_filter!(Hostile);
