//! The request as a policy or filter sees it: method, target, headers and
//! client, lent for one call (moved, not copied) and given back. A leaf of
//! the crate, shared by plugins, policies and the proxy.

use std::net::SocketAddr;
use std::sync::Arc;

use http::{HeaderMap, Method, Uri};

use crate::connection::TlsInfo;

/// The parts of the request a policy or plugin may read, moved into a
/// plugin's store for the duration of one call (moved, not copied) and
/// moved back after.
pub struct RequestView {
    /// The request method.
    pub method: Method,
    /// The request target (with authority for HTTP/2 clients).
    pub uri: Uri,
    /// The request headers.
    pub headers: HeaderMap,
    /// The client's address.
    pub client: SocketAddr,
    /// The client connection's TLS session, if it has one.
    pub tls: Option<Arc<TlsInfo>>,
    /// Headers the balancer asked to add to the response (`response-headers`).
    pub response_headers: Vec<(http::HeaderName, http::HeaderValue)>,
}

impl RequestView {
    /// An empty view from the same client, left in the caller's hands while
    /// the real one is lent to a store. Allocates nothing.
    pub fn placeholder(&self) -> RequestView {
        RequestView {
            method: Method::GET,
            uri: Uri::default(),
            headers: HeaderMap::new(),
            client: self.client,
            tls: None,
            response_headers: Vec::new(),
        }
    }
}
