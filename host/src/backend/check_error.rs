//! Why an active health check of a backend failed: typed, with the io or
//! hyper error as its source, so the reason a backend went down can be
//! shown whole.

use std::time::Duration;

/// Why one active health check failed.
#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    /// No verdict within the check's timeout.
    #[error("no answer within {0:?}")]
    NoAnswer(Duration),
    /// The TCP connection could not be made.
    #[error("connect")]
    Connect(#[source] std::io::Error),
    /// The TLS handshake failed: its error says why (unknown CA, name
    /// mismatch, expired...). Boxed: backends know nothing of TLS.
    #[error("tls")]
    Tls(#[source] Box<dyn std::error::Error + Send + Sync>),
    /// The HTTP/1.1 handshake failed.
    #[error("handshake")]
    Handshake(#[source] hyper::Error),
    /// The check's request could not be built (a bad `host` or `path`).
    #[error("building the request")]
    Request(#[source] http::Error),
    /// The request was sent but no response came back.
    #[error("request")]
    Send(#[source] hyper::Error),
    /// The response's status is not one the check accepts.
    #[error("status {0}")]
    Status(u16),
    /// The response body does not contain the expected text.
    #[error("body does not contain {0:?}")]
    BodyMismatch(String),
    /// A `grpc` check's `Health/Check` did not answer SERVING: its error
    /// says why. Boxed: backends know nothing of gRPC.
    #[error("grpc health check")]
    Grpc(#[source] Box<dyn std::error::Error + Send + Sync>),
}

impl CheckError {
    /// The reason with its sources, as logs and the admin API show it
    /// (`connect: Connection refused (os error 111)`).
    pub fn describe(&self) -> String {
        crate::error::chain(self).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_reason_carries_its_source() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        let error = CheckError::Connect(refused);
        assert!(std::error::Error::source(&error).is_some());
        assert!(
            error.describe().starts_with("connect: "),
            "{}",
            error.describe()
        );
        assert_eq!(CheckError::Status(503).describe(), "status 503");
    }
}
