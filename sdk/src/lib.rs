//! Write weir balancing policies and request filters in plain Rust and ship
//! them as WebAssembly components.
//!
//! Balancers implement [`Balancer`] and are exported with
//! [`export_balancer!`]; request filters implement [`Filter`] (see the
//! [`filter`] module) and are exported with [`export_filter!`].
//!
//! weir asks a policy, once per request, which backend of an upstream should
//! serve it. A policy is a type implementing [`Balancer`]; the
//! [`export_balancer!`] macro turns it into the `balancer` world's exports
//! (`weir:plugin@0.1.0`), so the generated WIT bindings never show up in
//! policy code.
//!
//! # Lifecycle
//!
//! The host may run several instances of one plugin, each with its own memory;
//! within an instance:
//!
//! 1. [`Balancer::init`] runs once, with the upstream's plugin settings as
//!    JSON text (`{}` when there are none).
//! 2. [`Balancer::backends_changed`] runs whenever the upstream's backend set
//!    changes; the SDK has already rebuilt its [`Backends`] (including the
//!    [`eligible`](Backends::eligible) list) by then.
//! 3. [`Balancer::select`] runs once per request and returns a [`BackendId`],
//!    or `None` for "no backend" (the host answers 503).
//!
//! # Example: round robin
//!
//! ```
//! use weir_sdk::{Backends, BackendId, Balancer, Request};
//!
//! /// Sends each request to the next eligible backend in turn.
//! #[derive(Default)]
//! struct RoundRobin {
//!     next: usize,
//! }
//!
//! impl RoundRobin {
//!     /// The selection logic, kept apart from `select` so native tests can
//!     /// call it without a request.
//!     fn pick(&mut self, backends: &Backends) -> Option<BackendId> {
//!         let eligible = backends.eligible();
//!         if self.next >= eligible.len() {
//!             self.next = 0;
//!         }
//!         let backend = eligible.get(self.next)?;
//!         self.next += 1;
//!         Some(backend.id)
//!     }
//! }
//!
//! impl Balancer for RoundRobin {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         weir_sdk::log::info("round robin ready");
//!         Ok(Self::default())
//!     }
//!
//!     fn select(&mut self, _request: &Request<'_>, backends: &Backends) -> Option<BackendId> {
//!         self.pick(backends)
//!     }
//! }
//!
//! weir_sdk::export_balancer!(RoundRobin);
//!
//! # fn main() {
//! // Native unit test of the selection logic:
//! use weir_sdk::{Backend, Health};
//! let backends = Backends::new(vec![
//!     Backend::new(1, "10.0.0.1:80"),
//!     Backend { health: Health::Unhealthy, ..Backend::new(2, "10.0.0.2:80") },
//!     Backend::new(3, "10.0.0.3:80"),
//! ]);
//! let mut policy = RoundRobin::default();
//! let picks: Vec<_> = (0..4).map(|_| policy.pick(&backends)).collect();
//! assert_eq!(picks, [Some(1), Some(3), Some(1), Some(3)]);
//! # }
//! ```
//!
//! Build it as a `cdylib` for `wasm32-wasip2` (`cargo build --target
//! wasm32-wasip2`); the resulting `.wasm` file is the component weir loads.
//! Adding `rlib` to the crate types lets `cargo test` run its unit tests
//! natively. Host calls ([`Request`] accessors, [`backend_load`], [`log`])
//! only work inside weir: natively they panic, so keep the logic you test
//! natively apart from them, as `pick` is above.

mod backend;
#[doc(hidden)]
pub mod export;
pub mod filter;
mod load;
pub mod log;
mod request;
pub mod response;
pub mod rng;

pub use backend::{Backend, BackendId, Backends, Health};
pub use filter::{Changes, Decision, Filter, HeaderOp, Response};
pub use load::{BackendLoad, backend_load};
pub use request::{Request, TlsSession, cookie_value};

/// Bindings generated from `wit/` by wit-bindgen. Not part of the API: use
/// the types re-exported at the crate root instead.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod wit {
    wit_bindgen::generate!({
        path: "../wit",
        world: "balancer",
        pub_export_macro: true,
        default_bindings_module: "weir_sdk::wit",
    });
}

/// Bindings of the `filter` world, sharing `types` and `log` with [`wit`].
/// Not part of the API.
#[doc(hidden)]
#[allow(unsafe_code, missing_docs, unreachable_pub, clippy::all)]
pub mod wit_filter {
    wit_bindgen::generate!({
        path: "../wit",
        world: "filter",
        with: {
            "weir:plugin/types@0.1.0": crate::wit::weir::plugin::types,
            "weir:plugin/log@0.1.0": crate::wit::weir::plugin::log,
        },
        pub_export_macro: true,
        export_macro_name: "export_filter_world",
        default_bindings_module: "weir_sdk::wit_filter",
    });
}

/// A balancing policy: the one trait a plugin implements.
///
/// The SDK keeps one value of the implementing type per component instance,
/// created by [`init`](Balancer::init), along with the instance's current
/// [`Backends`]. Register the type with [`export_balancer!`].
pub trait Balancer: Sized + 'static {
    /// Creates the policy from its settings.
    ///
    /// Called once per component instance, before any other method, with the
    /// upstream's `[upstreams.NAME.plugin]` table as JSON text (`{}` when
    /// there is none). Returning `Err` rejects the plugin for that upstream;
    /// weir logs the message. Until `init` has succeeded,
    /// [`select`](Balancer::select) is never forwarded to the policy and the
    /// instance answers "no backend".
    fn init(config: &str) -> Result<Self, String>;

    /// Reacts to a new backend set.
    ///
    /// Called after the host replaced the backend set (backends added,
    /// removed, re-weighted or changing health), never per request. `backends`
    /// is the new set, already indexed; it is also what the following
    /// [`select`](Balancer::select) calls receive. Also called right after
    /// `init` if the host sent backends before `init`.
    ///
    /// The default does nothing: policies that read
    /// [`Backends::eligible`] on every `select` need no precomputation.
    fn backends_changed(&mut self, backends: &Backends) {
        let _ = backends;
    }

    /// Chooses the backend for one request.
    ///
    /// Called once per request routed to the upstream. Return the [`id`]
    /// of the chosen backend, or `None` to have weir answer 503. An id the
    /// upstream does not have, a panic, or running past weir's time limit is
    /// contained by weir, which then routes the request with its own round
    /// robin; so keep `select` short and bounded.
    ///
    /// [`id`]: Backend::id
    fn select(&mut self, request: &Request<'_>, backends: &Backends) -> Option<BackendId>;
}

/// Exports a [`Balancer`] implementation as the plugin's `balancer` world.
///
/// Invoke it once per plugin crate, at module level, with the policy type:
///
/// ```
/// # use weir_sdk::{BackendId, Backends, Balancer, Request};
/// # struct MyPolicy;
/// # impl Balancer for MyPolicy {
/// #     fn init(_: &str) -> Result<Self, String> { Ok(MyPolicy) }
/// #     fn select(&mut self, _: &Request<'_>, _: &Backends) -> Option<BackendId> { None }
/// # }
/// weir_sdk::export_balancer!(MyPolicy);
/// # fn main() {}
/// ```
///
/// It implements the generated `policy` interface with a hidden shim that
/// stores the policy and the backend set (see [`Balancer`]) and forwards each
/// call. It compiles for `wasm32-wasip2` and natively, so a plugin crate can
/// run its unit tests with a plain `cargo test`; only the wasm build exports
/// the component's functions.
// rustfmt cannot parse the `with_types_in` call below and mangles it.
#[rustfmt::skip]
#[macro_export]
macro_rules! export_balancer {
    ($policy:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct WeirBalancerExport;

            impl $crate::wit::exports::weir::plugin::policy::Guest for WeirBalancerExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<(), ::std::string::String> {
                    $crate::export::init::<$policy>(&config)
                }

                fn set_backends(backends: ::std::vec::Vec<$crate::export::WitBackend>) {
                    $crate::export::set_backends(backends)
                }

                fn select(
                    request: &$crate::export::WitRequest,
                ) -> ::std::option::Option<$crate::BackendId> {
                    $crate::export::select(request)
                }
            }

            // Only wasm gets the exported symbols: their names (`weir:plugin/
            // policy@0.1.0#select`, ...) break native linker version scripts,
            // and a native build has no host to call them anyway.
            #[cfg(target_arch = "wasm32")]
            $crate::wit::export!(WeirBalancerExport with_types_in $crate::wit);

            // Keeps the shim, and so the policy, in use where nothing is
            // exported (no "never constructed" warnings in native builds).
            #[cfg(not(target_arch = "wasm32"))]
            const _: fn(&str) -> ::std::result::Result<(), ::std::string::String> =
                $crate::export::init::<$policy>;
        };
    };
}
