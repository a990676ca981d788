//! `[listeners.tls]`: the TLS a listener terminates (certificates picked by
//! SNI, versions, ALPN, client certificates), and its checks.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;
use toml::Spanned;

use super::ConfigError;
use super::validate::{Checker, Place};
use crate::tls::MinVersion;
use crate::tls::server::{CertSpec, ClientAuthSpec, ServerSpec};

/// A listener's TLS.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListenerTlsConfig {
    /// The certificates; the first is the default for a client that sends
    /// no server name or one no certificate names.
    pub certificates: Vec<CertificateConfig>,
    /// The oldest TLS version accepted: `"1.2"` (default) or `"1.3"`.
    #[serde(default = "default_min_version")]
    pub min_version: Spanned<String>,
    /// ALPN protocols offered, in preference order: `"h2"` and
    /// `"http/1.1"` (default both, `h2` first).
    #[serde(default = "default_alpn")]
    pub alpn: Spanned<Vec<String>>,
    /// How long a client may take to complete its handshake.
    #[serde(default = "default_handshake_timeout_ms")]
    pub handshake_timeout_ms: u64,
    /// Warn at each load of a certificate that expires within this many
    /// days (and of one expired or not yet valid).
    #[serde(default = "default_expiry_warning_days")]
    pub expiry_warning_days: u64,
    /// Ask clients for certificates (mTLS).
    pub client_auth: Option<ClientAuthConfig>,
}

/// One certificate chain and its key.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CertificateConfig {
    /// PEM chain, leaf first; relative to the config file's directory.
    pub cert_file: Spanned<PathBuf>,
    /// PEM private key (PKCS#8, RSA or EC).
    pub key_file: Spanned<PathBuf>,
    /// Server names this certificate is picked for (`example.com`,
    /// `*.example.com`); absent: the names in the certificate.
    #[serde(default)]
    pub names: Vec<String>,
}

/// Client certificates.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientAuthConfig {
    /// PEM bundle of the CAs client certificates must chain to.
    pub ca_file: Spanned<PathBuf>,
    /// Refuse clients without a certificate (default); `false` lets them
    /// through without a subject.
    #[serde(default = "yes")]
    pub required: bool,
}

fn default_min_version() -> Spanned<String> {
    Spanned::new(0..0, "1.2".to_string())
}

fn default_alpn() -> Spanned<Vec<String>> {
    Spanned::new(0..0, vec!["h2".to_string(), "http/1.1".to_string()])
}

/// The default handshake timeout: 10 s, as HAProxy's usual
/// `timeout client` for the handshake, well past a slow mobile link.
pub const DEFAULT_HANDSHAKE_TIMEOUT_MS: u64 = 10_000;

fn default_handshake_timeout_ms() -> u64 {
    DEFAULT_HANDSHAKE_TIMEOUT_MS
}

fn default_expiry_warning_days() -> u64 {
    30
}

fn yes() -> bool {
    true
}

fn resolve(base: &Path, path: &Path) -> PathBuf {
    if path.is_absolute() {
        path.to_path_buf()
    } else {
        base.join(path)
    }
}

impl ListenerTlsConfig {
    /// What the listener's TLS is built from, with paths resolved against
    /// `base` (the config file's directory).
    pub fn spec(&self, base: &Path) -> ServerSpec {
        ServerSpec {
            certificates: self
                .certificates
                .iter()
                .map(|c| CertSpec {
                    cert_file: resolve(base, c.cert_file.get_ref()),
                    key_file: resolve(base, c.key_file.get_ref()),
                    names: c.names.iter().map(|n| n.to_ascii_lowercase()).collect(),
                })
                .collect(),
            min_version: self.min_version(),
            alpn: self
                .alpn
                .get_ref()
                .iter()
                .map(|p| p.as_bytes().to_vec())
                .collect(),
            client_auth: self.client_auth.as_ref().map(|auth| ClientAuthSpec {
                ca_file: resolve(base, auth.ca_file.get_ref()),
                required: auth.required,
            }),
            handshake_timeout: self.handshake_timeout(),
        }
    }

    /// The oldest version accepted (checked to be `1.2` or `1.3`).
    pub fn min_version(&self) -> MinVersion {
        match self.min_version.get_ref().as_str() {
            "1.3" => MinVersion::Tls13,
            _ => MinVersion::Tls12,
        }
    }

    /// The handshake timeout.
    pub fn handshake_timeout(&self) -> Duration {
        Duration::from_millis(self.handshake_timeout_ms)
    }

    /// The expiry warning window.
    pub fn expiry_warning(&self) -> Duration {
        Duration::from_secs(self.expiry_warning_days * 86_400)
    }

    /// The config line of the file at `path` (resolved against `base`), for
    /// an error about it: its `cert_file`, `key_file` or `ca_file` value.
    pub fn span_of(&self, base: &Path, path: &Path) -> Option<std::ops::Range<usize>> {
        let files = self
            .certificates
            .iter()
            .flat_map(|c| [&c.cert_file, &c.key_file])
            .chain(self.client_auth.as_ref().map(|a| &a.ca_file));
        files
            .into_iter()
            .find(|f| resolve(base, f.get_ref()) == path)
            .map(|f| f.span())
    }
}

/// Whether `name` is a server name a certificate can be picked for: DNS
/// labels of letters, digits and `-`, with an optional leading `*.`.
fn is_server_name(name: &str) -> bool {
    let name = name.strip_prefix("*.").unwrap_or(name);
    !name.is_empty()
        && name.len() <= 253
        && name.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && !label.starts_with('-')
                && !label.ends_with('-')
                && label
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

impl Checker<'_> {
    /// Certificates given, versions and ALPN known, names well formed,
    /// timeouts bounded.
    pub(super) fn listener_tls(
        &self,
        at: &Place<'_>,
        tls: &ListenerTlsConfig,
    ) -> Result<(), ConfigError> {
        self.ensure(
            !tls.certificates.is_empty(),
            &at.key("certificates"),
            || "a TLS listener needs at least one [[listeners.tls.certificates]]".to_string(),
        )?;
        let version = tls.min_version.get_ref();
        if version != "1.2" && version != "1.3" {
            return Err(self.config.error(
                tls.min_version.span(),
                format!("tls min_version {version:?} is not \"1.2\" or \"1.3\""),
            ));
        }
        let alpn = tls.alpn.get_ref();
        let known = alpn.iter().all(|p| p == "h2" || p == "http/1.1");
        if alpn.is_empty() || !known {
            return Err(self.config.error(
                tls.alpn.span(),
                format!("tls alpn {alpn:?} must list \"h2\" and/or \"http/1.1\""),
            ));
        }
        self.within(
            tls.handshake_timeout_ms,
            100..=120_000,
            &at.key("handshake_timeout_ms"),
            "tls handshake_timeout_ms",
        )?;
        self.within(
            tls.expiry_warning_days,
            0..=365,
            &at.key("expiry_warning_days"),
            "tls expiry_warning_days",
        )?;
        for (index, cert) in tls.certificates.iter().enumerate() {
            if let Some(bad) = cert.names.iter().find(|n| !is_server_name(n)) {
                return Err(self.fail(
                    &at.key("certificates").index(index).key("names"),
                    format!("tls certificate name {bad:?} is not a DNS name (or *.name)"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::super::testing::{GOOD, assert_refused_at, parse};

    const TLS: &str = "[listeners.tls]\n[[listeners.tls.certificates]]\ncert_file = \"site.crt\"\nkey_file = \"/etc/weir/site.key\"\n";

    fn with_tls(extra: &str) -> String {
        GOOD.replace(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n",
            &format!("[[listeners]]\naddress = \"127.0.0.1:0\"\n{TLS}{extra}"),
        )
    }

    #[test]
    fn a_tls_listener_parses_with_defaults_and_resolves_paths() {
        let config = parse(&with_tls("")).unwrap();
        let tls = config.listeners[0].tls.as_ref().unwrap();
        let spec = tls.spec(std::path::Path::new("/srv/conf"));
        assert_eq!(
            spec.certificates[0].cert_file,
            std::path::Path::new("/srv/conf/site.crt")
        );
        assert_eq!(
            spec.certificates[0].key_file,
            std::path::Path::new("/etc/weir/site.key")
        );
        assert_eq!(spec.alpn, [b"h2".to_vec(), b"http/1.1".to_vec()]);
        assert_eq!(spec.min_version, crate::tls::MinVersion::Tls12);
        assert!(spec.client_auth.is_none());
        assert_eq!(tls.handshake_timeout().as_millis(), 10_000);
    }

    #[test]
    fn bad_tls_settings_point_at_their_line() {
        let cases = [
            (
                "min_version = \"1.1\"\n",
                "min_version = \"1.1\"",
                "is not \"1.2\" or \"1.3\"",
            ),
            (
                "alpn = [\"spdy\"]\n",
                "alpn = [\"spdy\"]",
                "must list \"h2\" and/or",
            ),
            ("alpn = []\n", "alpn = []", "must list"),
            (
                "handshake_timeout_ms = 10\n",
                "handshake_timeout_ms = 10",
                "within 100..=120000",
            ),
            (
                "[[listeners.tls.certificates]]\ncert_file = \"b.crt\"\nkey_file = \"b.key\"\nnames = [\"a.*.com\"]\n",
                "names = [\"a.*.com\"]",
                "\"a.*.com\" is not a DNS name",
            ),
            (
                "[listeners.tls.client_auth]\nrequired = false\n",
                "[listeners.tls.client_auth]",
                "missing field `ca_file`",
            ),
        ];
        for (extra, marker, words) in cases {
            // Keys of [listeners.tls] go before its certificates.
            let text = if extra.starts_with('[') {
                with_tls(extra)
            } else {
                with_tls("").replace("[listeners.tls]\n", &format!("[listeners.tls]\n{extra}"))
            };
            assert_refused_at(&text, marker, &[words]);
        }
        let text = GOOD.replace(
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n",
            "[[listeners]]\naddress = \"127.0.0.1:0\"\n[listeners.tls]\ncertificates = []\n",
        );
        assert_refused_at(&text, "certificates = []", &["at least one"]);
    }

    #[test]
    fn server_names_are_dns_names() {
        for good in ["example.com", "*.example.com", "a-b.c", "localhost"] {
            assert!(super::is_server_name(good), "{good}");
        }
        for bad in [
            "",
            "*.",
            "a..b",
            "-a.com",
            "a_b.com",
            "*.*.a",
            "a b",
            "ex\r\nample",
        ] {
            assert!(!super::is_server_name(bad), "{bad:?}");
        }
    }
}
