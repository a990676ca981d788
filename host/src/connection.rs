//! What weir knows about a client connection: addresses now, TLS facts when
//! a TLS listener accepted it. Built once per connection by the listener's
//! acceptor and lent to every request on it.

use std::net::SocketAddr;
use std::sync::Arc;

use http::uri::Scheme;

/// One accepted client connection, as the request path sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectionInfo {
    /// The client's address (the TCP peer).
    pub client: SocketAddr,
    /// The listener address the client connected to.
    pub local: SocketAddr,
    /// The TLS session's facts; none on a plain listener. Shared with
    /// every request's plugin view of it.
    pub tls: Option<Arc<TlsInfo>>,
}

/// What a TLS handshake settled. Filled by a TLS acceptor; every field is
/// what the client sent or proved, checked by the TLS stack, never trusted
/// further than that.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TlsInfo {
    /// The server name the client asked for (SNI), if it sent one.
    pub server_name: Option<String>,
    /// The protocol ALPN settled on (`h2`, `http/1.1`), if any.
    pub alpn: Option<Vec<u8>>,
    /// The TLS version, for logs (`TLSv1.3`).
    pub version: Option<&'static str>,
    /// The verified client certificate's subject, when the client sent one.
    pub client_subject: Option<String>,
}

/// The HTTP versions a connection may speak, as its acceptor settled them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocols {
    /// HTTP/1.1, or cleartext HTTP/2 told apart by its preface.
    Auto,
    /// HTTP/1.1 only (ALPN `http/1.1`, or a listener that allows no more).
    Http1,
    /// HTTP/2 only (ALPN `h2`).
    Http2,
}

impl ConnectionInfo {
    /// A plain TCP connection from `client` to `local`.
    pub fn plain(client: SocketAddr, local: SocketAddr) -> ConnectionInfo {
        ConnectionInfo {
            client,
            local,
            tls: None,
        }
    }

    /// The scheme the client used: what `X-Forwarded-Proto` says.
    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// Which HTTP versions to serve on this connection: ALPN decides when
    /// TLS negotiated it; otherwise HTTP/1.1 and prior-knowledge HTTP/2 are
    /// both recognised.
    pub fn protocols(&self) -> Protocols {
        match self.tls.as_ref().and_then(|t| t.alpn.as_deref()) {
            Some(b"h2") => Protocols::Http2,
            Some(b"http/1.1") => Protocols::Http1,
            _ => Protocols::Auto,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn info(tls: Option<Arc<TlsInfo>>) -> ConnectionInfo {
        ConnectionInfo {
            tls,
            ..ConnectionInfo::plain(
                "127.0.0.1:5000".parse().unwrap(),
                "127.0.0.1:80".parse().unwrap(),
            )
        }
    }

    #[test]
    fn the_scheme_follows_tls() {
        assert_eq!(info(None).scheme(), Scheme::HTTP);
        assert_eq!(
            info(Some(Arc::new(TlsInfo::default()))).scheme(),
            Scheme::HTTPS
        );
    }

    #[test]
    fn alpn_decides_the_protocols() {
        assert_eq!(info(None).protocols(), Protocols::Auto);
        let alpn = |p: &[u8]| {
            info(Some(Arc::new(TlsInfo {
                alpn: Some(p.to_vec()),
                ..TlsInfo::default()
            })))
            .protocols()
        };
        assert_eq!(alpn(b"h2"), Protocols::Http2);
        assert_eq!(alpn(b"http/1.1"), Protocols::Http1);
        // An unknown token is not trusted to mean either.
        assert_eq!(alpn(b"spdy/3"), Protocols::Auto);
        assert_eq!(
            info(Some(Arc::new(TlsInfo::default()))).protocols(),
            Protocols::Auto
        );
    }
}
