//! The host a request asks for, as the phases, the router and the access
//! log read it. A leaf of the proxy.

use http::HeaderValue;
use http::request::Parts;

/// The host the client asked for: `:authority` (HTTP/2, absolute-form) or
/// the `Host` header, held as the request's own bytes (a shared clone, not
/// a copy: the request allocates nothing for it).
#[derive(Clone, Debug, Default)]
pub(crate) struct RequestHost(Option<HostBytes>);

#[derive(Clone, Debug)]
enum HostBytes {
    Authority(http::uri::Authority),
    /// A `Host` value that is visible ASCII (checked when it is taken).
    Header(HeaderValue),
}

impl RequestHost {
    /// The host `parts` asks for, if any (a `Host` value that is not
    /// visible ASCII counts as none).
    pub(crate) fn of(parts: &Parts) -> RequestHost {
        if let Some(authority) = parts.uri.authority() {
            return RequestHost(Some(HostBytes::Authority(authority.clone())));
        }
        let header = parts.headers.get(http::header::HOST);
        RequestHost(
            header
                .filter(|value| value.to_str().is_ok())
                .map(|value| HostBytes::Header(value.clone())),
        )
    }

    /// The host as text.
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self.0.as_ref()? {
            HostBytes::Authority(authority) => Some(authority.as_str()),
            HostBytes::Header(value) => value.to_str().ok(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(request: http::request::Builder) -> Parts {
        request.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_host_is_the_authority_first_then_a_readable_host_header() {
        let absolute =
            parts(http::Request::get("http://a.example:81/x").header("host", "b.example"));
        assert_eq!(RequestHost::of(&absolute).as_str(), Some("a.example:81"));
        let origin = parts(http::Request::get("/x").header("host", "b.example"));
        assert_eq!(RequestHost::of(&origin).as_str(), Some("b.example"));
        let unreadable = parts(http::Request::get("/x").header("host", &b"caf\xc3\xa9"[..]));
        assert_eq!(RequestHost::of(&unreadable).as_str(), None);
        assert_eq!(
            RequestHost::of(&parts(http::Request::get("/x"))).as_str(),
            None
        );
    }
}
