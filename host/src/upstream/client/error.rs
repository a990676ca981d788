//! Why a send to a backend failed: typed from hyper's error chain, with the
//! status and client-facing text weir answers with.

use http::StatusCode;

use crate::tls::client::TlsFailure;

/// What a [`SendError`] stands on: hyper's error, the connector's, or
/// another's, with the io error under it.
pub type Cause = Box<dyn std::error::Error + Send + Sync>;

/// Why a request could not be sent to a backend, or its response headers
/// not read. Shows as the client-facing reason; the hyper error (and the io
/// error under it) is the source.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The TCP connect ran past the upstream's `connect_timeout_ms` (504).
    #[error("connecting to the backend timed out")]
    ConnectTimeout(#[source] Cause),
    /// The connection could not be made: refused, unreachable (502).
    #[error("could not connect to the backend")]
    Connect(#[source] Cause),
    /// The connection failed once made: closed, reset, a malformed
    /// response (502).
    #[error("the backend connection failed")]
    Connection(#[source] Cause),
    /// TLS with the backend failed: the certificate was refused, the
    /// handshake failed, or (504) did not finish within the connect timeout.
    #[error("TLS with the backend failed{}", unless_told(.reason, .source))]
    Tls {
        /// Why, in words.
        reason: TlsFailure,
        /// The hyper error, with the handshake's under it.
        #[source]
        source: Cause,
    },
    /// A TLS backend of an `h2` upstream did not choose HTTP/2 in ALPN
    /// (502): it speaks HTTP/1.1 only, or ignores ALPN.
    #[error("the backend did not agree to HTTP/2 (ALPN offered h2, it chose {chose})")]
    NotHttp2 {
        /// What it chose, in words.
        chose: String,
    },
    /// The connection this request waited for failed to be made, for
    /// every request waiting (the same error, shared, not made again).
    #[error(transparent)]
    Waited(std::sync::Arc<SendError>),
}

/// `: {reason}` when no handshake error in `source`'s chain says it (an
/// alert the backend sent after the handshake).
fn unless_told(reason: &TlsFailure, source: &Cause) -> String {
    let source: &(dyn std::error::Error + 'static) = &**source;
    let told = std::iter::successors(Some(source), |e| e.source())
        .any(|e| e.is::<crate::tls::client::HandshakeError>());
    if told {
        String::new()
    } else {
        format!(": {reason}")
    }
}

impl From<super::super::ConnectError> for SendError {
    fn from(error: super::super::ConnectError) -> SendError {
        SendError::classify(Box::new(error), true)
    }
}

impl From<hyper::Error> for SendError {
    fn from(error: hyper::Error) -> SendError {
        SendError::classify(Box::new(error), false)
    }
}

impl SendError {
    /// A failure on an open connection (weir's HTTP/1.1 codec's): a TLS
    /// failure in its chain (an alert after the handshake) is told as one.
    pub(super) fn connection(error: Cause) -> SendError {
        SendError::classify(error, false)
    }

    /// The kind of `error` from its chain: a TLS failure anywhere in it,
    /// else a timeout, else `connect` tells a failed connect from a failed
    /// connection.
    fn classify(error: Cause, connect: bool) -> SendError {
        if let Some(reason) = TlsFailure::find(&*error) {
            return SendError::Tls {
                reason,
                source: error,
            };
        }
        match Failure::of(&*error, connect) {
            Failure::ConnectTimeout => SendError::ConnectTimeout(error),
            Failure::Connect => SendError::Connect(error),
            Failure::Connection => SendError::Connection(error),
        }
    }

    /// The status weir answers with: 504 for a connect (or TLS handshake)
    /// timeout, 502 otherwise.
    pub fn status(&self) -> StatusCode {
        match self {
            SendError::ConnectTimeout(_)
            | SendError::Tls {
                reason: TlsFailure::Timeout(_),
                ..
            } => StatusCode::GATEWAY_TIMEOUT,
            SendError::Connect(_)
            | SendError::Connection(_)
            | SendError::Tls { .. }
            | SendError::NotHttp2 { .. } => StatusCode::BAD_GATEWAY,
            SendError::Waited(first) => first.status(),
        }
    }

    /// The client-facing text of the answer.
    pub fn reason(&self) -> &'static str {
        match self {
            SendError::ConnectTimeout(_) => "connecting to the backend timed out",
            SendError::Connect(_) => "could not connect to the backend",
            SendError::Connection(_) => "the backend connection failed",
            SendError::Tls {
                reason: TlsFailure::Timeout(_),
                ..
            } => "the TLS handshake with the backend timed out",
            SendError::Tls { .. } => "TLS with the backend failed",
            SendError::NotHttp2 { .. } => "the backend does not speak HTTP/2",
            SendError::Waited(first) => first.reason(),
        }
    }
}

/// The kind of a failed send, from its error chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Failure {
    ConnectTimeout,
    Connect,
    Connection,
}

impl Failure {
    /// A timed-out io error anywhere in the chain is a connect timeout
    /// (the connector's own timeout); else `is_connect` tells a connect
    /// failure from a failed connection.
    fn of(error: &(dyn std::error::Error + 'static), is_connect: bool) -> Failure {
        let timed_out = std::iter::successors(Some(error), |e| e.source()).any(|e| {
            e.downcast_ref::<std::io::Error>()
                .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        });
        if timed_out {
            Failure::ConnectTimeout
        } else if is_connect {
            Failure::Connect
        } else {
            Failure::Connection
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("connect")]
    struct Wrapped(#[source] std::io::Error);

    #[test]
    fn a_timed_out_io_error_anywhere_in_the_chain_is_a_connect_timeout() {
        let timed_out = Wrapped(std::io::ErrorKind::TimedOut.into());
        assert_eq!(Failure::of(&timed_out, true), Failure::ConnectTimeout);
        assert_eq!(Failure::of(&timed_out, false), Failure::ConnectTimeout);
        let refused = Wrapped(std::io::ErrorKind::ConnectionRefused.into());
        assert_eq!(Failure::of(&refused, true), Failure::Connect);
        assert_eq!(Failure::of(&refused, false), Failure::Connection);
    }
}
