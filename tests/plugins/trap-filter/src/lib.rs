//! Test plugin: a filter whose `on-request` always panics, which traps the
//! instance. The route's failure policy decides: skip it (open) or 503
//! (closed).

use weir_sdk::{Decision, Filter, Request};

struct Trap;

impl Filter for Trap {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn on_request(&mut self, _request: &Request<'_>) -> Decision {
        panic!("trap-filter: on-request always traps")
    }
}

weir_sdk::export_filter!(Trap);
