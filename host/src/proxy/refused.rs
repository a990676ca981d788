//! Requests refused before routing because their head breaks HTTP's rules
//! about the target host (RFC 9112 section 3.2) or the listener's size
//! limit: counted per reason for `/metrics`
//! (`weir_requests_refused_total{reason}`).

use std::sync::atomic::{AtomicU64, Ordering};

use http::request::Parts;
use http::{Version, header};

/// Why a request was refused before routing (each a 400).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// HTTP/1.1 with no `Host` header and no absolute-form target.
    NoHost,
    /// More than one `Host` header: which one would a backend believe?
    TwoHosts,
    /// A `Host` value that is not a host and optional port.
    BadHost,
    /// A request head over the listener's `max_request_head_bytes` (431),
    /// or a request line over 64 KiB (414); answered by the HTTP parser.
    HeadTooLarge,
}

impl Refusal {
    const ALL: [Refusal; 4] = [
        Refusal::NoHost,
        Refusal::TwoHosts,
        Refusal::BadHost,
        Refusal::HeadTooLarge,
    ];

    /// The `reason` label.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Refusal::NoHost => "missing_host",
            Refusal::TwoHosts => "duplicate_host",
            Refusal::BadHost => "bad_host",
            Refusal::HeadTooLarge => "head_too_large",
        }
    }

    /// The client-facing reason.
    pub(crate) fn why(self) -> &'static str {
        match self {
            Refusal::NoHost => "an HTTP/1.1 request needs a Host header",
            Refusal::TwoHosts => "a request may carry one Host header",
            Refusal::BadHost => "the Host header is not a valid host",
            Refusal::HeadTooLarge => "the request head is too large",
        }
    }
}

/// Refusals counted by one server, by reason.
#[derive(Debug, Default)]
pub struct RefusedRequests([AtomicU64; 4]);

impl RefusedRequests {
    pub(crate) fn count(&self, refusal: Refusal) {
        self.0[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request head refused for its size by the HTTP parser.
    pub fn count_head_too_large(&self) {
        self.count(Refusal::HeadTooLarge);
    }

    /// Each reason's label with its count, for `/metrics`.
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .map(|r| (r.as_str(), self.0[*r as usize].load(Ordering::Relaxed)))
            .collect()
    }
}

/// Checks the request's host: RFC 9112 section 3.2 asks a server to answer
/// 400 to an HTTP/1.1 request without `Host`, with more than one, or with
/// an invalid one. An absolute-form target carries its own authority (and
/// the `Host` header is then ignored); HTTP/2 carries `:authority`.
pub(crate) fn check_host(parts: &Parts) -> Result<(), Refusal> {
    let mut hosts = parts.headers.get_all(header::HOST).iter();
    let first = hosts.next();
    if hosts.next().is_some() {
        return Err(Refusal::TwoHosts);
    }
    if parts.uri.authority().is_some() {
        return Ok(());
    }
    match first {
        None if parts.version == Version::HTTP_11 => Err(Refusal::NoHost),
        None => Ok(()),
        Some(value) => match http::uri::Authority::try_from(value.as_bytes()) {
            // userinfo is not part of a Host value; a port is digits.
            Ok(authority)
                if !authority.as_str().contains('@')
                    && (authority.as_str() == authority.host()
                        || authority.port_u16().is_some()) =>
            {
                Ok(())
            }
            _ => Err(Refusal::BadHost),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(version: Version, uri: &str, hosts: &[&str]) -> Parts {
        let mut parts = http::Request::new(()).into_parts().0;
        parts.version = version;
        parts.uri = uri.parse().unwrap();
        for host in hosts {
            parts.headers.append(header::HOST, host.parse().unwrap());
        }
        parts
    }

    #[test]
    fn host_rules_of_rfc_9112() {
        let v11 = Version::HTTP_11;
        assert_eq!(check_host(&head(v11, "/", &["a.example"])), Ok(()));
        assert_eq!(check_host(&head(v11, "/", &["a.example:8080"])), Ok(()));
        assert_eq!(check_host(&head(v11, "/", &["[::1]:80"])), Ok(()));
        assert_eq!(check_host(&head(v11, "/", &[])), Err(Refusal::NoHost));
        // HTTP/1.0 may leave it out.
        assert_eq!(check_host(&head(Version::HTTP_10, "/", &[])), Ok(()));
        // Absolute form carries the authority itself.
        assert_eq!(check_host(&head(v11, "http://a.example/", &[])), Ok(()));
        let two = head(v11, "/", &["a.example", "b.example"]);
        assert_eq!(check_host(&two), Err(Refusal::TwoHosts));
        let two = head(v11, "http://a.example/", &["a.example", "b.example"]);
        assert_eq!(check_host(&two), Err(Refusal::TwoHosts));
        for bad in ["a b", "a/b", "user@a.example", "a.example:port", ""] {
            let parts = head(v11, "/", &[bad]);
            assert_eq!(check_host(&parts), Err(Refusal::BadHost), "{bad:?}");
        }
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let counted = RefusedRequests::default();
        counted.count(Refusal::BadHost);
        counted.count(Refusal::BadHost);
        counted.count(Refusal::NoHost);
        assert_eq!(
            counted.by_reason(),
            [
                ("missing_host", 1),
                ("duplicate_host", 0),
                ("bad_host", 2),
                ("head_too_large", 0)
            ]
        );
    }
}
