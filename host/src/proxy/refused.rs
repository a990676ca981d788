//! Requests refused because their head breaks HTTP's rules about the
//! target host (RFC 9112 section 3.2), or because the client broke one of
//! the listener's or route's limits (sizes, timeouts, body framing,
//! connection and HTTP/2 stream floods): counted per reason for `/metrics`
//! (`weir_requests_refused_total{reason}`).

use std::sync::atomic::{AtomicU64, Ordering};

use http::request::Parts;
use http::{StatusCode, Version, header};

/// Why weir refused a request or closed a client connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// HTTP/1.1 with no `Host` header and no absolute-form target (400).
    NoHost,
    /// More than one `Host` header: which one would a backend believe? (400)
    TwoHosts,
    /// A `Host` value that is not a host and optional port (400).
    BadHost,
    /// A request head over the listener's `max_request_head_bytes` (431),
    /// or a request line over 64 KiB (414); answered by the HTTP parser.
    HeadTooLarge,
    /// The request head did not arrive within `header_read_timeout_ms`:
    /// the connection is closed.
    HeaderTimeout,
    /// A keep-alive connection sat idle past `idle_timeout_ms`: closed.
    IdleTimeout,
    /// The request body stopped arriving for `body_read_timeout_ms` (408).
    BodyTimeout,
    /// The request body is over the route's `max_request_body_bytes` (413).
    BodyTooLarge,
    /// The request body's framing is broken: a bad chunk size or chunk
    /// (400).
    BadBody,
    /// The client ended the request body before its end: closed mid-body,
    /// a truncated chunk, an HTTP/2 stream reset (400 if still answerable).
    BodyIncomplete,
    /// A connection over the listener's `max_connections`: closed at
    /// accept.
    MaxConnections,
    /// An HTTP/2 client flooded the connection (rapid resets, too many
    /// refused or reset streams, empty frames): GOAWAY and closed.
    H2Flood,
    /// An HTTP/2 client broke the protocol: GOAWAY and closed.
    H2ProtocolError,
    /// An upgrade request (`Connection: upgrade`) with a body (400): the
    /// bytes after it would belong to the tunnel, a smuggling window.
    UpgradeWithBody,
    /// An upgrade to an upstream that does not speak HTTP/1.1 to its
    /// backends (501): only HTTP/1.1 can switch protocols.
    UpgradeUnsupported,
}

impl Refusal {
    const ALL: [Refusal; 15] = [
        Refusal::NoHost,
        Refusal::TwoHosts,
        Refusal::BadHost,
        Refusal::HeadTooLarge,
        Refusal::HeaderTimeout,
        Refusal::IdleTimeout,
        Refusal::BodyTimeout,
        Refusal::BodyTooLarge,
        Refusal::BadBody,
        Refusal::BodyIncomplete,
        Refusal::MaxConnections,
        Refusal::H2Flood,
        Refusal::H2ProtocolError,
        Refusal::UpgradeWithBody,
        Refusal::UpgradeUnsupported,
    ];

    /// The `reason` label.
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoHost => "missing_host",
            Refusal::TwoHosts => "duplicate_host",
            Refusal::BadHost => "bad_host",
            Refusal::HeadTooLarge => "head_too_large",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::IdleTimeout => "idle_timeout",
            Refusal::BodyTimeout => "body_timeout",
            Refusal::BodyTooLarge => "body_too_large",
            Refusal::BadBody => "bad_body",
            Refusal::BodyIncomplete => "body_incomplete",
            Refusal::MaxConnections => "max_connections",
            Refusal::H2Flood => "h2_flood",
            Refusal::H2ProtocolError => "h2_protocol_error",
            Refusal::UpgradeWithBody => "upgrade_with_body",
            Refusal::UpgradeUnsupported => "upgrade_unsupported",
        }
    }

    /// The client-facing reason.
    pub fn why(self) -> &'static str {
        match self {
            Refusal::NoHost => "an HTTP/1.1 request needs a Host header",
            Refusal::TwoHosts => "a request may carry one Host header",
            Refusal::BadHost => "the Host header is not a valid host",
            Refusal::HeadTooLarge => "the request head is too large",
            Refusal::HeaderTimeout => "the request head did not arrive in time",
            Refusal::IdleTimeout => "the connection was idle too long",
            Refusal::BodyTimeout => "the request body stopped arriving",
            Refusal::BodyTooLarge => "the request body is too large",
            Refusal::BadBody => "the request body's framing is broken",
            Refusal::BodyIncomplete => "the request body ended early",
            Refusal::MaxConnections => "the listener is at its connection limit",
            Refusal::H2Flood => "too many reset or refused HTTP/2 streams",
            Refusal::H2ProtocolError => "an HTTP/2 protocol error",
            Refusal::UpgradeWithBody => "an upgrade request may not carry a body",
            Refusal::UpgradeUnsupported => {
                "this upstream does not speak HTTP/1.1 to its backends, so it cannot switch protocols"
            }
        }
    }

    /// The status weir answers with, when it can still answer.
    pub fn status(self) -> StatusCode {
        match self {
            Refusal::HeadTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Refusal::HeaderTimeout | Refusal::IdleTimeout | Refusal::BodyTimeout => {
                StatusCode::REQUEST_TIMEOUT
            }
            Refusal::BodyTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Refusal::MaxConnections => StatusCode::SERVICE_UNAVAILABLE,
            Refusal::UpgradeUnsupported => StatusCode::NOT_IMPLEMENTED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// Refusals counted by one server, by reason.
#[derive(Debug, Default)]
pub struct RefusedRequests([AtomicU64; Refusal::ALL.len()]);

impl RefusedRequests {
    /// Counts one `refusal`.
    pub fn count(&self, refusal: Refusal) {
        self.0[refusal as usize].fetch_add(1, Ordering::Relaxed);
    }

    /// Counts a request head refused for its size by the HTTP parser.
    pub fn count_head_too_large(&self) {
        self.count(Refusal::HeadTooLarge);
    }

    /// How many of `refusal` were counted.
    pub fn get(&self, refusal: Refusal) -> u64 {
        self.0[refusal as usize].load(Ordering::Relaxed)
    }

    /// Each reason's label with its count, for `/metrics`.
    pub fn by_reason(&self) -> Vec<(&'static str, u64)> {
        Refusal::ALL
            .iter()
            .map(|r| (r.as_str(), self.get(*r)))
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
        Some(value) if plain_host(value.as_bytes()) => Ok(()),
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

/// Whether `host` is a name of letters, digits, dots and hyphens with
/// perhaps a port of digits that fits in 16 bits: what almost every client
/// sends, and valid without `Authority`'s parse (which copies the value
/// first). Anything else takes that parse.
fn plain_host(host: &[u8]) -> bool {
    let (name, port) = match host.iter().position(|&b| b == b':') {
        Some(colon) => (&host[..colon], Some(&host[colon + 1..])),
        None => (host, None),
    };
    let name_ok = !name.is_empty()
        && name
            .iter()
            .all(|&b| b.is_ascii_alphanumeric() || b == b'.' || b == b'-');
    let port_ok = port.is_none_or(|port| {
        (1..=5).contains(&port.len())
            && port.iter().all(u8::is_ascii_digit)
            && std::str::from_utf8(port).is_ok_and(|p| p.parse::<u16>().is_ok())
    });
    name_ok && port_ok
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
    fn the_plain_host_shortcut_agrees_with_the_full_parse() {
        let v11 = Version::HTTP_11;
        let hosts = [
            "a.example",
            "a.example:8080",
            "A-B.example:1",
            "localhost:65535",
            "localhost:65536",
            "a:0",
            "a:",
            ":80",
            "a::80",
            "a:80:80",
            "1.2.3.4",
            "1.2.3.4:99999",
            "a:+80",
            "a:-1",
            "a.example:00080",
            "a.example:123456",
            "a_b",
            "a%20b",
            "[::1]",
            "[::1]:80",
            "a@b",
            "-",
            ".",
            "a..b",
            "xn--bcher-kva.example",
        ];
        for host in hosts {
            let full = match http::uri::Authority::try_from(host.as_bytes()) {
                Ok(a) => {
                    !a.as_str().contains('@') && (a.as_str() == a.host() || a.port_u16().is_some())
                }
                Err(_) => false,
            };
            let checked = check_host(&head(v11, "/", &[host])).is_ok();
            assert_eq!(checked, full, "{host:?}");
            if plain_host(host.as_bytes()) {
                assert!(
                    full,
                    "the shortcut passed {host:?}, which the parse refuses"
                );
            }
        }
    }

    #[test]
    fn refusals_are_counted_by_reason() {
        let counted = RefusedRequests::default();
        counted.count(Refusal::BadHost);
        counted.count(Refusal::BadHost);
        counted.count(Refusal::NoHost);
        assert_eq!(
            counted.by_reason()[..4],
            [
                ("missing_host", 1),
                ("duplicate_host", 0),
                ("bad_host", 2),
                ("head_too_large", 0)
            ]
        );
        // Every reason has its own slot and label.
        let labels: std::collections::HashSet<_> =
            Refusal::ALL.iter().map(|r| r.as_str()).collect();
        assert_eq!(labels.len(), Refusal::ALL.len());
        for (index, refusal) in Refusal::ALL.iter().enumerate() {
            assert_eq!(*refusal as usize, index, "{refusal:?}");
        }
    }
}
