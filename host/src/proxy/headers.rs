//! Header rewriting between client and backend: hop-by-hop removal and the
//! `X-Forwarded-*` family.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::connection::ConnectionInfo;
use crate::framing::HOP_BY_HOP;

const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
const X_FORWARDED_PROTO: HeaderName = HeaderName::from_static("x-forwarded-proto");
const X_FORWARDED_HOST: HeaderName = HeaderName::from_static("x-forwarded-host");

/// Removes hop-by-hop headers, including any the `Connection` header names.
/// `Transfer-Encoding` goes too: hyper frames each side's body itself.
pub(crate) fn remove_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
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
    let client_ip = conn.client.ip().to_string();
    let forwarded_for = match headers.get(&X_FORWARDED_FOR).and_then(|v| v.to_str().ok()) {
        Some(previous) if !previous.trim().is_empty() => format!("{previous}, {client_ip}"),
        _ => client_ip,
    };
    if let Ok(value) = HeaderValue::from_str(&forwarded_for) {
        headers.insert(X_FORWARDED_FOR, value);
    }
    let proto = HeaderValue::from_static(if conn.tls.is_some() { "https" } else { "http" });
    headers.insert(X_FORWARDED_PROTO, proto);
    match host.and_then(|h| HeaderValue::from_str(h).ok()) {
        Some(value) => {
            headers.insert(X_FORWARDED_HOST, value);
        }
        None => {
            headers.remove(X_FORWARDED_HOST);
        }
    }
}

#[cfg(test)]
mod tests {
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
}
