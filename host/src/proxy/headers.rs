//! Header rewriting between client and backend: hop-by-hop removal and the
//! `X-Forwarded-*` family.

use std::net::IpAddr;

use http::header::{self, Entry, HeaderMap, HeaderName, HeaderValue};

use crate::connection::ConnectionInfo;
use crate::framing::{HOP_BY_HOP, is_hop_by_hop, names_hop_by_hop};

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// `Transfer-Encoding` goes too: hyper frames each side's body itself.
///
/// One pass over the head's names finds what there is to remove, so a head
/// without hop-by-hop headers (most requests) costs no lookup, and one with
/// only `Connection: keep-alive` (most responses) costs one removal
/// instead of a lookup for every hop-by-hop name.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let mut connection = false;
    let mut fixed = false;
    for name in headers.keys() {
        if name == header::CONNECTION {
            connection = true;
        } else if name == header::TRANSFER_ENCODING || is_hop_by_hop(name) {
            fixed = true;
        }
    }
    if connection {
        remove_connection_named(headers);
    }
    if fixed {
        for name in HOP_BY_HOP {
            headers.remove(name);
        }
        headers.remove(header::TRANSFER_ENCODING);
    }
}

/// Removes the `Connection` headers and every header they name. A name
/// that is itself hop-by-hop (`keep-alive`, on most responses) is left to
/// the fixed list, which goes whenever one of it is there.
fn remove_connection_named(headers: &mut HeaderMap) {
    // The values are cloned out (a reference count each, no copy) so the
    // names they list can be removed from the same map; a second
    // `Connection` header is rare enough to pay for a vector.
    let mut connection = headers.get_all(header::CONNECTION).iter();
    let first = connection.next().cloned();
    let rest: Vec<HeaderValue> = connection.cloned().collect();
    for value in first.iter().chain(&rest) {
        // Bytes, not text: a value with obs-text still names its other
        // headers (no header name matches a non-ASCII token).
        for token in value.as_bytes().split(|&b| b == b',') {
            let token = token.trim_ascii();
            if token.is_empty() || names_hop_by_hop(token) {
                continue;
            }
            // Looked up by its text (no `HeaderName` is made for it), and
            // only when the head holds it.
            let named = headers
                .keys()
                .find(|k| k.as_str().as_bytes().eq_ignore_ascii_case(token))
                .cloned();
            if let Some(name) = named {
                headers.remove(&name);
            }
        }
    }
    headers.remove(header::CONNECTION);
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
    // One hash of the name for the lookup and the insert.
    match headers.entry(X_FORWARDED_FOR) {
        Entry::Occupied(mut entry) => {
            let previous = entry.get().to_str().ok();
            if let Some(value) = forwarded_for(previous, conn.client.ip()) {
                entry.insert(value);
            }
        }
        Entry::Vacant(entry) => {
            if let Some(value) = forwarded_for(None, conn.client.ip()) {
                entry.insert(value);
            }
        }
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
    // An IPv6 address's longest text is 45 bytes.
    let mut text = [0u8; 48];
    let written = write_ip(&mut text, client)?;
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

/// Writes `ip` as text into `out`, returning its length: an IPv4 address
/// digit by digit (most clients, and `fmt`'s machinery costs ~20 times as
/// much), an IPv6 one through `Display`.
fn write_ip(out: &mut [u8; 48], ip: IpAddr) -> Option<usize> {
    match ip {
        IpAddr::V4(v4) => {
            let mut at = 0;
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    out[at] = b'.';
                    at += 1;
                }
                if octet >= 100 {
                    out[at] = b'0' + octet / 100;
                    at += 1;
                }
                if octet >= 10 {
                    out[at] = b'0' + octet / 10 % 10;
                    at += 1;
                }
                out[at] = b'0' + octet % 10;
                at += 1;
            }
            Some(at)
        }
        IpAddr::V6(v6) => {
            use std::io::Write;
            let mut rest = &mut out[..];
            write!(rest, "{v6}").ok()?;
            Some(48 - rest.len())
        }
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
    fn each_hop_by_hop_header_alone_is_removed() {
        for name in HOP_BY_HOP.iter().chain([&header::TRANSFER_ENCODING]) {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), "x".parse().unwrap());
            h.insert("x-keep", "1".parse().unwrap());
            remove_hop_by_hop(&mut h);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
    }

    #[test]
    fn names_listed_in_any_case_and_in_every_connection_header_go() {
        let mut h = HeaderMap::new();
        h.append(header::CONNECTION, "X-SECRET ,, close".parse().unwrap());
        h.append(header::CONNECTION, "x-other".parse().unwrap());
        h.insert("x-secret", "1".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        h.insert("x-keep", "1".parse().unwrap());
        remove_hop_by_hop(&mut h);
        assert_eq!(h.len(), 1, "{h:?}");
        assert!(h.contains_key("x-keep"));
        // A head without hop-by-hop headers is left as it was.
        let mut plain = HeaderMap::new();
        plain.insert(header::HOST, "a".parse().unwrap());
        plain.insert(header::CONTENT_LENGTH, "3".parse().unwrap());
        let before = plain.clone();
        remove_hop_by_hop(&mut plain);
        assert_eq!(plain, before);
    }

    #[test]
    fn ip_text_is_what_display_writes() {
        let mut out = [0u8; 48];
        let v4 = (0..=255u8).flat_map(|a| [[a, 0, 9, 255], [10, a, 100, 1], [a, a, a, a]]);
        let v4 = v4.map(IpAddr::from);
        let v6 = [
            "::1",
            "2001:db8::8a2e:370:7334",
            "::ffff:1.2.3.4",
            "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
        ];
        for ip in v4.chain(v6.iter().map(|t| t.parse().unwrap())) {
            let n = write_ip(&mut out, ip).unwrap();
            assert_eq!(std::str::from_utf8(&out[..n]).unwrap(), ip.to_string());
        }
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
