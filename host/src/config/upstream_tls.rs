//! `[upstreams.NAME.tls]`: TLS to the upstream's backends. Checking the
//! table reads its files; what they held is kept with the config
//! ([`UpstreamTlsConfig::material`]), so the client is built from exactly
//! what was checked.

use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::pki_types::ServerName;
use serde::Deserialize;

use super::ConfigError;
use super::validate::{Checker, Place};
use crate::tls::client::{Trust, system_roots};
use crate::tls::{KeyPair, MinVersion};

/// How weir speaks TLS to an upstream's backends.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UpstreamTlsConfig {
    /// CA certificates (PEM) to verify backends with; absent: the system's.
    pub ca_file: Option<PathBuf>,
    /// The name to send (SNI) and verify; absent: the backend's address
    /// (its IP, checked against the certificate's IP SANs; no SNI).
    pub server_name: Option<String>,
    /// A client certificate chain (PEM) to present (mTLS); needs `key_file`.
    pub cert_file: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    pub key_file: Option<PathBuf>,
    /// Oldest TLS version spoken: `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_min_version")]
    pub min_version: String,
    /// Take any certificate, unverified. Logged as a warning at every load.
    #[serde(default)]
    pub insecure_skip_verify: bool,
    /// What the files held when the table was checked.
    #[serde(skip)]
    loaded: OnceLock<Arc<TlsMaterial>>,
}

fn default_min_version() -> String {
    "1.2".to_string()
}

/// The `tls` table read: trust roots and client certificate loaded, names
/// and versions parsed.
#[derive(Debug, Clone)]
pub struct TlsMaterial {
    /// What backends' certificates are checked against.
    pub trust: Trust,
    /// The certificate presented to backends, if any.
    pub client_cert: Option<KeyPair>,
    /// Oldest version spoken.
    pub min_version: MinVersion,
    /// The configured `server_name`; absent: the backend's address.
    pub server_name: Option<ServerName<'static>>,
    /// `insecure_skip_verify`.
    pub insecure_skip_verify: bool,
    /// The CA count of the system store, when it is the trust (0 warns).
    pub system_roots: Option<usize>,
    /// A digest of the settings and the files' bytes: equal digests, same
    /// pool.
    pub fingerprint: u64,
    /// The files read (resolved), for the watcher.
    pub files: Vec<PathBuf>,
}

impl UpstreamTlsConfig {
    /// What the files held when this table was checked (set by the config's
    /// validation, which every loaded config went through).
    pub fn material(&self) -> Option<&Arc<TlsMaterial>> {
        self.loaded.get()
    }

    /// The files this table names, resolved against `base`.
    pub fn files(&self, base: &Path) -> Vec<PathBuf> {
        [&self.ca_file, &self.cert_file, &self.key_file]
            .into_iter()
            .flatten()
            .map(|p| resolve(base, p))
            .collect()
    }
}

impl super::Config {
    /// Every CA, certificate and key file of the upstreams' `tls` tables,
    /// resolved: a change to one reloads the config (and its TLS material).
    pub fn upstream_tls_files(&self) -> Vec<PathBuf> {
        let base = self.source.path.parent().unwrap_or(Path::new(""));
        let mut files: Vec<_> = (self.upstreams.values())
            .filter_map(|u| u.tls.as_ref())
            .flat_map(|t| t.files(base))
            .collect();
        files.sort();
        files.dedup();
        files
    }
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

impl Checker<'_> {
    /// The upstream's `tls` table: versions and names parse, the CA and
    /// client certificate files load (the key matching the certificate).
    pub(super) fn upstream_tls(
        &self,
        at: &Place<'_>,
        name: &str,
        tls: &UpstreamTlsConfig,
    ) -> Result<(), ConfigError> {
        let what = |key: &str| format!("upstream {name}: tls.{key}");
        let min_version = match tls.min_version.as_str() {
            "1.2" => MinVersion::Tls12,
            "1.3" => MinVersion::Tls13,
            other => {
                let message = format!(
                    "{} {other:?} is not \"1.2\" or \"1.3\"",
                    what("min_version")
                );
                return Err(self.fail(&at.key("min_version"), message));
            }
        };
        let server_name = match &tls.server_name {
            None => None,
            Some(text) => Some(ServerName::try_from(text.clone()).map_err(|_| {
                let message = format!(
                    "{} {text:?} is not a DNS name or an IP address",
                    what("server_name")
                );
                self.fail(&at.key("server_name"), message)
            })?),
        };
        let base = self.config.source.path.parent().unwrap_or(Path::new(""));
        let file_error = |key: &'static str, e: crate::tls::FileError| {
            let message = format!("{}: {}", what(key), crate::error::chain(&e));
            self.fail(&at.key(key), message)
        };
        let (trust, system) = match &tls.ca_file {
            _ if tls.insecure_skip_verify => (Trust::Anything, None),
            Some(path) => {
                let roots = crate::tls::files::roots(&resolve(base, path))
                    .map_err(|e| file_error("ca_file", e))?;
                (Trust::Roots(Arc::new(roots)), None)
            }
            None => {
                let (roots, _) = system_roots();
                let count = roots.len();
                (Trust::Roots(roots), Some(count))
            }
        };
        let client_cert = match (&tls.cert_file, &tls.key_file) {
            (None, None) => None,
            (Some(cert), Some(key)) => Some(
                KeyPair::load(&resolve(base, cert), &resolve(base, key)).map_err(|e| {
                    let key = if e.path == resolve(base, cert) {
                        "cert_file"
                    } else {
                        "key_file"
                    };
                    file_error(key, e)
                })?,
            ),
            (Some(_), None) => {
                let message = format!("{} needs tls.key_file", what("cert_file"));
                return Err(self.fail(&at.key("cert_file"), message));
            }
            (None, Some(_)) => {
                let message = format!("{} needs tls.cert_file", what("key_file"));
                return Err(self.fail(&at.key("key_file"), message));
            }
        };
        let files = tls.files(base);
        let mut digest = std::hash::DefaultHasher::new();
        (&tls.server_name, &tls.min_version, tls.insecure_skip_verify).hash(&mut digest);
        for file in &files {
            file.hash(&mut digest);
            std::fs::read(file).unwrap_or_default().hash(&mut digest);
        }
        let material = TlsMaterial {
            trust,
            client_cert,
            min_version,
            server_name,
            insecure_skip_verify: tls.insecure_skip_verify,
            system_roots: system,
            fingerprint: digest.finish(),
            files,
        };
        let _ = tls.loaded.set(Arc::new(material));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{assert_refused_at, good_with, parse};

    fn dir(name: &str) -> std::path::PathBuf {
        let dir = std::env::temp_dir().join(format!("weir-up-tls-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }

    #[test]
    fn defaults_verify_with_the_system_roots() {
        let config = parse(&good_with("[upstreams.web.tls]")).unwrap();
        let tls = config.upstreams["web"].tls.as_ref().unwrap();
        let material = tls.material().unwrap();
        assert!(!material.insecure_skip_verify);
        assert!(material.system_roots.is_some());
        assert!(material.server_name.is_none());
        assert_eq!(material.min_version, crate::tls::MinVersion::Tls12);
    }

    #[test]
    fn each_bad_value_points_at_its_line() {
        for (line, rule) in [
            ("min_version = \"1.1\"", "tls.min_version \"1.1\" is not"),
            (
                "server_name = \"not a name\"",
                "tls.server_name \"not a name\" is not a DNS name",
            ),
            ("cert_file = \"c.pem\"", "tls.cert_file needs tls.key_file"),
            ("key_file = \"k.pem\"", "tls.key_file needs tls.cert_file"),
            (
                "ca_file = \"/nonexistent/ca.pem\"",
                "/nonexistent/ca.pem: cannot read it",
            ),
        ] {
            let text = good_with(&format!("[upstreams.web.tls]\n{line}"));
            assert_refused_at(&text, line, &["upstream web:", rule]);
        }
    }

    #[test]
    fn a_broken_ca_or_client_pair_names_the_file() {
        let dir = dir("broken");
        let made = rcgen::generate_simple_self_signed(vec!["a.test".to_string()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["b.test".to_string()]).unwrap();
        let garbage = dir.join("garbage.pem");
        std::fs::write(&garbage, "no pem here\n").unwrap();
        let cert = dir.join("c.pem");
        std::fs::write(&cert, made.cert.pem()).unwrap();
        let key = dir.join("k2.pem");
        std::fs::write(&key, other.signing_key.serialize_pem()).unwrap();
        let line = format!("ca_file = {:?}", garbage.display().to_string());
        let text = good_with(&format!("[upstreams.web.tls]\n{line}"));
        assert_refused_at(
            &text,
            &line,
            &["tls.ca_file:", "garbage.pem: no certificate in it"],
        );
        let key_line = format!("key_file = {:?}", key.display().to_string());
        let text = good_with(&format!(
            "[upstreams.web.tls]\ncert_file = {:?}\n{key_line}",
            cert.display().to_string()
        ));
        assert_refused_at(&text, &key_line, &["tls.key_file:", "does not match"]);
        let ok = parse(&good_with(&format!(
            "[upstreams.web.tls]\nca_file = {:?}",
            cert.display().to_string()
        )))
        .unwrap();
        let material = ok.upstreams["web"]
            .tls
            .as_ref()
            .unwrap()
            .material()
            .unwrap();
        assert_eq!(material.files, std::slice::from_ref(&cert));
        // The fingerprint follows the file's bytes.
        std::fs::write(&cert, other.cert.pem()).unwrap();
        let again = parse(&good_with(&format!(
            "[upstreams.web.tls]\nca_file = {:?}",
            cert.display().to_string()
        )))
        .unwrap();
        let rotated = again.upstreams["web"]
            .tls
            .as_ref()
            .unwrap()
            .material()
            .unwrap();
        assert_ne!(rotated.fingerprint, material.fingerprint);
    }
}
