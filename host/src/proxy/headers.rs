//! Header rewriting between client and backend: hop-by-hop removal and the
//! `X-Forwarded-*` family.

use std::net::IpAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::connection::ConnectionInfo;
use crate::framing::HOP_BY_HOP;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// `Transfer-Encoding` goes too: hyper frames each side's body itself.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    // The values are cloned out (a reference count each, no copy) so the
    // names they list can be removed from the same map; a second
    // `Connection` header is rare enough to pay for a vector.
    let mut connection = headers.get_all(header::CONNECTION).iter();
    let first = connection.next().cloned();
    let rest: Vec<HeaderValue> = connection.cloned().collect();
    for value in first.iter().chain(&rest) {
        let Ok(value) = value.to_str() else { continue };
        for name in value.split(',').map(str::trim) {
            // Looked up by its text: no `HeaderName` is made for it.
            if !name.is_empty() {
                headers.remove(name);
            }
        }
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::TRANSFER_ENCODING);
}

/// Whether the client's `TE` says it accepts trailers (`TE: trailers`, as
/// gRPC clients send), which an HTTP/2 backend is told again.
pub(crate) fn accepts_trailers(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| {
            t.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .eq_ignore_ascii_case("trailers")
        })
}

/// Sets the `X-Forwarded-*` headers for a request on `conn` that asked for
/// `host`: `For` gains the client's address, `Proto` and `Host` say what
/// the client used.
pub(crate) fn set_forwarded(headers: &mut HeaderMap, conn: &ConnectionInfo, host: Option<&str>) {
    let previous = headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok());
    if let Some(value) = forwarded_for(previous, conn.client.ip()) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto = HeaderValue::from_static(if conn.tls.is_some() { "https" } else { "http" });
    headers.insert(X_FORWARDED_PROTO, proto);
    // The `Host` header's own value when it is what the client asked for
    // (a reference count, no copy), else the host's text.
    let forwarded_host = host.and_then(|host| match headers.get(header::HOST) {
        Some(value) if value.as_bytes() == host.as_bytes() => Some(value.clone()),
        _ => HeaderValue::from_str(host).ok(),
    });
    match forwarded_host {
        Some(value) => {
            headers.insert(X_FORWARDED_HOST, value);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

/// `X-Forwarded-For` with `client` appended to `previous` (a proxy before
/// weir's list), or `client` alone; the address is written on the stack,
/// so the value is the only allocation.
fn forwarded_for(previous: Option<&str>, client: IpAddr) -> Option<HeaderValue> {
    use std::io::Write;
    // An IPv6 address's longest text is 45 bytes.
    let mut text = [0u8; 48];
    let mut rest = &mut text[..];
    write!(rest, "{client}").ok()?;
    let written = 48 - rest.len();
    let ip = &text[..written];
    match previous.filter(|p| !p.trim().is_empty()) {
        Some(previous) => {
            let mut value = Vec::with_capacity(previous.len() + 2 + ip.len());
            value.extend_from_slice(previous.as_bytes());
            value.extend_from_slice(b", ");
            value.extend_from_slice(ip);
            HeaderValue::from_maybe_shared(bytes::Bytes::from(value)).ok()
        }
        None => HeaderValue::from_bytes(ip).ok(),
    }
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use super::*;

    #[test]
    fn removes_fixed_and_connection_named_headers() {
        let mut h = HeaderMap::new();
        h.insert(header::CONNECTION, "keep-alive, X-Secret".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("keep-alive", "timeout=5".parse().unwrap());
        h.insert(header::TRANSFER_ENCODING, "chunked".parse().unwrap());
        h.insert(header::UPGRADE, "websocket".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
    }

    #[test]
    fn te_trailers_is_found_among_other_codings() {
        let mut h = HeaderMap::new();
        assert!(!accepts_trailers(&h));
        h.insert(header::TE, "gzip;q=0.5, Trailers".parse().unwrap());
        assert!(accepts_trailers(&h));
        h.insert(header::TE, "gzip, trailersx".parse().unwrap());
        assert!(!accepts_trailers(&h));
    }

    #[test]
    fn forwarded_for_appends_and_host_is_set() {
        let mut h = HeaderMap::new();
        h.insert(X_FORWARDED_FOR, "10.0.0.1".parse().unwrap());
        let conn =
            ConnectionInfo::plain("[::1]:5000".parse().unwrap(), "[::1]:80".parse().unwrap());
        set_forwarded(&mut h, &conn, Some("example.com"));
        assert_eq!(h[&X_FORWARDED_FOR], "10.0.0.1, ::1");
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        set_forwarded(&mut h, &conn, None);
        assert!(!h.contains_key(&X_FORWARDED_HOST));
    }

    #[test]
    fn forwarded_proto_comes_from_the_connection() {
        let mut h = HeaderMap::new();
        // A client's own claim is replaced, never passed on.
        h.insert(X_FORWARDED_PROTO, "https".parse().unwrap());
        let plain = ConnectionInfo::plain(
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        set_forwarded(&mut h, &plain, None);
        assert_eq!(h[&X_FORWARDED_PROTO], "http");
        let tls = ConnectionInfo {
            tls: Some(std::sync::Arc::new(crate::connection::TlsInfo::default())),
            ..plain
        };
        set_forwarded(&mut h, &tls, None);
        assert_eq!(h[&X_FORWARDED_PROTO], "https");
    }

    #[test]
    fn every_connection_header_counts_and_odd_names_are_harmless() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "x-one".parse().unwrap());
        h.append(
            header::CONNECTION,
            " , x-two ,, not a name, (bad)".parse().unwrap(),
        );
        h.insert("x-one", "1".parse().unwrap());
        h.insert("x-two", "2".parse().unwrap());
        h.insert("x-three", "3".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-three"));
    }

    #[test]
    fn forwarded_for_takes_the_longest_address_and_ignores_an_unreadable_previous() {
        let client: SocketAddr = "[ffff:ffff:ffff:ffff:ffff:ffff:255.255.255.255]:1"
            .parse()
            .unwrap();
        let conn = ConnectionInfo::plain(client, "[::1]:80".parse().unwrap());
        let mut h = HeaderMap::new();
        set_forwarded(&mut h, &conn, None);
        assert_eq!(h[&X_FORWARDED_FOR], client.ip().to_string().as_str());
        for unreadable in [&b"  "[..], b"caf\xc3\xa9"] {
            h.insert(
                X_FORWARDED_FOR,
                HeaderValue::from_bytes(unreadable).unwrap(),
            );
            set_forwarded(&mut h, &conn, None);
            assert_eq!(h[&X_FORWARDED_FOR], client.ip().to_string().as_str());
        }
    }

    #[test]
    fn forwarded_host_is_the_host_asked_for_whatever_the_host_header_says() {
        let conn = ConnectionInfo::plain(
            "127.0.0.1:5000".parse().unwrap(),
            "127.0.0.1:80".parse().unwrap(),
        );
        let mut h = HeaderMap::new();
        h.insert(header::HOST, "example.com".parse().unwrap());
        set_forwarded(&mut h, &conn, Some("example.com"));
        assert_eq!(h[&X_FORWARDED_HOST], "example.com");
        set_forwarded(&mut h, &conn, Some("other.example"));
        assert_eq!(h[&X_FORWARDED_HOST], "other.example");
    }
}
