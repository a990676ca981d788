//! Certificate, key and CA files: read, parsed and checked before anything
//! uses them, with an error that names the file and says what is wrong.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rustls::RootCertStore;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// A certificate or key file that cannot be used, and why.
#[derive(Debug, thiserror::Error)]
#[error("{}: {problem}", path.display())]
pub struct FileError {
    /// The file.
    pub path: PathBuf,
    /// What is wrong with it.
    #[source]
    pub problem: FileProblem,
}

/// What is wrong with a certificate or key file.
#[derive(Debug, thiserror::Error)]
pub enum FileProblem {
    /// It could not be read.
    #[error("cannot read it")]
    Read(#[source] std::io::Error),
    /// It holds no PEM block of the kind wanted.
    #[error("no {0} in it (PEM expected)")]
    Missing(&'static str),
    /// A PEM block or the DER inside it does not parse.
    #[error("{what} does not parse: {why}")]
    Parse {
        /// Which block.
        what: &'static str,
        /// The parser's word.
        why: String,
    },
    /// The key is of a kind rustls cannot sign with.
    #[error("the key is not usable: {0}")]
    Key(#[source] rustls::Error),
    /// The key is not the certificate's.
    #[error("the key does not match the certificate")]
    Mismatch,
}

fn error(path: &Path, problem: FileProblem) -> FileError {
    FileError {
        path: path.to_path_buf(),
        problem,
    }
}

/// `path` holds `what`, which does not parse for the reason `why`.
fn unparsable(path: &Path, what: &'static str, why: impl Into<String>) -> FileError {
    let why = why.into();
    error(path, FileProblem::Parse { what, why })
}

fn read(path: &Path) -> Result<Vec<u8>, FileError> {
    std::fs::read(path).map_err(|e| error(path, FileProblem::Read(e)))
}

/// The certificates in a PEM file, in order (leaf first for a chain).
pub fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, FileError> {
    let pem = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| unparsable(path, "a certificate", e.to_string()))?;
    if certs.is_empty() {
        return Err(error(path, FileProblem::Missing("certificate")));
    }
    for cert in &certs {
        CertFacts::of(cert).map_err(|why| unparsable(path, "a certificate", why))?;
    }
    Ok(certs)
}

/// The private key in a PEM file (PKCS#8, PKCS#1 RSA or SEC1 EC).
pub fn private_key(path: &Path) -> Result<PrivateKeyDer<'static>, FileError> {
    let pem = read(path)?;
    PrivateKeyDer::from_pem_slice(&pem).map_err(|e| match e {
        rustls::pki_types::pem::Error::NoItemsFound => {
            error(path, FileProblem::Missing("private key"))
        }
        e => unparsable(path, "the private key", e.to_string()),
    })
}

/// The CA certificates of a bundle file, as trust roots.
pub fn roots(path: &Path) -> Result<RootCertStore, FileError> {
    let mut store = RootCertStore::empty();
    for cert in certificates(path)? {
        store
            .add(cert)
            .map_err(|e| unparsable(path, "a CA certificate", e.to_string()))?;
    }
    Ok(store)
}

/// A certificate chain with its key, checked to belong together, and what
/// its leaf says.
#[derive(Clone)]
pub struct KeyPair {
    /// What rustls serves.
    pub key: Arc<CertifiedKey>,
    /// The leaf certificate's names and dates.
    pub facts: CertFacts,
    /// The chain file.
    pub cert_path: PathBuf,
    /// The key file.
    pub key_path: PathBuf,
}

impl fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("KeyPair")
            .field("cert_path", &self.cert_path)
            .field("key_path", &self.key_path)
            .field("facts", &self.facts)
            .finish()
    }
}

impl KeyPair {
    /// Reads the chain in `cert_path` and the key in `key_path` and checks
    /// that the key is the leaf's.
    pub fn load(cert_path: &Path, key_path: &Path) -> Result<KeyPair, FileError> {
        let chain = certificates(cert_path)?;
        let der = private_key(key_path)?;
        let provider = super::provider();
        let signing = provider
            .key_provider
            .load_private_key(der)
            .map_err(|e| error(key_path, FileProblem::Key(e)))?;
        let facts = CertFacts::of(&chain[0])
            .map_err(|why| unparsable(cert_path, "the certificate", why))?;
        let key = CertifiedKey::new(chain, signing);
        match key.keys_match() {
            Ok(()) => {}
            // A key whose public half rustls cannot tell is taken on trust.
            Err(rustls::Error::InconsistentKeys(rustls::InconsistentKeys::Unknown)) => {}
            Err(_) => return Err(error(key_path, FileProblem::Mismatch)),
        }
        Ok(KeyPair {
            key: Arc::new(key),
            facts,
            cert_path: cert_path.to_path_buf(),
            key_path: key_path.to_path_buf(),
        })
    }
}

/// What weir reads off a certificate: the names it serves and when it is
/// valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertFacts {
    /// Its DNS names (subject alternative names; the subject's common name
    /// when it has none), lower case.
    pub names: Vec<String>,
    /// The subject, as `CN=..., O=...`.
    pub subject: String,
    /// Not valid before this time.
    pub not_before: SystemTime,
    /// Not valid after this time.
    pub not_after: SystemTime,
}

/// Where a certificate stands against a date.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expiry {
    /// Valid, and for longer than the warning window.
    Fine,
    /// Valid, but expiring within the window.
    Soon,
    /// Past its `not_after`.
    Expired,
    /// Before its `not_before`.
    NotYetValid,
}

impl CertFacts {
    /// Parses `cert` (DER).
    pub fn of(cert: &CertificateDer<'_>) -> Result<CertFacts, String> {
        let (_, parsed) =
            x509_parser::parse_x509_certificate(cert.as_ref()).map_err(|e| e.to_string())?;
        let time = |t: x509_parser::time::ASN1Time| {
            let secs = t.timestamp();
            if secs >= 0 {
                UNIX_EPOCH + Duration::from_secs(secs as u64)
            } else {
                UNIX_EPOCH
            }
        };
        let mut names = Vec::new();
        if let Ok(Some(san)) = parsed.subject_alternative_name() {
            for name in &san.value.general_names {
                if let x509_parser::extensions::GeneralName::DNSName(dns) = name {
                    names.push(dns.to_ascii_lowercase());
                }
            }
        }
        if names.is_empty() {
            names.extend(
                parsed
                    .subject()
                    .iter_common_name()
                    .filter_map(|cn| cn.as_str().ok())
                    .map(str::to_ascii_lowercase),
            );
        }
        Ok(CertFacts {
            names,
            subject: parsed.subject().to_string(),
            not_before: time(parsed.validity().not_before),
            not_after: time(parsed.validity().not_after),
        })
    }

    /// Where this certificate stands at `now`, warning `window` ahead.
    pub fn expiry(&self, now: SystemTime, window: Duration) -> Expiry {
        if now < self.not_before {
            Expiry::NotYetValid
        } else if now > self.not_after {
            Expiry::Expired
        } else if now + window > self.not_after {
            Expiry::Soon
        } else {
            Expiry::Fine
        }
    }

    /// `not_after` as an RFC 3339 date, for log lines.
    pub fn not_after_text(&self) -> String {
        crate::date::rfc3339(self.not_after)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pair(names: &[&str]) -> rcgen::CertifiedKey<rcgen::KeyPair> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        rcgen::generate_simple_self_signed(names).unwrap()
    }

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let path = dir.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }

    fn dir(name: &str) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("weir-tls-files-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn a_matching_pair_loads_with_its_names_and_dates() {
        let dir = dir("good");
        let made = pair(&["Example.com", "*.example.com"]);
        let cert = write(&dir, "c.pem", &made.cert.pem());
        let key = write(&dir, "k.pem", &made.signing_key.serialize_pem());
        let loaded = KeyPair::load(&cert, &key).unwrap();
        assert_eq!(loaded.facts.names, ["example.com", "*.example.com"]);
        let now = SystemTime::now();
        assert_eq!(
            loaded.facts.expiry(now, Duration::from_secs(86_400)),
            Expiry::Fine
        );
        assert!(loaded.facts.not_after > now);
    }

    #[test]
    fn broken_files_say_which_file_and_what_is_wrong() {
        let dir = dir("bad");
        let one = pair(&["one.test"]);
        let two = pair(&["two.test"]);
        let cert = write(&dir, "c.pem", &one.cert.pem());
        let key = write(&dir, "k.pem", &one.signing_key.serialize_pem());
        let other_key = write(&dir, "k2.pem", &two.signing_key.serialize_pem());
        let empty = write(&dir, "empty.pem", "not pem at all\n");
        let cut = write(&dir, "cut.pem", &one.cert.pem()[..200]);
        let garbage = write(
            &dir,
            "garbage.pem",
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n",
        );
        let cases = [
            (
                KeyPair::load(&cert, &other_key),
                "k2.pem: the key does not match the certificate",
            ),
            (
                KeyPair::load(&empty, &key),
                "empty.pem: no certificate in it",
            ),
            (
                KeyPair::load(&cert, &empty),
                "empty.pem: no private key in it",
            ),
            (KeyPair::load(&cut, &key), "cut.pem: "),
            (
                KeyPair::load(&garbage, &key),
                "garbage.pem: a certificate does not parse",
            ),
            (
                KeyPair::load(&dir.join("absent.pem"), &key),
                "absent.pem: cannot read it",
            ),
            // A certificate given as the key.
            (KeyPair::load(&cert, &cert), "c.pem: no private key in it"),
        ];
        for (result, want) in cases {
            let error = result.unwrap_err().to_string();
            assert!(error.contains(want), "{error:?} lacks {want:?}");
        }
    }

    #[test]
    fn expiry_is_told_against_the_window() {
        let at = |secs| UNIX_EPOCH + Duration::from_secs(secs);
        let facts = CertFacts {
            names: vec![],
            subject: String::new(),
            not_before: at(1_000),
            not_after: at(10_000),
        };
        let day = Duration::from_secs(1_000);
        assert_eq!(facts.expiry(at(500), day), Expiry::NotYetValid);
        assert_eq!(facts.expiry(at(2_000), day), Expiry::Fine);
        assert_eq!(facts.expiry(at(9_500), day), Expiry::Soon);
        assert_eq!(facts.expiry(at(10_001), day), Expiry::Expired);
    }
}
