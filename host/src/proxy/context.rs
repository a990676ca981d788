//! The per-request context the phases share: the snapshot the request
//! runs on, its connection, where it is going, and its access-log line in
//! the making.

use std::sync::Arc;
use std::time::Instant;

use http::request::Parts;
use http::{HeaderName, HeaderValue};

use super::Shared;
use super::log::RequestLog;
use super::request_host::RequestHost;
use crate::connection::ConnectionInfo;
use crate::plugin::RequestView;
use crate::snapshot::{Route, Snapshot};
use crate::upstream::Upstream;

/// What the phases of one request know about it, besides its head.
pub(crate) struct RequestCtx {
    /// The snapshot the whole request runs on: a reload swaps in a new one
    /// for later requests while this one finishes on what it started with.
    pub(crate) snapshot: Arc<Snapshot>,
    /// The client connection it came on.
    pub(crate) conn: Arc<ConnectionInfo>,
    /// Where refusals are counted.
    pub(crate) refused: Arc<super::RefusedRequests>,
    /// The listener's `body_read_timeout_ms`.
    pub(crate) body_read_timeout: std::time::Duration,
    /// The host the client asked for.
    pub(crate) host: RequestHost,
    /// It came over HTTP/1.x (connection headers mean something).
    pub(crate) http1: bool,
    /// Its access-log line, when there is an access log.
    pub(crate) log: Option<RequestLog>,
    /// The route it matched (set by the route phase).
    pub(crate) route: Option<Arc<Route>>,
    /// The upstream serving it: the route's, or a filter's reroute.
    pub(crate) upstream: Option<Arc<Upstream>>,
    /// Indices of the filters passed that want `on-response`.
    pub(crate) responders: Vec<usize>,
    /// What `on-response` hooks see: the request as the chain left it.
    pub(crate) passed: Option<RequestView>,
    /// A gRPC request's call (its deadline); weir's own answers to it are
    /// gRPC's.
    pub(crate) grpc: Option<super::grpc::GrpcCall>,
}

impl RequestCtx {
    /// The context of a request whose head is `parts`.
    pub(crate) fn new(shared: &Shared, parts: &Parts, conn: Arc<ConnectionInfo>) -> RequestCtx {
        let started = Instant::now();
        let host = RequestHost::of(parts);
        let log = shared.access_log.as_ref().map(|access| {
            RequestLog::start(
                access.clone(),
                started,
                conn.clone(),
                &parts.method,
                host.clone(),
                parts.uri.path(),
            )
        });
        RequestCtx {
            snapshot: shared.state.load_full(),
            conn,
            refused: shared.refused.clone(),
            body_read_timeout: shared.body_read_timeout,
            host,
            http1: parts.version < http::Version::HTTP_2,
            log,
            route: None,
            upstream: None,
            responders: Vec::new(),
            passed: None,
            grpc: super::grpc::GrpcCall::of(parts, tokio::time::Instant::from_std(started)),
        }
    }

    /// Moves the request's method, URI and headers into a view for a
    /// plugin call (moved, not copied; see [`RequestCtx::take_back`]).
    pub(crate) fn lend(&self, parts: &mut Parts) -> RequestView {
        RequestView {
            method: std::mem::take(&mut parts.method),
            uri: std::mem::take(&mut parts.uri),
            headers: std::mem::take(&mut parts.headers),
            client: self.conn.client,
            tls: self.conn.tls.clone(),
            response_headers: Vec::new(),
        }
    }

    /// Moves a lent view's request back; returns the response headers the
    /// balancer asked for.
    pub(crate) fn take_back(
        parts: &mut Parts,
        view: RequestView,
    ) -> Vec<(HeaderName, HeaderValue)> {
        parts.method = view.method;
        parts.uri = view.uri;
        parts.headers = view.headers;
        view.response_headers
    }

    /// The upstream serving the request; set once routing is done.
    pub(crate) fn upstream(&self) -> &Arc<Upstream> {
        self.upstream.as_ref().expect("set by the route phase")
    }
}
