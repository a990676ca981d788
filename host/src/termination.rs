//! The TLS each listener terminates, as one snapshot holds it: built from
//! the config's `[listeners.tls]` at every snapshot build, so a rotated
//! certificate (a watched file) or a changed setting applies to the next
//! handshake, and a file that does not load keeps its last good copy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, ConfigError};
use crate::tls::server::ServerTls;

/// Each listener's address as configured, and its TLS (`None` for a plain
/// listener), in config order. Found by address (and, for listeners
/// sharing one such as port 0, which of them), not position, so a
/// reordered config keeps each certificate on its socket.
#[derive(Debug, Default)]
pub struct ListenerTls(Vec<(String, Option<Arc<ServerTls>>)>);

impl ListenerTls {
    /// Builds the TLS of every listener of `config`, taking any file that
    /// does not load from `previous` (the running snapshot's) when it has
    /// a good copy; without one the build fails at the file's config line.
    /// Logs what was kept and every certificate that is expired, not yet
    /// valid or expiring soon, naming the listener.
    pub fn build(config: &Config, previous: Option<&ListenerTls>) -> Result<Self, ConfigError> {
        let base = config.base_dir();
        let now = SystemTime::now();
        let mut built = Vec::with_capacity(config.listeners.len());
        for listener in &config.listeners {
            let address = listener.address.get_ref();
            let Some(tls) = &listener.tls else {
                built.push((address.clone(), None));
                continue;
            };
            let spec = tls.spec(&base);
            let at = ListenerAt::of(config, built.len());
            let before = previous.and_then(|p| p.get(&at));
            let (server, notices) =
                ServerTls::build(&spec, before.as_deref(), now, tls.expiry_warning()).map_err(
                    |error| {
                        let span = match &error {
                            crate::tls::server::BuildError::File(file) => {
                                tls.span_of(&base, &file.path)
                            }
                            crate::tls::server::BuildError::ClientCa { path, .. } => {
                                tls.span_of(&base, path)
                            }
                            crate::tls::server::BuildError::Rustls(_) => None,
                        };
                        let span = span.unwrap_or_else(|| listener.address.span());
                        let error = crate::error::chain(&error);
                        config.error(span, format!("listener {address} tls: {error}"))
                    },
                )?;
            for notice in notices {
                tracing::warn!(listener = %address, "{notice}");
            }
            built.push((address.clone(), Some(Arc::new(server))));
        }
        Ok(ListenerTls(built))
    }

    /// The TLS of the listener configured at `at`, if it has some.
    pub fn get(&self, at: &ListenerAt) -> Option<Arc<ServerTls>> {
        self.0
            .iter()
            .filter(|(a, _)| *a == at.address)
            .nth(at.nth)
            .and_then(|(_, tls)| tls.clone())
    }

    /// Every TLS listener's configured address and TLS.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &Arc<ServerTls>)> {
        self.0
            .iter()
            .filter_map(|(a, tls)| Some((a.as_str(), tls.as_ref()?)))
    }
}

/// Which listener of a config: its address as written, and which of the
/// listeners with that address (0 unless several share it, as port 0 may).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListenerAt {
    /// The `address` value.
    pub address: String,
    /// How many listeners before it have the same address.
    pub nth: usize,
}

impl ListenerAt {
    /// The listener at `index` in `config`'s list.
    pub fn of(config: &Config, index: usize) -> ListenerAt {
        let address = config.listeners[index].address.get_ref().clone();
        let nth = config.listeners[..index]
            .iter()
            .filter(|l| *l.address.get_ref() == address)
            .count();
        ListenerAt { address, nth }
    }
}

/// The certificate, key and CA files `config`'s listeners read, for the
/// watcher: a rotated file rebuilds the snapshot like a changed plugin.
pub fn files(config: &Config) -> Vec<PathBuf> {
    let base = config.base_dir();
    config
        .listeners
        .iter()
        .filter_map(|l| l.tls.as_ref())
        .flat_map(|tls| {
            let spec = tls.spec(&base);
            let certs = spec
                .certificates
                .into_iter()
                .flat_map(|c| [c.cert_file, c.key_file]);
            certs.chain(spec.client_auth.map(|a| a.ca_file))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn the_watched_files_are_every_listeners_cert_key_and_ca() {
        let text = r#"
[[listeners]]
address = "127.0.0.1:0"
[listeners.tls]
[[listeners.tls.certificates]]
cert_file = "a.crt"
key_file = "a.key"
[listeners.tls.client_auth]
ca_file = "/ca.pem"

[[listeners]]
address = "127.0.0.1:0"

[[routes]]
upstream = "web"

[upstreams.web]
[[upstreams.web.backends]]
address = "127.0.0.1:9001"
"#;
        let config = Config::parse(Path::new("/etc/weir/weir.toml"), text).unwrap();
        let files = files(&config);
        assert_eq!(
            files,
            [
                PathBuf::from("/etc/weir/a.crt"),
                PathBuf::from("/etc/weir/a.key"),
                PathBuf::from("/ca.pem"),
            ]
        );
        // The files do not exist: the first build fails at the file's line.
        let error = ListenerTls::build(&config, None).unwrap_err().to_string();
        assert!(error.starts_with("/etc/weir/weir.toml:6:13: listener 127.0.0.1:0 tls: /etc/weir/a.crt: cannot read it"), "{error}");
    }

    fn pair(dir: &Path, name: &str) -> String {
        let made = rcgen::generate_simple_self_signed(vec![format!("{name}.test")]).unwrap();
        let (cert, key) = (
            dir.join(format!("{name}.crt")),
            dir.join(format!("{name}.key")),
        );
        std::fs::write(&cert, made.cert.pem()).unwrap();
        std::fs::write(&key, made.signing_key.serialize_pem()).unwrap();
        format!(
            "[listeners.tls]\n[[listeners.tls.certificates]]\ncert_file = {:?}\nkey_file = {:?}\n",
            cert.display().to_string(),
            key.display().to_string()
        )
    }

    fn config(listeners: &[(&str, &str)]) -> Config {
        let mut text = String::new();
        for (address, tls) in listeners {
            text.push_str(&format!("[[listeners]]\naddress = {address:?}\n{tls}\n"));
        }
        text.push_str("[[routes]]\nupstream = \"web\"\n[upstreams.web]\n[[upstreams.web.backends]]\naddress = \"127.0.0.1:9001\"\n");
        Config::parse(Path::new("weir.toml"), &text).unwrap()
    }

    #[test]
    fn listeners_keep_their_certificates_by_address_not_position() {
        let dir = std::env::temp_dir().join(format!("weir-termination-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let (a, b) = (pair(&dir, "a"), pair(&dir, "b"));
        let names =
            |tls: &ListenerTls, at: ListenerAt| tls.get(&at).unwrap().pairs[0].facts.names.clone();
        let at = |address: &str, nth| ListenerAt {
            address: address.into(),
            nth,
        };
        // Two listeners on port 0 share an address: each keeps its own.
        let first = config(&[
            ("127.0.0.1:0", &a),
            ("127.0.0.1:0", &b),
            ("127.0.0.1:8443", &a),
        ]);
        assert_eq!(ListenerAt::of(&first, 1), at("127.0.0.1:0", 1));
        let built = ListenerTls::build(&first, None).unwrap();
        assert_eq!(names(&built, at("127.0.0.1:0", 0)), ["a.test"]);
        assert_eq!(names(&built, at("127.0.0.1:0", 1)), ["b.test"]);
        // Reordered: the socket bound for 127.0.0.1:8443 still finds its
        // certificate; a plain listener has none.
        let second = config(&[
            ("127.0.0.1:8443", &b),
            ("127.0.0.1:80", ""),
            ("127.0.0.1:0", &a),
        ]);
        let rebuilt = ListenerTls::build(&second, Some(&built)).unwrap();
        assert_eq!(names(&rebuilt, at("127.0.0.1:8443", 0)), ["b.test"]);
        assert!(rebuilt.get(&at("127.0.0.1:80", 0)).is_none());
        assert!(rebuilt.get(&at("127.0.0.1:0", 1)).is_none());
        assert_eq!(rebuilt.iter().count(), 2);
    }
}
