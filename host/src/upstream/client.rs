//! The client an upstream reaches its backends with: a pool over a
//! [`Connector`] (TCP, then TLS for an upstream with a `tls` table), built
//! from the upstream's protocol settings: weir's keep-alive pool over its
//! own codec (`h1.rs`) for HTTP/1.1, its multiplexing pool (`h2.rs`) for HTTP/2.

use std::sync::Arc;
use std::time::Duration;

use http::uri::Scheme;
use http::{Request, Response, Version};

use super::UpstreamBody;
use super::connector::{Connector, Origination};
use super::stats::TlsFailures;
use crate::config::UpstreamConfig;
use crate::tls::Expiry;
use crate::tls::client::ClientTls;

mod body;
mod error;
mod h1;
mod h2;
pub use body::{BackendBody, BodyError};
pub use error::SendError;
pub use h1::{BackendUpgrade, H1Stats, take_upgrade};
pub use h2::H2Stats;

/// The protocol weir speaks to an upstream's backends.
pub use crate::config::UpstreamProtocol as Protocol;

impl Protocol {
    /// What TLS offers in ALPN for this protocol, most preferred first.
    pub fn alpn(self) -> &'static [&'static [u8]] {
        match self {
            Protocol::Http1 => &[b"http/1.1"],
            Protocol::H2c | Protocol::H2 => &[b"h2"],
        }
    }

    /// Whether this is HTTP/2.
    pub fn is_h2(self) -> bool {
        self != Protocol::Http1
    }
}

/// The connections of one upstream.
#[derive(Clone)]
enum Pool {
    Http1(Arc<h1::H1Pool>),
    H2(Arc<h2::H2Pool>),
}

/// What the connection pool is built from; a reload keeps the pool when
/// these are unchanged.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Settings {
    protocol: Protocol,
    connect_timeout: Duration,
    idle_timeout: Duration,
    max_idle_per_backend: usize,
    h2: crate::config::H2Config,
    /// The TLS settings' and files' digest; none for plain HTTP.
    tls: Option<u64>,
}

impl Settings {
    fn of(config: &UpstreamConfig) -> Settings {
        Settings {
            protocol: config.protocol,
            connect_timeout: config.connect_timeout(),
            idle_timeout: config.idle_timeout(),
            max_idle_per_backend: config.max_idle_per_backend,
            h2: config.h2.clone(),
            tls: config.tls_material().map(|m| m.fingerprint),
        }
    }
}

/// The keep-alive client of one upstream. Cloning shares the pool.
#[derive(Clone)]
pub struct UpstreamClient {
    pool: Pool,
    settings: Settings,
    tls: Option<Arc<Origination>>,
    tls_failures: Arc<TlsFailures>,
}

impl UpstreamClient {
    /// A client with a fresh pool for `config`'s protocol settings.
    pub fn new(name: &str, config: &UpstreamConfig) -> UpstreamClient {
        UpstreamClient::succeed(name, config, None)
    }

    /// The client for upstream `name` after a load or reload: `previous`'s,
    /// sharing its pool, when the settings (with the TLS files' contents)
    /// are unchanged; a new one otherwise. TLS failure counts carry over.
    /// Warns, at every load, of `insecure_skip_verify`, an empty system
    /// trust store and a client certificate past or near its end.
    pub fn succeed(
        name: &str,
        config: &UpstreamConfig,
        previous: Option<&UpstreamClient>,
    ) -> UpstreamClient {
        let settings = Settings::of(config);
        if let Some(material) = config.tls_material() {
            warn_of(name, material);
        }
        match previous {
            Some(previous) if previous.settings == settings => previous.clone(),
            _ => UpstreamClient::build(config, settings, previous),
        }
    }

    fn build(
        config: &UpstreamConfig,
        settings: Settings,
        previous: Option<&UpstreamClient>,
    ) -> UpstreamClient {
        let tls = config.tls_material().map(|material| {
            let client = ClientTls::new(
                material.trust.clone(),
                material.client_cert.as_ref(),
                material.min_version,
                settings.protocol.alpn(),
            );
            Arc::new(Origination {
                client,
                server_name: material.server_name.clone(),
            })
        });
        let connector = Connector::new(settings.connect_timeout, tls.clone());
        let pool = if settings.protocol.is_h2() {
            let h2 = h2::H2Pool::new(
                connector,
                tls.is_some(),
                &settings.h2,
                settings.idle_timeout,
            );
            Pool::H2(Arc::new(h2))
        } else {
            Pool::Http1(Arc::new(h1::H1Pool::new(
                connector,
                settings.max_idle_per_backend,
                settings.idle_timeout,
            )))
        };
        UpstreamClient {
            pool,
            settings,
            tls,
            tls_failures: previous.map(|p| p.tls_failures.clone()).unwrap_or_default(),
        }
    }

    /// The protocol this client speaks.
    pub fn protocol(&self) -> Protocol {
        self.settings.protocol
    }

    /// The scheme of request URIs sent through this client: `https` for a
    /// TLS upstream.
    pub fn scheme(&self) -> Scheme {
        if self.tls.is_some() {
            Scheme::HTTPS
        } else {
            Scheme::HTTP
        }
    }

    /// The HTTP version of requests sent through this client.
    pub fn version(&self) -> Version {
        match self.settings.protocol {
            Protocol::Http1 => Version::HTTP_11,
            Protocol::H2c | Protocol::H2 => Version::HTTP_2,
        }
    }

    /// The HTTP/2 pool's connections, streams and counts; none for HTTP/1.1.
    pub fn h2_stats(&self) -> Option<H2Stats> {
        match &self.pool {
            Pool::Http1(_) => None,
            Pool::H2(pool) => Some(pool.stats()),
        }
    }

    /// The HTTP/1.1 pool's connections and counts; none for HTTP/2.
    pub fn h1_stats(&self) -> Option<H1Stats> {
        match &self.pool {
            Pool::Http1(pool) => Some(pool.stats()),
            Pool::H2(_) => None,
        }
    }

    /// TLS to the backends, for health checks; none for plain HTTP.
    pub fn origination(&self) -> Option<&Arc<Origination>> {
        self.tls.as_ref()
    }

    /// TLS failures so far, by reason (requests and health checks).
    pub fn tls_failures(&self) -> &Arc<TlsFailures> {
        &self.tls_failures
    }

    /// Sends `request` to the backend at `addr` and waits for the response
    /// headers. Its URI is absolute, with [`UpstreamClient::scheme`]: on
    /// HTTP/1.1 its authority is `addr`; on HTTP/2 it is the `:authority`
    /// the backend sees (the client's host), the connection going to
    /// `addr`. A TLS failure is counted.
    pub async fn send(
        &self,
        addr: std::net::SocketAddr,
        request: Request<UpstreamBody>,
    ) -> Result<Response<BackendBody>, SendError> {
        let sent = match &self.pool {
            Pool::Http1(pool) => pool.send(addr, request).await,
            Pool::H2(pool) => pool.send(addr, request).await,
        };
        sent.inspect_err(|error| {
            if let SendError::Tls { reason, .. } = error {
                self.tls_failures.count(reason);
            }
        })
    }
}

/// Logs, at every load, what an operator should hear about an upstream's
/// TLS: certificates not verified, no system roots, a client certificate
/// expired or expiring within 14 days.
fn warn_of(name: &str, material: &crate::config::TlsMaterial) {
    if material.insecure_skip_verify {
        tracing::warn!(
            upstream = name,
            "tls.insecure_skip_verify = true: the backends' certificates are not verified; anyone on the path to them can impersonate them"
        );
    } else if material.system_roots == Some(0) {
        tracing::warn!(
            upstream = name,
            "no system CA certificates were found: every backend certificate will be refused as from an unknown CA; set tls.ca_file"
        );
    }
    let Some(pair) = &material.client_cert else {
        return;
    };
    let window = Duration::from_secs(14 * 86_400);
    let when = pair.facts.not_after_text();
    let path = pair.cert_path.display();
    match pair.facts.expiry(std::time::SystemTime::now(), window) {
        Expiry::Fine => {}
        Expiry::Soon => tracing::warn!(upstream = name, "tls.cert_file {path} expires on {when}"),
        Expiry::Expired => tracing::warn!(
            upstream = name,
            "tls.cert_file {path} expired on {when}: backends checking it will refuse it"
        ),
        Expiry::NotYetValid => tracing::warn!(
            upstream = name,
            "tls.cert_file {path} is not valid yet: backends checking it will refuse it"
        ),
    }
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use http::StatusCode;
    use http_body_util::{BodyExt, Empty};

    use super::*;
    use crate::upstream::testing::config;

    #[test]
    fn the_pool_is_kept_only_when_the_settings_are_unchanged() {
        let first = UpstreamClient::new("web", &config(1, ""));
        let same = UpstreamClient::succeed("web", &config(1, ""), Some(&first));
        assert_eq!(same.settings, first.settings);
        let other =
            UpstreamClient::succeed("web", &config(1, "connect_timeout_ms = 7"), Some(&first));
        assert_ne!(other.settings, first.settings);
        assert_eq!(
            (first.scheme(), first.version()),
            (Scheme::HTTP, Version::HTTP_11)
        );
        assert_eq!(first.protocol(), Protocol::Http1);
    }

    #[test]
    fn a_tls_upstream_sends_https_and_its_settings_pick_the_pool() {
        let plain = UpstreamClient::new("web", &config(1, ""));
        let tls = UpstreamClient::new("web", &config(1, "[upstreams.web.tls]"));
        assert_eq!(
            (plain.scheme(), tls.scheme()),
            (Scheme::HTTP, Scheme::HTTPS)
        );
        assert!(plain.origination().is_none() && tls.origination().is_some());
        assert_eq!(Protocol::Http1.alpn(), [b"http/1.1"]);
        let same = UpstreamClient::succeed("web", &config(1, "[upstreams.web.tls]"), Some(&tls));
        assert_eq!(same.settings, tls.settings);
        let insecure = "[upstreams.web.tls]\ninsecure_skip_verify = true";
        let other = UpstreamClient::succeed("web", &config(1, insecure), Some(&tls));
        assert_ne!(other.settings, tls.settings);
        // The failure counts follow the upstream to its new pool.
        assert!(Arc::ptr_eq(other.tls_failures(), tls.tls_failures()));
        // And back to plain HTTP: a new pool again.
        let back = UpstreamClient::succeed("web", &config(1, ""), Some(&other));
        assert_eq!(back.scheme(), Scheme::HTTP);
    }

    fn get(addr: std::net::SocketAddr) -> Request<UpstreamBody> {
        let body = Empty::<Bytes>::new()
            .map_err(|never| match never {})
            .boxed();
        Request::get(format!("http://{addr}/")).body(body).unwrap()
    }

    #[tokio::test]
    async fn a_refused_connect_is_a_502_with_its_cause() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let client = UpstreamClient::new("web", &config(1, ""));
        let error = client.send(addr, get(addr)).await.unwrap_err();
        assert!(matches!(error, SendError::Connect(_)), "{error:?}");
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(error.reason(), "could not connect to the backend");
        let chain = crate::error::chain(&error).to_string();
        assert!(
            chain.starts_with("could not connect to the backend: "),
            "{chain}"
        );
    }

    #[tokio::test]
    async fn a_connection_closed_before_the_answer_is_a_502() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let server = tokio::spawn(async move {
            // Accept, read a little, hang up without answering.
            let (mut stream, _) = listener.accept().await.unwrap();
            let mut buf = [0u8; 64];
            let _ = tokio::io::AsyncReadExt::read(&mut stream, &mut buf).await;
        });
        let client = UpstreamClient::new("web", &config(1, ""));
        let error = client.send(addr, get(addr)).await.unwrap_err();
        assert!(matches!(error, SendError::Connection(_)), "{error:?}");
        assert_eq!(error.status(), StatusCode::BAD_GATEWAY);
        assert_eq!(error.reason(), "the backend connection failed");
        server.await.unwrap();
    }

    #[tokio::test]
    async fn a_connect_past_connect_timeout_is_a_504() {
        let (listener, queued) = crate::upstream::testing::unaccepting_listener().await;
        let addr = listener.local_addr().unwrap();
        let client = UpstreamClient::new("web", &config(1, "connect_timeout_ms = 100"));
        let error = client.send(addr, get(addr)).await.unwrap_err();
        assert!(matches!(error, SendError::ConnectTimeout(_)), "{error:?}");
        assert_eq!(error.status(), StatusCode::GATEWAY_TIMEOUT);
        assert_eq!(error.reason(), "connecting to the backend timed out");
        drop((queued, listener));
    }
}
