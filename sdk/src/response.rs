//! Headers a policy adds to the client's response: what affinity needs.

/// Adds a header to the response the client gets for the request being
/// routed (for example a `set-cookie` naming the chosen backend). Only
/// meaningful inside [`Balancer::select`](crate::Balancer::select); weir
/// ignores an invalid header, and headers past the eighth, and drops them
/// all if the request is retried on another backend. One host call.
pub fn add_header(name: &str, value: &str) {
    crate::wit::weir::plugin::response_headers::add(name, value);
}
