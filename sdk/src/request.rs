//! The request being routed.

use crate::wit::weir::plugin::types as wit;

/// A read-only view of the request being routed, valid for one
/// [`Balancer::select`](crate::Balancer::select) call.
///
/// Nothing is copied up front: every accessor is one call into weir that
/// copies only what it returns, so a policy pays only for what it reads. Call
/// each accessor at most once per request and keep the result if you need it
/// again.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    inner: &'a wit::Request,
    /// The client's IP when the host passed it with the call.
    client_ip: Option<wit::IpAddress>,
}

/// What the TLS handshake of the client's connection settled, checked by
/// weir's TLS stack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsSession {
    /// `TLSv1.2` or `TLSv1.3`.
    pub version: String,
    /// The server name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
    /// The ALPN protocol settled on (`h2`, `http/1.1`), if any.
    pub alpn: Option<String>,
    /// The verified client certificate's subject (`CN=alice, O=Example`),
    /// when the client presented one.
    pub client_subject: Option<String>,
}

impl<'a> Request<'a> {
    pub(crate) fn new(inner: &'a wit::Request) -> Self {
        Self {
            inner,
            client_ip: None,
        }
    }

    /// A request whose client IP came with the call (filters).
    pub(crate) fn with_client_ip(inner: &'a wit::Request, client_ip: wit::IpAddress) -> Self {
        Self {
            inner,
            client_ip: Some(client_ip),
        }
    }

    /// The method, upper case as sent: `GET`, `POST`, ... One host call.
    pub fn method(&self) -> String {
        self.inner.method()
    }

    /// The path and query, as sent: `/users/7?verbose=1`. One host call.
    pub fn path(&self) -> String {
        self.inner.path()
    }

    /// The authority: the `Host` header for HTTP/1.1, `:authority` for
    /// HTTP/2; `None` when the client sent neither. One host call.
    pub fn authority(&self) -> Option<String> {
        self.inner.authority()
    }

    /// The first value of header `name` (matched case-insensitively); `None`
    /// when absent or not valid UTF-8. One host call.
    pub fn header(&self, name: &str) -> Option<String> {
        self.inner.header(name)
    }

    /// The client's address as `ip:port` (IPv6 in brackets). One host call.
    pub fn client_addr(&self) -> String {
        self.inner.client_addr()
    }

    /// The TLS session the request came over; `None` for plain HTTP. One
    /// host call.
    pub fn tls(&self) -> Option<TlsSession> {
        self.inner.tls().map(|t| TlsSession {
            version: t.version,
            server_name: t.server_name,
            alpn: t.alpn,
            client_subject: t.client_subject,
        })
    }

    /// The value of cookie `name` from the `Cookie` header (see
    /// [`cookie_value`]). One host call.
    pub fn cookie(&self, name: &str) -> Option<String> {
        cookie_value(&self.header("cookie")?, name).map(str::to_string)
    }

    /// The client's IP address (an IPv4-mapped IPv6 peer as IPv4). In a
    /// filter it came with the call: free. In a balancer, one host call that
    /// copies no string: cheaper than [`client_addr`](Request::client_addr)
    /// when only the address matters.
    pub fn client_ip(&self) -> std::net::IpAddr {
        match self.client_ip.unwrap_or_else(|| self.inner.client_ip()) {
            wit::IpAddress::V4((a, b, c, d)) => std::net::Ipv4Addr::new(a, b, c, d).into(),
            wit::IpAddress::V6((a, b, c, d, e, f, g, h)) => {
                std::net::Ipv6Addr::new(a, b, c, d, e, f, g, h).into()
            }
        }
    }
}

/// The value of cookie `name` in a `Cookie` header (`a=1; b=2`), matched
/// exactly (cookie names are case-sensitive); the first if repeated.
pub fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header
        .split(';')
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| key.trim() == name)
        .map(|(_, value)| value.trim())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_values_parse() {
        let header = "session=abc123; lang=en;theme=dark ; empty=";
        assert_eq!(cookie_value(header, "session"), Some("abc123"));
        assert_eq!(cookie_value(header, "lang"), Some("en"));
        assert_eq!(cookie_value(header, "theme"), Some("dark"));
        assert_eq!(cookie_value(header, "empty"), Some(""));
        assert_eq!(cookie_value(header, "Session"), None);
        assert_eq!(cookie_value(header, "sess"), None);
        assert_eq!(cookie_value("", "session"), None);
        assert_eq!(cookie_value("a=1; a=2", "a"), Some("1"));
    }
}
