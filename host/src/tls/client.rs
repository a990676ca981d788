//! Origination: the rustls client weir reaches a TLS backend with, the
//! handshake, and why one failed, in plain words ([`TlsFailure`]).
//!
//! What to trust ([`Trust`]), the client certificate and the minimum
//! version come from the upstream's `tls` table; the name to verify is
//! given per connection.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme,
};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;

use super::{KeyPair, MinVersion};

mod failure;
pub use failure::TlsFailure;

/// What a backend's certificate is checked against.
#[derive(Debug, Clone)]
pub enum Trust {
    /// These CA certificates (the system's, or a `ca_file`).
    Roots(Arc<RootCertStore>),
    /// Nothing: any certificate is taken (`insecure_skip_verify`); the
    /// handshake's signatures are still checked.
    Anything,
}

/// The system's CA certificates (rustls-native-certs: `SSL_CERT_FILE`,
/// `SSL_CERT_DIR`, or the platform's store), read once per process; the
/// count of unreadable ones comes along for a warning.
pub fn system_roots() -> (Arc<RootCertStore>, usize) {
    static ROOTS: OnceLock<(Arc<RootCertStore>, usize)> = OnceLock::new();
    ROOTS
        .get_or_init(|| {
            let found = rustls_native_certs::load_native_certs();
            let mut store = RootCertStore::empty();
            let (_, ignored) = store.add_parsable_certificates(found.certs);
            (Arc::new(store), ignored + found.errors.len())
        })
        .clone()
}

/// A rustls client config for one upstream's backends.
#[derive(Clone)]
pub struct ClientTls {
    connector: TlsConnector,
}

impl std::fmt::Debug for ClientTls {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientTls").finish_non_exhaustive()
    }
}

impl ClientTls {
    /// A client trusting `trust`, presenting `client_cert` if given,
    /// speaking TLS from `min_version` up and offering `alpn` (most
    /// preferred first). Session resumption is on (rustls' in-memory cache).
    /// An empty root store refuses every certificate as from an unknown CA.
    pub fn new(
        trust: Trust,
        client_cert: Option<&KeyPair>,
        min_version: MinVersion,
        alpn: &[&[u8]],
    ) -> ClientTls {
        let provider = super::provider();
        let builder = ClientConfig::builder_with_provider(provider.clone())
            .with_protocol_versions(min_version.versions())
            .expect("the ring provider speaks TLS 1.2 and 1.3");
        let verifier: Arc<dyn ServerCertVerifier> = match trust {
            Trust::Roots(roots) => {
                match WebPkiServerVerifier::builder_with_provider(roots, provider.clone()).build() {
                    Ok(verifier) => verifier,
                    // No root anchors: nothing can be trusted.
                    Err(_) => Arc::new(Unchecked {
                        provider,
                        take: false,
                    }),
                }
            }
            Trust::Anything => Arc::new(Unchecked {
                provider,
                take: true,
            }),
        };
        let builder = builder
            .dangerous()
            .with_custom_certificate_verifier(verifier);
        let mut config = match client_cert {
            Some(pair) => builder.with_client_cert_resolver(Arc::new(OneCert(pair.key.clone()))),
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// The same client offering `alpn` instead (the gRPC health check
    /// needs `h2` whatever the upstream's requests speak).
    pub fn with_alpn(&self, alpn: &[&[u8]]) -> ClientTls {
        let mut config = ClientConfig::clone(self.connector.config());
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        ClientTls {
            connector: TlsConnector::from(Arc::new(config)),
        }
    }

    /// Runs the handshake on `tcp`, sending `name` as SNI (unless it is an
    /// IP address) and verifying the certificate against it.
    pub async fn connect(
        &self,
        tcp: TcpStream,
        name: ServerName<'static>,
    ) -> Result<TlsStream<TcpStream>, HandshakeError> {
        self.connector
            .connect(name, tcp)
            .await
            .map_err(|source| HandshakeError {
                reason: TlsFailure::of_io(&source),
                source,
            })
    }
}

/// Presents the one client certificate the upstream has.
#[derive(Debug)]
struct OneCert(Arc<CertifiedKey>);

impl ResolvesClientCert for OneCert {
    fn resolve(&self, _: &[&[u8]], _: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.0.clone())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// A verifier that looks at no chain: `insecure_skip_verify` takes any
/// certificate (still checking that the server holds the key of the one it
/// sent); an empty trust store refuses every one as from an unknown CA.
#[derive(Debug)]
struct Unchecked {
    provider: Arc<CryptoProvider>,
    take: bool,
}

impl ServerCertVerifier for Unchecked {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if self.take {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::UnknownIssuer,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls12_signature(message, cert, dss, algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        let algorithms = &self.provider.signature_verification_algorithms;
        rustls::crypto::verify_tls13_signature(message, cert, dss, algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// A failed handshake: why in words, and the io error (with the rustls
/// error inside) as the source.
#[derive(Debug, thiserror::Error)]
#[error("{reason}")]
pub struct HandshakeError {
    /// Why, as logs and `/metrics` tell it.
    pub reason: TlsFailure,
    /// What tokio-rustls returned.
    #[source]
    pub source: std::io::Error,
}

impl HandshakeError {
    /// A handshake that did not finish within `limit`.
    pub fn timed_out(limit: Duration) -> HandshakeError {
        HandshakeError {
            reason: TlsFailure::Timeout(limit),
            source: std::io::ErrorKind::TimedOut.into(),
        }
    }
}
