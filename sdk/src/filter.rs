//! Request filters: the [`Filter`] trait, the [`Decision`] it returns, and
//! the state filters share across instances ([`shared`], [`counter`]).
//!
//! A filter sees every request of the routes whose chain names it, before
//! the balancer, and decides: go on (with header changes or a new path), go
//! to another upstream, or answer. Register the type with
//! [`export_filter!`](crate::export_filter).
//!
//! ```
//! use weir_sdk::{Decision, Filter, Request, Response};
//!
//! /// Answers 403 to requests without a `x-tenant` header.
//! struct NeedTenant;
//!
//! impl Filter for NeedTenant {
//!     fn init(_config: &str) -> Result<Self, String> {
//!         Ok(NeedTenant)
//!     }
//!
//!     fn on_request(&mut self, request: &Request<'_>) -> Decision {
//!         match request.header("x-tenant") {
//!             Some(_) => Decision::pass(),
//!             None => Decision::Respond(Response::new(403).text("x-tenant required\n")),
//!         }
//!     }
//! }
//!
//! weir_sdk::export_filter!(NeedTenant);
//! # fn main() {}
//! ```

use std::cell::RefCell;

use crate::Request;
use crate::wit_filter::exports::weir::plugin::http_filter as wit;

/// One change to a set of headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderOp {
    /// Replace every value of the header.
    Set(String, String),
    /// Add a value.
    Append(String, String),
    /// Remove every value.
    Remove(String),
}

/// Changes to the request: headers, and optionally a new path and query.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// Header changes, applied in order.
    pub headers: Vec<HeaderOp>,
    /// A new path and query (`/v2/x?y=1`).
    pub path: Option<String>,
}

impl Changes {
    /// No changes.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets header `name` to `value`, replacing other values.
    pub fn set_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push(HeaderOp::Set(name.into(), value.into()));
        self
    }

    /// Adds a value to header `name`.
    pub fn append_header(mut self, name: &str, value: &str) -> Self {
        self.headers
            .push(HeaderOp::Append(name.into(), value.into()));
        self
    }

    /// Removes header `name`.
    pub fn remove_header(mut self, name: &str) -> Self {
        self.headers.push(HeaderOp::Remove(name.into()));
        self
    }

    /// Rewrites the path and query sent to the backend.
    pub fn path(mut self, path: &str) -> Self {
        self.path = Some(path.into());
        self
    }
}

/// An answer a filter sends instead of passing the request on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// HTTP status, 200 to 599.
    pub status: u16,
    /// Headers.
    pub headers: Vec<(String, String)>,
    /// Body.
    pub body: Vec<u8>,
}

impl Response {
    /// An empty response with `status`.
    pub fn new(status: u16) -> Self {
        Response {
            status,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// A plain-text body (and its content type).
    pub fn text(self, body: &str) -> Self {
        let mut response = self.header("content-type", "text/plain; charset=utf-8");
        response.body = body.as_bytes().to_vec();
        response
    }
}

/// What happens to a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Go on to the next filter, then the balancer, with these changes.
    Continue(Changes),
    /// Skip the rest of the chain and go to another upstream.
    Route {
        /// The upstream's name in weir's config.
        upstream: String,
        /// Changes to make on the way.
        changes: Changes,
    },
    /// Answer the client; the request goes no further.
    Respond(Response),
}

impl Decision {
    /// Go on unchanged.
    pub fn pass() -> Self {
        Decision::Continue(Changes::new())
    }
}

/// A request filter: the one trait a filter plugin implements.
pub trait Filter: 'static {
    /// Creates the filter from its settings in the route's chain, as JSON
    /// text (`{}` when there are none). `Err` rejects the filter; weir logs
    /// the message.
    fn init(config: &str) -> Result<Self, String>
    where
        Self: Sized;

    /// Whether weir should call [`on_response`](Filter::on_response).
    /// Asked once, right after `init`. Default: no.
    fn wants_response(&self) -> bool {
        false
    }

    /// Decides what happens to one request. Keep it short and bounded: a
    /// panic or running past weir's time limit fails the call, and the
    /// route's failure policy decides (skip the filter, or 503).
    fn on_request(&mut self, request: &Request<'_>) -> Decision;

    /// Header changes for the response to a request this filter let pass.
    /// `request` is the request as the chain left it (every filter's
    /// changes applied).
    fn on_response(
        &mut self,
        request: &Request<'_>,
        status: u16,
        headers: &[(String, String)],
    ) -> Vec<HeaderOp> {
        let _ = (request, status, headers);
        Vec::new()
    }
}

/// Integer cells shared by every instance of this plugin in weir (each
/// instance has its own memory, so state that must be common, such as rate
/// limit buckets, lives here). A cell is forgotten `ttl_ms` after its last
/// write.
///
/// weir holds them to limits (see `interface shared` in `wit/filter.wit`):
/// keys of at most 256 bytes, 64 MiB of cells per plugin, 64 writes per
/// call. A refused operation answers as for an absent cell and stores
/// nothing. The writes of a call that fails (a panic, running past the time
/// limit, an answer weir refuses) are taken back.
pub mod shared {
    use crate::wit_filter::weir::plugin::shared as wit;

    /// The value at `key`, if set and not expired.
    pub fn get(key: &str) -> Option<i64> {
        wit::get(key)
    }

    /// Adds `delta` to the value at `key` (absent counts as 0); returns the
    /// new value.
    pub fn add(key: &str, delta: i64, ttl_ms: u32) -> i64 {
        wit::add(key, delta, ttl_ms)
    }

    /// Sets `key` to `new` if it holds `expected` (`None`: absent); true if
    /// it did. Atomic across instances.
    pub fn compare_and_swap(key: &str, expected: Option<i64>, new: i64, ttl_ms: u32) -> bool {
        wit::compare_and_swap(key, expected, new, ttl_ms)
    }
}

/// Adds `delta` to this plugin's counter `name` (letters, digits, `_`),
/// shown in weir's `/metrics` as
/// `weir_plugin_counter_total{plugin="...",name="..."}`.
pub fn counter(name: &str, delta: u64) {
    crate::wit_filter::weir::plugin::metrics::increment(name, delta);
}

thread_local! {
    static FILTER: RefCell<Option<Box<dyn Filter>>> = RefCell::new(None);
}

/// The shim behind [`export_filter!`](crate::export_filter). Not part of the
/// API.
#[doc(hidden)]
pub mod shim {
    use super::*;

    /// The generated request resource, named for the macro's expansion.
    pub type WitRequest = crate::wit::weir::plugin::types::Request;
    /// The generated IP address, named for the macro's expansion.
    pub type WitIpAddress = crate::wit::weir::plugin::types::IpAddress;
    /// Generated types, named for the macro's expansion.
    pub use super::wit::{Decision as WitDecision, HeaderOp as WitHeaderOp, Hooks as WitHooks};

    /// `init`: builds the filter.
    pub fn init<T: Filter>(config: &str) -> Result<WitHooks, String> {
        crate::export::route_panics_to_log();
        let filter = T::init(config)?;
        let hooks = if filter.wants_response() {
            WitHooks::ON_RESPONSE
        } else {
            WitHooks::empty()
        };
        FILTER.with_borrow_mut(|f| *f = Some(Box::new(filter)));
        Ok(hooks)
    }

    /// `on-request`: asks the filter; before a successful `init`, fails the
    /// call (a trap), which weir handles by the route's failure policy.
    pub fn on_request(request: &WitRequest, client: WitIpAddress) -> WitDecision {
        let request = Request::with_client_ip(request, client);
        let decision = FILTER.with_borrow_mut(|f| {
            f.as_mut()
                .map(|f| f.on_request(&request))
                .expect("on-request before a successful init")
        });
        to_wit(decision)
    }

    /// `on-response`: asks the filter for header changes.
    pub fn on_response(
        request: &WitRequest,
        status: u16,
        headers: Vec<(String, String)>,
    ) -> Vec<WitHeaderOp> {
        let request = Request::new(request);
        let ops = FILTER.with_borrow_mut(|f| {
            f.as_mut()
                .map(|f| f.on_response(&request, status, &headers))
        });
        ops.unwrap_or_default().into_iter().map(op_to_wit).collect()
    }

    fn op_to_wit(op: HeaderOp) -> WitHeaderOp {
        match op {
            HeaderOp::Set(k, v) => WitHeaderOp::Set((k, v)),
            HeaderOp::Append(k, v) => WitHeaderOp::Append((k, v)),
            HeaderOp::Remove(k) => WitHeaderOp::Remove(k),
        }
    }

    fn changes_to_wit(changes: Changes) -> wit::RequestChanges {
        wit::RequestChanges {
            headers: changes.headers.into_iter().map(op_to_wit).collect(),
            path: changes.path,
        }
    }

    fn to_wit(decision: Decision) -> WitDecision {
        match decision {
            Decision::Continue(changes) => WitDecision::Continue(changes_to_wit(changes)),
            Decision::Route { upstream, changes } => WitDecision::Route(wit::Reroute {
                upstream,
                changes: changes_to_wit(changes),
            }),
            Decision::Respond(r) => WitDecision::Respond(wit::Response {
                status: r.status,
                headers: r.headers,
                body: r.body,
            }),
        }
    }
}

/// Exports a [`Filter`] implementation as the plugin's `filter` world.
///
/// Invoke it once per plugin crate, at module level, with the filter type.
/// Like [`export_balancer!`](crate::export_balancer), it compiles natively
/// too (without exports), so the crate's unit tests run with `cargo test`.
// rustfmt cannot parse the `with_types_in` call below and mangles it.
#[rustfmt::skip]
#[macro_export]
macro_rules! export_filter {
    ($filter:ty) => {
        #[allow(unsafe_code)]
        const _: () = {
            struct WeirFilterExport;

            impl $crate::wit_filter::exports::weir::plugin::http_filter::Guest for WeirFilterExport {
                fn init(
                    config: ::std::string::String,
                ) -> ::std::result::Result<$crate::filter::shim::WitHooks, ::std::string::String> {
                    $crate::filter::shim::init::<$filter>(&config)
                }

                fn on_request(
                    request: &$crate::filter::shim::WitRequest,
                    client: $crate::filter::shim::WitIpAddress,
                ) -> $crate::filter::shim::WitDecision {
                    $crate::filter::shim::on_request(request, client)
                }

                fn on_response(
                    request: &$crate::filter::shim::WitRequest,
                    status: u16,
                    headers: ::std::vec::Vec<(::std::string::String, ::std::string::String)>,
                ) -> ::std::vec::Vec<$crate::filter::shim::WitHeaderOp> {
                    $crate::filter::shim::on_response(request, status, headers)
                }
            }

            #[cfg(target_arch = "wasm32")]
            $crate::wit_filter::export_filter_world!(WeirFilterExport with_types_in $crate::wit_filter);

            #[cfg(not(target_arch = "wasm32"))]
            const _: fn(&str) -> ::std::result::Result<$crate::filter::shim::WitHooks, ::std::string::String> =
                $crate::filter::shim::init::<$filter>;
        };
    };
}
