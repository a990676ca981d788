//! Why TLS to a backend failed, read off the rustls or io error: a reason
//! in plain words for logs and a label for `/metrics`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::pki_types::{ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError};

use super::HandshakeError;
use crate::date::rfc3339 as date_text;

/// Why TLS to a backend failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlsFailure {
    /// The certificate is not for the name weir verifies.
    #[error("the backend's certificate is not valid for {expected}{}", presented_names(.presented))]
    NameMismatch {
        /// The name verified (`server_name`, or the backend's address).
        expected: String,
        /// The names the certificate has, when rustls said.
        presented: Vec<String>,
    },
    /// The chain does not lead to a trusted CA.
    #[error(
        "the backend's certificate is signed by an unknown CA (not in ca_file or the system roots)"
    )]
    UnknownCa,
    /// Past its `not_after`.
    #[error("the backend's certificate expired{}", on_date(" on ", .not_after))]
    Expired {
        /// When, if rustls said.
        not_after: Option<SystemTime>,
    },
    /// Before its `not_before`.
    #[error("the backend's certificate is not valid yet{}", on_date(" (valid from ", .not_before).replace_end())]
    NotYetValid {
        /// From when, if rustls said.
        not_before: Option<SystemTime>,
    },
    /// Refused for another reason (revoked, bad signature, wrong purpose).
    #[error("the backend's certificate was refused: {0}")]
    BadCertificate(String),
    /// The backend refused weir's client certificate, or wanted one.
    #[error("the backend refused weir's client certificate, or wants one ({0} alert)")]
    ClientCertificateRefused(String),
    /// No version or cipher suite in common, or another handshake error.
    #[error("the TLS handshake failed: {0}")]
    Handshake(String),
    /// The backend answered with something that is not TLS.
    #[error("the backend did not answer with TLS (malformed handshake: {0})")]
    NotTls(String),
    /// The backend hung up during the handshake.
    #[error("the backend closed the connection during the TLS handshake")]
    Closed,
    /// The handshake did not finish within the connect timeout.
    #[error("the TLS handshake did not finish within {0:?}")]
    Timeout(Duration),
}

fn presented_names(names: &[String]) -> String {
    if names.is_empty() {
        String::new()
    } else {
        format!(" (it is for {})", names.join(", "))
    }
}

/// `{lead}{date}` for a known date; empty otherwise.
fn on_date(lead: &str, date: &Option<SystemTime>) -> DateText {
    DateText(date.map(|d| format!("{lead}{}", date_text(d))))
}

/// A date phrase, closed with `)` when it opened one.
struct DateText(Option<String>);

impl DateText {
    fn replace_end(self) -> DateText {
        DateText(self.0.map(|t| t + ")"))
    }
}

impl std::fmt::Display for DateText {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0.as_deref().unwrap_or(""))
    }
}

fn system_time(t: UnixTime) -> SystemTime {
    UNIX_EPOCH + Duration::from_secs(t.as_secs())
}

/// `backend.test` out of webpki's `DnsName("backend.test")`, `10.0.0.1`
/// out of `IpAddress(10.0.0.1)`; anything else as it is.
fn bare_name(presented: &str) -> String {
    let bare = (presented.strip_prefix("DnsName(\""))
        .and_then(|n| n.strip_suffix("\")"))
        .or_else(|| presented.strip_prefix("IpAddress(")?.strip_suffix(')'));
    bare.unwrap_or(presented).to_string()
}

fn name_text(name: &ServerName<'_>) -> String {
    match name {
        ServerName::DnsName(dns) => dns.as_ref().to_string(),
        ServerName::IpAddress(ip) => std::net::IpAddr::from(*ip).to_string(),
        other => format!("{other:?}"),
    }
}

impl TlsFailure {
    /// Every label [`TlsFailure::label`] gives, in the order of
    /// [`TlsFailure::index`].
    pub const LABELS: [&'static str; 10] = [
        "name_mismatch",
        "unknown_ca",
        "expired",
        "not_yet_valid",
        "bad_certificate",
        "client_certificate_refused",
        "handshake",
        "not_tls",
        "closed",
        "timeout",
    ];

    /// The position of this failure's label in [`TlsFailure::LABELS`].
    pub fn index(&self) -> usize {
        match self {
            TlsFailure::NameMismatch { .. } => 0,
            TlsFailure::UnknownCa => 1,
            TlsFailure::Expired { .. } => 2,
            TlsFailure::NotYetValid { .. } => 3,
            TlsFailure::BadCertificate(_) => 4,
            TlsFailure::ClientCertificateRefused(_) => 5,
            TlsFailure::Handshake(_) => 6,
            TlsFailure::NotTls(_) => 7,
            TlsFailure::Closed => 8,
            TlsFailure::Timeout(_) => 9,
        }
    }

    /// The `reason` label of `weir_upstream_tls_failures_total`.
    pub fn label(&self) -> &'static str {
        TlsFailure::LABELS[self.index()]
    }

    /// Why a handshake returned `error`.
    pub fn of_io(error: &std::io::Error) -> TlsFailure {
        use std::io::ErrorKind;
        if let Some(tls) = error
            .get_ref()
            .and_then(|e| e.downcast_ref::<rustls::Error>())
        {
            return TlsFailure::of_rustls(tls);
        }
        match error.kind() {
            ErrorKind::UnexpectedEof
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::BrokenPipe => TlsFailure::Closed,
            _ => TlsFailure::Handshake(error.to_string()),
        }
    }

    /// Why rustls refused the connection.
    pub fn of_rustls(error: &rustls::Error) -> TlsFailure {
        use rustls::Error as E;
        match error {
            E::InvalidCertificate(cert) => TlsFailure::of_certificate(cert),
            E::AlertReceived(alert) => TlsFailure::of_alert(*alert),
            E::InvalidMessage(_)
            | E::InappropriateMessage { .. }
            | E::InappropriateHandshakeMessage { .. } => TlsFailure::NotTls(error.to_string()),
            E::PeerIncompatible(why) => TlsFailure::Handshake(format!(
                "no TLS version or cipher suite in common ({why:?})"
            )),
            other => TlsFailure::Handshake(other.to_string()),
        }
    }

    fn of_certificate(error: &CertificateError) -> TlsFailure {
        use CertificateError as C;
        match error {
            C::NotValidForName => TlsFailure::NameMismatch {
                expected: "the name verified".into(),
                presented: vec![],
            },
            C::NotValidForNameContext {
                expected,
                presented,
            } => TlsFailure::NameMismatch {
                expected: name_text(expected),
                presented: presented.iter().map(|n| bare_name(n)).collect(),
            },
            C::UnknownIssuer => TlsFailure::UnknownCa,
            C::Expired => TlsFailure::Expired { not_after: None },
            C::ExpiredContext { not_after, .. } => TlsFailure::Expired {
                not_after: Some(system_time(*not_after)),
            },
            C::NotValidYet => TlsFailure::NotYetValid { not_before: None },
            C::NotValidYetContext { not_before, .. } => TlsFailure::NotYetValid {
                not_before: Some(system_time(*not_before)),
            },
            other => TlsFailure::BadCertificate(format!("{other:?}")),
        }
    }

    fn of_alert(alert: AlertDescription) -> TlsFailure {
        use AlertDescription as A;
        match alert {
            A::CertificateRequired
            | A::BadCertificate
            | A::UnknownCA
            | A::AccessDenied
            | A::CertificateUnknown
            | A::UnsupportedCertificate
            | A::CertificateRevoked
            | A::CertificateExpired => TlsFailure::ClientCertificateRefused(format!("{alert:?}")),
            A::ProtocolVersion => TlsFailure::Handshake(
                "the backend speaks none of the TLS versions weir offers (protocol_version alert)"
                    .into(),
            ),
            A::HandshakeFailure | A::InsufficientSecurity => TlsFailure::Handshake(format!(
                "no cipher suite or TLS version in common ({alert:?} alert)"
            )),
            other => TlsFailure::Handshake(format!("the backend sent a {other:?} alert")),
        }
    }

    /// The TLS failure somewhere in `error`'s chain: a [`HandshakeError`],
    /// or an io error carrying a rustls error (an alert after the
    /// handshake, as a TLS 1.3 server refusing a client certificate sends).
    pub fn find(error: &(dyn std::error::Error + 'static)) -> Option<TlsFailure> {
        std::iter::successors(Some(error), |e| e.source()).find_map(|e| {
            if let Some(handshake) = e.downcast_ref::<HandshakeError>() {
                return Some(handshake.reason.clone());
            }
            let io = e.downcast_ref::<std::io::Error>()?;
            let tls = io.get_ref()?.downcast_ref::<rustls::Error>()?;
            Some(TlsFailure::of_rustls(tls))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls::pki_types::UnixTime;

    #[test]
    fn certificate_errors_read_in_plain_words() {
        let ip = ServerName::from(std::net::IpAddr::from([10, 0, 0, 1]));
        let cases = [
            (
                CertificateError::NotValidForNameContext {
                    expected: ip,
                    presented: vec!["DnsName(\"a.test\")".into(), "IpAddress(10.0.0.2)".into()],
                },
                "name_mismatch",
                "not valid for 10.0.0.1 (it is for a.test, 10.0.0.2)",
            ),
            (CertificateError::UnknownIssuer, "unknown_ca", "unknown CA"),
            (
                CertificateError::ExpiredContext {
                    time: UnixTime::since_unix_epoch(Duration::from_secs(100_000)),
                    not_after: UnixTime::since_unix_epoch(Duration::from_secs(86_400)),
                },
                "expired",
                "expired on 1970-01-02T00:00:00Z",
            ),
            (
                CertificateError::NotValidYetContext {
                    time: UnixTime::since_unix_epoch(Duration::from_secs(0)),
                    not_before: UnixTime::since_unix_epoch(Duration::from_secs(86_400)),
                },
                "not_yet_valid",
                "not valid yet (valid from 1970-01-02T00:00:00Z)",
            ),
            (CertificateError::Revoked, "bad_certificate", "Revoked"),
        ];
        for (error, label, words) in cases {
            let failure = TlsFailure::of_rustls(&rustls::Error::InvalidCertificate(error));
            assert_eq!(failure.label(), label);
            assert!(failure.to_string().contains(words), "{failure}");
        }
    }

    #[test]
    fn alerts_garbage_and_hang_ups_are_told_apart() {
        let alert = |a| TlsFailure::of_rustls(&rustls::Error::AlertReceived(a));
        assert_eq!(
            alert(AlertDescription::CertificateRequired).label(),
            "client_certificate_refused"
        );
        assert_eq!(
            alert(AlertDescription::ProtocolVersion).label(),
            "handshake"
        );
        let garbage = rustls::Error::InvalidMessage(rustls::InvalidMessage::InvalidContentType);
        assert_eq!(TlsFailure::of_rustls(&garbage).label(), "not_tls");
        let eof = std::io::Error::from(std::io::ErrorKind::UnexpectedEof);
        assert_eq!(TlsFailure::of_io(&eof), TlsFailure::Closed);
        let wrapped = std::io::Error::new(std::io::ErrorKind::InvalidData, garbage);
        assert_eq!(TlsFailure::find(&wrapped).unwrap().label(), "not_tls");
        let timed_out = HandshakeError::timed_out(Duration::from_millis(5));
        assert_eq!(TlsFailure::find(&timed_out).unwrap().label(), "timeout");
        for (i, label) in TlsFailure::LABELS.iter().enumerate() {
            assert_eq!(TlsFailure::LABELS.iter().position(|l| l == label), Some(i));
        }
    }
}
