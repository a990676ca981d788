//! What the access log needs to know about a request, gathered as it runs
//! and written when its response ends.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use http::Method;

use super::request_host::RequestHost;
use crate::access_log::{AccessLog, Entry, TunnelFacts, rfc3339};
use crate::connection::ConnectionInfo;
use crate::upstream::{Backend, ChosenBy, Upstream};

/// One request's access log line in the making; written by [`finish`].
///
/// [`finish`]: RequestLog::finish
pub(crate) struct RequestLog {
    log: Arc<AccessLog>,
    arrived: SystemTime,
    started: Instant,
    conn: Arc<ConnectionInfo>,
    method: Method,
    host: RequestHost,
    path: String,
    pub(crate) upstream: Option<Arc<Upstream>>,
    pub(crate) backend: Option<Arc<Backend>>,
    pub(crate) chosen_by: Option<ChosenBy>,
    pub(crate) filter: Option<Arc<str>>,
    pub(crate) attempts: u32,
    pub(crate) status: u16,
}

impl RequestLog {
    /// Starts the line for a request that arrived `started`.
    pub(crate) fn start(
        log: Arc<AccessLog>,
        started: Instant,
        conn: Arc<ConnectionInfo>,
        method: &Method,
        host: RequestHost,
        path: &str,
    ) -> RequestLog {
        RequestLog {
            log,
            arrived: SystemTime::now() - started.elapsed(),
            started,
            conn,
            method: method.clone(),
            host,
            path: path.to_string(),
            upstream: None,
            backend: None,
            chosen_by: None,
            filter: None,
            attempts: 0,
            status: 0,
        }
    }

    /// Writes the line: the response is over, having sent `bytes` of body.
    pub(crate) fn finish(self, bytes: u64) {
        self.write(bytes, None);
    }

    /// Writes a tunnel's line when it ends: `bytes` went to the client,
    /// `tunnel` says the rest.
    pub(crate) fn finish_tunnel(self, bytes: u64, tunnel: TunnelFacts<'_>) {
        self.write(bytes, Some(tunnel));
    }

    fn write(self, bytes: u64, tunnel: Option<TunnelFacts<'_>>) {
        let plugin = self
            .upstream
            .as_ref()
            .and_then(|u| u.balancer())
            .map(|b| b.pool.plugin().name());
        let tls = self.conn.tls.as_ref();
        self.log.log(&Entry {
            time: rfc3339(self.arrived),
            client: self.conn.client,
            method: self.method.as_str(),
            host: self.host.as_str(),
            path: &self.path,
            status: self.status,
            bytes,
            // Microsecond precision: no float noise in the log.
            duration_ms: (self.started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
            upstream: self.upstream.as_ref().map(|u| u.name()),
            backend: self.backend.as_ref().map(|b| b.name.as_str()),
            chosen_by: self.chosen_by.map(ChosenBy::as_str),
            plugin,
            filter: self.filter.as_deref(),
            attempts: self.attempts,
            tls_version: tls.and_then(|t| t.version),
            sni: tls.and_then(|t| t.server_name.as_deref()),
            client_cert: tls.and_then(|t| t.client_subject.as_deref()),
            tunnel,
        });
    }
}
