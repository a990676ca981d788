//! TLS material and settings shared by the listeners (termination) and the
//! upstream clients (origination): certificate and key files read and
//! checked ([`files`]), on rustls with the *ring* provider.
//!
//! A leaf: it knows files and rustls, not the config or the request path,
//! so both sides build their rustls configs from it.

pub mod client;
pub mod files;
pub mod server;
mod sni;

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

pub use files::{CertFacts, Expiry, FileError, FileProblem, KeyPair};

/// The crypto provider every weir TLS config is built with.
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// TLS versions weir speaks, oldest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum MinVersion {
    /// TLS 1.2 and 1.3.
    Tls12,
    /// TLS 1.3 only.
    Tls13,
}

impl MinVersion {
    /// The rustls protocol versions from this minimum up.
    pub fn versions(self) -> &'static [&'static rustls::SupportedProtocolVersion] {
        static BOTH: [&rustls::SupportedProtocolVersion; 2] =
            [&rustls::version::TLS13, &rustls::version::TLS12];
        static ONLY_13: [&rustls::SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
        match self {
            MinVersion::Tls12 => &BOTH,
            MinVersion::Tls13 => &ONLY_13,
        }
    }
}

/// The name logs and `/metrics` give a negotiated TLS version.
pub fn version_name(version: rustls::ProtocolVersion) -> &'static str {
    match version {
        rustls::ProtocolVersion::TLSv1_3 => "TLSv1.3",
        rustls::ProtocolVersion::TLSv1_2 => "TLSv1.2",
        _ => "other",
    }
}
