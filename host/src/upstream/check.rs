//! Active health checks: every interval, probe each backend of an upstream
//! at once (HTTP request, TCP connect, or gRPC `Health/Check` in
//! `check/grpc.rs`) on a fresh connection, off the request path, and feed
//! the results to the backends' rise/fall counters. A TLS upstream's checks
//! make the same TLS connection as its requests (the shared connector's
//! handshake; a `tcp` check completes the handshake too, so a bad
//! certificate fails it; a `grpc` check offers ALPN `h2` only).

mod grpc;

use std::net::SocketAddr;
use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::{Method, Request, header};
use http_body_util::{BodyExt, Empty};
use tokio::net::TcpStream;
use tokio::task::JoinSet;

use super::connector::{self, Origination};
use super::{TlsFailures, Upstream, UpstreamClient};
use crate::backend::CheckError;
use crate::config::{HealthCheckConfig, HealthCheckKind};
use crate::tls::client::TlsFailure;

/// Most of a response body an HTTP check reads for `body_contains`.
const MAX_CHECK_BODY: usize = 64 * 1024;

/// One upstream's probe, resolved from its config.
#[derive(Debug, Clone)]
pub struct Probe {
    kind: HealthCheckKind,
    method: Method,
    path: String,
    host: Option<String>,
    statuses: Vec<(u16, u16)>,
    body_contains: Option<String>,
    /// The service a `grpc` check asks about ("" for the server).
    grpc_service: String,
    /// The upstream speaks HTTP/2 (`h2c`, `h2`): so do its HTTP checks.
    h2: bool,
    timeout: Duration,
    interval: Duration,
    jitter_percent: u32,
    rise: u32,
    fall: u32,
    /// TLS to the backend, as the upstream's requests use it.
    tls: Option<Arc<Origination>>,
    /// Where TLS failures are counted (the client's counters).
    tls_failures: Arc<TlsFailures>,
}

impl Probe {
    /// The probe `config` describes (already validated), connecting as
    /// `client` does (TLS or not).
    pub fn new(config: &HealthCheckConfig, client: &UpstreamClient) -> Probe {
        Probe {
            kind: config.kind,
            method: Method::from_bytes(config.method.as_bytes()).unwrap_or(Method::GET),
            path: config.path.clone(),
            host: config.host.clone(),
            statuses: config.status_ranges(),
            body_contains: config.body_contains.clone(),
            grpc_service: config.grpc_service.clone().unwrap_or_default(),
            h2: client.protocol().is_h2(),
            timeout: Duration::from_millis(config.timeout_ms),
            interval: Duration::from_millis(config.interval_ms),
            jitter_percent: config.jitter_percent,
            rise: config.rise,
            fall: config.fall,
            tls: match config.kind {
                HealthCheckKind::Grpc => client
                    .origination()
                    .map(|tls| Arc::new(tls.with_alpn(&[b"h2"]))),
                _ => client.origination().cloned(),
            },
            tls_failures: client.tls_failures().clone(),
        }
    }

    /// Checks the backend at `addr` once; the error says what failed.
    /// A TLS failure is counted in the upstream's TLS failures.
    pub async fn check(&self, addr: SocketAddr) -> Result<(), CheckError> {
        let result = match tokio::time::timeout(self.timeout, self.attempt(addr)).await {
            Ok(result) => result,
            Err(_) => Err(CheckError::NoAnswer(self.timeout)),
        };
        if let Err(error) = &result
            && let Some(reason) = TlsFailure::find(error)
        {
            self.tls_failures.count(&reason);
        }
        result
    }

    async fn attempt(&self, addr: SocketAddr) -> Result<(), CheckError> {
        let started = Instant::now();
        let tcp = TcpStream::connect(addr)
            .await
            .map_err(CheckError::Connect)?;
        let _ = tcp.set_nodelay(true);
        // The handshake gets what is left of the check's timeout (the
        // outer timeout bounds it anyway; this names the TLS step).
        let left = self.timeout.saturating_sub(started.elapsed());
        let stream = connector::secure(self.tls.as_deref(), tcp, addr, left, self.timeout)
            .await
            .map_err(|e| CheckError::Tls(Box::new(e)))?;
        let host = self.host.clone().unwrap_or_else(|| addr.to_string());
        let scheme = if self.tls.is_some() { "https" } else { "http" };
        match self.kind {
            HealthCheckKind::Tcp => return Ok(()),
            HealthCheckKind::Grpc => {
                return grpc::check(stream, scheme, &host, &self.grpc_service, self.timeout)
                    .await
                    .map_err(|e| CheckError::Grpc(Box::new(e)));
            }
            HealthCheckKind::Http => {}
        }
        let mut request = Request::builder()
            .method(self.method.clone())
            .header(header::USER_AGENT, "weir-health-check");
        // HTTP/2 names the host in `:authority`, from an absolute URI.
        request = if self.h2 {
            request.uri(format!("{scheme}://{host}{}", self.path))
        } else {
            request
                .uri(&self.path)
                .header(header::HOST, host)
                .header(header::CONNECTION, "close")
        };
        let request = request
            .body(Empty::<Bytes>::new())
            .map_err(CheckError::Request)?;
        let (response, connection) = send(stream, request, self.h2).await?;
        let result = async {
            let response = response.await.map_err(CheckError::Send)?;
            let status = response.status().as_u16();
            if !self
                .statuses
                .iter()
                .any(|&(low, high)| (low..=high).contains(&status))
            {
                return Err(CheckError::Status(status));
            }
            let Some(needle) = &self.body_contains else {
                return Ok(());
            };
            let body = http_body_util::Limited::new(response.into_body(), MAX_CHECK_BODY)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            if String::from_utf8_lossy(&body).contains(needle.as_str()) {
                Ok(())
            } else {
                Err(CheckError::BodyMismatch(needle.clone()))
            }
        }
        .await;
        connection.abort();
        result
    }

    /// The wait before the next round: the interval plus up to
    /// `jitter_percent` of it.
    fn next_wait(&self, seed: &mut u64) -> Duration {
        // xorshift64: spreading checks needs no better randomness.
        *seed ^= *seed << 13;
        *seed ^= *seed >> 7;
        *seed ^= *seed << 17;
        let spread = self.interval.as_secs_f64() * f64::from(self.jitter_percent) / 100.0;
        self.interval + Duration::from_secs_f64(spread * (*seed % 1000) as f64 / 1000.0)
    }
}

/// What an HTTP check waits on: the response, on a connection whose
/// driver is aborted when the check is done.
type Sent = std::pin::Pin<
    Box<
        dyn std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>
            + Send,
    >,
>;

/// The handshake on `stream` (HTTP/1.1, or HTTP/2 with prior knowledge or
/// ALPN) and `request` sent on it; the connection's driver is spawned.
async fn send(
    stream: connector::BackendStream,
    request: Request<Empty<Bytes>>,
    h2: bool,
) -> Result<(Sent, tokio::task::JoinHandle<()>), CheckError> {
    if h2 {
        let executor = hyper_util::rt::TokioExecutor::new();
        let (mut sender, connection) = hyper::client::conn::http2::handshake(executor, stream)
            .await
            .map_err(CheckError::Handshake)?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((Box::pin(sender.send_request(request)), connection))
    } else {
        let (mut sender, connection) = hyper::client::conn::http1::handshake(stream)
            .await
            .map_err(CheckError::Handshake)?;
        let connection = tokio::spawn(async move {
            let _ = connection.await;
        });
        Ok((Box::pin(sender.send_request(request)), connection))
    }
}

/// Checks `upstream`'s backends every interval until the upstream is
/// retired or dropped. The first round runs at once.
pub async fn run(upstream: Weak<Upstream>, probe: Arc<Probe>) {
    let mut seed =
        std::hash::BuildHasher::hash_one(&std::collections::hash_map::RandomState::new(), 0u8) | 1;
    loop {
        let Some(live) = upstream.upgrade().filter(|u| !u.is_retired()) else {
            return;
        };
        let (set, name) = (live.backends(), live.name.clone());
        drop(live);
        let mut probes = JoinSet::new();
        for backend in set.iter() {
            let (backend, probe) = (backend.clone(), probe.clone());
            probes.spawn(async move {
                let result = probe.check(backend.addr).await;
                (backend, result)
            });
        }
        let mut changed = false;
        while let Some(Ok((backend, result))) = probes.join_next().await {
            if let Err(why) = &result {
                tracing::debug!(upstream = %name, backend = backend.name, "health check failed: {}", why.describe());
            }
            // The change itself is logged, with the reason, when the
            // upstream's set is rebuilt.
            changed |= backend
                .state
                .record_check(result, probe.rise, probe.fall, Instant::now())
                .is_some();
        }
        if changed && let Some(live) = upstream.upgrade() {
            live.refresh();
        }
        tokio::time::sleep(probe.next_wait(&mut seed)).await;
    }
}
