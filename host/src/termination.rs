//! The TLS each listener terminates, as one snapshot holds it: built from
//! the config's `[listeners.tls]` at every snapshot build, so a rotated
//! certificate (a watched file) or a changed setting applies to the next
//! handshake, and a file that does not load keeps its last good copy.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, ConfigError};
use crate::tls::server::ServerTls;

/// Each listener's TLS, in config order; `None` for a plain listener.
#[derive(Debug, Default)]
pub struct ListenerTls(Vec<Option<Arc<ServerTls>>>);

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
        for (index, listener) in config.listeners.iter().enumerate() {
            let Some(tls) = &listener.tls else {
                built.push(None);
                continue;
            };
            let address = listener.address.get_ref();
            let spec = tls.spec(&base);
            let before = previous.and_then(|p| p.get(index));
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
            built.push(Some(Arc::new(server)));
        }
        Ok(ListenerTls(built))
    }

    /// The TLS of the listener at `index` in the config, if it has some.
    pub fn get(&self, index: usize) -> Option<Arc<ServerTls>> {
        self.0.get(index).cloned().flatten()
    }

    /// Every TLS listener's index and TLS.
    pub fn iter(&self) -> impl Iterator<Item = (usize, &Arc<ServerTls>)> {
        self.0
            .iter()
            .enumerate()
            .filter_map(|(i, tls)| Some((i, tls.as_ref()?)))
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
}
