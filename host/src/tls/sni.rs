//! Which certificate a TLS handshake gets: by the server name the client
//! sent (SNI), then by the signature schemes it offers.

use std::collections::HashMap;
use std::sync::Arc;

use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;

use super::files::KeyPair;
use super::server::ServerSpec;

/// Picks the certificate for a handshake: the exact server name, else a
/// `*.` wildcard for its parent domain (one label, as RFC 6125 allows),
/// else the default (the first). Among several certificates for one name
/// (an ECDSA and an RSA one), the first whose key can sign with a scheme
/// the client offers.
#[derive(Debug)]
pub struct SniResolver {
    exact: HashMap<String, Vec<Arc<CertifiedKey>>>,
    wildcard: HashMap<String, Vec<Arc<CertifiedKey>>>,
    default: Vec<Arc<CertifiedKey>>,
}

impl SniResolver {
    pub(super) fn new(spec: &ServerSpec, pairs: &[KeyPair]) -> SniResolver {
        let mut exact: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        let mut wildcard: HashMap<String, Vec<Arc<CertifiedKey>>> = HashMap::new();
        for (cert, pair) in spec.certificates.iter().zip(pairs) {
            let names = if cert.names.is_empty() {
                &pair.facts.names
            } else {
                &cert.names
            };
            for name in names {
                let name = name.to_ascii_lowercase();
                let (map, key) = match name.strip_prefix("*.") {
                    Some(parent) => (&mut wildcard, parent.to_string()),
                    None => (&mut exact, name),
                };
                map.entry(key).or_default().push(pair.key.clone());
            }
        }
        // The default is the first certificate, and any others of its names
        // (so an RSA-only client still finds the RSA twin of an ECDSA default).
        let mut default = vec![];
        if let Some(first) = pairs.first() {
            default.push(first.key.clone());
            for name in &first.facts.names {
                for key in exact.get(name).into_iter().flatten() {
                    if !default.iter().any(|d| Arc::ptr_eq(d, key)) {
                        default.push(key.clone());
                    }
                }
            }
        }
        SniResolver {
            exact,
            wildcard,
            default,
        }
    }

    /// The candidates for `server_name`, best first.
    pub(super) fn candidates(&self, server_name: Option<&str>) -> &[Arc<CertifiedKey>] {
        let Some(name) = server_name else {
            return &self.default;
        };
        let name = name.trim_end_matches('.').to_ascii_lowercase();
        if let Some(keys) = self.exact.get(&name) {
            return keys;
        }
        if let Some((_, parent)) = name.split_once('.')
            && let Some(keys) = self.wildcard.get(parent)
        {
            return keys;
        }
        &self.default
    }
}

impl ResolvesServerCert for SniResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let candidates = self.candidates(hello.server_name());
        let offered = hello.signature_schemes();
        candidates
            .iter()
            .find(|key| key.key.choose_scheme(offered).is_some())
            .or(candidates.first())
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::super::server::ServerTls;
    use super::super::server::tests::{dir, spec, write_pair};
    use super::*;

    fn build(spec: &ServerSpec) -> ServerTls {
        let (tls, notices) =
            ServerTls::build(spec, None, SystemTime::now(), Duration::from_secs(86_400)).unwrap();
        assert!(notices.is_empty(), "{notices:?}");
        tls
    }

    fn which(tls: &ServerTls, name: Option<&str>) -> usize {
        let resolver = SniResolver::new(&tls.spec, &tls.pairs);
        let key = resolver.candidates(name)[0].clone();
        tls.pairs
            .iter()
            .position(|p| Arc::ptr_eq(&p.key, &key))
            .unwrap()
    }

    #[test]
    fn names_pick_exact_then_wildcard_then_the_default() {
        let dir = dir("sni");
        let mut api = write_pair(&dir, "api", &["api.example.com"]);
        api.names = vec!["API.example.com".into()];
        let spec = spec(vec![
            write_pair(&dir, "default", &["default.test"]),
            api,
            write_pair(&dir, "wild", &["*.example.com"]),
        ]);
        let tls = build(&spec);
        assert_eq!(which(&tls, Some("api.example.com")), 1);
        assert_eq!(which(&tls, Some("Api.Example.Com.")), 1);
        assert_eq!(which(&tls, Some("www.example.com")), 2);
        // A wildcard covers one label only.
        assert_eq!(which(&tls, Some("a.b.example.com")), 0);
        assert_eq!(which(&tls, Some("example.com")), 0);
        assert_eq!(which(&tls, Some("other.test")), 0);
        assert_eq!(which(&tls, None), 0);
    }
}
