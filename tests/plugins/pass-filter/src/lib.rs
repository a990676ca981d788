//! Test plugin: the empty filter. Every request passes unchanged; used to
//! measure what a filter call costs by itself.

use weir_sdk::{Decision, Filter, Request};

struct Pass;

impl Filter for Pass {
    fn init(_config: &str) -> Result<Self, String> {
        Ok(Self)
    }

    fn on_request(&mut self, _request: &Request<'_>) -> Decision {
        Decision::pass()
    }
}

weir_sdk::export_filter!(Pass);
