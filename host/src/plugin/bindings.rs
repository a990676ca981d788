//! The only place `bindgen!` runs: generated types stay in `generated` and the
//! rest of the host sees the few names re-exported here.

mod generated {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "balancer",
        with: {
            "weir:plugin/types.request": crate::plugin::host::RequestHandle,
        },
    });
}

pub(crate) use generated::Balancer as BalancerBindings;
pub(crate) use generated::BalancerPre;
pub(crate) use generated::weir::plugin::{load, log, types};
