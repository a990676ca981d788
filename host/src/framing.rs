//! Headers that frame a message or describe one connection: weir owns them.
//!
//! A leaf module, shared by the proxy (which strips the hop-by-hop ones
//! between client and backend) and the plugin runtime (which refuses any
//! plugin change to any of them). hyper trusts a `Content-Length` or
//! `Transfer-Encoding` it is handed, so a plugin able to set one could split
//! a response on a keep-alive connection or desynchronise a pooled backend
//! connection, making another client's request this request's body. The
//! only framing weir sends is the framing it computed itself.

use http::header::{self, HeaderName};

/// Headers that describe one connection, not the message (RFC 9110 7.6.1),
/// and so never cross a proxy. `Transfer-Encoding` is not listed: hyper
/// frames each side's body itself, and [`is_weirs`] covers it.
pub const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::UPGRADE,
];

/// Whether `name` is one of [`HOP_BY_HOP`]: one match on its text (by
/// length first), where comparing it with each listed name costs a
/// comparison apiece. Every request and response head is scanned with it.
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "proxy-authorization"
            | "te"
            | "trailer"
            | "upgrade"
    )
}

/// Whether `text` (any case) names a header of [`HOP_BY_HOP`]: a token of
/// a `Connection` value, read as bytes.
pub fn names_hop_by_hop(text: &[u8]) -> bool {
    HOP_BY_HOP
        .iter()
        .any(|name| name.as_str().as_bytes().eq_ignore_ascii_case(text))
}

/// Whether `name` is a header only weir may set, change or remove: message
/// framing (`Content-Length`, `Transfer-Encoding`) and every hop-by-hop
/// header. A plugin decision touching one is refused whole.
pub fn is_weirs(name: &HeaderName) -> bool {
    *name == header::CONTENT_LENGTH || *name == header::TRANSFER_ENCODING || is_hop_by_hop(name)
}

/// The refusal a plugin gets for touching `name`, for its failure log line.
pub fn refusal(name: &HeaderName) -> String {
    format!("touched header {name}, which frames the message or the connection: only weir sets it")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_match_is_the_list() {
        for name in &HOP_BY_HOP {
            assert!(is_hop_by_hop(name), "{name}");
        }
        let others = [
            "host",
            "content-length",
            "transfer-encoding",
            "t",
            "tee",
            "upgrades",
            "x-te",
        ];
        for name in others.map(HeaderName::from_static) {
            assert!(!is_hop_by_hop(&name), "{name}");
        }
        // Names are lower case once parsed, whatever the client wrote.
        assert!(is_hop_by_hop(
            &HeaderName::from_bytes(b"Keep-Alive").unwrap()
        ));
    }

    #[test]
    fn framing_and_hop_by_hop_are_weirs_and_others_are_not() {
        for name in [
            "content-length",
            "Transfer-Encoding",
            "connection",
            "keep-alive",
            "proxy-connection",
            "te",
            "trailer",
            "upgrade",
            "proxy-authorization",
        ] {
            let name = HeaderName::from_bytes(name.as_bytes()).unwrap();
            assert!(is_weirs(&name), "{name}");
        }
        for name in ["set-cookie", "content-type", "host", "x-request-id"] {
            assert!(!is_weirs(&HeaderName::from_static(name)), "{name}");
        }
    }
}
