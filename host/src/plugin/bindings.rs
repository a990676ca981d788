//! The only place `bindgen!` runs: generated types stay in `balancer` and
//! `filter`, and the rest of the host sees the few names re-exported here.
//! The two worlds share `types` and `log`; the filter world's bindings reuse
//! the balancer world's modules for them, so both see one set of types.

mod balancer {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "balancer",
        with: {
            "weir:plugin/types.request": crate::plugin::host::RequestHandle,
        },
    });
}

mod filter {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "filter",
        with: {
            "weir:plugin/types": super::balancer::weir::plugin::types,
            "weir:plugin/log": super::balancer::weir::plugin::log,
        },
    });
}

pub(crate) use balancer::Balancer as BalancerBindings;
pub(crate) use balancer::BalancerPre;
pub(crate) use balancer::weir::plugin::{load, log, response_headers, types};
pub(crate) use filter::Filter as FilterBindings;
pub(crate) use filter::FilterPre;
pub(crate) use filter::exports::weir::plugin::http_filter as filter_api;
pub(crate) use filter::weir::plugin::{metrics, shared};
