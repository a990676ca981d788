//! The TLS a listener terminates: its certificates picked by SNI, its
//! versions and ALPN, optional client certificates, and session resumption
//! that survives certificate rotation.
//!
//! A [`ServerTls`] is built from a [`ServerSpec`] (plain paths and options,
//! no config types) whenever the snapshot is rebuilt; a certificate or CA
//! file that does not load keeps the previous build's good copy, so a
//! broken rotation never takes a name offline.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use rustls::server::{
    ProducesTickets, ServerSessionMemoryCache, StoresServerSessions, WebPkiClientVerifier,
};
use rustls::{RootCertStore, ServerConfig};

use super::files::{self, FileError, KeyPair};
use super::sni::SniResolver;
use super::{MinVersion, provider};

/// How many TLS sessions a listener remembers for resumption by id (TLS
/// 1.2); tickets (TLS 1.2 and 1.3) need no memory on the server.
const SESSION_CACHE_ENTRIES: usize = 4096;

/// What a listener's TLS is built from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerSpec {
    /// The certificates, in config order; the first is the default for a
    /// client that sends no server name, or one no certificate is for.
    pub certificates: Vec<CertSpec>,
    /// The oldest TLS version accepted.
    pub min_version: MinVersion,
    /// ALPN protocols offered, in preference order (`h2`, `http/1.1`).
    pub alpn: Vec<Vec<u8>>,
    /// Client certificates, when asked for.
    pub client_auth: Option<ClientAuthSpec>,
    /// How long a client may take to complete its handshake.
    pub handshake_timeout: std::time::Duration,
}

/// One certificate chain and key, and the names it serves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertSpec {
    /// The PEM chain, leaf first.
    pub cert_file: PathBuf,
    /// The PEM private key.
    pub key_file: PathBuf,
    /// The server names it is picked for (`example.com`, `*.example.com`);
    /// empty: the names in the certificate.
    pub names: Vec<String>,
}

/// Client certificates (mTLS).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientAuthSpec {
    /// The CA bundle client certificates must chain to.
    pub ca_file: PathBuf,
    /// Refuse a client that presents none (else it is let through without
    /// a subject).
    pub required: bool,
}

/// Something a build noticed that does not stop it: logged by the caller.
#[derive(Debug)]
pub enum Notice {
    /// A file did not load; the previous good copy keeps serving.
    KeptLastGood {
        /// Why the new one was refused.
        error: FileError,
        /// The kept certificate's expiry (`not_after`), for a certificate.
        kept_until: Option<String>,
    },
    /// A certificate is expired, not yet valid or expires soon.
    Expiry {
        /// The chain file.
        cert_file: PathBuf,
        /// Where it stands.
        expiry: files::Expiry,
        /// Its `not_after`, as a date.
        not_after: String,
    },
}

impl fmt::Display for Notice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Notice::KeptLastGood { error, kept_until } => {
                write!(
                    f,
                    "{}; keeping the last good copy",
                    crate::error::chain(error)
                )?;
                if let Some(until) = kept_until {
                    write!(f, " (valid until {until})")?;
                }
                Ok(())
            }
            Notice::Expiry {
                cert_file,
                expiry,
                not_after,
            } => {
                let what = match expiry {
                    files::Expiry::Expired => "expired on",
                    files::Expiry::NotYetValid => "is not valid yet; it ends on",
                    files::Expiry::Soon => "expires soon, on",
                    files::Expiry::Fine => "is valid until",
                };
                write!(f, "certificate {} {what} {not_after}", cert_file.display())
            }
        }
    }
}

/// A listener's TLS, ready for handshakes.
pub struct ServerTls {
    /// What it was built from.
    pub spec: ServerSpec,
    /// The rustls config every new handshake uses.
    pub config: Arc<ServerConfig>,
    /// The certificates served, in spec order.
    pub pairs: Vec<KeyPair>,
    /// The client CA roots, when client certificates are asked for.
    roots: Option<Arc<RootCertStore>>,
    sessions: Sessions,
}

impl fmt::Debug for ServerTls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerTls")
            .field("spec", &self.spec)
            .field("pairs", &self.pairs)
            .finish()
    }
}

/// Resumption state, kept across rebuilds so a rotation does not make
/// every client do a full handshake.
#[derive(Clone)]
struct Sessions {
    cache: Arc<dyn StoresServerSessions>,
    tickets: Arc<dyn ProducesTickets>,
}

impl Sessions {
    fn new() -> Result<Sessions, rustls::Error> {
        Ok(Sessions {
            cache: ServerSessionMemoryCache::new(SESSION_CACHE_ENTRIES),
            tickets: rustls::crypto::ring::Ticketer::new()?,
        })
    }
}

/// Why a listener's TLS could not be built at all.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A file did not load and there is no previous good copy.
    #[error(transparent)]
    File(#[from] FileError),
    /// rustls refused the settings.
    #[error("TLS settings refused: {0}")]
    Rustls(#[from] rustls::Error),
    /// The client CA bundle cannot verify anything.
    #[error("client CA bundle {}: {why}", path.display())]
    ClientCa {
        /// The bundle.
        path: PathBuf,
        /// rustls's word.
        why: String,
    },
}

impl ServerTls {
    /// Builds `spec`, taking any file that does not load from `previous`
    /// (the same path's last good copy) when it has one. Returns what to
    /// log beside the result.
    pub fn build(
        spec: &ServerSpec,
        previous: Option<&ServerTls>,
        now: std::time::SystemTime,
        warn_within: std::time::Duration,
    ) -> Result<(ServerTls, Vec<Notice>), BuildError> {
        let mut notices = Vec::new();
        let mut pairs = Vec::with_capacity(spec.certificates.len());
        for cert in &spec.certificates {
            let pair = match KeyPair::load(&cert.cert_file, &cert.key_file) {
                Ok(pair) => pair,
                Err(error) => {
                    let kept = previous.and_then(|p| {
                        p.pairs.iter().find(|old| {
                            old.cert_path == cert.cert_file && old.key_path == cert.key_file
                        })
                    });
                    let Some(kept) = kept else {
                        return Err(error.into());
                    };
                    let kept_until = Some(kept.facts.not_after_text());
                    notices.push(Notice::KeptLastGood { error, kept_until });
                    kept.clone()
                }
            };
            let expiry = pair.facts.expiry(now, warn_within);
            if expiry != files::Expiry::Fine {
                notices.push(Notice::Expiry {
                    cert_file: cert.cert_file.clone(),
                    expiry,
                    not_after: pair.facts.not_after_text(),
                });
            }
            pairs.push(pair);
        }
        let roots = match &spec.client_auth {
            None => None,
            Some(auth) => match files::roots(&auth.ca_file) {
                Ok(roots) => Some(Arc::new(roots)),
                Err(error) => {
                    let kept = previous
                        .filter(|p| {
                            p.spec.client_auth.as_ref().map(|a| &a.ca_file) == Some(&auth.ca_file)
                        })
                        .and_then(|p| p.roots.clone());
                    let Some(kept) = kept else {
                        return Err(error.into());
                    };
                    notices.push(Notice::KeptLastGood {
                        error,
                        kept_until: None,
                    });
                    Some(kept)
                }
            },
        };
        let sessions = match previous {
            Some(previous) => previous.sessions.clone(),
            None => Sessions::new()?,
        };
        let config = server_config(spec, &pairs, roots.clone(), &sessions)?;
        let tls = ServerTls {
            spec: spec.clone(),
            config,
            pairs,
            roots,
            sessions,
        };
        Ok((tls, notices))
    }
}

fn server_config(
    spec: &ServerSpec,
    pairs: &[KeyPair],
    roots: Option<Arc<RootCertStore>>,
    sessions: &Sessions,
) -> Result<Arc<ServerConfig>, BuildError> {
    let builder = ServerConfig::builder_with_provider(provider())
        .with_protocol_versions(spec.min_version.versions())?;
    let builder = match (roots, &spec.client_auth) {
        (Some(roots), Some(auth)) => {
            let verifier = WebPkiClientVerifier::builder_with_provider(roots, provider());
            let verifier = if auth.required {
                verifier
            } else {
                verifier.allow_unauthenticated()
            };
            let verifier = verifier.build().map_err(|e| BuildError::ClientCa {
                path: auth.ca_file.clone(),
                why: e.to_string(),
            })?;
            builder.with_client_cert_verifier(verifier)
        }
        _ => builder.with_no_client_auth(),
    };
    let mut config = builder.with_cert_resolver(Arc::new(SniResolver::new(spec, pairs)));
    config.alpn_protocols = spec.alpn.clone();
    config.session_storage = sessions.cache.clone();
    config.ticketer = sessions.tickets.clone();
    Ok(Arc::new(config))
}

#[cfg(test)]
pub(super) mod tests {
    use std::path::Path;
    use std::time::{Duration, SystemTime};

    use super::*;

    pub(in crate::tls) fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("weir-tls-server-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    pub(in crate::tls) fn write_pair(dir: &Path, file: &str, names: &[&str]) -> CertSpec {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let made = rcgen::generate_simple_self_signed(names).unwrap();
        let cert_file = dir.join(format!("{file}.crt"));
        let key_file = dir.join(format!("{file}.key"));
        std::fs::write(&cert_file, made.cert.pem()).unwrap();
        std::fs::write(&key_file, made.signing_key.serialize_pem()).unwrap();
        CertSpec {
            cert_file,
            key_file,
            names: vec![],
        }
    }

    pub(in crate::tls) fn spec(certificates: Vec<CertSpec>) -> ServerSpec {
        ServerSpec {
            certificates,
            min_version: MinVersion::Tls12,
            alpn: vec![b"h2".to_vec(), b"http/1.1".to_vec()],
            client_auth: None,
            handshake_timeout: Duration::from_secs(10),
        }
    }

    fn build(
        spec: &ServerSpec,
        previous: Option<&ServerTls>,
    ) -> Result<(ServerTls, Vec<Notice>), BuildError> {
        ServerTls::build(
            spec,
            previous,
            SystemTime::now(),
            Duration::from_secs(86_400),
        )
    }

    #[test]
    fn a_broken_rotation_keeps_the_last_good_pair_and_sessions() {
        let dir = dir("rotate");
        let spec = spec(vec![write_pair(&dir, "site", &["site.test"])]);
        let (first, _) = build(&spec, None).unwrap();
        // The key is rewritten with garbage: the old pair keeps serving.
        std::fs::write(&spec.certificates[0].key_file, "garbage").unwrap();
        let (second, notices) = build(&spec, Some(&first)).unwrap();
        assert!(Arc::ptr_eq(&first.pairs[0].key, &second.pairs[0].key));
        let text = notices[0].to_string();
        assert!(
            text.contains(
                "site.key: no private key in it (PEM expected); keeping the last good copy (valid until"
            ),
            "{text}"
        );
        assert!(Arc::ptr_eq(
            &first.sessions.tickets,
            &second.sessions.tickets
        ));
        // Without a previous build it is an error naming the file.
        let error = build(&spec, None).unwrap_err().to_string();
        assert!(error.contains("site.key: no private key in it"), "{error}");
        // A good new pair replaces the old.
        let spec2 = ServerSpec {
            certificates: vec![write_pair(&dir, "site", &["site.test"])],
            ..spec
        };
        let (third, notices) = build(&spec2, Some(&second)).unwrap();
        assert!(notices.is_empty());
        assert!(!Arc::ptr_eq(&second.pairs[0].key, &third.pairs[0].key));
    }

    #[test]
    fn an_expiring_certificate_is_a_notice_with_its_date() {
        let dir = dir("expiry");
        let spec = spec(vec![write_pair(&dir, "site", &["site.test"])]);
        let far = SystemTime::now() + Duration::from_secs(10 * 365 * 86_400);
        // rcgen's default validity ends in 4096.
        let (_, notices) = ServerTls::build(&spec, None, far, Duration::from_secs(1)).unwrap();
        assert!(notices.is_empty(), "{notices:?}");
        let window = Duration::from_secs(3000 * 365 * 86_400);
        let (_, notices) = ServerTls::build(&spec, None, SystemTime::now(), window).unwrap();
        let text = notices[0].to_string();
        assert!(
            text.ends_with("site.crt expires soon, on 4096-01-01T00:00:00Z"),
            "{text}"
        );
    }

    #[test]
    fn a_client_ca_that_does_not_load_is_an_error_or_keeps_the_last() {
        let dir = dir("client-ca");
        let mut spec = spec(vec![write_pair(&dir, "site", &["site.test"])]);
        let ca = dir.join("ca.pem");
        std::fs::copy(&spec.certificates[0].cert_file, &ca).unwrap();
        spec.client_auth = Some(ClientAuthSpec {
            ca_file: ca.clone(),
            required: true,
        });
        let (first, _) = build(&spec, None).unwrap();
        std::fs::write(&ca, "nothing").unwrap();
        let (_, notices) = build(&spec, Some(&first)).unwrap();
        assert!(
            notices[0]
                .to_string()
                .contains("ca.pem: no certificate in it"),
            "{}",
            notices[0]
        );
        assert!(build(&spec, None).is_err());
    }
}
